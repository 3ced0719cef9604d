//! Balance and connect configuration: an Envoy v3 `Cluster` validated into the model the data path
//! reads. Everything that would change behaviour but is not implemented is an error naming its path;
//! fields with no effect on a plaintext static proxy are accepted (some with a warning).

pub(crate) mod endpoints;
mod filters;
pub mod internal_upstream;
mod lb;
mod protocol;
pub mod socket_match;

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, DnsLookupFamily,
};
use envoy_types::pb::envoy::config::cluster::v3::{circuit_breakers, Cluster};
use envoy_types::pb::envoy::config::core::v3::RoutingPriority;
use tracing::warn;

use crate::config::parse::any_type_name;
use crate::config::{ConfigErrors, Path};
use crate::secrets::SecretStore;
use crate::tls::ClientTls;

use super::circuit::Limits;
pub use endpoints::{EndpointSpec, Health, Locality, Target};
pub use lb::LbPolicy;
pub use protocol::{Http2Settings, Protocol, ProtocolSpec};

/// What an `auto_config` cluster offers over TLS, as Envoy does.
const AUTO_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// How the cluster finds its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    Static,
    /// Every address of every endpoint's name is a host.
    StrictDns,
    /// One logical host per cluster, connecting to the first address of the latest resolution.
    LogicalDns,
    /// The downstream connection's original destination (or a request header) is the host.
    OriginalDst,
    /// Endpoints come from EDS (`ClusterLoadAssignment`s named by [`ClusterSpec::eds_service_name`]).
    Eds,
}

impl Discovery {
    pub fn uses_dns(self) -> bool {
        matches!(self, Discovery::StrictDns | Discovery::LogicalDns)
    }
}

/// `dns_lookup_family`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupFamily {
    /// IPv6 addresses when there are any, else IPv4.
    Auto,
    V4Only,
    V6Only,
    /// IPv4 addresses when there are any, else IPv6.
    V4Preferred,
    All,
}

/// When to resolve again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DnsSettings {
    pub family: LookupFamily,
    pub refresh_rate: Duration,
    /// `dns_failure_refresh_rate`: exponential backoff between these after failures.
    pub failure_base: Option<Duration>,
    pub failure_max: Option<Duration>,
    pub jitter: Option<Duration>,
}

/// `upstream_connection_options.tcp_keepalive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

/// A validated cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub name: String,
    /// The stats prefix (`alt_stat_name` if set), without `cluster.` and the trailing dot.
    pub stat_name: String,
    pub discovery: Discovery,
    pub dns: DnsSettings,
    pub lb: LbPolicy,
    /// `common_lb_config.locality_weighted_lb_config`: pick a locality by weight, then a host in it.
    pub locality_weighted: bool,
    /// `common_lb_config.healthy_panic_threshold` in percent (Envoy's default 50).
    pub panic_threshold: f64,
    pub connect_timeout: Duration,
    pub protocol: ProtocolSpec,
    pub default_limits: Limits,
    pub high_limits: Limits,
    pub keepalive: Option<Keepalive>,
    pub endpoints: Vec<EndpointSpec>,
    /// EDS clusters: the `ClusterLoadAssignment` name to take endpoints from
    /// (`eds_cluster_config.service_name`, else the cluster's name). Empty for other types.
    pub eds_service_name: String,
    /// `load_assignment.policy.overprovisioning_factor` as a ratio (1.4 by default).
    pub overprovisioning: f64,
    /// `transport_socket` `envoy.transport_sockets.tls`.
    pub tls: Option<Arc<ClientTls>>,
    /// `transport_socket_matches`, tried in order against each endpoint's labels before `tls`.
    pub socket_matches: Vec<socket_match::SocketMatch>,
    /// ORIGINAL_DST clusters: `original_dst_lb_config` and `cleanup_interval`.
    pub original_dst: Option<super::original_dst::OriginalDstSpec>,
    /// `upstream_bind_config.source_address`: where upstream connections come from.
    pub source_address: Option<std::net::SocketAddr>,
    /// `filters`: Istio's TCP metadata exchange, run by tcp_proxy on connections that negotiated
    /// its ALPN.
    pub exchange: Option<crate::config::istio::TcpExchangeConfig>,
    /// `transport_socket` `envoy.transport_sockets.internal_upstream`.
    pub internal_upstream: Option<internal_upstream::InternalUpstream>,
}

