//! Route matching: paths, headers, query parameters, cookies, gRPC.

use super::*;

fn one(match_yaml: &str) -> RouteTable {
    routes(&format!(
        "  - name: hit\n    match: {match_yaml}\n    route: {{cluster: c}}\n"
    ))
}

fn hits(t: &RouteTable, r: &Parts) -> bool {
    route_name(t, r).is_some()
}

fn path_hits(t: &RouteTable, uri: &str) -> bool {
    hits(t, &get(uri, "h"))
}

#[test]
fn prefix_matches_the_start_of_the_path_including_query() {
    let t = one("{prefix: /api}");
    assert!(path_hits(&t, "/api"));
    assert!(path_hits(&t, "/api/v1"));
    assert!(path_hits(&t, "/apix"));
    assert!(!path_hits(&t, "/ap"));
    assert!(!path_hits(&t, "/API"));
    let t = one("{prefix: '/a?x=1'}");
    assert!(path_hits(&t, "/a?x=1&y=2"));
}

#[test]
fn path_is_exact_without_the_query() {
    let t = one("{path: /exact}");
    assert!(path_hits(&t, "/exact"));
    assert!(path_hits(&t, "/exact?q=1"));
    assert!(!path_hits(&t, "/exact/"));
    assert!(!path_hits(&t, "/exactly"));
}

#[test]
fn case_insensitive_prefix_and_path() {
    let t = one("{prefix: /Api, case_sensitive: false}");
    assert!(path_hits(&t, "/aPI/x"));
    let t = one("{path: /Exact, case_sensitive: false}");
    assert!(path_hits(&t, "/EXACT?z"));
}

