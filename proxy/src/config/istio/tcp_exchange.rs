//! Istio's TCP metadata exchange (`envoy.tcp.metadataexchange.config.MetadataExchange`), named
//! `istio.metadata_exchange` both as a listener's network filter and as a cluster's upstream
//! filter → the ALPN protocol that switches it on.

use envoy_types::pb::google::protobuf::Any;
use prost::Name;

use super::unpack;
use crate::config::parse::any_type_name;
use crate::config::{ConfigError, ConfigErrors, ParseOptions, Path};

/// `envoy.tcp.metadataexchange.config.MetadataExchange`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetadataExchange {
    #[prost(string, tag = "1")]
    pub protocol: String,
    #[prost(bool, tag = "2")]
    pub enable_discovery: bool,
    #[prost(string, repeated, tag = "3")]
    pub additional_labels: Vec<String>,
}

impl Name for MetadataExchange {
    const NAME: &'static str = "MetadataExchange";
    const PACKAGE: &'static str = "envoy.tcp.metadataexchange.config";
}

/// The validated filter: the exchange runs on connections whose TLS negotiated `protocol`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpExchangeConfig {
    pub protocol: String,
}

/// Whether a network or cluster filter is the TCP metadata exchange (by the type in its `Any`;
/// the HTTP filter of the same name carries `io.istio.http.peer_metadata.Config`).
pub fn is_tcp_exchange(any: &Any) -> bool {
    any_type_name(any) == MetadataExchange::full_name()
}

/// The filter at `path`, its config in `any`.
pub fn tcp_exchange(
    any: &Any,
    path: &Path,
    opts: ParseOptions,
) -> Result<TcpExchangeConfig, ConfigErrors> {
    let c: MetadataExchange = unpack(Some(any), path, opts)?;
    let value = path.field("typed_config");
    if c.protocol.is_empty() {
        return Err(ConfigError::new(
            value.field("protocol"),
            "the metadata exchange needs the ALPN protocol it runs on (istiod sends istio-peer-exchange)",
        )
        .into());
    }
    if c.enable_discovery {
        // Workload discovery (WDS) fills in peers that did not exchange; remora has no WDS client,
        // so such peers keep "unknown" labels as they would without the flag.
        tracing::debug!(path = %value.field("enable_discovery"), "workload discovery is not supported; only exchanged metadata is used");
    }
    if !c.additional_labels.is_empty() {
        // Only custom stats dimensions read the extra labels; the standard metrics do not.
        tracing::debug!(path = %value.field("additional_labels"), "additional_labels are not kept (the standard metrics do not use them)");
    }
    Ok(TcpExchangeConfig {
        protocol: c.protocol,
    })
}