/// The real type name behind an extension's `typed_config`.
pub(crate) fn type_of(a: &envoy_types::pb::google::protobuf::Any) -> String {
    any_type_name(a)
}

pub(crate) use crate::config::to_std as duration;

impl ClusterSpec {
    /// The TLS context for an endpoint with `labels`: its transport socket match's, else the
    /// cluster's; `None` is plaintext.
    pub fn tls_for(&self, labels: &socket_match::SocketLabels) -> Option<&Arc<ClientTls>> {
        match socket_match::pick(&self.socket_matches, labels) {
            Some(m) => m.tls.as_ref(),
            None => self.tls.as_ref(),
        }
    }

    /// Every TLS context the cluster may connect with.
    pub fn tls_contexts(&self) -> impl Iterator<Item = &Arc<ClientTls>> {
        self.tls
            .iter()
            .chain(self.socket_matches.iter().filter_map(|m| m.tls.as_ref()))
    }

    pub fn from_proto(c: &Cluster, path: &Path) -> Result<ClusterSpec, ConfigErrors> {
        Self::from_proto_with_secrets(c, path, &SecretStore::new(&crate::stats::Store::new()))
    }

    /// Validates a cluster, resolving its TLS context's secrets in `secrets`.
    #[allow(deprecated)]
    pub fn from_proto_with_secrets(
        c: &Cluster,
        path: &Path,
        secrets: &SecretStore,
    ) -> Result<ClusterSpec, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        if c.name.is_empty() {
            errs.push(path.field("name"), "cluster name must not be empty");
        }
        let discovery = discovery(c, path, &mut errs);

        let connect_timeout = c
            .connect_timeout
            .as_ref()
            .map(duration)
            .unwrap_or(Duration::from_secs(5));
        if connect_timeout.is_zero() {
            errs.push(
                path.field("connect_timeout"),
                "connect_timeout must be greater than 0s",
            );
        }

        let (lb, locality_weighted, panic_threshold) = lb::from_cluster(c, path, &mut errs);
        let protocol = protocol::from_cluster(c, path, &mut errs);
        let (default_limits, high_limits) = thresholds(c, path, &mut errs);
        let alpn = protocol.auto.then_some(AUTO_ALPN);
        let internal_upstream = c
            .transport_socket
            .as_ref()
            .filter(|ts| internal_upstream::is_internal_upstream(ts))
            .and_then(|ts| {
                internal_upstream::from_proto(
                    ts,
                    c.metadata.as_ref(),
                    &path.field("transport_socket"),
                    &mut errs,
                )
            });
        // Under internal_upstream, its wrapped socket is the one the connections speak.
        let (socket, socket_path) = match &internal_upstream {
            Some(iu) => (
                Some(&iu.transport_socket),
                path.field("transport_socket")
                    .field("typed_config")
                    .field("transport_socket"),
            ),
            None => (c.transport_socket.as_ref(), path.field("transport_socket")),
        };
        let tls = socket
            .and_then(|ts| socket_match::client_tls(ts, &socket_path, secrets, alpn, &mut errs));
        let socket_matches = socket_match::from_cluster(c, path, secrets, alpn, &mut errs);
        let dns = dns_settings(c, path, discovery.unwrap_or(Discovery::Static));
        unsupported(c, path, &mut errs);
        let exchange = filters::from_cluster(c, path, &mut errs);
        let original_dst = original_dst(c, discovery, path, &mut errs);
        let source_address = c
            .upstream_bind_config
            .as_ref()
            .and_then(|b| bind_config(b, &path.field("upstream_bind_config"), &mut errs));