#[test]
fn safe_regex_must_match_the_whole_path_without_query() {
    let t = one(r#"{safe_regex: {regex: "/v[0-9]+/items"}}"#);
    assert!(path_hits(&t, "/v12/items"));
    assert!(path_hits(&t, "/v12/items?page=2"));
    assert!(!path_hits(&t, "/v12/items/3"));
    assert!(!path_hits(&t, "/x/v1/items"));
    // case_sensitive does not apply to regexes.
    let t = one(r#"{safe_regex: {regex: "/abc"}, case_sensitive: false}"#);
    assert!(!path_hits(&t, "/ABC"));
}

#[test]
fn path_separated_prefix_stops_at_segment_boundaries() {
    let t = one("{path_separated_prefix: /foo}");
    assert!(path_hits(&t, "/foo"));
    assert!(path_hits(&t, "/foo/bar"));
    assert!(path_hits(&t, "/foo?x=1"));
    assert!(!path_hits(&t, "/foobar"));
}

#[test]
fn routes_are_tried_in_order() {
    let t = routes(
        "  - {name: first, match: {prefix: /a}, route: {cluster: c}}\n  - {name: second, match: {path: /a/b}, route: {cluster: c}}\n  - {name: third, match: {prefix: /}, route: {cluster: c}}\n",
    );
    assert_eq!(route_name(&t, &get("/a/b", "h")).as_deref(), Some("first"));
    assert_eq!(route_name(&t, &get("/z", "h")).as_deref(), Some("third"));
}

fn header_hits(match_yaml: &str, headers: &[(&str, &str)]) -> bool {
    let t = one(&format!("{{prefix: /, headers: [{match_yaml}]}}"));
    hits(&t, &req("GET", "/", "h", headers))
}

#[test]
fn header_string_matchers() {
    assert!(header_hits(
        "{name: x, string_match: {exact: v}}",
        &[("x", "v")]
    ));
    assert!(!header_hits(
        "{name: x, string_match: {exact: v}}",
        &[("x", "V")]
    ));
    assert!(header_hits(
        "{name: x, string_match: {exact: v, ignore_case: true}}",
        &[("x", "V")]
    ));
    assert!(header_hits(
        "{name: x, string_match: {prefix: ab}}",
        &[("x", "abc")]
    ));
    assert!(header_hits(
        "{name: x, string_match: {suffix: bc}}",
        &[("x", "abc")]
    ));
    assert!(header_hits(
        "{name: x, string_match: {contains: XB, ignore_case: true}}",
        &[("x", "axbc")]
    ));
    assert!(header_hits(
        r#"{name: x, string_match: {safe_regex: {regex: "\\d{3}"}}}"#,
        &[("x", "123")]
    ));
    assert!(!header_hits(
        r#"{name: x, string_match: {safe_regex: {regex: "\\d{3}"}}}"#,
        &[("x", "1234")]
    ));
    assert!(!header_hits("{name: x, string_match: {exact: v}}", &[]));
}

#[test]
fn deprecated_direct_header_fields() {
    assert!(header_hits("{name: x, exact_match: v}", &[("x", "v")]));
    // The legacy empty exact_match matches any value.
    assert!(header_hits(
        "{name: x, exact_match: ''}",
        &[("x", "anything")]
    ));
    assert!(header_hits("{name: x, prefix_match: ab}", &[("x", "abc")]));
    assert!(header_hits("{name: x, suffix_match: bc}", &[("x", "abc")]));
    assert!(header_hits("{name: x, contains_match: b}", &[("x", "abc")]));
    assert!(header_hits(
        r#"{name: x, safe_regex_match: {regex: "a.c"}}"#,
        &[("x", "abc")]
    ));
}

#[test]
fn header_presence_range_and_inversion() {
    assert!(header_hits("{name: x}", &[("x", "")]));
    assert!(!header_hits("{name: x}", &[]));
    assert!(header_hits("{name: x, present_match: true}", &[("x", "1")]));
    assert!(header_hits("{name: x, present_match: false}", &[]));
    assert!(!header_hits(
        "{name: x, present_match: false}",
        &[("x", "1")]
    ));
    assert!(header_hits(
        "{name: x, present_match: true, invert_match: true}",
        &[]
    ));
    assert!(header_hits(
        "{name: x, range_match: {start: -10, end: 0}}",
        &[("x", "-1")]
    ));
    assert!(!header_hits(
        "{name: x, range_match: {start: -10, end: 0}}",
        &[("x", "0")]
    ));
    assert!(!header_hits(
        "{name: x, range_match: {start: 0, end: 10}}",
        &[("x", "5x")]
    ));
    assert!(!header_hits(
        "{name: x, range_match: {start: -10, end: 0}, invert_match: true}",
        &[("x", "-1")]
    ));
    assert!(header_hits(
        r#"{name: x, string_match: {exact: v}, invert_match: true}"#,
        &[("x", "w")]
    ));
}

#[test]
fn missing_headers_fail_value_matchers_even_inverted_unless_treated_as_empty() {
    assert!(!header_hits(
        "{name: x, string_match: {exact: v}, invert_match: true}",
        &[]
    ));
    assert!(header_hits(
        "{name: x, range_match: {start: 0, end: 10}, invert_match: true, treat_missing_header_as_empty: true}",
        &[]
    ));
    assert!(header_hits(
        r#"{name: x, string_match: {safe_regex: {regex: "^$"}}, treat_missing_header_as_empty: true}"#,
        &[]
    ));
}

#[test]
fn repeated_headers_are_joined_with_commas() {
    assert!(header_hits(
        "{name: x, string_match: {exact: 'a,b'}}",
        &[("x", "a"), ("x", "b")]
    ));
}

#[test]
fn pseudo_headers_are_matchable() {
    let t = one("{prefix: /, headers: [{name: ':method', string_match: {exact: POST}}]}");
    assert!(hits(&t, &req("POST", "/", "h", &[])));
    assert!(!hits(&t, &req("GET", "/", "h", &[])));
    let t = one("{prefix: /, headers: [{name: ':authority', string_match: {exact: 'h:81'}}]}");
    assert!(hits(&t, &get("/", "h:81")));
    let t = one("{prefix: /, headers: [{name: ':path', string_match: {suffix: '?x=1'}}]}");
    assert!(hits(&t, &get("/p?x=1", "h")));
    let t = one("{prefix: /, headers: [{name: ':scheme', string_match: {exact: https}}]}");
    assert!(hits(&t, &get("https://h/", "h")));
    assert!(!hits(&t, &get("/", "h")));
}

#[test]
fn query_parameters() {
    let t = one("{prefix: /, query_parameters: [{name: debug, string_match: {exact: 'on'}}]}");
    assert!(path_hits(&t, "/p?a=1&debug=on"));
    assert!(!path_hits(&t, "/p?debug=off"));
    // Only the first value counts.
    assert!(!path_hits(&t, "/p?debug=off&debug=on"));
    assert!(!path_hits(&t, "/p"));
    let t = one("{prefix: /, query_parameters: [{name: debug, string_match: {exact: 'ON', ignore_case: true}}]}");
    assert!(path_hits(&t, "/p?debug=on"));
    let t = one("{prefix: /, query_parameters: [{name: flag, present_match: true}]}");
    assert!(path_hits(&t, "/p?flag"));
    assert!(path_hits(&t, "/p?x=1&flag=2"));
    assert!(!path_hits(&t, "/p?flagx=1"));
}

#[test]
fn grpc_requires_a_grpc_content_type() {
    let t = one("{prefix: /, grpc: {}}");
    assert!(hits(
        &t,
        &req("POST", "/s/M", "h", &[("content-type", "application/grpc")])
    ));
    assert!(hits(
        &t,
        &req(
            "POST",
            "/s/M",
            "h",
            &[("content-type", "application/grpc+proto")]
        )
    ));
    assert!(!hits(
        &t,
        &req(
            "POST",
            "/s/M",
            "h",
            &[("content-type", "application/grpc-web")]
        )
    ));
    assert!(!hits(&t, &req("POST", "/s/M", "h", &[])));
}

#[test]
fn cookies() {
    let t = one("{prefix: /, cookies: [{name: session, string_match: {prefix: abc}}]}");
    assert!(hits(
        &t,
        &req("GET", "/", "h", &[("cookie", "a=1; session=abcdef")])
    ));
    assert!(hits(
        &t,
        &req("GET", "/", "h", &[("cookie", "session=\"abc\"")])
    ));
    assert!(!hits(
        &t,
        &req("GET", "/", "h", &[("cookie", "session=zzz")])
    ));
    let t = one(
        "{prefix: /, cookies: [{name: session, string_match: {exact: x}, invert_match: true}]}",
    );
    assert!(hits(&t, &get("/", "h")));
}

#[test]
fn connect_matcher_only_matches_connect() {
    let t = routes(
        "  - {name: tunnel, match: {connect_matcher: {}}, route: {cluster: c}}\n  - {name: web, match: {prefix: /}, route: {cluster: c}}\n",
    );
    assert_eq!(
        route_name(&t, &req("CONNECT", "upstream:443", "upstream:443", &[])).as_deref(),
        Some("tunnel")
    );
    assert_eq!(route_name(&t, &get("/", "h")).as_deref(), Some("web"));
}

#[test]
fn runtime_fraction_default_value_applies() {
    let t = one("{prefix: /, runtime_fraction: {default_value: {numerator: 0}, runtime_key: k}}");
    assert!(!path_hits(&t, "/"));
    let t = one("{prefix: /, runtime_fraction: {default_value: {numerator: 100}, runtime_key: k}}");
    assert!(path_hits(&t, "/"));
}

#[test]
fn path_parameters_can_be_ignored() {
    let yaml = "name: rc\nignore_path_parameters_in_path_matching: true\nvirtual_hosts:\n- name: vh\n  domains: ['*']\n  routes:\n  - {name: hit, match: {path: /a/b}, route: {cluster: c}}\n";
    let t = table(yaml);
    assert!(path_hits(&t, "/a/b;v=1"));
    assert!(!path_hits(
        &routes("  - {name: hit, match: {path: /a/b}, route: {cluster: c}}\n"),
        "/a/b;v=1"
    ));
}
