//! `envoy.transport_sockets.internal_upstream` on a cluster: connections to internal listeners carry
//! the downstream connection's filter state objects shared with the upstream (and, as configured,
//! metadata) to the internal listener's connection. The wrapped `transport_socket` (required, as
//! in Envoy) is `raw_buffer` or TLS, validated as a cluster's own.

use envoy_types::pb::envoy::config::core::v3::{transport_socket, Metadata, TransportSocket};
use envoy_types::pb::envoy::extensions::transport_sockets::internal_upstream::v3::InternalUpstreamTransport;
use envoy_types::pb::envoy::r#type::metadata::v3::metadata_kind::Kind;
use prost::Name;

use crate::config::parse::{any_type_name, unpack_any, ParseOptions};
use crate::config::{ConfigErrors, Path};

pub const NAME: &str = "envoy.transport_sockets.internal_upstream";

/// Where a `passthrough_metadata` entry is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataSource {
    Host,
    Cluster,
}

/// The `tunnel` metadata namespace Istio puts on HBONE endpoints (`destination`: the workload's
/// address; `address`: where its tunnel listens), read by `istio.set_internal_dst_address` when
/// `passthrough_metadata` carries it to an internal listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelMetadata {
    pub destination: Option<String>,
    pub address: Option<String>,
}

/// The namespace of [`TunnelMetadata`].
pub const TUNNEL_NAMESPACE: &str = "tunnel";

impl TunnelMetadata {
    /// The `tunnel` namespace of `metadata`'s `filter_metadata`, when it has one.
    pub fn from_metadata(metadata: Option<&Metadata>) -> Option<TunnelMetadata> {
        use envoy_types::pb::google::protobuf::value::Kind as V;
        let fields = &metadata?.filter_metadata.get(TUNNEL_NAMESPACE)?.fields;
        let string = |name: &str| match fields.get(name).and_then(|v| v.kind.as_ref()) {
            Some(V::StringValue(s)) => Some(s.clone()),
            _ => None,
        };
        Some(TunnelMetadata {
            destination: string("destination"),
            address: string("address"),
        })
    }
}

/// The validated transport socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalUpstream {
    /// `passthrough_metadata`: validated; the `tunnel` namespace reaches the internal listener's
    /// `istio.set_internal_dst_address`, the only reader of dynamic metadata there.
    pub passthrough_metadata: Vec<(MetadataSource, String)>,
    /// How many cluster-metadata entries the cluster lacks: each connection counts them, and the
    /// host entries its host lacks, in `internal_upstream.no_metadata`, as Envoy does.
    pub missing_cluster_metadata: u64,
    /// The cluster's `tunnel` metadata, when `passthrough_metadata` names it from the cluster.
    pub cluster_tunnel: Option<TunnelMetadata>,
    /// The wrapped socket: plaintext or TLS over the in-process connection, as a cluster's own
    /// `transport_socket` would be.
    pub transport_socket: TransportSocket,
}

/// Whether `ts` is the internal upstream transport socket.
pub fn is_internal_upstream(ts: &TransportSocket) -> bool {
    let kind = ts
        .config_type
        .as_ref()
        .map(|transport_socket::ConfigType::TypedConfig(a)| any_type_name(a))
        .unwrap_or_default();
    ts.name == NAME || kind == InternalUpstreamTransport::full_name()
}

/// Validates the socket found at `path` (a cluster's `transport_socket`).
pub fn from_proto(
    ts: &TransportSocket,
    cluster_metadata: Option<&Metadata>,
    path: &Path,
    errs: &mut ConfigErrors,
) -> Option<InternalUpstream> {
    let tpath = path.field("typed_config");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        errs.push(&tpath, format!("{NAME} needs a typed_config"));
        return None;
    };
    let cfg: InternalUpstreamTransport = unpack_any(any, ParseOptions::default())
        .map_err(|e| errs.push(tpath.field(&e.path), e.message))
        .ok()?;
    let mut passthrough_metadata = Vec::new();
    for (i, m) in cfg.passthrough_metadata.iter().enumerate() {
        let p = tpath.field("passthrough_metadata").index(i);
        let source = match m.kind.as_ref().and_then(|k| k.kind.as_ref()) {
            Some(Kind::Host(_)) => MetadataSource::Host,
            Some(Kind::Cluster(_)) => MetadataSource::Cluster,
            Some(_) => {
                errs.push(
                    p.field("kind"),
                    "only host and cluster metadata can pass through",
                );
                continue;
            }
            None => {
                errs.push(p.field("kind"), "kind is required");
                continue;
            }
        };
        if m.name.is_empty() {
            errs.push(p.field("name"), "name is required");
            continue;
        }
        passthrough_metadata.push((source, m.name.clone()));
    }
    let ipath = tpath.field("transport_socket");
    let Some(inner) = &cfg.transport_socket else {
        // Envoy's validation requires it.
        errs.push(ipath, "transport_socket is required");
        return None;
    };
    let has = |ns: &str| {
        cluster_metadata.is_some_and(|m| {
            m.filter_metadata.contains_key(ns) || m.typed_filter_metadata.contains_key(ns)
        })
    };
    let missing_cluster_metadata = passthrough_metadata
        .iter()
        .filter(|(source, ns)| *source == MetadataSource::Cluster && !has(ns))
        .count() as u64;
    let cluster_tunnel = passthrough_metadata
        .contains(&(MetadataSource::Cluster, TUNNEL_NAMESPACE.to_string()))
        .then(|| TunnelMetadata::from_metadata(cluster_metadata))
        .flatten();
    Some(InternalUpstream {
        passthrough_metadata,
        missing_cluster_metadata,
        cluster_tunnel,
        transport_socket: inner.clone(),
    })
}
