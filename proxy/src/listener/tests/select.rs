//! Filter chain selection, stage by stage, as Envoy documents it.

use std::net::SocketAddr;

use super::build_ok;
use crate::listener::{ListenerConfig, MatchInput};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// A listener on 0.0.0.0:8080 with `chains` (YAML list items) and an optional default chain.
fn listener(chains: &str, default: bool) -> ListenerConfig<String> {
    let default = if default {
        "default_filter_chain: {name: fallback}"
    } else {
        ""
    };
    build_ok(&format!(
        "name: l0\naddress: {{socket_address: {{address: 0.0.0.0, port_value: 8080}}}}\n\
         filter_chains:\n{chains}\n{default}\n"
    ))
}

struct Conn<'a> {
    input: MatchInput<'a>,
}

impl<'a> Conn<'a> {
    fn to(dst: &str) -> Self {
        Conn {
            input: MatchInput::raw(addr(dst), addr("192.0.2.10:40000")),
        }
    }
    fn from(mut self, src: &str) -> Self {
        self.input.source = addr(src);
        self.input.direct_source = addr(src);
        self
    }
    fn sni(mut self, name: &'a str) -> Self {
        self.input.server_name = Some(name);
        self.input.transport_protocol = "tls";
        self
    }
    fn transport(mut self, t: &'a str) -> Self {
        self.input.transport_protocol = t;
        self
    }
    fn alpn(mut self, protos: &'a [&'a str]) -> Self {
        self.input.application_protocols = protos;
        self
    }
}

fn pick<'c>(l: &'c ListenerConfig<String>, c: Conn<'_>) -> Option<&'c str> {
    l.chains.select(&c.input).map(String::as_str)
}

#[test]
fn destination_port_is_decided_before_server_name() {
    let l = listener(
        "- {name: a, filter_chain_match: {destination_port: 8080}}\n\
         - {name: b, filter_chain_match: {server_names: [example.com]}}",
        false,
    );
    // Envoy narrows on the port first: chain a is the only one naming 8080, so SNI is never consulted.
    assert_eq!(
        pick(&l, Conn::to("10.0.0.1:8080").sni("example.com")),
        Some("a")
    );
    assert_eq!(
        pick(&l, Conn::to("10.0.0.1:9090").sni("example.com")),
        Some("b")
    );
    assert_eq!(pick(&l, Conn::to("10.0.0.1:9090").sni("other.com")), None);
}

#[test]
fn a_specific_stage_winner_never_falls_back_to_catch_all_chains() {
    let chains =
        "- {name: a, filter_chain_match: {destination_port: 8080, server_names: [a.com]}}\n\
                  - {name: any}";
    let l = listener(chains, false);
    assert_eq!(pick(&l, Conn::to("10.0.0.1:8080").sni("a.com")), Some("a"));
    // Port 8080 selected chain a's subtree; its SNI does not match, and the catch-all chain was
    // already pruned at the port stage.
    assert_eq!(pick(&l, Conn::to("10.0.0.1:8080").sni("b.com")), None);
    assert_eq!(
        pick(&l, Conn::to("10.0.0.1:9000").sni("b.com")),
        Some("any")
    );
    let with_default = listener(chains, true);
    assert_eq!(
        pick(&with_default, Conn::to("10.0.0.1:8080").sni("b.com")),
        Some("fallback")
    );
}

#[test]
fn longest_destination_prefix_wins() {
    let l = listener(
        "- {name: wide, filter_chain_match: {prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]}}\n\
         - {name: narrow, filter_chain_match: {prefix_ranges: [{address_prefix: 10.1.0.0, prefix_len: 16}]}}\n\
         - {name: host, filter_chain_match: {prefix_ranges: [{address_prefix: 10.1.2.3, prefix_len: 32}]}}\n\
         - {name: any}",
        false,
    );
    assert_eq!(pick(&l, Conn::to("10.1.2.3:8080")), Some("host"));
    assert_eq!(pick(&l, Conn::to("10.1.9.9:8080")), Some("narrow"));
    assert_eq!(pick(&l, Conn::to("10.2.0.1:8080")), Some("wide"));
    assert_eq!(pick(&l, Conn::to("192.168.0.1:8080")), Some("any"));
    assert_eq!(pick(&l, Conn::to("[2001:db8::1]:8080")), Some("any"));
}

#[test]
fn server_names_exact_then_longest_wildcard_then_none() {
    let l = listener(
        "- {name: exact, filter_chain_match: {server_names: [www.example.com]}}\n\
         - {name: wild, filter_chain_match: {server_names: ['*.example.com']}}\n\
         - {name: com, filter_chain_match: {server_names: ['*.com']}}\n\
         - {name: none}",
        false,
    );
    let to = || Conn::to("10.0.0.1:8080");
    assert_eq!(pick(&l, to().sni("www.example.com")), Some("exact"));
    assert_eq!(pick(&l, to().sni("WWW.Example.COM")), Some("exact"));
    assert_eq!(pick(&l, to().sni("api.example.com")), Some("wild"));
    assert_eq!(pick(&l, to().sni("a.b.example.com")), Some("wild"));
    // A wildcard never covers its own base name.
    assert_eq!(pick(&l, to().sni("example.com")), Some("com"));
    assert_eq!(pick(&l, to().sni("foo.com")), Some("com"));
    assert_eq!(pick(&l, to().sni("example.org")), Some("none"));
    assert_eq!(pick(&l, to()), Some("none"));
}

