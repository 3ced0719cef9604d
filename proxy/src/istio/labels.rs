//! The label set of Istio's standard metrics, computed as Istio's stats filter does: the local
//! workload from node metadata, the peer from exchanged metadata, principals from the mTLS
//! certificates, the destination service from the upstream cluster (or the Host header), "unknown"
//! where a value is missing.

use std::sync::Arc;

use super::metadata::{namespace_of_principal, WorkloadMetadata};

/// Which side of a request this proxy reports from (`reporter` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// An outbound listener of a sidecar: `reporter="source"`.
    ClientSidecar,
    /// An inbound listener of a sidecar: `reporter="destination"`.
    ServerSidecar,
    /// A gateway (`SERVER_GATEWAY`): `reporter="waypoint"`.
    ServerGateway,
}

impl Reporter {
    fn label(self) -> &'static str {
        match self {
            Reporter::ClientSidecar => "source",
            Reporter::ServerSidecar => "destination",
            Reporter::ServerGateway => "waypoint",
        }
    }
}

/// `request_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
    Tcp,
}

/// The names of the peer labels, in the order Istio adds them.
const PEER_LABELS: [&str; 19] = [
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
];

/// Label names of HTTP metrics (`istio_requests_total`, ...).
pub static HTTP_LABELS: [&str; 25] = [
    "reporter",
    PEER_LABELS[0],
    PEER_LABELS[1],
    PEER_LABELS[2],
    PEER_LABELS[3],
    PEER_LABELS[4],
    PEER_LABELS[5],
    PEER_LABELS[6],
    PEER_LABELS[7],
    PEER_LABELS[8],
    PEER_LABELS[9],
    PEER_LABELS[10],
    PEER_LABELS[11],
    PEER_LABELS[12],
    PEER_LABELS[13],
    PEER_LABELS[14],
    PEER_LABELS[15],
    PEER_LABELS[16],
    PEER_LABELS[17],
    PEER_LABELS[18],
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// Label names of TCP metrics (`istio_tcp_*`).
pub static TCP_LABELS: [&str; 23] = [
    "reporter",
    PEER_LABELS[0],
    PEER_LABELS[1],
    PEER_LABELS[2],
    PEER_LABELS[3],
    PEER_LABELS[4],
    PEER_LABELS[5],
    PEER_LABELS[6],
    PEER_LABELS[7],
    PEER_LABELS[8],
    PEER_LABELS[9],
    PEER_LABELS[10],
    PEER_LABELS[11],
    PEER_LABELS[12],
    PEER_LABELS[13],
    PEER_LABELS[14],
    PEER_LABELS[15],
    PEER_LABELS[16],
    PEER_LABELS[17],
    PEER_LABELS[18],
    "request_protocol",
    "response_flags",
    "connection_security_policy",
];

/// Label values in the order of [`HTTP_LABELS`] or [`TCP_LABELS`].
pub type Values = Box<[Arc<str>]>;

/// What one request or connection contributes to its labels.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    /// The peer's exchanged metadata (downstream for server reporters, upstream for clients).
    pub peer: Option<&'a WorkloadMetadata>,
    /// The peer certificate's first URI SAN and this proxy's own.
    pub peer_san: Option<&'a str>,
    pub local_san: Option<&'a str>,
    /// The request's Host / `:authority`.
    pub host: Option<&'a str>,
    /// The upstream cluster that served it.
    pub cluster: Option<&'a str>,
    pub route_name: Option<&'a str>,
    /// `%RESPONSE_FLAGS%` (`-` when none).
    pub flags: &'a str,
}

fn v(s: &str) -> Arc<str> {
    Arc::from(s)
}

fn or(s: &str, fallback: &str) -> Arc<str> {
    if s.is_empty() {
        v(fallback)
    } else {
        v(s)
    }
}

/// The destination service (host, short name) Istio derives from the cluster: the well-known
/// passthrough clusters by name, `outbound|port|subset|host` by its host, else the Host header.
fn destination_service<'a>(facts: &Facts<'a>) -> (&'a str, &'a str) {
    let mut host = facts.host.unwrap_or_default();
    let mut name = host;
    match facts.route_name {
        Some("block_all") => return (host, "BlackHoleCluster"),
        Some("allow_any") => return (host, "PassthroughCluster"),
        _ => {}
    }
    if let Some(c) = facts.cluster {
        match c {
            "BlackHoleCluster"
            | "PassthroughCluster"
            | "InboundPassthroughCluster"
            | "InboundPassthroughClusterIpv4"
            | "InboundPassthroughClusterIpv6" => name = c,
            _ => {
                let parts: Vec<&str> = c.split('|').collect();
                if let [_, _, _, h] = parts.as_slice() {
                    if !h.is_empty() {
                        host = h;
                        name = h.split('.').next().unwrap_or(h);
                    }
                }
            }
        }
    }
    (host, name)
}