        let mut eds_service_name = String::new();
        let (endpoints, overprovisioning) = match discovery {
            // EDS clusters take their endpoints from EDS only; a `load_assignment` is ignored, as
            // Envoy does.
            Some(Discovery::Eds) => {
                match &c.eds_cluster_config {
                    Some(eds) if eds.eds_config.is_some() => {
                        eds_service_name = if eds.service_name.is_empty() {
                            c.name.clone()
                        } else {
                            eds.service_name.clone()
                        };
                    }
                    _ => errs.push(
                        path.field("eds_cluster_config").field("eds_config"),
                        "EDS clusters need eds_cluster_config.eds_config",
                    ),
                }
                (Vec::new(), 1.4)
            }
            Some(d) => endpoints::from_cluster(c, d, path, &mut errs),
            None => (Vec::new(), 1.4),
        };

        let keepalive = c
            .upstream_connection_options
            .as_ref()
            .and_then(|o| o.tcp_keepalive.as_ref())
            .map(|k| Keepalive {
                probes: k.keepalive_probes.map(|v| v.value),
                time: k
                    .keepalive_time
                    .map(|v| Duration::from_secs(u64::from(v.value))),
                interval: k
                    .keepalive_interval
                    .map(|v| Duration::from_secs(u64::from(v.value))),
            });

        if !c.health_checks.is_empty() {
            warn!(cluster = %c.name, path = %path.field("health_checks"), "active health checks are not run; endpoints keep their configured health_status");
        }
        if c.outlier_detection.is_some() {
            warn!(cluster = %c.name, path = %path.field("outlier_detection"), "outlier detection is ignored");
        }

        let stat_name = if c.alt_stat_name.is_empty() {
            c.name.clone()
        } else {
            c.alt_stat_name.clone()
        };
        errs.finish(ClusterSpec {
            name: c.name.clone(),
            stat_name,
            discovery: discovery.unwrap_or(Discovery::Static),
            dns,
            lb,
            locality_weighted,
            panic_threshold,
            connect_timeout,
            protocol,
            default_limits,
            high_limits,
            keepalive,
            endpoints,
            eds_service_name,
            overprovisioning,
            tls,
            socket_matches,
            exchange,
            original_dst,
            source_address,
            internal_upstream,
        })
    }
}

/// ORIGINAL_DST needs `lb_policy: CLUSTER_PROVIDED` and no endpoints, and CLUSTER_PROVIDED needs
/// ORIGINAL_DST (Envoy's rules).
fn original_dst(
    c: &Cluster,
    discovery: Option<Discovery>,
    path: &Path,
    errs: &mut ConfigErrors,
) -> Option<super::original_dst::OriginalDstSpec> {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{LbConfig, LbPolicy as PbLbPolicy};
    let provided = c.lb_policy == PbLbPolicy::ClusterProvided as i32;
    if discovery != Some(Discovery::OriginalDst) {
        if provided && discovery.is_some() {
            errs.push(
                path.field("lb_policy"),
                "lb_policy CLUSTER_PROVIDED is only valid for cluster type ORIGINAL_DST",
            );
        }
        if matches!(c.lb_config, Some(LbConfig::OriginalDstLbConfig(_))) {
            errs.push(
                path.field("original_dst_lb_config"),
                "original_dst_lb_config is only valid for cluster type ORIGINAL_DST",
            );
        }
        return None;
    }
    if !provided {
        let name = PbLbPolicy::try_from(c.lb_policy)
            .map(|p| p.as_str_name().to_string())
            .unwrap_or_else(|_| c.lb_policy.to_string());
        errs.push(
            path.field("lb_policy"),
            format!(
                "lb_policy {name} is not valid for cluster type ORIGINAL_DST; only CLUSTER_PROVIDED is allowed"
            ),
        );
    }
    if c.load_assignment
        .as_ref()
        .is_some_and(|la| la.endpoints.iter().any(|e| !e.lb_endpoints.is_empty()))
    {
        errs.push(
            path.field("load_assignment"),
            "ORIGINAL_DST clusters must have no endpoints: the destination is the host",
        );
    }
    let cfg = match &c.lb_config {
        Some(LbConfig::OriginalDstLbConfig(o)) => Some(o),
        _ => None,
    };
    let cpath = path.field("original_dst_lb_config");
    let header = match cfg
        .map(|o| o.http_header_name.as_str())
        .filter(|h| !h.is_empty())
    {
        Some(h) => match http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                errs.push(
                    cpath.field("http_header_name"),
                    format!("invalid header name {h:?}"),
                );
                super::original_dst::DEFAULT_HEADER
            }
        },
        None => super::original_dst::DEFAULT_HEADER,
    };
    let port_override =
        cfg.and_then(|o| o.upstream_port_override)
            .and_then(|p| match u16::try_from(p.value) {
                Ok(v) if v > 0 => Some(v),
                _ => {
                    errs.push(
                        cpath.field("upstream_port_override"),
                        format!("port {} is out of range", p.value),
                    );
                    None
                }
            });
    if cfg.is_some_and(|o| o.metadata_key.is_some()) {
        errs.push(
            cpath.field("metadata_key"),
            "metadata_key (destination from dynamic metadata) is not supported yet",
        );
    }
    Some(super::original_dst::OriginalDstSpec {
        use_http_header: cfg.is_some_and(|o| o.use_http_header),
        header,
        port_override,
        cleanup_interval: c
            .cleanup_interval
            .as_ref()
            .map(duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(5)),
    })
}

