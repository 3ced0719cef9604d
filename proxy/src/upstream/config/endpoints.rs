//! Balance configuration: `load_assignment` localities and endpoints into endpoint specs.

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::envoy_internal_address::AddressNameSpecifier;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, HealthStatus};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use tracing::warn;

use crate::config::{ConfigErrors, Path};

use super::Discovery;

/// Where an endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Ip(SocketAddr),
    /// A name for the DNS cluster types to resolve.
    Dns {
        name: String,
        port: u16,
    },
    /// A Unix domain socket (`pipe`): usable as a gRPC config source (Istio's `xds-grpc` and
    /// `sds-grpc`); the data path does not proxy to it yet, so it is no load-balancing host.
    Pipe(std::path::PathBuf),
    /// `envoy_internal_address`: the internal listener `listener`; `endpoint_id` tells apart
    /// endpoints of one cluster that reach the same listener.
    Internal {
        listener: String,
        endpoint_id: String,
    },
}

impl Target {
    /// `envoy://<listener>/<endpoint_id>`, as Envoy prints an internal address.
    pub fn internal_uri(&self) -> Option<String> {
        match self {
            Target::Internal {
                listener,
                endpoint_id,
            } => Some(format!("envoy://{listener}/{endpoint_id}")),
            _ => None,
        }
    }
}

/// An endpoint's `health_status` as Envoy folds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// `HEALTHY` or `UNKNOWN`.
    Healthy,
    /// `UNHEALTHY` or `TIMEOUT`.
    Unhealthy,
    /// `DRAINING`: excluded from load balancing.
    Draining,
    /// `DEGRADED`: used only when no priority has healthy hosts.
    Degraded,
}

impl Health {
    fn from_proto(v: i32) -> Self {
        match HealthStatus::try_from(v) {
            Ok(HealthStatus::Unhealthy) | Ok(HealthStatus::Timeout) => Health::Unhealthy,
            Ok(HealthStatus::Draining) => Health::Draining,
            Ok(HealthStatus::Degraded) => Health::Degraded,
            _ => Health::Healthy,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
}

/// One `lb_endpoints` entry with what it inherits from its locality.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    pub target: Target,
    /// `endpoint.hostname` (used by `auto_host_rewrite`); for DNS endpoints, the resolved name.
    pub hostname: String,
    pub weight: u32,
    pub priority: u32,
    pub locality: Locality,
    /// Index of the `endpoints[]` entry it came from: hosts of one entry form one locality.
    pub locality_index: usize,
    pub locality_weight: Option<u32>,
    pub health: Health,
    /// `envoy.transport_socket_match` labels, which pick the transport socket.
    pub socket_labels: super::socket_match::SocketLabels,
    /// The namespaces of the endpoint's metadata (`internal_upstream.no_metadata` counts the
    /// `passthrough_metadata` host entries missing from it). Empty for most endpoints.
    pub metadata_namespaces: Vec<String>,
    /// The endpoint's `tunnel` metadata (Istio's HBONE endpoints).
    pub tunnel: Option<super::internal_upstream::TunnelMetadata>,
}

/// The endpoints of `load_assignment`, plus its overprovisioning factor (1.4 unless set).
pub(super) fn from_cluster(
    c: &Cluster,
    discovery: Discovery,
    path: &Path,
    errs: &mut ConfigErrors,
) -> (Vec<EndpointSpec>, f64) {
    match &c.load_assignment {
        Some(la) => from_assignment(la, discovery, &path.field("load_assignment"), errs),
        None => (Vec::new(), 1.4),
    }
}

/// The endpoints of one `ClusterLoadAssignment` found at `la_path` (a cluster's `load_assignment`, or
/// an EDS resource), plus its overprovisioning factor.
pub(crate) fn from_assignment(
    la: &ClusterLoadAssignment,
    discovery: Discovery,
    la_path: &Path,
    errs: &mut ConfigErrors,
) -> (Vec<EndpointSpec>, f64) {
    let mut out = Vec::new();
    let la_path = la_path.clone();
    let mut overprovisioning = 1.4;
    if let Some(policy) = &la.policy {
        if let Some(f) = policy.overprovisioning_factor {
            overprovisioning = f64::from(f.value.max(1)) / 100.0;
        }
        if !policy.drop_overloads.is_empty() {
            errs.push(
                la_path.field("policy").field("drop_overloads"),
                "drop_overloads are not supported yet",
            );
        }
    }
    if !la.named_endpoints.is_empty() {
        errs.push(
            la_path.field("named_endpoints"),
            "named_endpoints are not supported yet",
        );
    }
    for (li, loc) in la.endpoints.iter().enumerate() {
        let lp = la_path.field("endpoints").index(li);
        let locality = loc
            .locality
            .as_ref()
            .map(|l| Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                sub_zone: l.sub_zone.clone(),
            })
            .unwrap_or_default();
        let locality_weight = loc.load_balancing_weight.map(|w| w.value);
        if locality_weight == Some(0) {
            errs.push(
                lp.field("load_balancing_weight"),
                "value must be greater than or equal to 1",
            );
        }
        if loc.lb_config.is_some() {
            errs.push(
                &lp,
                "leds_cluster_locality_config / load_balancer_endpoints are not supported yet",
            );
            continue;
        }
        for (ei, lbe) in loc.lb_endpoints.iter().enumerate() {
            let ep = lp.field("lb_endpoints").index(ei);
            let weight = lbe.load_balancing_weight.map(|w| w.value).unwrap_or(1);
            if weight == 0 {
                errs.push(
                    ep.field("load_balancing_weight"),
                    "value must be greater than or equal to 1",
                );
            }
            let endpoint = match &lbe.host_identifier {
                Some(HostIdentifier::Endpoint(e)) => e,
                Some(HostIdentifier::EndpointName(_)) => {
                    errs.push(
                        ep.field("endpoint_name"),
                        "named endpoints are not supported yet",
                    );
                    continue;
                }
                None => {
                    errs.push(ep.field("endpoint"), "endpoint is required");
                    continue;
                }
            };
            let ap = ep.field("endpoint").field("address");
            if !endpoint.additional_addresses.is_empty() {
                warn!(path = %ep.field("endpoint").field("additional_addresses"), "additional endpoint addresses are ignored");
            }
            let Some(target) = target(endpoint.address.as_ref(), discovery, &ap, errs) else {
                continue;
            };
            let hostname = match &target {
                Target::Dns { name, .. } if endpoint.hostname.is_empty() => name.clone(),
                _ => endpoint.hostname.clone(),
            };
            out.push(EndpointSpec {
                target,
                hostname,
                weight: weight.max(1),
                priority: loc.priority,
                locality: locality.clone(),
                locality_index: li,
                locality_weight,
                health: Health::from_proto(lbe.health_status),
                metadata_namespaces: lbe
                    .metadata
                    .iter()
                    .flat_map(|m| {
                        m.filter_metadata
                            .keys()
                            .chain(m.typed_filter_metadata.keys())
                    })
                    .cloned()
                    .collect(),
                tunnel: super::internal_upstream::TunnelMetadata::from_metadata(
                    lbe.metadata.as_ref(),
                ),
                socket_labels: super::socket_match::SocketLabels::from_metadata(
                    lbe.metadata.as_ref(),
                    loc.metadata.as_ref(),
                ),
            });
        }
    }
    if discovery == Discovery::LogicalDns
        && (la.endpoints.len() != 1 || la.endpoints[0].lb_endpoints.len() != 1)
    {
        errs.push(
            &la_path,
            "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint",
        );
    }
    (out, overprovisioning)
}

