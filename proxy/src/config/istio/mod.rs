//! Istio's filters as istiod configures them → the validated model: the `istio.stats` HTTP and
//! network filters (`stats.PluginConfig`) and the `istio.metadata_exchange` HTTP filter
//! (`io.istio.http.peer_metadata.Config`), and the TCP metadata exchange network and cluster
//! filter (`envoy.tcp.metadataexchange.config.MetadataExchange`), and `istio.alpn` (the upstream
//! ALPN by HTTP version). Only what istiod's configuration uses is modelled; the
//! rest of either message parses and is ignored.

mod alpn;
pub mod descriptors;
mod tcp_exchange;
mod wasm;

pub use alpn::{alpn, is_alpn, AlpnFilterConfig, AlpnList, AlpnOverrides, UpstreamHttp};

pub use tcp_exchange::{is_tcp_exchange, tcp_exchange, MetadataExchange, TcpExchangeConfig};
pub use wasm::is_wasm;

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::google::protobuf::Any;
use prost::Name;

use super::parse::{any_type_name, unpack_any};
use super::{ConfigError, ConfigErrors, ParseOptions, Path};
use crate::istio::Reporter;

/// The filter name istiod gives the stats filter (HTTP and network alike).
pub const STATS_FILTER: &str = "istio.stats";
/// The filter name istiod gives the HTTP metadata exchange.
pub const EXCHANGE_FILTER: &str = "istio.metadata_exchange";
/// The same filter under its extension name.
const PEER_METADATA_FILTER: &str = "envoy.filters.http.peer_metadata";

/// `stats.PluginConfig`, the fields remora reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginConfig {
    #[prost(bool, tag = "6")]
    pub disable_host_header_fallback: bool,
    /// `stats.Reporter`: 0 UNSPECIFIED (from the listener direction), 1 SERVER_GATEWAY.
    #[prost(int32, tag = "10")]
    pub reporter: i32,
}

impl Name for PluginConfig {
    const NAME: &'static str = "PluginConfig";
    const PACKAGE: &'static str = "stats";
}

/// An empty message: the discovery and propagation methods are known by their presence.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Present {}

/// `io.istio.http.peer_metadata.Config.DiscoveryMethod` (a oneof; at most one is set).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DiscoveryMethod {
    #[prost(message, optional, tag = "1")]
    pub baggage: Option<Present>,
    #[prost(message, optional, tag = "2")]
    pub workload_discovery: Option<Present>,
    #[prost(message, optional, tag = "3")]
    pub istio_headers: Option<Present>,
}

/// `io.istio.http.peer_metadata.Config.PropagationMethod`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropagationMethod {
    #[prost(message, optional, tag = "1")]
    pub istio_headers: Option<Present>,
}

/// `io.istio.http.peer_metadata.Config`, the fields remora reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerMetadataConfig {
    #[prost(message, repeated, tag = "1")]
    pub downstream_discovery: Vec<DiscoveryMethod>,
    #[prost(message, repeated, tag = "2")]
    pub upstream_discovery: Vec<DiscoveryMethod>,
    #[prost(message, repeated, tag = "3")]
    pub downstream_propagation: Vec<PropagationMethod>,
    #[prost(message, repeated, tag = "4")]
    pub upstream_propagation: Vec<PropagationMethod>,
}

impl Name for PeerMetadataConfig {
    const NAME: &'static str = "Config";
    const PACKAGE: &'static str = "io.istio.http.peer_metadata";
}

/// The validated `istio.stats` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsConfig {
    pub reporter: Reporter,
    /// Without a destination service from the cluster, use the Host header.
    pub host_header_fallback: bool,
}

/// How one side learns its peer's metadata, in precedence order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    IstioHeaders,
    Baggage,
}

/// The validated `istio.metadata_exchange` (peer metadata) filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeConfig {
    /// From the request (the downstream peer).
    pub downstream_discovery: Vec<Discovery>,
    /// From the response (the upstream peer).
    pub upstream_discovery: Vec<Discovery>,
    /// Add our metadata to the response.
    pub downstream_propagation: bool,
    /// Add our metadata to the request.
    pub upstream_propagation: bool,
}

/// The Istio HTTP filters of one connection manager.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpIstio {
    pub stats: Option<StatsConfig>,
    pub exchange: Option<ExchangeConfig>,
    /// `istio.alpn`: what upstream TLS handshakes offer, by upstream HTTP version.
    pub alpn: Option<std::sync::Arc<AlpnOverrides>>,
}

impl HttpIstio {
    /// Whether the manager has no telemetry (stats or metadata exchange) to run.
    pub fn is_empty(&self) -> bool {
        self.stats.is_none() && self.exchange.is_none()
    }
}

/// Whether a filter (by name or the type inside its `Any`) is `istio.stats`.
pub fn is_stats(name: &str, any: Option<&Any>) -> bool {
    name == STATS_FILTER || any.is_some_and(|a| any_type_name(a) == PluginConfig::full_name())
}

