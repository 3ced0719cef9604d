//! Envoy v3 bootstraps, the one configuration that Envoy and remora both run unchanged.

use std::fmt::Write;

use super::{Role, Setup};

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const UPSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const DOWNSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";

/// The bootstrap for `role`, with the admin interface on `admin_port`.
pub fn bootstrap(role: &Role, setup: &Setup<'_>, admin_port: u16) -> String {
    if let Role::Xds { ads, .. } = role {
        return xds_bootstrap(*ads, admin_port);
    }
    let mut y = format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }}\n\
         static_resources:\n  listeners:\n"
    );
    let backend = setup.backend_http.port();
    match role {
        Role::Single { http1, h2c, tcp } => {
            http_listener(&mut y, "http1", *http1, "HTTP1", "", &all_to("backend"));
            http_listener(&mut y, "h2c", *h2c, "HTTP2", "", &all_to("backend"));
            tcp_listener(&mut y, *tcp, "backend_tcp");
            y.push_str("  clusters:\n");
            cluster(&mut y, "backend", backend, "");
            cluster(&mut y, "backend_tcp", setup.backend_tcp.port(), "");
        }
        Role::MeshOutbound { listen, inbound } => {
            http_listener(&mut y, "outbound", *listen, "AUTO", "", &all_to("inbound"));
            y.push_str("  clusters:\n");
            let pki = setup.pki;
            let tls = format!(
                "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n\
                 \x20       \"@type\": {UPSTREAM_TLS}\n        sni: {sni}\n        common_tls_context:\n{ctx}",
                sni = crate::pki::INBOUND_DNS,
                ctx = common_tls(
                    "          ",
                    &pki.outbound.chain,
                    &pki.outbound.key,
                    &pki.root,
                    &pki.inbound.spiffe_id
                ),
            );
            cluster(&mut y, "inbound", *inbound, &tls);
        }
        Role::MeshInbound { listen } => {
            let pki = setup.pki;
            let tls = format!(
                "      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n\
                 \x20         \"@type\": {DOWNSTREAM_TLS}\n          require_client_certificate: true\n\
                 \x20         common_tls_context:\n{ctx}",
                ctx = common_tls(
                    "            ",
                    &pki.inbound.chain,
                    &pki.inbound.key,
                    &pki.root,
                    &pki.outbound.spiffe_id
                ),
            );
            http_listener(&mut y, "inbound", *listen, "AUTO", &tls, &all_to("backend"));
            y.push_str("  clusters:\n");
            cluster(&mut y, "backend", backend, "");
        }
        Role::Xds { .. } => {}
        Role::Scale {
            listen,
            routes,
            clusters,
        } => {
            http_listener(
                &mut y,
                "scale",
                *listen,
                "AUTO",
                "",
                &scaled_vhosts(*routes, *clusters),
            );
            y.push_str("  clusters:\n");
            for c in 0..*clusters {
                cluster(&mut y, &format!("svc-{c}"), backend, "");
            }
        }
    }
    y
}

fn all_to(cluster: &str) -> String {
    format!(
        "            - name: all\n              domains: [\"*\"]\n              routes:\n\
         \x20             - match: {{ prefix: \"/\" }}\n                route: {{ cluster: {cluster} }}\n"
    )
}

/// One virtual host per service with an equal share of the routes, as a mesh's outbound route
/// table has (Istio: one vhost per service and port).
fn scaled_vhosts(routes: usize, clusters: usize) -> String {
    let clusters = clusters.max(1);
    let per = routes.div_ceil(clusters);
    let mut s = String::new();
    let mut made = 0;
    for c in 0..clusters {
        let _ = write!(
            s,
            "            - name: svc-{c}\n              domains: [\"svc-{c}.bench.local\", \"svc-{c}\"]\n              routes:\n"
        );
        for r in 0..per {
            if made == routes {
                break;
            }
            let _ = write!(
                s,
                "              - match: {{ prefix: \"/api/v{r}/\" }}\n                route: {{ cluster: svc-{c}, timeout: 15s }}\n"
            );
            made += 1;
        }
        if made == routes {
            break;
        }
    }
    s
}

fn http_listener(y: &mut String, name: &str, port: u16, codec: &str, tls: &str, vhosts: &str) {
    let _ = write!(
        y,
        "  - name: {name}\n    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\n\
         \x20   filter_chains:\n    - filters:\n      - name: envoy.filters.network.http_connection_manager\n\
         \x20       typed_config:\n          \"@type\": {HCM}\n          stat_prefix: {name}\n\
         \x20         codec_type: {codec}\n          route_config:\n            name: {name}\n\
         \x20           virtual_hosts:\n{vhosts}\
         \x20         http_filters:\n          - name: envoy.filters.http.router\n\
         \x20           typed_config: {{ \"@type\": {ROUTER} }}\n{tls}"
    );
}

fn tcp_listener(y: &mut String, port: u16, cluster: &str) {
    let _ = write!(
        y,
        "  - name: tcp\n    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\n\
         \x20   filter_chains:\n    - filters:\n      - name: envoy.filters.network.tcp_proxy\n\
         \x20       typed_config:\n          \"@type\": {TCP_PROXY}\n          stat_prefix: tcp\n\
         \x20         cluster: {cluster}\n"
    );
}

fn cluster(y: &mut String, name: &str, port: u16, extra: &str) {
    let _ = write!(
        y,
        "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n\
         \x20     cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n\
         \x20       - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}\n{extra}"
    );
}

fn common_tls(
    indent: &str,
    chain: &std::path::Path,
    key: &std::path::Path,
    root: &std::path::Path,
    peer_id: &str,
) -> String {
    format!(
        "{indent}tls_certificates:\n{indent}- certificate_chain: {{ filename: \"{}\" }}\n\
         {indent}  private_key: {{ filename: \"{}\" }}\n{indent}validation_context:\n\
         {indent}  trusted_ca: {{ filename: \"{}\" }}\n{indent}  match_typed_subject_alt_names:\n\
         {indent}  - san_type: URI\n{indent}    matcher: {{ exact: \"{peer_id}\" }}\n",
        chain.display(),
        key.display(),
        root.display()
    )
}

/// Only the control plane is static: ADS (state of the world) for listeners and clusters.
fn xds_bootstrap(ads: u16, admin_port: u16) -> String {
    format!(
        "node: {{ id: bench~127.0.0.1~bench.default~default.svc.cluster.local, cluster: bench }}\n\
         admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }}\n\
         dynamic_resources:\n  ads_config:\n    api_type: GRPC\n    transport_api_version: V3\n\
         \x20   grpc_services: [{{ envoy_grpc: {{ cluster_name: xds-grpc }} }}]\n\
         \x20 lds_config: {{ ads: {{}}, resource_api_version: V3 }}\n\
         \x20 cds_config: {{ ads: {{}}, resource_api_version: V3 }}\n\
         static_resources:\n  clusters:\n  - name: xds-grpc\n    type: STATIC\n    connect_timeout: 1s\n\
         \x20   load_assignment:\n      cluster_name: xds-grpc\n      endpoints:\n      - lb_endpoints:\n\
         \x20       - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {ads} }} }} }}\n\
         \x20   typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n\
         \x20       \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n\
         \x20       explicit_http_config: {{ http2_protocol_options: {{}} }}\n"
    )
}
