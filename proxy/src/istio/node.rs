//! This proxy's own workload, read once from the bootstrap `node`: what the stats filter labels
//! the local side with and what the metadata exchanges (HTTP headers, TCP) send to peers.

use envoy_types::pb::envoy::config::core::v3::Node;
use http::HeaderValue;

use super::metadata::WorkloadMetadata;
use super::metrics::IstioMetrics;

/// The local workload and the process's Istio metrics, shared by every listener.
#[derive(Debug)]
pub struct LocalNode {
    pub metadata: WorkloadMetadata,
    /// `x-envoy-peer-metadata` as peers receive it.
    pub header: Option<HeaderValue>,
    /// `x-envoy-peer-metadata-id`: the node id.
    pub id: Option<HeaderValue>,
    /// What the TCP metadata exchange writes to peers (header and packed struct).
    pub exchange_frame: Vec<u8>,
    pub metrics: IstioMetrics,
}

impl LocalNode {
    pub fn new(node: Option<&Node>, metrics: IstioMetrics) -> Self {
        let metadata = node
            .and_then(|n| n.metadata.as_ref())
            .map(WorkloadMetadata::from_struct)
            .unwrap_or_default();
        let header = HeaderValue::from_str(&metadata.header_value()).ok();
        let id = node.and_then(|n| HeaderValue::from_str(&n.id).ok().filter(|v| !v.is_empty()));
        let exchange_frame = super::exchange::frame(&metadata, node.map_or("", |n| n.id.as_str()));
        Self {
            metadata,
            header,
            id,
            exchange_frame,
            metrics,
        }
    }
}

impl Default for LocalNode {
    fn default() -> Self {
        Self::new(None, IstioMetrics::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

    fn s(v: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(v.into())),
        }
    }

    #[test]
    fn reads_istio_node_metadata() {
        let labels = Struct {
            fields: [("app".to_string(), s("web")), ("version".into(), s("v1"))].into(),
        };
        let meta = Struct {
            fields: [
                ("NAMESPACE".to_string(), s("default")),
                ("WORKLOAD_NAME".into(), s("web-v1")),
                ("CLUSTER_ID".into(), s("Kubernetes")),
                (
                    "LABELS".into(),
                    Value {
                        kind: Some(Kind::StructValue(labels)),
                    },
                ),
            ]
            .into(),
        };
        let node = Node {
            id: "sidecar~10.0.0.1~web-v1-abc.default~default.svc.cluster.local".into(),
            metadata: Some(meta),
            ..Default::default()
        };
        let local = LocalNode::new(Some(&node), IstioMetrics::default());
        assert_eq!(local.metadata.workload, "web-v1");
        assert_eq!(local.metadata.app, "web");
        assert_eq!(local.metadata.cluster, "Kubernetes");
        let header = local.header.expect("header");
        let back = WorkloadMetadata::from_header(header.as_bytes()).expect("decodes");
        assert_eq!(back.workload, "web-v1");
        assert!(local
            .id
            .is_some_and(|v| v.as_bytes().starts_with(b"sidecar~")));
    }
}
