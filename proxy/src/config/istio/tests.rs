use super::*;
use crate::access_log::Writers;
use crate::config::bootstrap;
use crate::config::network::NetworkStack;
use crate::stats::Store;

const HTTP: &str = r#"
node:
  id: sidecar~10.0.0.1~web-v1-abc.default~default.svc.cluster.local
  metadata: { NAMESPACE: default, WORKLOAD_NAME: web-v1, LABELS: { app: web } }
static_resources:
  clusters:
  - name: "inbound|8080||"
    load_assignment:
      cluster_name: "inbound|8080||"
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 1 } } } } ] } ]
  listeners:
  - name: in
    traffic_direction: DIRECTION
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          route_config:
            virtual_hosts: [ { name: a, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: "inbound|8080||" } } ] } ]
          http_filters:
          - name: istio.metadata_exchange
            typed_config:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/io.istio.http.peer_metadata.Config
              value:
                downstream_discovery: [ { istio_headers: {} }, { workload_discovery: {} } ]
                downstream_propagation: [ { istio_headers: {} } ]
          - name: istio.stats
            typed_config:
              STATS
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#;

fn build(yaml: &str) -> Result<bootstrap::Snapshot, crate::config::ConfigErrors> {
    let opts = ParseOptions::default();
    let b = crate::config::parse::from_yaml(yaml, opts).map_err(ConfigErrors::from)?;
    let store = Store::new();
    let writers = Writers::new(&store, std::time::Duration::from_secs(1));
    bootstrap::build(b, &store, opts, &writers)
}

fn http_istio(direction: &str, stats: &str) -> HttpIstio {
    let yaml = HTTP.replace("DIRECTION", direction).replace("STATS", stats);
    let snap = match build(&yaml) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let (cfg, _) = &snap.listeners[0];
    let (_, chain) = cfg.chains.iter().next().expect("a chain");
    match &chain.payload.stack {
        NetworkStack::Http(rt) => {
            assert_eq!(
                rt.istio
                    .as_ref()
                    .map(|t| t.local.metadata.workload.as_str()),
                Some("web-v1")
            );
            rt.cfg.istio.clone()
        }
        NetworkStack::Tcp(_) => panic!("an HTTP chain"),
    }
}

#[test]
fn istiods_inbound_filters_translate() {
    let istio = http_istio(
        "INBOUND",
        r#"{ "@type": type.googleapis.com/stats.PluginConfig, disableHostHeaderFallback: true }"#,
    );
    assert_eq!(
        istio.stats,
        Some(StatsConfig {
            reporter: Reporter::ServerSidecar,
            host_header_fallback: false,
        })
    );
    assert_eq!(
        istio.exchange,
        Some(ExchangeConfig {
            downstream_discovery: vec![Discovery::IstioHeaders],
            downstream_propagation: true,
            ..Default::default()
        })
    );
}

#[test]
fn stats_in_a_typed_struct_and_the_gateway_reporter() {
    let typed = r#"{ "@type": type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/stats.PluginConfig, value: { tcp_reporting_duration: 15s, metrics: [ { name: requests_total, dimensions: { a: b }, tags_to_remove: [x] } ] } }"#;
    let outbound = http_istio("OUTBOUND", typed);
    assert_eq!(
        outbound.stats.map(|s| s.reporter),
        Some(Reporter::ClientSidecar)
    );
    let gateway =
        r#"{ "@type": type.googleapis.com/stats.PluginConfig, reporter: SERVER_GATEWAY }"#;
    assert_eq!(
        http_istio("INBOUND", gateway).stats.map(|s| s.reporter),
        Some(Reporter::ServerGateway)
    );
}

#[test]
fn a_misspelt_stats_field_is_an_error_with_its_path() {
    let yaml = HTTP.replace("DIRECTION", "INBOUND").replace(
        "STATS",
        r#"{ "@type": type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/stats.PluginConfig, value: { reportr: 1 } }"#,
    );
    let err = build(&yaml).err().expect("rejected").to_string();
    assert!(err.contains("http_filters[1]"), "{err}");
    assert!(err.contains("reportr"), "{err}");
}

#[test]
fn tcp_chains_take_the_network_stats_filter() {
    let yaml = r#"
static_resources:
  clusters:
  - name: "inbound|3306||"
    load_assignment:
      cluster_name: "inbound|3306||"
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 1 } } } } ] } ]
  listeners:
  - name: tcp
    traffic_direction: INBOUND
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: istio.stats
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/stats.PluginConfig
          value: {}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: "inbound|3306||"
"#;
    let snap = match build(yaml) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let (cfg, _) = &snap.listeners[0];
    let (_, chain) = cfg.chains.iter().next().expect("a chain");
    match &chain.payload.stack {
        NetworkStack::Tcp(rt) => assert_eq!(
            rt.istio.as_ref().map(|t| t.cfg.reporter),
            Some(Reporter::ServerSidecar)
        ),
        NetworkStack::Http(_) => panic!("a TCP chain"),
    }
}

const EXCHANGE: &str = r#"
      - name: istio.metadata_exchange
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange
          value: VALUE
"#;

fn tcp_chain_with(value: &str, terminal: &str) -> String {
    let cluster = r#"
static_resources:
  clusters:
  - name: c
    load_assignment:
      cluster_name: c
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 1 } } } } ] } ]
  listeners:
  - name: tcp
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:"#;
    format!(
        "{cluster}{}{terminal}",
        EXCHANGE.replace("VALUE", value).trim_end()
    )
}

const TCP_PROXY: &str = r#"
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: c
"#;

const HCM: &str = r#"
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: h
          route_config: { virtual_hosts: [ { name: a, domains: ["*"], routes: [ { match: { prefix: / }, route: { cluster: c } } ] } ] }
          http_filters: [ { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } } ]
"#;

#[test]
fn the_tcp_exchange_runs_before_tcp_proxy_with_its_protocol() {
    let yaml = tcp_chain_with(
        "{ protocol: istio-peer-exchange, enable_discovery: true }",
        TCP_PROXY,
    );
    let snap = match build(&yaml) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let (cfg, _) = &snap.listeners[0];
    let (_, chain) = cfg.chains.iter().next().expect("a chain");
    match &chain.payload.stack {
        NetworkStack::Tcp(rt) => assert_eq!(
            rt.exchange.downstream,
            Some(TcpExchangeConfig {
                protocol: "istio-peer-exchange".into()
            })
        ),
        NetworkStack::Http(_) => panic!("a TCP chain"),
    }
}

#[test]
fn the_tcp_exchange_without_a_protocol_or_before_an_hcm_is_an_error() {
    let err = build(&tcp_chain_with("{ enable_discovery: true }", TCP_PROXY))
        .err()
        .expect("rejected")
        .to_string();
    assert!(err.contains("filters[0].typed_config.protocol"), "{err}");
    let err = build(&tcp_chain_with("{ protocol: istio-peer-exchange }", HCM))
        .err()
        .expect("rejected")
        .to_string();
    assert!(err.contains("filters[0]"), "{err}");
    assert!(err.contains("before tcp_proxy only"), "{err}");
    let err = build(&tcp_chain_with(
        "{ protocl: istio-peer-exchange }",
        TCP_PROXY,
    ))
    .err()
    .expect("rejected")
    .to_string();
    assert!(err.contains("protocl"), "{err}");
}