/// `upstream_bind_config`: a fixed source address (Istio binds inbound passthrough to 127.0.0.6).
fn bind_config(
    b: &envoy_types::pb::envoy::config::core::v3::BindConfig,
    path: &Path,
    errs: &mut ConfigErrors,
) -> Option<std::net::SocketAddr> {
    use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
    #[allow(deprecated)]
    let extra = !b.additional_source_addresses.is_empty()
        || !b.extra_source_addresses.is_empty()
        || b.local_address_selector.is_some()
        || !b.socket_options.is_empty();
    if extra {
        errs.push(
            path.clone(),
            "only upstream_bind_config.source_address (and freebind) are supported",
        );
    }
    let sa = b.source_address.as_ref()?;
    let spath = path.field("source_address");
    let ip: std::net::IpAddr = match sa.address.parse() {
        Ok(ip) => ip,
        Err(_) => {
            errs.push(
                spath.field("address"),
                format!("{:?} is not an IP address", sa.address),
            );
            return None;
        }
    };
    let port = match sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) => match u16::try_from(p) {
            Ok(p) => p,
            Err(_) => {
                errs.push(
                    spath.field("port_value"),
                    format!("port {p} is out of range"),
                );
                return None;
            }
        },
        _ => 0,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

fn discovery(c: &Cluster, path: &Path, errs: &mut ConfigErrors) -> Option<Discovery> {
    match &c.cluster_discovery_type {
        None => Some(Discovery::Static),
        Some(ClusterDiscoveryType::Type(t)) => match DiscoveryType::try_from(*t) {
            Ok(DiscoveryType::Static) => Some(Discovery::Static),
            Ok(DiscoveryType::StrictDns) => Some(Discovery::StrictDns),
            Ok(DiscoveryType::LogicalDns) => Some(Discovery::LogicalDns),
            Ok(DiscoveryType::OriginalDst) => Some(Discovery::OriginalDst),
            Ok(DiscoveryType::Eds) => Some(Discovery::Eds),
            Err(_) => {
                errs.push(path.field("type"), format!("unknown cluster type {t}"));
                None
            }
        },
        Some(ClusterDiscoveryType::ClusterType(custom)) => {
            let kind = custom
                .typed_config
                .as_ref()
                .map(type_of)
                .unwrap_or_default();
            errs.push(
                path.field("cluster_type"),
                format!(
                    "cluster type extension {} ({kind}) is not supported yet",
                    custom.name
                ),
            );
            None
        }
    }
}