/// The 19 peer labels (see [`PEER_LABELS`]) for `reporter`, with `local` the node's metadata.
fn peer_labels(reporter: Reporter, local: &WorkloadMetadata, f: &Facts<'_>) -> Vec<Arc<str>> {
    let peer_san = f.peer_san.unwrap_or_default();
    let local_san = f.local_san.unwrap_or_default();
    let peer = f.peer;
    let peer_field = |get: fn(&WorkloadMetadata) -> &str, fallback: &str| -> Arc<str> {
        match peer {
            Some(p) if !get(p).is_empty() => v(get(p)),
            _ => v(fallback),
        }
    };
    let peer_namespace = namespace_of_principal(peer_san)
        .filter(|n| !n.is_empty())
        .or(peer.map(|p| p.namespace.as_str()).filter(|n| !n.is_empty()))
        .unwrap_or_default();
    let (service_host, service_name) = destination_service(f);
    match reporter {
        Reporter::ServerSidecar | Reporter::ServerGateway => vec![
            peer_field(|p| &p.workload, "unknown"),
            peer_field(|p| &p.canonical_name, "unknown"),
            peer_field(|p| &p.canonical_revision, "latest"),
            or(peer_namespace, "unknown"),
            or(peer_san, "unknown"),
            peer_field(|p| &p.app, "unknown"),
            peer_field(|p| &p.version, "unknown"),
            peer_field(|p| &p.cluster, "unknown"),
            v(&local.workload),
            v(&local.namespace),
            or(local_san, "unknown"),
            v(&local.app),
            v(&local.version),
            if service_host.is_empty() {
                v(&local.canonical_name)
            } else {
                v(service_host)
            },
            v(&local.canonical_name),
            v(&local.canonical_revision),
            if service_name.is_empty() {
                v(&local.canonical_name)
            } else {
                v(service_name)
            },
            v(&local.namespace),
            v(&local.cluster),
        ],
        Reporter::ClientSidecar => vec![
            v(&local.workload),
            v(&local.canonical_name),
            v(&local.canonical_revision),
            v(&local.namespace),
            or(local_san, "unknown"),
            v(&local.app),
            v(&local.version),
            v(&local.cluster),
            peer_field(|p| &p.workload, "unknown"),
            or(peer_namespace, "unknown"),
            or(peer_san, "unknown"),
            peer_field(|p| &p.app, "unknown"),
            peer_field(|p| &p.version, "unknown"),
            or(service_host, "unknown"),
            peer_field(|p| &p.canonical_name, "unknown"),
            peer_field(|p| &p.canonical_revision, "latest"),
            or(service_name, "unknown"),
            or(peer_namespace, "unknown"),
            peer_field(|p| &p.cluster, "unknown"),
        ],
    }
}

