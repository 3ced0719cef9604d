//! A filter chain's network filters → the stack that serves its connections.

use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::{filter, FilterChain};
use envoy_types::pb::envoy::extensions::filters::network::{
    http_connection_manager::v3::HttpConnectionManager, tcp_proxy::v3::TcpProxy,
};
use prost::Name;

use super::hcm::HcmConfig;
use super::istio::{self as istio_config, StatsConfig, TcpExchangeConfig};
use super::parse::{any_type_name, unpack_any};
use super::tcp_proxy::TcpProxyConfig;
use super::{hcm, tcp_proxy, BuildContext, ConfigError, ConfigErrors, Path};
use crate::http::proxy::HttpRuntime;
use crate::http::stats::HttpStats;
use crate::istio::exchange::ExchangeStats;
use crate::istio::{HttpTelemetry, TcpTelemetry};
use crate::network::{
    rbac as network_rbac, set_filter_state as network_set_filter_state, NetworkFilters,
};
use crate::tcp::{TcpExchange, TcpRuntime, TcpStats};
use crate::tls::{self, ServerTls};

const HCM_NAME: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY_NAME: &str = "envoy.filters.network.tcp_proxy";

/// The terminal network filter of a chain, which owns the connection once the chain is picked, with
/// what its connections share (stats handles, clusters).
#[derive(Clone)]
pub enum NetworkStack {
    Http(Arc<HttpRuntime>),
    Tcp(Arc<TcpRuntime>),
}

impl std::fmt::Debug for NetworkStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetworkStack::Http(rt) => write!(f, "http_connection_manager({})", rt.cfg.stat_prefix),
            NetworkStack::Tcp(rt) => write!(f, "tcp_proxy({})", rt.cfg.stat_prefix),
        }
    }
}

/// What a filter chain serves with: its TLS context, if it has a `transport_socket`, and the stack
/// its connections are handed to.
#[derive(Debug, Clone)]
pub struct ChainStack {
    pub tls: Option<Arc<ServerTls>>,
    /// The filters before the terminal one (network RBAC).
    pub filters: NetworkFilters,
    pub stack: NetworkStack,
}

fn http_runtime(cfg: HcmConfig, ctx: &BuildContext<'_>) -> NetworkStack {
    let istio = (!cfg.istio.is_empty()).then(|| HttpTelemetry {
        local: ctx.istio.clone(),
        cfg: cfg.istio.clone(),
    });
    NetworkStack::Http(Arc::new(HttpRuntime {
        istio,
        stats: HttpStats::new(ctx.stats, &cfg.stat_prefix),
        filters: crate::http::filter::HttpFilters::new(
            &cfg.filters,
            ctx.stats,
            &cfg.stat_prefix,
            ctx.clusters,
            ctx.cluster_stats,
        ),
        cfg: Arc::new(cfg),
        clusters: ctx.clusters.clone(),
        cluster_stats: ctx.cluster_stats.clone(),
    }))
}

fn tcp_runtime(
    cfg: TcpProxyConfig,
    stats: Option<StatsConfig>,
    exchange: Option<TcpExchangeConfig>,
    ctx: &BuildContext<'_>,
) -> NetworkStack {
    NetworkStack::Tcp(Arc::new(TcpRuntime {
        exchange: TcpExchange {
            downstream: exchange,
            local: ctx.istio.clone(),
            stats: ExchangeStats::new(ctx.stats),
        },
        istio: stats.map(|cfg| TcpTelemetry {
            local: ctx.istio.clone(),
            cfg,
        }),
        stats: TcpStats::new(ctx.stats, &cfg.stat_prefix),
        cfg: Arc::new(cfg),
        clusters: ctx.clusters.clone(),
    }))
}

