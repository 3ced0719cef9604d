//! Bootstraps with internal listeners and set_filter_state: what is accepted, and errors that
//! name their field.

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

const EXTENSION: &str = r#"
bootstrap_extensions:
- name: envoy.bootstrap.internal_listener
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener
    buffer_size_kb: BUFFER
"#;

const RESOURCES: &str = r#"
static_resources:
  listeners:
  - name: inner
    internal_listener: {}
    filter_chains:
    - filters:
      - name: envoy.filters.network.set_filter_state
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.set_filter_state.v3.Config
          on_new_connection: [ON_NEW]
          ON_DATA
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: inner
          cluster: c
  clusters:
  - name: c
    connect_timeout: 1s
    load_assignment:
      cluster_name: c
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { envoy_internal_address: { server_listener_name: inner } } }
"#;

const CLUSTER_KEY: &str =
    "{ object_key: envoy.tcp_proxy.cluster, format_string: { text_format_source: { inline_string: c } } }";

fn config(buffer: Option<&str>, on_new: &str, on_data: &str) -> String {
    let ext = buffer.map_or(String::new(), |b| EXTENSION.replace("BUFFER", b));
    format!(
        "{ext}{}",
        RESOURCES
            .replace("ON_NEW", on_new)
            .replace("ON_DATA", on_data)
    )
}

#[test]
fn an_internal_listener_with_set_filter_state_builds() {
    let snap = match build(&config(Some("64"), CLUSTER_KEY, "")) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert!(snap.clusters.internal().enabled());
    let (cfg, _) = &snap.listeners[0];
    assert!(cfg.internal);
    let host = snap.clusters.get("c").expect("c").host_set().hosts[0].clone();
    assert_eq!(
        host.internal.as_ref().map(|t| t.uri.as_str()),
        Some("envoy://inner/")
    );
}

#[test]
fn an_internal_listener_needs_the_bootstrap_extension() {
    let e = errors(&config(None, CLUSTER_KEY, ""));
    assert!(
        e.contains("static_resources.listeners[0].internal_listener: an internal listener needs the bootstrap extension envoy.bootstrap.internal_listener"),
        "{e}"
    );
}

#[test]
fn buffer_size_kb_is_bounded() {
    let e = errors(&config(Some("0"), CLUSTER_KEY, ""));
    assert!(
        e.contains("bootstrap_extensions[0].typed_config.buffer_size_kb"),
        "{e}"
    );
}

#[test]
fn set_filter_state_errors_name_their_field() {
    let e = errors(&config(
        Some("64"),
        "{ object_key: envoy.network.upstream_subject_alt_names, format_string: { text_format_source: { inline_string: h2 } } }",
        "",
    ));
    assert!(
        e.contains("filters[0].typed_config.on_new_connection[0].object_key: filter state object \"envoy.network.upstream_subject_alt_names\" is not supported"),
        "{e}"
    );
    let e = errors(&config(
        Some("64"),
        CLUSTER_KEY,
        &format!("on_downstream_data: [{CLUSTER_KEY}]"),
    ));
    assert!(
        e.contains("filters[0].typed_config.on_downstream_data: not supported yet"),
        "{e}"
    );
}

#[test]
fn the_http_set_filter_state_filter_is_validated() {
    let hcm = |value: &str| {
        format!(
            r#"
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: l
          route_config: {{}}
          http_filters:
          - name: envoy.filters.http.set_filter_state
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.set_filter_state.v3.Config
              on_request_headers: [{value}]
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
        )
    };
    let ok = "{ object_key: envoy.network.transport_socket.original_dst_address, format_string: { text_format_source: { inline_string: '%REQ(x-dst)%' } } }";
    if let Err(e) = build(&hcm(ok)) {
        panic!("{e}");
    }
    let bad = "{ object_key: envoy.upstream.dynamic_host, format_string: { text_format_source: { inline_string: x } } }";
    let e = errors(&hcm(bad));
    assert!(
        e.contains("http_filters[0].typed_config.on_request_headers[0].object_key"),
        "{e}"
    );
}