/// Whether an HTTP filter is the peer metadata exchange.
pub fn is_exchange(name: &str, any: Option<&Any>) -> bool {
    name == EXCHANGE_FILTER
        || name == PEER_METADATA_FILTER
        || any.is_some_and(|a| any_type_name(a) == PeerMetadataConfig::full_name())
}

/// The reporter Istio's stats filter infers: SERVER_GATEWAY as configured, else from the
/// listener's direction (anything but INBOUND reports as the client).
pub fn reporter(configured: i32, direction: i32) -> Reporter {
    if configured == 1 {
        Reporter::ServerGateway
    } else if direction == TrafficDirection::Inbound as i32 {
        Reporter::ServerSidecar
    } else {
        Reporter::ClientSidecar
    }
}

fn unpack<M: prost::Message + Name + Default>(
    any: Option<&Any>,
    path: &Path,
    opts: ParseOptions,
) -> Result<M, ConfigErrors> {
    match any {
        None => Ok(M::default()),
        Some(any) => unpack_any::<M>(any, opts)
            .map_err(|e| ConfigErrors::from(ConfigError::new(path.field(&e.path), e.message))),
    }
}

/// `istio.stats` at `path` (the filter), on a listener of `direction`.
pub fn stats(
    any: Option<&Any>,
    path: &Path,
    opts: ParseOptions,
    direction: i32,
) -> Result<StatsConfig, ConfigErrors> {
    let c: PluginConfig = unpack(any, path, opts)?;
    Ok(StatsConfig {
        reporter: reporter(c.reporter, direction),
        host_header_fallback: !c.disable_host_header_fallback,
    })
}

fn discovery(methods: &[DiscoveryMethod], path: &Path) -> Vec<Discovery> {
    let mut out = Vec::new();
    for (i, m) in methods.iter().enumerate() {
        if m.istio_headers.is_some() {
            out.push(Discovery::IstioHeaders);
        } else if m.baggage.is_some() {
            out.push(Discovery::Baggage);
        } else if m.workload_discovery.is_some() {
            // The workload metadata xDS is not implemented; headers (listed first by istiod) cover
            // sidecar-to-sidecar traffic.
            tracing::debug!(path = %path.index(i), "workload_discovery is not supported; skipped");
        }
    }
    out
}

/// `istio.metadata_exchange` at `path` (the filter).
pub fn exchange(
    any: Option<&Any>,
    path: &Path,
    opts: ParseOptions,
) -> Result<ExchangeConfig, ConfigErrors> {
    let c: PeerMetadataConfig = unpack(any, path, opts)?;
    let value = path.field("typed_config");
    let propagates = |m: &[PropagationMethod]| m.iter().any(|p| p.istio_headers.is_some());
    Ok(ExchangeConfig {
        downstream_discovery: discovery(
            &c.downstream_discovery,
            &value.field("downstream_discovery"),
        ),
        upstream_discovery: discovery(&c.upstream_discovery, &value.field("upstream_discovery")),
        downstream_propagation: propagates(&c.downstream_propagation),
        upstream_propagation: propagates(&c.upstream_propagation),
    })
}

/// `io.istio.network.authn.Config`: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NetworkAuthnConfig {}

impl Name for NetworkAuthnConfig {
    const NAME: &'static str = "Config";
    const PACKAGE: &'static str = "io.istio.network.authn";
}

/// Whether a network filter is Istio's `istio_authn` (`io.istio.network.authn`).
pub fn is_network_authn(name: &str, any: &Any) -> bool {
    name == "io.istio.network.authn" || any_type_name(any) == NetworkAuthnConfig::full_name()
}

/// Checks `istio_authn`'s (empty) config at `path`.
pub fn network_authn(any: &Any, path: &Path, opts: ParseOptions) -> Result<(), ConfigErrors> {
    unpack::<NetworkAuthnConfig>(Some(any), &path.field("typed_config"), opts).map(|_| ())
}

/// What one of Istio's null-VM Wasm plugins amounts to.
#[derive(Debug, Clone)]
pub enum WasmIstio {
    Stats(StatsConfig),
    Exchange(ExchangeConfig),
}

/// A Wasm filter at `path` as Istio's settings (`direction`: the listener's), or an error naming
/// what makes it something remora cannot run.
pub fn wasm(
    any: &Any,
    path: &Path,
    opts: ParseOptions,
    direction: i32,
) -> Result<WasmIstio, ConfigErrors> {
    Ok(match wasm::null_vm_plugin(any, path, opts)? {
        wasm::NullVmPlugin::Stats {
            disable_host_header_fallback,
        } => WasmIstio::Stats(StatsConfig {
            reporter: reporter(0, direction),
            host_header_fallback: !disable_host_header_fallback,
        }),
        // The plugin read and wrote Istio's headers both ways.
        wasm::NullVmPlugin::MetadataExchange => WasmIstio::Exchange(ExchangeConfig {
            downstream_discovery: vec![Discovery::IstioHeaders],
            upstream_discovery: vec![Discovery::IstioHeaders],
            downstream_propagation: true,
            upstream_propagation: true,
        }),
    })
}

#[cfg(test)]
mod tests;
