//! Bootstraps and resources for the suites that drive a proxy over ADS from [`ControlPlane`]: the
//! same YAML for remora and Envoy, turned into the `Any`s the control plane serves.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::control_plane::{resource, ControlPlane, SECRET};
use crate::pki::Identity;

/// Which ADS flavour the proxy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ads {
    Sotw,
    Delta,
}

/// A bootstrap whose listeners and clusters all come over ADS from `cp`, with the admin API on
/// `admin_port` (Istio's sidecar shape: one static `xds-grpc` cluster, HTTP/2 to the control plane).
pub fn bootstrap(cp: &ControlPlane, ads: Ads, admin_port: u16) -> String {
    let api = match ads {
        Ads::Sotw => "GRPC",
        Ads::Delta => "DELTA_GRPC",
    };
    let endpoint = cp.endpoint_yaml();
    format!(
        r#"node: {{ id: sidecar~127.0.0.1~app.default~default.svc.cluster.local, cluster: app.default }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }} }}
dynamic_resources:
  ads_config:
    api_type: {api}
    transport_api_version: V3
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds-grpc }} }}]
    set_node_on_first_message_only: true
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {endpoint} }} }}] }}]
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
"#
    )
}

const ADS: &str = "{ ads: {}, resource_api_version: V3 }";

/// The HTTP connection manager as a network filter (YAML flow), with `fields` (`rds: …` or
/// `route_config: …`, then any other) after its stat prefix.
fn hcm(stat_prefix: &str, fields: &str) -> String {
    format!(
        r#"{{ name: envoy.filters.network.http_connection_manager, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: {stat_prefix}, {fields}, http_filters: [{{ name: envoy.filters.http.router, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}] }} }}"#
    )
}

fn rds(route_config_name: &str) -> String {
    format!("rds: {{ route_config_name: {route_config_name}, config_source: {ADS} }}")
}

/// A listener on 127.0.0.1:`port` with one filter chain (YAML flow).
fn listener_with(name: &str, port: u16, chain: &str) -> (String, Any) {
    resource::<Listener>(
        name,
        &format!(
            "name: {name}\naddress: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\nfilter_chains: [{chain}]\n"
        ),
    )
}

/// An HTTP listener on 127.0.0.1:`port` whose routes come over ADS (RDS `route_config_name`).
pub fn rds_listener(
    name: &str,
    port: u16,
    stat_prefix: &str,
    route_config_name: &str,
) -> (String, Any) {
    let chain = format!(
        "{{ filters: [{}] }}",
        hcm(stat_prefix, &rds(route_config_name))
    );
    listener_with(name, port, &chain)
}

/// An HTTP listener on 127.0.0.1:`port` with an inline route table sending everything to
/// `cluster`.
pub fn http_listener(name: &str, port: u16, stat_prefix: &str, cluster: &str) -> (String, Any) {
    let routes = format!(
        r#"route_config: {{ virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: {cluster} }} }}] }}] }}"#
    );
    let chain = format!("{{ filters: [{}] }}", hcm(stat_prefix, &routes));
    listener_with(name, port, &chain)
}

/// `tls_certificate_sds_secret_configs` and `validation_context_sds_secret_config` naming ADS
/// secrets: a `common_tls_context` (YAML flow).
fn sds_context(cert: &str, roots: &str) -> String {
    format!(
        "{{ tls_certificate_sds_secret_configs: [{{ name: {cert}, sds_config: {ADS} }}], \
         validation_context_sds_secret_config: {{ name: {roots}, sds_config: {ADS} }} }}"
    )
}

