//! Workload metadata as Istio's proxies exchange it: the node metadata istio-agent writes into the
//! bootstrap (`NAME`, `NAMESPACE`, `WORKLOAD_NAME`, `CLUSTER_ID`, `OWNER`, `LABELS`), carried to
//! peers in `x-envoy-peer-metadata` (base64 of a serialized `google.protobuf.Struct`) with the node
//! id in `x-envoy-peer-metadata-id`, or in a `baggage` header (`k8s.namespace.name=...`).

use std::collections::HashMap;

use base64::Engine;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use prost::Message;

pub const PEER_METADATA: http::HeaderName = http::HeaderName::from_static("x-envoy-peer-metadata");
pub const PEER_METADATA_ID: http::HeaderName =
    http::HeaderName::from_static("x-envoy-peer-metadata-id");

const INSTANCE: &str = "NAME";
const NAMESPACE: &str = "NAMESPACE";
const CLUSTER: &str = "CLUSTER_ID";
const OWNER: &str = "OWNER";
const WORKLOAD: &str = "WORKLOAD_NAME";
const LABELS: &str = "LABELS";
const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";
const APP: &str = "app";
const VERSION: &str = "version";
const OWNER_PREFIX: &str = "kubernetes://apis/apps/v1/namespaces/";

/// What kind of workload a pod belongs to (from `OWNER`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WorkloadType {
    #[default]
    Unknown,
    Pod,
    Deployment,
    Job,
    CronJob,
}

impl WorkloadType {
    fn from_suffix(s: &str) -> Self {
        match s {
            "pod" => WorkloadType::Pod,
            "deployment" => WorkloadType::Deployment,
            "job" => WorkloadType::Job,
            "cronjob" => WorkloadType::CronJob,
            _ => WorkloadType::Unknown,
        }
    }

    fn suffix(self) -> Option<&'static str> {
        match self {
            WorkloadType::Pod => Some("pod"),
            WorkloadType::Deployment => Some("deployment"),
            WorkloadType::Job => Some("job"),
            WorkloadType::CronJob => Some("cronjob"),
            WorkloadType::Unknown => None,
        }
    }
}

/// One workload's identity for telemetry; empty strings where unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadMetadata {
    pub instance: String,
    pub cluster: String,
    pub namespace: String,
    pub workload: String,
    pub canonical_name: String,
    pub canonical_revision: String,
    pub app: String,
    pub version: String,
    pub workload_type: WorkloadType,
}

fn string_of(v: &Value) -> &str {
    match &v.kind {
        Some(Kind::StringValue(s)) => s,
        _ => "",
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

impl WorkloadMetadata {
    /// From node metadata (or a peer's exchanged struct), as Istio's `convertStructToWorkloadMetadata`.
    pub fn from_struct(s: &Struct) -> Self {
        let get = |k: &str| {
            s.fields
                .get(k)
                .map(string_of)
                .unwrap_or_default()
                .to_string()
        };
        let mut m = WorkloadMetadata {
            instance: get(INSTANCE),
            cluster: get(CLUSTER),
            namespace: get(NAMESPACE),
            workload: get(WORKLOAD),
            ..Default::default()
        };
        if let Some(Kind::StructValue(labels)) = s.fields.get(LABELS).and_then(|v| v.kind.as_ref())
        {
            let label = |k: &str| {
                labels
                    .fields
                    .get(k)
                    .map(string_of)
                    .unwrap_or_default()
                    .to_string()
            };
            m.canonical_name = label(CANONICAL_NAME);
            m.canonical_revision = label(CANONICAL_REVISION);
            m.app = label(APP);
            m.version = label(VERSION);
        }
        m.workload_type = parse_owner(&get(OWNER), &m.workload);
        m
    }

    /// The struct peers receive (Istio's `convertWorkloadMetadataToStruct`).
    pub fn to_struct(&self) -> Struct {
        let mut fields = HashMap::new();
        let mut put = |k: &str, v: &str| {
            if !v.is_empty() {
                fields.insert(k.to_string(), string_value(v));
            }
        };
        put(INSTANCE, &self.instance);
        put(NAMESPACE, &self.namespace);
        put(WORKLOAD, &self.workload);
        put(CLUSTER, &self.cluster);
        let mut labels = HashMap::new();
        for (k, v) in [
            (CANONICAL_NAME, &self.canonical_name),
            (CANONICAL_REVISION, &self.canonical_revision),
            (APP, &self.app),
            (VERSION, &self.version),
        ] {
            if !v.is_empty() {
                labels.insert(k.to_string(), string_value(v));
            }
        }
        fields.insert(
            LABELS.to_string(),
            Value {
                kind: Some(Kind::StructValue(Struct { fields: labels })),
            },
        );
        if let Some(suffix) = self.workload_type.suffix() {
            fields.insert(
                OWNER.to_string(),
                string_value(&format!(
                    "{OWNER_PREFIX}{}/{suffix}s/{}",
                    self.namespace, self.workload
                )),
            );
        }
        Struct { fields }
    }

    /// `x-envoy-peer-metadata`: base64 of the serialized struct.
    pub fn header_value(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.to_struct().encode_to_vec())
    }

    /// Parses `x-envoy-peer-metadata` (padding optional, as Istio decodes it).
    pub fn from_header(value: &[u8]) -> Option<Self> {
        let trimmed: Vec<u8> = value
            .iter()
            .copied()
            .filter(|b| *b != b'=' && !b.is_ascii_whitespace())
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed)
            .ok()?;
        let s = Struct::decode(bytes.as_slice()).ok()?;
        Some(Self::from_struct(&s))
    }

    /// Parses the `baggage` encoding (`k8s.namespace.name=ns,service.name=web,...`).
    pub fn from_baggage(value: &str) -> Self {
        let mut m = WorkloadMetadata::default();
        for prop in value.split(',') {
            let Some((k, v)) = prop.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim().to_string());
            match k {
                "k8s.namespace.name" => m.namespace = v,
                "k8s.cluster.name" => m.cluster = v,
                "service.name" => m.canonical_name = v,
                "service.version" => m.canonical_revision = v,
                "app.name" => m.app = v,
                "app.version" => m.version = v,
                "k8s.instance.name" => m.instance = v,
                "k8s.deployment.name" => {
                    m.workload = v;
                    m.workload_type = WorkloadType::Deployment;
                }
                "k8s.pod.name" => {
                    m.workload = v;
                    m.workload_type = WorkloadType::Pod;
                }
                "k8s.job.name" => {
                    m.workload = v;
                    m.workload_type = WorkloadType::Job;
                }
                "k8s.cronjob.name" => {
                    m.workload = v;
                    m.workload_type = WorkloadType::CronJob;
                }
                _ => {}
            }
        }
        m
    }
}

