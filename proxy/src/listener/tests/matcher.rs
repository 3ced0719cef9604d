//! `filter_chain_matcher`: the xDS matcher tree selecting chains by name, in the shapes istiod
//! sends (destination port → transport protocol → ALPN; IP tries for destination ranges).

use std::net::SocketAddr;

use super::{build, build_ok};
use crate::listener::{ListenerConfig, MatchInput};

const SV: &str = "\"@type\": type.googleapis.com/google.protobuf.StringValue";
const NET: &str = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3";

fn action(chain: &str) -> String {
    format!("{{ action: {{ name: {chain}, typed_config: {{ {SV}, value: {chain} }} }} }}")
}

fn listener(matcher: &str, chains: &[&str], default: bool) -> ListenerConfig<String> {
    let chains: String = chains.iter().map(|c| format!("- name: {c}\n")).collect();
    let default = if default {
        "default_filter_chain: {name: fallback}\n"
    } else {
        ""
    };
    build_ok(&format!(
        "name: virtualInbound\naddress: {{socket_address: {{address: 0.0.0.0, port_value: 15006}}}}\n\
         filter_chains:\n{chains}{default}filter_chain_matcher:\n{matcher}"
    ))
}

fn conn(dst: &str) -> MatchInput<'static> {
    let d: SocketAddr = dst.parse().expect("addr");
    MatchInput::raw(d, "10.0.0.9:40000".parse().expect("addr"))
}

fn pick(l: &ListenerConfig<String>, input: &MatchInput<'_>) -> Option<String> {
    l.chains.select(input).cloned()
}

/// Istio's inbound shape: port 8080 splits TLS (by ALPN) from plaintext; other ports pass through.
fn istio_inbound() -> ListenerConfig<String> {
    let m = format!(
        r#"  matcher_tree:
    input: {{ name: port, typed_config: {{ "@type": {NET}.DestinationPortInput }} }}
    exact_match_map:
      map:
        "8080":
          matcher:
            matcher_tree:
              input: {{ name: transport, typed_config: {{ "@type": {NET}.TransportProtocolInput }} }}
              exact_match_map:
                map:
                  "tls":
                    matcher:
                      matcher_tree:
                        input: {{ name: alpn, typed_config: {{ "@type": {NET}.ApplicationProtocolInput }} }}
                        exact_match_map:
                          map:
                            "'istio-http/1.1','istio','http/1.1'": {http_tls}
                      on_no_match: {tcp_tls}
                  "raw_buffer": {plain}
  on_no_match: {passthrough}
"#,
        http_tls = action("0.0.0.0_8080_http_mtls"),
        tcp_tls = action("0.0.0.0_8080_tcp_mtls"),
        plain = action("0.0.0.0_8080_plaintext"),
        passthrough = action("virtualInbound-catchall-http"),
    );
    listener(
        &m,
        &[
            "0.0.0.0_8080_http_mtls",
            "0.0.0.0_8080_tcp_mtls",
            "0.0.0.0_8080_plaintext",
            "virtualInbound-catchall-http",
        ],
        false,
    )
}

#[test]
fn istio_inbound_tree_selects_by_port_transport_and_alpn() {
    let l = istio_inbound();
    assert!(l.chains.needs_inspection());
    let mut tls = conn("10.0.0.5:8080");
    tls.transport_protocol = "tls";
    tls.application_protocols = &["istio-http/1.1", "istio", "http/1.1"];
    assert_eq!(pick(&l, &tls).as_deref(), Some("0.0.0.0_8080_http_mtls"));
    tls.application_protocols = &["istio-peer-exchange", "istio"];
    assert_eq!(pick(&l, &tls).as_deref(), Some("0.0.0.0_8080_tcp_mtls"));
    let plain = conn("10.0.0.5:8080");
    assert_eq!(pick(&l, &plain).as_deref(), Some("0.0.0.0_8080_plaintext"));
    // Another port, and a transport the inner map lacks: the outer on_no_match.
    assert_eq!(
        pick(&l, &conn("10.0.0.5:9090")).as_deref(),
        Some("virtualInbound-catchall-http")
    );
    let mut odd = conn("10.0.0.5:8080");
    odd.transport_protocol = "quic";
    assert_eq!(
        pick(&l, &odd).as_deref(),
        Some("virtualInbound-catchall-http")
    );
}

#[test]
fn ip_trie_prefers_the_most_specific_range_and_falls_back_unless_exclusive() {
    let m = format!(
        r#"  matcher_tree:
    input: {{ name: ip, typed_config: {{ "@type": {NET}.DestinationIPInput }} }}
    custom_match:
      name: ip
      typed_config:
        "@type": type.googleapis.com/xds.type.matcher.v3.IPMatcher
        range_matchers:
        - ranges: [{{ address_prefix: 10.0.0.0, prefix_len: 8 }}]
          on_match: {wide}
        - ranges: [{{ address_prefix: 10.1.0.0, prefix_len: 16 }}]
          on_match:
            matcher:
              matcher_tree:
                input: {{ name: port, typed_config: {{ "@type": {NET}.DestinationPortInput }} }}
                exact_match_map: {{ map: {{ "443": {narrow} }} }}
"#,
        wide = action("wide"),
        narrow = action("narrow"),
    );
    let l = listener(&m, &["wide", "narrow"], true);
    assert!(!l.chains.needs_inspection());
    assert_eq!(pick(&l, &conn("10.1.2.3:443")).as_deref(), Some("narrow"));
    // The /16 branch has no action for port 80: the /8 range is tried next.
    assert_eq!(pick(&l, &conn("10.1.2.3:80")).as_deref(), Some("wide"));
    assert_eq!(pick(&l, &conn("10.9.9.9:80")).as_deref(), Some("wide"));
    assert_eq!(
        pick(&l, &conn("192.168.0.1:80")).as_deref(),
        Some("fallback")
    );

    let exclusive = m.replace(
        "- ranges: [{ address_prefix: 10.1.0.0, prefix_len: 16 }]",
        "- exclusive: true\n          ranges: [{ address_prefix: 10.1.0.0, prefix_len: 16 }]",
    );
    let l = listener(&exclusive, &["wide", "narrow"], true);
    assert_eq!(pick(&l, &conn("10.1.2.3:80")).as_deref(), Some("fallback"));
}

