//! Bootstraps with CONNECT termination, tcp_proxy tunneling and Istio's HBONE filters: what is
//! accepted, and errors that name their field.

use super::{bootstrap, ConfigErrors, ParseOptions};
use crate::access_log::Writers;
use crate::stats::Store;

fn build(yaml: &str) -> Result<bootstrap::Snapshot, ConfigErrors> {
    let opts = ParseOptions::default();
    let b = super::parse::from_yaml(yaml, opts).map_err(ConfigErrors::from)?;
    let store = Store::new();
    let writers = Writers::new(&store, std::time::Duration::from_secs(1));
    bootstrap::build(b, &store, opts, &writers)
}

fn errors(yaml: &str) -> String {
    match build(yaml) {
        Ok(_) => panic!("should be rejected:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

fn accepted(yaml: &str) {
    if let Err(e) = build(yaml) {
        panic!("rejected: {e}\n{yaml}");
    }
}

const CLUSTERS: &str = r#"
  clusters:
  - name: c
    connect_timeout: 1s
    load_assignment:
      cluster_name: c
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9 } } }
"#;

/// A bootstrap with one tcp_proxy listener whose `tunneling_config` is `tunneling`.
fn tunneling(tunneling: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 10000 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: l
          cluster: c
          tunneling_config: {tunneling}
{CLUSTERS}"#
    )
}

/// A bootstrap with one connection manager: `filters` before the router, `route` as its route's
/// extra fields.
fn hcm(filters: &str, route: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 10000 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: l
          upgrade_configs: [{{ upgrade_type: CONNECT }}]
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ connect_matcher: {{}} }}
                {route}
          http_filters:
{filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{CLUSTERS}"#
    )
}

#[test]
fn tunneling_config_is_accepted_with_istios_fields() {
    accepted(&tunneling(
        r#"{ hostname: "%DOWNSTREAM_LOCAL_ADDRESS%", headers_to_add: [{ header: { key: baggage, value: "k8s.namespace.name=ns" } }] }"#,
    ));
    accepted(&tunneling(
        "{ hostname: h.example:443, use_post: true, post_path: /tunnel }",
    ));
}

#[test]
fn tunneling_config_errors_name_the_field() {
    let prefix =
        "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.tunneling_config";
    let e = errors(&tunneling("{ hostname: h:1, post_path: /p }"));
    assert!(
        e.contains(&format!(
            "{prefix}.post_path: Can't set a post path when POST method isn't used"
        )),
        "{e}"
    );
    let e = errors(&tunneling(
        "{ hostname: h:1, propagate_response_headers: true }",
    ));
    assert!(
        e.contains(&format!(
            "{prefix}.propagate_response_headers: not supported yet"
        )),
        "{e}"
    );
    let e = errors(&tunneling(r#"{ hostname: "%NO_SUCH_OPERATOR%" }"#));
    assert!(e.contains(&format!("{prefix}.hostname")), "{e}");
    let e = errors(&tunneling("{ hostname: '' }"));
    assert!(e.contains(&format!("{prefix}.hostname")), "{e}");
}

#[test]
fn connect_config_belongs_to_a_connect_upgrade() {
    accepted(&hcm(
        "",
        "route: { cluster: c, upgrade_configs: [{ upgrade_type: CONNECT, connect_config: { allow_post: true } }] }",
    ));
    let e = errors(&hcm(
        "",
        "route: { cluster: c, upgrade_configs: [{ upgrade_type: websocket, connect_config: {} }] }",
    ));
    assert!(
        e.contains("routes[0].route.upgrade_configs[0].connect_config: connect_config is only valid for the CONNECT upgrade type"),
        "{e}"
    );
    let e = errors(&hcm(
        "",
        "route: { cluster: c, upgrade_configs: [{ upgrade_type: CONNECT, connect_config: { proxy_protocol_config: {} } }] }",
    ));
    assert!(
        e.contains("upgrade_configs[0].connect_config.proxy_protocol_config: not supported yet"),
        "{e}"
    );
}

const CONNECT_AUTHORITY: &str = r#"          - name: connect_authority
            typed_config:
              "@type": type.googleapis.com/io.istio.http.connect_authority.Config
"#;

#[test]
fn connect_authority_and_its_route_config_are_accepted() {
    accepted(&hcm(
        CONNECT_AUTHORITY,
        r#"route: { cluster: c, upgrade_configs: [{ upgrade_type: CONNECT, connect_config: {} }] }
                typed_per_filter_config:
                  connect_authority:
                    "@type": type.googleapis.com/io.istio.http.connect_authority.Config
                    enabled: true
                    port: 15008"#,
    ));
    let e = errors(&hcm(
        CONNECT_AUTHORITY,
        r#"route: { cluster: c }
                typed_per_filter_config:
                  connect_authority:
                    "@type": type.googleapis.com/io.istio.http.connect_authority.Config
                    enabeld: true"#,
    ));
    assert!(e.contains("typed_per_filter_config"), "{e}");
    assert!(e.contains("enabeld"), "{e}");
}

#[test]
fn connect_baggage_is_accepted_and_checked() {
    let baggage = r#"          - name: connect_baggage
            typed_config:
              "@type": type.googleapis.com/io.istio.http.connect_baggage.Config
"#;
    accepted(&hcm(baggage, "route: { cluster: c }"));
    let e = errors(&hcm(
        &baggage.replace(
            "connect_baggage.Config\n",
            "connect_baggage.Config\n              propagate: true\n",
        ),
        "route: { cluster: c }",
    ));
    assert!(
        e.contains("http_filters[0].typed_config") && e.contains("propagate"),
        "{e}"
    );
}

fn internal_listener(internal: bool) -> String {
    let address = if internal {
        "internal_listener: {}"
    } else {
        "address: { socket_address: { address: 127.0.0.1, port_value: 10000 } }"
    };
    format!(
        r#"
bootstrap_extensions:
- name: envoy.bootstrap.internal_listener
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener
static_resources:
  listeners:
  - name: inner
    {address}
    listener_filters:
    - name: set_dst_address
      typed_config:
        "@type": type.googleapis.com/istio.set_internal_dst_address.v1.Config
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: inner
          cluster: c
{CLUSTERS}"#
    )
}

#[test]
fn set_internal_dst_address_runs_on_internal_listeners_only() {
    accepted(&internal_listener(true));
    let e = errors(&internal_listener(false));
    assert!(
        e.contains("static_resources.listeners[0].listener_filters[0]: istio.set_internal_dst_address is supported on internal listeners only"),
        "{e}"
    );
}