/// The workload type from `OWNER` (`kubernetes://apis/apps/v1/namespaces/ns/deployments/web`).
fn parse_owner(owner: &str, workload: &str) -> WorkloadType {
    if owner.len() <= workload.len() + 2 {
        return WorkloadType::Unknown;
    }
    let head = &owner[..owner.len() - workload.len() - 2];
    match head.rfind('/') {
        Some(i) => WorkloadType::from_suffix(&head[i + 1..]),
        None => WorkloadType::Unknown,
    }
}

/// The namespace in a SPIFFE principal (`spiffe://td/ns/<ns>/sa/<sa>` or `td/ns/<ns>/sa/<sa>`).
pub fn namespace_of_principal(principal: &str) -> Option<&str> {
    let start = principal.find("/ns/")? + 4;
    let rest = &principal[start..];
    Some(rest.split('/').next().unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_struct() -> Struct {
        let mut labels = HashMap::new();
        labels.insert(CANONICAL_NAME.into(), string_value("reviews"));
        labels.insert(CANONICAL_REVISION.into(), string_value("v2"));
        labels.insert(APP.into(), string_value("reviews"));
        labels.insert(VERSION.into(), string_value("v2"));
        let mut f = HashMap::new();
        f.insert(INSTANCE.into(), string_value("reviews-v2-abc"));
        f.insert(NAMESPACE.into(), string_value("bookinfo"));
        f.insert(WORKLOAD.into(), string_value("reviews-v2"));
        f.insert(CLUSTER.into(), string_value("Kubernetes"));
        f.insert(
            OWNER.into(),
            string_value("kubernetes://apis/apps/v1/namespaces/bookinfo/deployments/reviews-v2"),
        );
        f.insert(
            LABELS.into(),
            Value {
                kind: Some(Kind::StructValue(Struct { fields: labels })),
            },
        );
        Struct { fields: f }
    }

    #[test]
    fn node_metadata_round_trips_through_the_exchange_header() {
        let m = WorkloadMetadata::from_struct(&node_struct());
        assert_eq!(m.workload, "reviews-v2");
        assert_eq!(m.namespace, "bookinfo");
        assert_eq!(m.canonical_name, "reviews");
        assert_eq!(m.version, "v2");
        assert_eq!(m.workload_type, WorkloadType::Deployment);
        let header = m.header_value();
        assert_eq!(
            WorkloadMetadata::from_header(header.as_bytes()),
            Some(m.clone())
        );
        // Istio decodes without padding; a header without it parses too.
        let unpadded = header.trim_end_matches('=');
        assert_eq!(WorkloadMetadata::from_header(unpadded.as_bytes()), Some(m));
        assert_eq!(WorkloadMetadata::from_header(b"%%%"), None);
    }

    #[test]
    fn baggage_and_principals() {
        let m = WorkloadMetadata::from_baggage(
            "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=sleep,service.name=sleep,service.version=v1",
        );
        assert_eq!(m.workload, "sleep");
        assert_eq!(m.workload_type, WorkloadType::Deployment);
        assert_eq!(m.canonical_revision, "v1");
        assert_eq!(
            namespace_of_principal("spiffe://cluster.local/ns/foo/sa/bar"),
            Some("foo")
        );
        assert_eq!(
            namespace_of_principal("spiffe://cluster.local/sa/bar"),
            None
        );
    }
}