/// A TLS listener on 127.0.0.1:`port` requiring a client certificate: its certificate is the SDS
/// secret `cert` and its client roots the secret `roots`, both over ADS; routes by RDS `routes`,
/// XFCC set from the client certificate (`SANITIZE_SET`).
pub fn tls_rds_listener(name: &str, port: u16, cert: &str, roots: &str) -> (String, Any) {
    let tls = format!(
        r#"{{ name: envoy.transport_sockets.tls, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, require_client_certificate: true, common_tls_context: {} }} }}"#,
        sds_context(cert, roots)
    );
    let fields = format!(
        "{}, forward_client_cert_details: SANITIZE_SET",
        rds("routes")
    );
    let chain = format!(
        "{{ filters: [{}], transport_socket: {tls} }}",
        hcm(name, &fields)
    );
    listener_with(name, port, &chain)
}

/// A tcp_proxy listener on 127.0.0.1:`port` to `cluster`.
pub fn tcp_listener(name: &str, port: u16, cluster: &str) -> (String, Any) {
    let chain = format!(
        r#"{{ filters: [{{ name: envoy.filters.network.tcp_proxy, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: {name}, cluster: {cluster} }} }}] }}"#
    );
    listener_with(name, port, &chain)
}

/// An EDS cluster whose assignment comes over ADS.
pub fn eds_cluster(name: &str) -> (String, Any) {
    resource::<Cluster>(
        name,
        &format!(
            "name: {name}\ntype: EDS\nconnect_timeout: 1s\neds_cluster_config: {{ eds_config: {ADS} }}\n"
        ),
    )
}

/// A STATIC HTTP/1.1 cluster to 127.0.0.1:`port` over mTLS: SNI `sni`, the client certificate from
/// SDS secret `cert` and the server roots from `roots`, over ADS; a connection carries at most
/// `max_requests` requests, so new handshakes keep happening.
pub fn mtls_cluster(
    name: &str,
    port: u16,
    sni: &str,
    cert: &str,
    roots: &str,
    max_requests: u32,
) -> (String, Any) {
    let yaml = format!(
        r#"{base}typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    common_http_protocol_options: {{ max_requests_per_connection: {max_requests} }}
    explicit_http_config: {{ http_protocol_options: {{}} }}
transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    sni: {sni}
    common_tls_context: {ctx}
"#,
        base = static_cluster_yaml(name, "127.0.0.1", port),
        ctx = sds_context(cert, roots)
    );
    resource::<Cluster>(name, &yaml)
}

/// A STATIC cluster with one endpoint.
pub fn static_cluster(name: &str, address: &str, port: u16) -> (String, Any) {
    resource::<Cluster>(name, &static_cluster_yaml(name, address, port))
}

fn static_cluster_yaml(name: &str, address: &str, port: u16) -> String {
    format!(
        r#"name: {name}
type: STATIC
connect_timeout: 1s
load_assignment:
  cluster_name: {name}
  endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: "{address}", port_value: {port} }} }} }} }}] }}]
"#
    )
}

/// An EDS assignment of loopback `ports` to `cluster`.
pub fn endpoints(cluster: &str, ports: &[u16]) -> (String, Any) {
    let lb: Vec<String> = ports
        .iter()
        .map(|p| {
            format!("{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }} }} }}")
        })
        .collect();
    resource::<ClusterLoadAssignment>(
        cluster,
        &format!(
            "cluster_name: {cluster}\nendpoints: [{{ lb_endpoints: [{}] }}]\n",
            lb.join(", ")
        ),
    )
}

fn secret(s: Secret) -> (String, Any) {
    (
        s.name.clone(),
        Any {
            type_url: SECRET.to_string(),
            value: s.encode_to_vec(),
        },
    )
}

/// An SDS `tls_certificate` secret carrying `id`'s chain and key inline.
pub fn certificate_secret(name: &str, id: &Identity) -> (String, Any) {
    secret(crate::sds_server::certificate(
        name,
        &id.cert_pem(),
        &id.key_pem(),
    ))
}

/// An SDS `validation_context` secret trusting the CA certificate at `ca_pem`.
pub fn validation_secret(name: &str, ca_pem: &std::path::Path) -> (String, Any) {
    let ca = std::fs::read_to_string(ca_pem).expect("read CA");
    secret(crate::sds_server::validation(name, &ca))
}
