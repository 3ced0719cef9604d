//! Cluster validation: every refused field names its path.

use std::time::Duration;

use super::manager;
use crate::upstream::config::{Discovery, LbPolicy, LookupFamily, Protocol};

fn errors(yaml: &str) -> Vec<String> {
    match manager(yaml) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

const EP: &str = "    load_assignment:\n      cluster_name: x\n      endpoints:\n      - lb_endpoints:\n        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 80 } } }\n";

#[test]
fn eds_needs_its_config_source() {
    let e = errors(
        "static_resources:\n  clusters:\n  - name: a\n    type: EDS\n    eds_cluster_config: { eds_config: { ads: {} } }\n  - name: c\n    type: EDS\n",
    );
    assert!(!e.iter().any(|m| m.contains("clusters[0]")), "{e:?}");
    assert_eq!(
        e,
        vec!["static_resources.clusters[1].eds_cluster_config.eds_config: EDS clusters need eds_cluster_config.eds_config".to_string()],
    );
}

#[test]
fn original_dst_follows_envoys_rules() {
    let e = errors(&format!(
        "static_resources:\n  clusters:\n  - name: a\n    type: ORIGINAL_DST\n{EP}  - name: b\n    lb_policy: CLUSTER_PROVIDED\n{EP}  - name: c\n    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    original_dst_lb_config: {{ use_http_header: true, upstream_port_override: 70000 }}\n"
    ));
    assert!(e.contains(&"static_resources.clusters[0].lb_policy: lb_policy ROUND_ROBIN is not valid for cluster type ORIGINAL_DST; only CLUSTER_PROVIDED is allowed".to_string()), "{e:?}");
    assert!(e.contains(&"static_resources.clusters[0].load_assignment: ORIGINAL_DST clusters must have no endpoints: the destination is the host".to_string()), "{e:?}");
    assert!(e.contains(&"static_resources.clusters[1].lb_policy: lb_policy CLUSTER_PROVIDED is only valid for cluster type ORIGINAL_DST".to_string()), "{e:?}");
    assert!(e.contains(&"static_resources.clusters[2].original_dst_lb_config.upstream_port_override: port 70000 is out of range".to_string()), "{e:?}");
}

#[test]
fn unsupported_lb_policies_are_refused() {
    let e = errors(&format!(
        "static_resources:\n  clusters:\n  - name: a\n    lb_policy: RING_HASH\n{EP}  - name: b\n    lb_policy: MAGLEV\n{EP}"
    ));
    assert_eq!(
        e,
        vec![
            "static_resources.clusters[0].lb_policy: lb_policy RING_HASH is not supported yet",
            "static_resources.clusters[1].lb_policy: lb_policy MAGLEV is not supported yet",
        ]
    );
}

#[test]
fn duplicate_names_are_refused() {
    let e = errors(&format!(
        "static_resources:\n  clusters:\n  - name: x\n{EP}  - name: y\n{EP}  - name: x\n{EP}"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("static_resources.clusters[2].name: duplicate cluster \"x\""),
        "{e:?}"
    );
}

#[test]
fn endpoint_problems_name_the_endpoint() {
    let e = errors(
        "static_resources:\n  clusters:\n  - name: a\n    load_assignment:\n      cluster_name: a\n      endpoints:\n      - lb_endpoints:\n        - endpoint: { address: { socket_address: { address: 127.0.0.1 } } }\n        - endpoint: { address: { socket_address: { address: backend.local, port_value: 80 } } }\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(
        e[0],
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: endpoint address has no port"
    );
    assert!(
        e[1].starts_with("static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[1].endpoint.address.socket_address.address: malformed IP address: backend.local"),
        "{e:?}"
    );
}

#[test]
fn behaviour_changing_fields_are_refused() {
    let e = errors(&format!(
        "static_resources:\n  clusters:\n  - name: a\n    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        allow_renegotiation: true\n    upstream_bind_config: {{ source_address: {{ address: 127.0.0.1, port_value: 0 }}, socket_options: [{{ level: 1, name: 2, int_value: 1 }}] }}\n    lb_subset_config: {{ fallback_policy: ANY_ENDPOINT }}\n{EP}  - name: b\n    type: LOGICAL_DNS\n    load_assignment:\n      cluster_name: b\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: a.local, port_value: 80 }} }} }}\n        - endpoint: {{ address: {{ socket_address: {{ address: b.local, port_value: 80 }} }} }}\n"
    ));
    assert!(e.contains(&"static_resources.clusters[0].transport_socket.typed_config.allow_renegotiation: TLS renegotiation is not supported".to_string()), "{e:?}");
    assert!(e.contains(&"static_resources.clusters[0].upstream_bind_config: only upstream_bind_config.source_address (and freebind) are supported".to_string()), "{e:?}");
    assert!(
        e.iter()
            .any(|m| m.starts_with("static_resources.clusters[0].lb_subset_config:")),
        "{e:?}"
    );
    assert!(e.contains(&"static_resources.clusters[1].load_assignment: LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint".to_string()), "{e:?}");
}

#[test]
fn defaults_follow_envoy() {
    let (m, store) = manager(&format!(
        "static_resources:\n  clusters:\n  - name: x\n{EP}"
    ))
    .expect("valid");
    let c = m.get("x").expect("x");
    let s = c.spec();
    assert_eq!(s.connect_timeout, Duration::from_secs(5));
    assert_eq!(s.discovery, Discovery::Static);
    assert_eq!(s.lb, LbPolicy::RoundRobin);
    assert_eq!(s.protocol.protocol, Protocol::Http1);
    assert_eq!(s.protocol.idle_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(s.dns.refresh_rate, Duration::from_secs(5));
    assert_eq!(s.dns.family, LookupFamily::Auto);
    assert_eq!(c.breakers().default_limits.max_connections, 1024);
    assert_eq!(c.breakers().default_limits.max_retries, 3);
    assert_eq!(store.gauge("cluster.x.membership_total").get(), 1);
    assert_eq!(store.gauge("cluster.x.membership_healthy").get(), 1);
    assert!(store
        .snapshot()
        .iter()
        .any(|(n, _)| n == "cluster.x.circuit_breakers.default.rq_pending_open"));
}

#[test]
fn protocol_options_select_http2_and_pool_limits() {
    let (m, _) = manager(&format!(
        "static_resources:\n  clusters:\n  - name: x\n    lb_policy: LEAST_REQUEST\n    least_request_lb_config: {{ choice_count: 3 }}\n    dns_lookup_family: V4_ONLY\n    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        common_http_protocol_options: {{ idle_timeout: 30s, max_requests_per_connection: 7 }}\n        explicit_http_config: {{ http2_protocol_options: {{ initial_stream_window_size: 65536 }} }}\n{EP}  - name: y\n    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        use_downstream_protocol_config: {{}}\n{EP}"
    ))
    .expect("valid");
    let x = m.get("x").expect("x");
    let s = x.spec();
    assert_eq!(s.protocol.protocol, Protocol::Http2);
    assert_eq!(s.protocol.idle_timeout, Some(Duration::from_secs(30)));
    assert_eq!(s.protocol.max_requests_per_connection, Some(7));
    assert_eq!(s.protocol.http2.initial_stream_window_size, Some(65536));
    assert_eq!(s.dns.family, LookupFamily::V4Only);
    assert!(matches!(
        s.lb,
        LbPolicy::LeastRequest {
            choice_count: 3,
            ..
        }
    ));
    assert_eq!(
        m.get("y").expect("y").spec().protocol.protocol,
        Protocol::Downstream
    );
}

#[test]
fn unknown_protocol_options_are_refused() {
    let e = errors(&format!(
        "static_resources:\n  clusters:\n  - name: x\n    typed_extension_protocol_options:\n      envoy.filters.network.bogus:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n{EP}"
    ));
    assert_eq!(
        e,
        vec!["static_resources.clusters[0].typed_extension_protocol_options.envoy.filters.network.bogus: no protocol options implementation for name: 'envoy.filters.network.bogus'"]
    );
}

#[test]
fn the_metadata_exchange_is_the_one_upstream_filter() {
    let exchange = "    filters:\n    - name: istio.metadata_exchange\n      typed_config: { \"@type\": type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange, value: { protocol: istio-peer-exchange, enable_discovery: true } }\n";
    let (m, _) = manager(&format!(
        "static_resources:\n  clusters:\n  - name: x\n{EP}{exchange}"
    ))
    .expect("accepted");
    let c = m.get("x").expect("cluster x");
    assert_eq!(
        c.spec().exchange.as_ref().map(|x| x.protocol.as_str()),
        Some("istio-peer-exchange")
    );
    let other = "    filters:\n    - name: envoy.filters.network.upstream.something\n      typed_config: { \"@type\": type.googleapis.com/udpa.type.v1.TypedStruct, type_url: type.googleapis.com/some.Filter }\n";
    let e = errors(&format!(
        "static_resources:\n  clusters:\n  - name: x\n{EP}{other}"
    ));
    assert_eq!(
        e,
        vec!["static_resources.clusters[0].filters[0]: upstream network filter \"envoy.filters.network.upstream.something\" is not supported yet".to_string()]
    );
}