fn target(
    addr: Option<&Address>,
    discovery: Discovery,
    path: &Path,
    errs: &mut ConfigErrors,
) -> Option<Target> {
    let sa = match addr.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => sa,
        Some(address::Address::Pipe(p)) => {
            if discovery != Discovery::Static {
                errs.push(
                    path.field("pipe"),
                    "pipe (unix socket) endpoints need a STATIC cluster",
                );
                return None;
            }
            if p.path.is_empty() {
                errs.push(path.field("pipe").field("path"), "path must not be empty");
                return None;
            }
            return Some(Target::Pipe(p.path.clone().into()));
        }
        Some(address::Address::EnvoyInternalAddress(a)) => {
            let p = path.field("envoy_internal_address");
            if discovery.uses_dns() {
                errs.push(
                    &p,
                    "internal listener endpoints need a STATIC or EDS cluster",
                );
                return None;
            }
            let listener = match &a.address_name_specifier {
                Some(AddressNameSpecifier::ServerListenerName(n)) if !n.is_empty() => n.clone(),
                _ => {
                    errs.push(
                        p.field("server_listener_name"),
                        "server_listener_name is required",
                    );
                    return None;
                }
            };
            return Some(Target::Internal {
                listener,
                endpoint_id: a.endpoint_id.clone(),
            });
        }
        None => {
            errs.push(path, "endpoint address is required");
            return None;
        }
    };
    let sp = path.field("socket_address");
    if sa.protocol == socket_address::Protocol::Udp as i32 {
        errs.push(sp.field("protocol"), "UDP endpoints are not supported");
        return None;
    }
    if !sa.resolver_name.is_empty() {
        errs.push(
            sp.field("resolver_name"),
            format!("custom resolver {} is not supported", sa.resolver_name),
        );
        return None;
    }
    let port = match &sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) if *p > 0 => match u16::try_from(*p) {
            Ok(p) => p,
            Err(_) => {
                errs.push(sp.field("port_value"), format!("port {p} is out of range"));
                return None;
            }
        },
        Some(socket_address::PortSpecifier::NamedPort(n)) => {
            errs.push(
                sp.field("named_port"),
                format!("named port {n:?} is not supported"),
            );
            return None;
        }
        _ => {
            errs.push(sp.field("port_value"), "endpoint address has no port");
            return None;
        }
    };
    if sa.address.is_empty() {
        errs.push(sp.field("address"), "address is required");
        return None;
    }
    match sa.address.parse::<IpAddr>() {
        Ok(ip) => Some(Target::Ip(SocketAddr::new(ip, port))),
        Err(_) if matches!(discovery, Discovery::Static | Discovery::Eds) => {
            errs.push(
                sp.field("address"),
                format!(
                    "malformed IP address: {}. Consider setting resolver_name or setting cluster type to 'STRICT_DNS' or 'LOGICAL_DNS'",
                    sa.address
                ),
            );
            None
        }
        Err(_) => Some(Target::Dns {
            name: sa.address.clone(),
            port,
        }),
    }
}