/// Builds the TLS context and stack of one filter chain (`path` points at the chain).
pub fn build_chain(
    chain: &FilterChain,
    path: &Path,
    ctx: &BuildContext<'_>,
) -> Result<ChainStack, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let mut server_tls = None;
    if let Some(ts) = &chain.transport_socket {
        let tpath = path.field("transport_socket");
        let timeout = chain
            .transport_socket_connect_timeout
            .as_ref()
            .map(super::to_std)
            .filter(|d| !d.is_zero());
        match tls::downstream_context(ts, &tpath, ctx.opts).and_then(|c| {
            c.map(|c| ServerTls::from_proto(&c, &tpath.field("typed_config"), ctx.secrets, timeout))
                .transpose()
        }) {
            Ok(t) => server_tls = t,
            Err(e) => errors.extend(e),
        }
    }
    let fpath = path.field("filters");
    if chain.filters.is_empty() {
        errors.push(
            fpath.clone(),
            "a filter chain needs a terminal filter (http_connection_manager or tcp_proxy)",
        );
    }
    let mut stack = None;
    // `istio.stats` comes before the tcp_proxy it reports on.
    let mut istio_stats = None;
    // So does the TCP metadata exchange, which takes its bytes off the front of the stream.
    let mut tcp_exchange: Option<(TcpExchangeConfig, Path)> = None;
    let mut filters = NetworkFilters::default();
    for (i, f) in chain.filters.iter().enumerate() {
        let p = fpath.index(i);
        let any = match &f.config_type {
            Some(filter::ConfigType::TypedConfig(any)) => any,
            Some(filter::ConfigType::ConfigDiscovery(_)) => {
                errors.push(
                    p.field("config_discovery"),
                    "filter config discovery is not supported yet",
                );
                continue;
            }
            None => {
                errors.push(
                    p.field("typed_config"),
                    format!("filter \"{}\" needs a typed_config", f.name),
                );
                continue;
            }
        };
        let type_name = any_type_name(any);
        let tpath = p.field("typed_config");
        if istio_config::is_tcp_exchange(any) {
            match istio_config::tcp_exchange(any, &p, ctx.opts) {
                Ok(c) => tcp_exchange = Some((c, p.clone())),
                Err(e) => errors.extend(e),
            }
            continue;
        }
        // Istio's `istio_authn`: nothing to configure (an empty message).
        if istio_config::is_network_authn(&f.name, any) {
            match istio_config::network_authn(any, &p, ctx.opts) {
                Ok(()) => filters.set_istio_authn(),
                Err(e) => errors.extend(e),
            }
            continue;
        }
        if f.name == network_rbac::NAME || type_name == network_rbac::TYPE {
            let built = unpack_any(any, ctx.opts)
                .map_err(|e| errors.push(&tpath, e.message))
                .ok()
                .and_then(|c| {
                    network_rbac::NetworkRbac::from_proto(&c, &tpath, ctx.stats, &mut errors)
                });
            if let Some(rbac) = built {
                filters.push_rbac(rbac);
            }
            continue;
        }
        if istio_config::is_wasm(Some(any)) {
            match istio_config::wasm(any, &p, ctx.opts, ctx.direction) {
                Ok(istio_config::WasmIstio::Stats(c)) => istio_stats = Some(c),
                Ok(istio_config::WasmIstio::Exchange(_)) => errors.push(
                    &p,
                    "envoy.wasm.metadata_exchange is an HTTP filter; a TCP chain uses istio.metadata_exchange (envoy.tcp.metadataexchange)",
                ),
                Err(e) => errors.extend(e),
            }
            continue;
        }
        if f.name == network_set_filter_state::NAME || type_name == network_set_filter_state::TYPE {
            if let Ok(c) = unpack_any(any, ctx.opts).map_err(|e| errors.push(&tpath, e.message)) {
                let built =
                    network_set_filter_state::SetFilterState::from_proto(&c, &tpath, &mut errors);
                filters.push_set_filter_state(built);
            }
            continue;
        }
        if istio_config::is_stats(&f.name, Some(any)) {
            match istio_config::stats(Some(any), &p, ctx.opts, ctx.direction) {
                Ok(c) => istio_stats = Some(c),
                Err(e) => errors.extend(e),
            }
            continue;
        }
        let built = if f.name == HCM_NAME || type_name == HttpConnectionManager::full_name() {
            let built = unpack_any::<HttpConnectionManager>(any, ctx.opts)
                .map_err(|e| ConfigErrors::from(ConfigError::new(&tpath, e.message)))
                .and_then(|m| hcm::build(&m, &tpath, ctx))
                .map(|c| http_runtime(c, ctx));
            if let Some((_, xpath)) = tcp_exchange.take() {
                // An HTTP chain learns its peer from headers; Istio puts this filter on TCP chains.
                errors.push(
                    xpath,
                    "the TCP metadata exchange (envoy.tcp.metadataexchange.config.MetadataExchange) is supported before tcp_proxy only",
                );
            }
            built
        } else if f.name == TCP_PROXY_NAME || type_name == TcpProxy::full_name() {
            unpack_any::<TcpProxy>(any, ctx.opts)
                .map_err(|e| ConfigErrors::from(ConfigError::new(&tpath, e.message)))
                .and_then(|m| tcp_proxy::build(&m, &tpath, ctx))
                .map(|c| tcp_runtime(c, istio_stats, tcp_exchange.take().map(|(c, _)| c), ctx))
        } else {
            errors.push(&p, format!("unknown filter \"{}\" ({type_name})", f.name));
            continue;
        };
        match built {
            Ok(s) => {
                if i + 1 != chain.filters.len() {
                    errors.push(
                        &p,
                        format!(
                            "terminal filter \"{}\" must be the last in the chain",
                            f.name
                        ),
                    );
                }
                stack = Some(s);
            }
            Err(e) => errors.extend(e),
        }
    }
    match stack {
        Some(stack) if errors.is_empty() => Ok(ChainStack {
            tls: server_tls,
            filters,
            stack,
        }),
        _ => Err(errors),
    }
}
