//! Listener translation: defaults, recognised listener filters, and errors with their paths.

use std::collections::HashMap;
use std::time::Duration;

use super::{build, build_ok};
use crate::config::{ConfigErrors, Path};
use crate::listener::{
    flatten_runtime, validate_listener_set, ConnectionBalance, ListenerFilterKind,
};

const CHAIN: &str = "filter_chains: [{name: c0}]";

fn errors(yaml: &str) -> ConfigErrors {
    match build(yaml) {
        Ok(_) => panic!("listener should be rejected:\n{yaml}"),
        Err(e) => e,
    }
}

/// The single error's path and message.
fn one_error(yaml: &str) -> (String, String) {
    let e = errors(yaml);
    assert_eq!(e.0.len(), 1, "expected one error, got:\n{e}");
    (e.0[0].path.clone(), e.0[0].message.clone())
}

#[test]
fn defaults_follow_envoy() {
    let l = build_ok(&format!(
        "name: l0\naddress: {{socket_address: {{address: 127.0.0.1, port_value: 8080}}}}\n{CHAIN}"
    ));
    assert_eq!(l.name, "l0");
    assert_eq!(l.address, "127.0.0.1:8080".parse().expect("addr"));
    assert_eq!(l.stat_prefix, "listener.127.0.0.1_8080");
    assert_eq!(l.per_connection_buffer_limit, 1024 * 1024);
    assert_eq!(l.listener_filters_timeout, Duration::from_secs(15));
    assert!(!l.continue_on_listener_filters_timeout);
    assert!(l.bind_to_port && l.reuse_port);
    assert!(!l.transparent && !l.freebind);
    assert_eq!(l.tcp_backlog_size, None);
    assert_eq!(l.max_connections, None);
    assert_eq!(l.connection_balance, ConnectionBalance::Kernel);
}

#[test]
fn explicit_settings_are_kept() {
    let l = build_ok(&format!(
        "name: l0\n\
         address: {{socket_address: {{address: '::', port_value: 443, ipv4_compat: true}}}}\n\
         stat_prefix: ingress\n\
         per_connection_buffer_limit_bytes: 32768\n\
         listener_filters_timeout: 2.5s\n\
         continue_on_listener_filters_timeout: true\n\
         enable_reuse_port: false\n\
         bind_to_port: false\n\
         transparent: true\n\
         freebind: true\n\
         tcp_backlog_size: 4096\n\
         connection_balance_config: {{exact_balance: {{}}}}\n\
         additional_addresses: [{{address: {{socket_address: {{address: '::1', port_value: 8443}}}}}}]\n\
         {CHAIN}"
    ));
    assert!(l.ipv4_compat);
    assert_eq!(l.stat_prefix, "listener.ingress");
    assert_eq!(l.per_connection_buffer_limit, 32768);
    assert_eq!(l.listener_filters_timeout, Duration::from_millis(2500));
    assert!(l.continue_on_listener_filters_timeout);
    assert!(!l.reuse_port && !l.bind_to_port);
    assert!(l.transparent && l.freebind);
    assert_eq!(l.tcp_backlog_size, Some(4096));
    assert_eq!(l.connection_balance, ConnectionBalance::Exact);
    let all: Vec<String> = l.addresses().map(|a| a.address.to_string()).collect();
    assert_eq!(all, ["[::]:443", "[::1]:8443"]);
}

#[test]
fn ipv6_stat_prefix_is_sanitised_like_envoy() {
    let l = build_ok(&format!(
        "name: l0\naddress: {{socket_address: {{address: '::1', port_value: 8080}}}}\n{CHAIN}"
    ));
    assert_eq!(l.stat_prefix, "listener.[__1]_8080");
}

#[test]
fn listener_filters_are_recognised_by_type_or_name() {
    let l = build_ok(&format!(
        "name: l0\naddress: {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}\n\
         listener_filters:\n\
         - name: tls\n  typed_config:\n    '@type': type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector\n    initial_read_buffer_size: 1024\n\
         - name: envoy.filters.listener.http_inspector\n\
         - name: od\n  typed_config: {{'@type': type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}}\n  filter_disabled: {{destination_port_range: {{start: 80, end: 81}}}}\n\
         {CHAIN}"
    ));
    let kinds: Vec<&ListenerFilterKind> = l.listener_filters.iter().map(|f| &f.kind).collect();
    match kinds.as_slice() {
        [ListenerFilterKind::TlsInspector(t), ListenerFilterKind::HttpInspector, ListenerFilterKind::OriginalDst] =>
        {
            assert_eq!(t.initial_read_buffer_size, Some(1024))
        }
        other => panic!("unexpected listener filters {other:?}"),
    }
    let disabled = l.listener_filters[2].disabled.as_ref().expect("predicate");
    assert!(disabled.matches(80));
    assert!(!disabled.matches(81));
}