#[test]
fn matcher_list_predicates_and_prefix_maps() {
    let m = format!(
        r#"  matcher_list:
    matchers:
    - predicate:
        and_matcher:
          predicate:
          - single_predicate:
              input: {{ name: sni, typed_config: {{ "@type": {NET}.ServerNameInput }} }}
              value_match: {{ suffix: .example.com }}
          - not_matcher:
              single_predicate:
                input: {{ name: src, typed_config: {{ "@type": {NET}.SourceIPInput }} }}
                custom_match:
                  name: ip
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.matching.input_matchers.ip.v3.Ip
                    stat_prefix: x
                    cidr_ranges: [{{ address_prefix: 10.0.0.0, prefix_len: 8 }}]
      on_match: {external}
    - predicate:
        single_predicate:
          input: {{ name: sni, typed_config: {{ "@type": {NET}.ServerNameInput }} }}
          value_match: {{ safe_regex: {{ regex: "API\\..*" }}, ignore_case: true }}
      on_match:
        matcher:
          matcher_tree:
            input: {{ name: sni, typed_config: {{ "@type": {NET}.ServerNameInput }} }}
            prefix_match_map:
              map:
                "api.": {api}
                "api.v2.": {api_v2}
"#,
        external = action("external"),
        api = action("api"),
        api_v2 = action("api_v2"),
    );
    let l = listener(&m, &["external", "api", "api_v2"], false);
    let mut c = conn("10.0.0.5:443");
    c.transport_protocol = "tls";
    c.server_name = Some("www.example.com");
    c.source = "192.0.2.1:5000".parse().expect("addr");
    assert_eq!(pick(&l, &c).as_deref(), Some("external"));
    // From inside 10/8 the first predicate fails; the SNI does not match the regex either.
    c.source = "10.1.1.1:5000".parse().expect("addr");
    assert_eq!(pick(&l, &c), None);
    c.server_name = Some("api.v2.internal");
    assert_eq!(
        pick(&l, &c).as_deref(),
        Some("api_v2"),
        "longest prefix first"
    );
    c.server_name = Some("api.v1.internal");
    assert_eq!(pick(&l, &c).as_deref(), Some("api"));
    // No SNI at all: inputs without a value match nothing.
    c.server_name = None;
    assert_eq!(pick(&l, &c), None);
}

#[test]
fn an_action_naming_no_chain_falls_to_the_default() {
    let m = format!("  on_no_match: {}\n", action("missing"));
    let l = listener(&m, &["a"], true);
    assert_eq!(pick(&l, &conn("10.0.0.1:80")).as_deref(), Some("fallback"));
}

#[test]
fn invalid_matchers_name_the_field() {
    let yaml = |matcher: &str, chains: &str| {
        format!(
            "name: l\naddress: {{socket_address: {{address: 0.0.0.0, port_value: 1}}}}\n\
             filter_chains:\n{chains}filter_chain_matcher:\n{matcher}"
        )
    };
    let bad_action = "  on_no_match: { action: { name: a, typed_config: { \"@type\": type.googleapis.com/google.protobuf.UInt32Value, value: 1 } } }\n";
    let e = build(&yaml(bad_action, "- name: a\n"))
        .expect_err("bad action")
        .to_string();
    assert!(
        e.contains("filter_chain_matcher.on_no_match.action.typed_config: the filter chain matcher's action must be a google.protobuf.StringValue"),
        "{e}"
    );
    let bad_input = format!(
        "  matcher_tree:\n    input: {{ name: x, typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.FilterStateInput, key: k }} }}\n    exact_match_map: {{ map: {{ a: {} }} }}\n",
        action("a")
    );
    let e = build(&yaml(&bad_input, "- name: a\n"))
        .expect_err("bad input")
        .to_string();
    assert!(
        e.contains("filter_chain_matcher.matcher_tree.input.typed_config: unsupported filter chain matcher input envoy.extensions.matching.common_inputs.network.v3.FilterStateInput"),
        "{e}"
    );
    let ok = format!("  on_no_match: {}\n", action("a"));
    let e = build(&yaml(&ok, "- name: a\n- name: a\n"))
        .expect_err("dup")
        .to_string();
    assert!(
        e.contains("filter_chains[1].name: filter chain name \"a\" is not unique"),
        "{e}"
    );
    let e = build(&yaml(&ok, "- filters: []\n"))
        .expect_err("unnamed")
        .to_string();
    assert!(
        e.contains("filter_chains[0].name: filter chains must be named"),
        "{e}"
    );
}