#[test]
fn chains_needing_sni_never_match_a_connection_nobody_inspected() {
    // No tls_inspector: the accept stage only knows addresses, as in Envoy.
    let l = listener(
        "- {name: tls, filter_chain_match: {server_names: [example.com], transport_protocol: tls}}",
        true,
    );
    assert!(l.chains.needs_inspection());
    assert_eq!(pick(&l, Conn::to("10.0.0.1:8080")), Some("fallback"));
}

#[test]
fn transport_protocol_then_application_protocols() {
    let l = listener(
        "- {name: h2, filter_chain_match: {transport_protocol: tls, application_protocols: [h2]}}\n\
         - {name: h1, filter_chain_match: {transport_protocol: tls, application_protocols: [http/1.1]}}\n\
         - {name: tls, filter_chain_match: {transport_protocol: tls}}\n\
         - {name: raw}",
        false,
    );
    let to = || Conn::to("10.0.0.1:8080");
    assert_eq!(pick(&l, to().transport("tls").alpn(&["h2"])), Some("h2"));
    // The client's order decides between two protocols both named by chains.
    assert_eq!(
        pick(&l, to().transport("tls").alpn(&["http/1.1", "h2"])),
        Some("h1")
    );
    assert_eq!(
        pick(&l, to().transport("tls").alpn(&["spdy/3"])),
        Some("tls")
    );
    assert_eq!(pick(&l, to().transport("tls")), Some("tls"));
    assert_eq!(pick(&l, to()), Some("raw"));
}

#[test]
fn source_type_local_external_any() {
    let l = listener(
        "- {name: local, filter_chain_match: {source_type: SAME_IP_OR_LOOPBACK}}\n\
         - {name: external, filter_chain_match: {source_type: EXTERNAL}}",
        false,
    );
    assert_eq!(
        pick(&l, Conn::to("127.0.0.1:8080").from("127.0.0.1:5000")),
        Some("local")
    );
    assert_eq!(
        pick(&l, Conn::to("10.0.0.9:8080").from("10.0.0.9:5000")),
        Some("local")
    );
    assert_eq!(
        pick(&l, Conn::to("10.0.0.9:8080").from("10.0.0.5:5000")),
        Some("external")
    );
    let only_local = listener(
        "- {name: local, filter_chain_match: {source_type: SAME_IP_OR_LOOPBACK}}\n\
         - {name: any}",
        false,
    );
    assert_eq!(
        pick(&only_local, Conn::to("10.0.0.9:8080").from("10.0.0.5:5000")),
        Some("any")
    );
}

#[test]
fn source_prefix_then_source_port() {
    let l = listener(
        "- {name: net, filter_chain_match: {source_prefix_ranges: [{address_prefix: 192.168.0.0, prefix_len: 16}]}}\n\
         - {name: host, filter_chain_match: {source_prefix_ranges: [{address_prefix: 192.168.1.1, prefix_len: 32}]}}\n\
         - {name: host_port, filter_chain_match: {source_prefix_ranges: [{address_prefix: 192.168.1.1, prefix_len: 32}], source_ports: [7000]}}\n\
         - {name: any}",
        false,
    );
    let to = || Conn::to("10.0.0.1:8080");
    assert_eq!(pick(&l, to().from("192.168.1.1:7000")), Some("host_port"));
    assert_eq!(pick(&l, to().from("192.168.1.1:7001")), Some("host"));
    assert_eq!(pick(&l, to().from("192.168.7.7:7000")), Some("net"));
    assert_eq!(pick(&l, to().from("172.16.0.1:7000")), Some("any"));
}

#[test]
fn direct_source_comes_before_source_type() {
    let l = listener(
        "- {name: direct, filter_chain_match: {direct_source_prefix_ranges: [{address_prefix: 10.9.0.0, prefix_len: 16}]}}\n\
         - {name: local, filter_chain_match: {source_type: SAME_IP_OR_LOOPBACK}}",
        false,
    );
    let mut c = Conn::to("127.0.0.1:8080").from("127.0.0.1:1234");
    c.input.direct_source = addr("10.9.1.1:1234");
    assert_eq!(pick(&l, c), Some("direct"));
    assert_eq!(
        pick(&l, Conn::to("127.0.0.1:8080").from("127.0.0.1:1234")),
        Some("local")
    );
}

#[test]
fn default_chain_when_nothing_matches_and_none_without_it() {
    let chains = "- {name: a, filter_chain_match: {destination_port: 1}}";
    assert_eq!(
        pick(&listener(chains, true), Conn::to("10.0.0.1:8080")),
        Some("fallback")
    );
    assert_eq!(
        pick(&listener(chains, false), Conn::to("10.0.0.1:8080")),
        None
    );
}

#[test]
fn dual_stack_destinations_match_ipv4_ranges() {
    let l = listener(
        "- {name: v4, filter_chain_match: {prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]}}",
        false,
    );
    assert_eq!(pick(&l, Conn::to("[::ffff:10.1.1.1]:8080")), Some("v4"));
}