#[test]
fn unknown_listener_filters_are_errors() {
    let base = "name: l0\naddress: {socket_address: {address: 127.0.0.1, port_value: 1}}\nfilter_chains: [{name: c}]\n";
    let (path, msg) = one_error(&format!(
        "{base}listener_filters: [{{name: pp, typed_config: {{'@type': type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol}}}}]"
    ));
    assert_eq!(
        path,
        "static_resources.listeners[0].listener_filters[0].typed_config"
    );
    assert!(msg.contains("proxy_protocol"), "{msg}");
    let (path, _) = one_error(&format!(
        "{base}listener_filters: [{{name: envoy.filters.listener.nope}}]"
    ));
    assert_eq!(
        path,
        "static_resources.listeners[0].listener_filters[0].name"
    );
}

#[test]
fn port_out_of_range_names_the_field() {
    let (path, msg) = one_error(&format!(
        "name: l0\naddress: {{socket_address: {{address: 127.0.0.1, port_value: 70000}}}}\n{CHAIN}"
    ));
    assert_eq!(
        path,
        "static_resources.listeners[0].address.socket_address.port_value"
    );
    assert!(msg.contains("70000"), "{msg}");
}

#[test]
fn address_errors() {
    let (path, _) = one_error(&format!(
        "name: l0\naddress: {{socket_address: {{address: localhost, port_value: 80}}}}\n{CHAIN}"
    ));
    assert_eq!(
        path,
        "static_resources.listeners[0].address.socket_address.address"
    );
    let (path, msg) = one_error(&format!(
        "name: l0\naddress: {{pipe: {{path: /tmp/x.sock}}}}\n{CHAIN}"
    ));
    assert_eq!(path, "static_resources.listeners[0].address.pipe");
    assert!(msg.contains("not supported"), "{msg}");
    let (path, _) = one_error(&format!(
        "name: l0\naddress: {{socket_address: {{address: 127.0.0.1, named_port: http}}}}\n{CHAIN}"
    ));
    assert_eq!(
        path,
        "static_resources.listeners[0].address.socket_address.named_port"
    );
    let (path, _) = one_error(&format!(
        "name: l0\naddress: {{socket_address: {{address: '::1', port_value: 80, ipv4_compat: true}}}}\n{CHAIN}"
    ));
    assert_eq!(
        path,
        "static_resources.listeners[0].address.socket_address.ipv4_compat"
    );
}

#[test]
fn identical_matches_are_rejected() {
    let (path, msg) = one_error(
        "name: l0\naddress: {socket_address: {address: 0.0.0.0, port_value: 80}}\n\
         filter_chains:\n\
         - {name: a, filter_chain_match: {server_names: [x.com]}}\n\
         - {name: b, filter_chain_match: {server_names: [x.com]}}",
    );
    assert_eq!(
        path,
        "static_resources.listeners[0].filter_chains[1].filter_chain_match"
    );
    assert!(
        msg.contains("multiple filter chains with the same matching rules are defined"),
        "{msg}"
    );
    assert!(msg.contains("\"a\"") && msg.contains("\"b\""), "{msg}");
    // Two chains without any match are identical too.
    let (path, _) = one_error(
        "name: l0\naddress: {socket_address: {address: 0.0.0.0, port_value: 80}}\nfilter_chains: [{name: a}, {name: b}]",
    );
    assert_eq!(
        path,
        "static_resources.listeners[0].filter_chains[1].filter_chain_match"
    );
}

#[test]
fn overlapping_matches_are_rejected() {
    let (path, msg) = one_error(
        "name: l0\naddress: {socket_address: {address: 0.0.0.0, port_value: 80}}\n\
         filter_chains:\n\
         - {name: a, filter_chain_match: {server_names: [x.com, y.com]}}\n\
         - {name: b, filter_chain_match: {server_names: [Y.com]}}",
    );
    assert_eq!(
        path,
        "static_resources.listeners[0].filter_chains[1].filter_chain_match"
    );
    assert!(msg.contains("overlapping"), "{msg}");
}

#[test]
fn match_field_errors_have_paths() {
    let e = errors(
        "name: l0\naddress: {socket_address: {address: 0.0.0.0, port_value: 80}}\n\
         filter_chains:\n\
         - filter_chain_match:\n    server_names: ['w*.example.com']\n    destination_port: 65536\n    prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 33}]\n    source_ports: [1, 99999]",
    );
    let paths: Vec<&str> = e.0.iter().map(|e| e.path.as_str()).collect();
    let m = "static_resources.listeners[0].filter_chains[0].filter_chain_match";
    for want in [
        format!("{m}.destination_port"),
        format!("{m}.prefix_ranges[0].prefix_len"),
        format!("{m}.server_names[0]"),
        format!("{m}.source_ports[1]"),
    ] {
        assert!(
            paths.contains(&want.as_str()),
            "missing {want} in {paths:?}"
        );
    }
}