/// `connection_security_policy`: servers know whether both sides presented certificates.
fn security(reporter: Reporter, f: &Facts<'_>) -> &'static str {
    match reporter {
        Reporter::ClientSidecar => "unknown",
        _ => {
            let mtls = f.peer_san.is_some_and(|s| !s.is_empty())
                && f.local_san.is_some_and(|s| !s.is_empty());
            if mtls {
                "mutual_tls"
            } else {
                "none"
            }
        }
    }
}

/// The values of an HTTP request's labels.
pub fn http(
    reporter: Reporter,
    local: &WorkloadMetadata,
    f: &Facts<'_>,
    protocol: Protocol,
    response_code: u16,
    grpc_status: Option<u32>,
) -> Values {
    let mut out = Vec::with_capacity(HTTP_LABELS.len());
    out.push(v(reporter.label()));
    out.extend(peer_labels(reporter, local, f));
    out.push(v(match protocol {
        Protocol::Grpc => "grpc",
        _ => "http",
    }));
    out.push(v(&response_code.to_string()));
    out.push(match (protocol, grpc_status) {
        (Protocol::Grpc, Some(s)) => v(&s.to_string()),
        _ => v(""),
    });
    out.push(or(f.flags, "-"));
    out.push(v(security(reporter, f)));
    out.into_boxed_slice()
}

/// The values of a TCP connection's labels.
pub fn tcp(reporter: Reporter, local: &WorkloadMetadata, f: &Facts<'_>) -> Values {
    let mut out = Vec::with_capacity(TCP_LABELS.len());
    out.push(v(reporter.label()));
    out.extend(peer_labels(reporter, local, f));
    out.push(v("tcp"));
    out.push(or(f.flags, "-"));
    out.push(v(security(reporter, f)));
    out.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> WorkloadMetadata {
        WorkloadMetadata {
            workload: "productpage-v1".into(),
            namespace: "bookinfo".into(),
            canonical_name: "productpage".into(),
            canonical_revision: "v1".into(),
            app: "productpage".into(),
            version: "v1".into(),
            cluster: "Kubernetes".into(),
            ..Default::default()
        }
    }

    fn get<'a>(names: &[&str], values: &'a Values, name: &str) -> &'a str {
        let i = names.iter().position(|n| *n == name).expect("label name");
        &values[i]
    }

    #[test]
    fn client_sidecar_labels_from_upstream_cluster_and_peer() {
        let peer = WorkloadMetadata {
            workload: "reviews-v2".into(),
            namespace: "bookinfo".into(),
            canonical_name: "reviews".into(),
            canonical_revision: "v2".into(),
            app: "reviews".into(),
            version: "v2".into(),
            cluster: "Kubernetes".into(),
            ..Default::default()
        };
        let f = Facts {
            peer: Some(&peer),
            peer_san: Some("spiffe://cluster.local/ns/bookinfo/sa/reviews"),
            local_san: Some("spiffe://cluster.local/ns/bookinfo/sa/productpage"),
            host: Some("reviews:9080"),
            cluster: Some("outbound|9080||reviews.bookinfo.svc.cluster.local"),
            route_name: Some("default"),
            flags: "-",
        };
        let l = http(
            Reporter::ClientSidecar,
            &local(),
            &f,
            Protocol::Http,
            200,
            None,
        );
        assert_eq!(l.len(), HTTP_LABELS.len());
        let g = |n| get(&HTTP_LABELS, &l, n);
        assert_eq!(g("reporter"), "source");
        assert_eq!(g("source_workload"), "productpage-v1");
        assert_eq!(
            g("source_principal"),
            "spiffe://cluster.local/ns/bookinfo/sa/productpage"
        );
        assert_eq!(g("destination_workload"), "reviews-v2");
        assert_eq!(
            g("destination_service"),
            "reviews.bookinfo.svc.cluster.local"
        );
        assert_eq!(g("destination_service_name"), "reviews");
        assert_eq!(g("destination_service_namespace"), "bookinfo");
        assert_eq!(g("destination_canonical_revision"), "v2");
        assert_eq!(g("response_code"), "200");
        assert_eq!(g("grpc_response_status"), "");
        assert_eq!(g("connection_security_policy"), "unknown");
    }

    #[test]
    fn server_sidecar_without_peer_metadata_says_unknown() {
        let f = Facts {
            peer_san: Some("spiffe://cluster.local/ns/default/sa/sleep"),
            local_san: Some("spiffe://cluster.local/ns/bookinfo/sa/productpage"),
            host: Some("productpage:9080"),
            cluster: Some("inbound|9080||"),
            flags: "",
            ..Default::default()
        };
        let l = http(
            Reporter::ServerSidecar,
            &local(),
            &f,
            Protocol::Grpc,
            200,
            Some(0),
        );
        let g = |n| get(&HTTP_LABELS, &l, n);
        assert_eq!(g("reporter"), "destination");
        assert_eq!(g("source_workload"), "unknown");
        assert_eq!(g("source_canonical_revision"), "latest");
        assert_eq!(g("source_workload_namespace"), "default", "from the SAN");
        assert_eq!(g("destination_workload"), "productpage-v1");
        assert_eq!(
            g("destination_service"),
            "productpage:9080",
            "the Host header"
        );
        assert_eq!(g("request_protocol"), "grpc");
        assert_eq!(g("grpc_response_status"), "0");
        assert_eq!(g("response_flags"), "-");
        assert_eq!(g("connection_security_policy"), "mutual_tls");
        let plain = Facts {
            peer_san: None,
            ..f
        };
        let l = tcp(Reporter::ServerSidecar, &local(), &plain);
        assert_eq!(l.len(), TCP_LABELS.len());
        assert_eq!(get(&TCP_LABELS, &l, "connection_security_policy"), "none");
        assert_eq!(get(&TCP_LABELS, &l, "request_protocol"), "tcp");
    }
}