fn limits_of(t: &circuit_breakers::Thresholds, path: &Path, errs: &mut ConfigErrors) -> Limits {
    let d = Limits::default();
    if t.retry_budget.is_some() {
        errs.push(
            path.field("retry_budget"),
            "circuit breaker retry_budget is not supported yet",
        );
    }
    let v = |w: Option<envoy_types::pb::google::protobuf::UInt32Value>, default: u64| {
        w.map(|w| u64::from(w.value)).unwrap_or(default)
    };
    Limits {
        max_connections: v(t.max_connections, d.max_connections),
        max_pending_requests: v(t.max_pending_requests, d.max_pending_requests),
        max_requests: v(t.max_requests, d.max_requests),
        max_retries: v(t.max_retries, d.max_retries),
        track_remaining: t.track_remaining,
    }
}

fn thresholds(c: &Cluster, path: &Path, errs: &mut ConfigErrors) -> (Limits, Limits) {
    let mut default = Limits::default();
    let mut high = Limits::default();
    let Some(cb) = &c.circuit_breakers else {
        return (default, high);
    };
    let base = path.field("circuit_breakers");
    for (i, t) in cb.thresholds.iter().enumerate() {
        let p = base.field("thresholds").index(i);
        let limits = limits_of(t, &p, errs);
        // Envoy keeps the last entry of each priority.
        if t.priority == RoutingPriority::High as i32 {
            high = limits;
        } else {
            default = limits;
        }
    }
    if !cb.per_host_thresholds.is_empty() {
        errs.push(
            base.field("per_host_thresholds"),
            "per-host circuit breakers are not supported yet",
        );
    }
    (default, high)
}

#[allow(deprecated)]
fn dns_settings(c: &Cluster, path: &Path, discovery: Discovery) -> DnsSettings {
    let family = match DnsLookupFamily::try_from(c.dns_lookup_family) {
        Ok(DnsLookupFamily::V4Only) => LookupFamily::V4Only,
        Ok(DnsLookupFamily::V6Only) => LookupFamily::V6Only,
        Ok(DnsLookupFamily::V4Preferred) => LookupFamily::V4Preferred,
        Ok(DnsLookupFamily::All) => LookupFamily::All,
        Ok(DnsLookupFamily::Auto) | Err(_) => LookupFamily::Auto,
    };
    let refresh_rate = c
        .dns_refresh_rate
        .as_ref()
        .map(duration)
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(5));
    let failure = c.dns_failure_refresh_rate.as_ref();
    if discovery.uses_dns() {
        if c.respect_dns_ttl {
            warn!(cluster = %c.name, path = %path.field("respect_dns_ttl"), "the system resolver does not report TTLs; dns_refresh_rate is used");
        }
        if !c.dns_resolvers.is_empty()
            || c.typed_dns_resolver_config.is_some()
            || c.dns_resolution_config.is_some()
        {
            warn!(cluster = %c.name, path = %path, "custom DNS resolvers are ignored; the system resolver is used");
        }
    }
    DnsSettings {
        family,
        refresh_rate,
        failure_base: failure.and_then(|f| f.base_interval.as_ref()).map(duration),
        failure_max: failure.and_then(|f| f.max_interval.as_ref()).map(duration),
        jitter: c.dns_jitter.as_ref().map(duration),
    }
}

fn unsupported(c: &Cluster, path: &Path, errs: &mut ConfigErrors) {
    if c.transport_socket_matcher.is_some() {
        errs.push(
            path.field("transport_socket_matcher"),
            "transport_socket_matcher is not supported yet",
        );
    }
    if c.lb_subset_config.is_some() {
        errs.push(
            path.field("lb_subset_config"),
            "lb_subset_config (subset load balancing) is not supported yet",
        );
    }
    if let Some(u) = &c.upstream_config {
        errs.push(
            path.field("upstream_config"),
            format!("upstream_config {} is not supported yet", u.name),
        );
    }
    if c.connection_pool_per_downstream_connection {
        errs.push(
            path.field("connection_pool_per_downstream_connection"),
            "connection_pool_per_downstream_connection is not supported yet",
        );
    }
    if c.lrs_server.is_some() {
        warn!(cluster = %c.name, path = %path.field("lrs_server"), "load reporting is not supported; ignored");
    }
    if c.preconnect_policy.is_some() {
        warn!(cluster = %c.name, path = %path.field("preconnect_policy"), "preconnecting is not supported; ignored");
    }
}