#[test]
fn empty_listeners_are_rejected() {
    let (path, msg) =
        one_error("name: l0\naddress: {socket_address: {address: 0.0.0.0, port_value: 80}}");
    assert_eq!(path, "static_resources.listeners[0].filter_chains");
    assert!(msg.contains("no filter chains"), "{msg}");
}

#[test]
fn chain_builder_errors_are_collected_with_the_rest() {
    let l: envoy_types::pb::envoy::config::listener::v3::Listener = crate::config::parse::from_yaml(
        "name: l0\naddress: {socket_address: {address: 1.2.3.4, port_value: 99999}}\nfilter_chains: [{name: a}]\ndefault_filter_chain: {name: d}",
        Default::default(),
    )
    .expect("yaml");
    let path = Path::root("listeners").index(0);
    let e = crate::listener::from_proto::<()>(&l, &path, &mut |_, p| {
        Err(crate::config::ConfigError::new(p, "bad filters").into())
    })
    .expect_err("rejected");
    let mut paths: Vec<&str> = e.0.iter().map(|e| e.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "listeners[0].address.socket_address.port_value",
            "listeners[0].default_filter_chain",
            "listeners[0].filter_chains[0]",
        ]
    );
}

#[test]
fn listener_sets_reject_duplicate_names_and_addresses() {
    let a = build_ok(&format!(
        "name: a\naddress: {{socket_address: {{address: 127.0.0.1, port_value: 80}}}}\n{CHAIN}"
    ));
    let a2 = build_ok(&format!(
        "name: a\naddress: {{socket_address: {{address: 127.0.0.1, port_value: 81}}}}\n{CHAIN}"
    ));
    let b = build_ok(&format!(
        "name: b\naddress: {{socket_address: {{address: 127.0.0.1, port_value: 80}}}}\n{CHAIN}"
    ));
    let z1 = build_ok(&format!(
        "name: z1\naddress: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n{CHAIN}"
    ));
    let z2 = build_ok(&format!(
        "name: z2\naddress: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n{CHAIN}"
    ));
    let path = Path::root("static_resources").field("listeners");
    let e = validate_listener_set(&[a, a2, b], &path).expect_err("rejected");
    let got: Vec<(&str, bool)> =
        e.0.iter()
            .map(|e| (e.path.as_str(), e.message.contains("duplicate")))
            .collect();
    assert_eq!(
        got,
        [
            ("static_resources.listeners[1].name", true),
            ("static_resources.listeners[2].address", true)
        ]
    );
    // Port 0 listeners each get their own port from the kernel.
    validate_listener_set(&[z1, z2], &path).expect("port 0 may repeat");
}

#[test]
fn runtime_connection_limit_from_nested_or_flat_layers() {
    let mut rt = HashMap::new();
    flatten_runtime(
        &serde_json::json!({"envoy": {"resource_limits": {"listener": {"l0": {"connection_limit": 2}}}}}),
        &mut rt,
    );
    flatten_runtime(
        &serde_json::json!({"envoy.resource_limits.listener.l1.connection_limit": "7"}),
        &mut rt,
    );
    let mk = |name: &str| {
        build_ok(&format!(
            "name: {name}\naddress: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}\n{CHAIN}"
        ))
        .with_runtime_connection_limit(&rt)
        .max_connections
    };
    assert_eq!(mk("l0"), Some(2));
    assert_eq!(mk("l1"), Some(7));
    assert_eq!(mk("l2"), None);
}

#[test]
fn internal_listeners_have_no_socket_and_envoys_stat_prefix() {
    let l = build_ok(&format!("name: inner\ninternal_listener: {{}}\n{CHAIN}"));
    assert!(l.internal);
    assert_eq!(l.addresses().count(), 0);
    assert_eq!(l.stat_prefix, "listener.envoy_internal_inner");
    let l = build_ok(&format!(
        "name: inner\nstat_prefix: mine\ninternal_listener: {{}}\n{CHAIN}"
    ));
    assert_eq!(l.stat_prefix, "listener.mine");
    let l = build_ok(&format!(
        "name: inner\ninternal_listener: {{}}\nlistener_filters: [{{name: envoy.filters.listener.original_dst, typed_config: {{'@type': type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}}}}]\n{CHAIN}"
    ));
    assert!(l.restores_internal_addresses());
}

#[test]
fn internal_listeners_refuse_what_needs_a_socket() {
    let (path, msg) = one_error(&format!(
        "name: inner\ninternal_listener: {{}}\naddress: {{socket_address: {{address: 127.0.0.1, port_value: 1}}}}\n{CHAIN}"
    ));
    assert_eq!(path, "static_resources.listeners[0].address");
    assert!(msg.contains("internal listener"), "{msg}");
    let (path, _) = one_error(&format!(
        "name: inner\ninternal_listener: {{}}\nlistener_filters: [{{name: envoy.filters.listener.tls_inspector, typed_config: {{'@type': type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}}}]\n{CHAIN}"
    ));
    assert_eq!(path, "static_resources.listeners[0].listener_filters[0]");
}
