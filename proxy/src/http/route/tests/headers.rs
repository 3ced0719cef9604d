//! Header mutations across the route configuration, virtual host, route and weighted cluster.

use http::HeaderMap;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::http::route::HeaderVars;

fn values(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_string())
        .collect()
}

fn levels(action: &str, most_specific_wins: bool) -> String {
    format!(
        r#"
name: rc
most_specific_header_mutations_wins: {most_specific_wins}
request_headers_to_add: [{{header: {{key: x-order, value: rc}}, append_action: {action}}}]
response_headers_to_add: [{{header: {{key: x-order, value: rc}}, append_action: {action}}}]
virtual_hosts:
- name: vh
  domains: ["*"]
  request_headers_to_add: [{{header: {{key: x-order, value: vh}}, append_action: {action}}}]
  response_headers_to_add: [{{header: {{key: x-order, value: vh}}, append_action: {action}}}]
  routes:
  - name: r
    match: {{prefix: /}}
    request_headers_to_add: [{{header: {{key: x-order, value: route}}, append_action: {action}}}]
    response_headers_to_add: [{{header: {{key: x-order, value: route}}, append_action: {action}}}]
    route:
      weighted_clusters:
        clusters:
        - name: a
          weight: 1
          request_headers_to_add: [{{header: {{key: x-order, value: cluster}}, append_action: {action}}}]
          response_headers_to_add: [{{header: {{key: x-order, value: cluster}}, append_action: {action}}}]
"#
    )
}

/// (request, response) values of x-order after every level ran.
fn order(action: &str, most_specific_wins: bool) -> (Vec<String>, Vec<String>) {
    let t = table(&levels(action, most_specific_wins));
    let mut r = get("/", "h");
    let s = t.select(&r).expect("selected");
    let picked = forward(&s).pick_cluster(&r.headers, &mut StdRng::seed_from_u64(1));
    let vars = HeaderVars::default();
    s.apply_request_headers(picked.as_ref(), &mut r.headers, &vars);
    let mut resp = HeaderMap::new();
    s.apply_response_headers(picked.as_ref(), &mut resp, &vars);
    (values(&r.headers, "x-order"), values(&resp, "x-order"))
}

#[test]
fn appends_run_cluster_route_vhost_then_route_configuration() {
    let want = vec!["cluster", "route", "vh", "rc"];
    let (req, resp) = order("APPEND_IF_EXISTS_OR_ADD", false);
    assert_eq!(req, want);
    assert_eq!(resp, want);
}

#[test]
fn overwrites_let_the_route_configuration_win_by_default() {
    assert_eq!(order("OVERWRITE_IF_EXISTS_OR_ADD", false).0, vec!["rc"]);
    assert_eq!(order("OVERWRITE_IF_EXISTS_OR_ADD", true).0, vec!["route"]);
    assert_eq!(order("OVERWRITE_IF_EXISTS_OR_ADD", true).1, vec!["route"]);
    // ADD_IF_ABSENT: the first level to run wins.
    assert_eq!(order("ADD_IF_ABSENT", false).0, vec!["cluster"]);
    // OVERWRITE_IF_EXISTS never creates the header.
    assert!(order("OVERWRITE_IF_EXISTS", false).0.is_empty());
}

fn apply_route(route_headers_yaml: &str, headers: &[(&str, &str)]) -> HeaderMap {
    let t = routes(&format!(
        "  - name: r\n    match: {{prefix: /}}\n    route: {{cluster: c}}\n{route_headers_yaml}"
    ));
    let mut r = req("GET", "/", "h", headers);
    let s = t.select(&r).expect("selected");
    let vars = HeaderVars {
        downstream_remote: Some("192.0.2.7:4242".parse().expect("addr")),
        protocol: Some(http::Version::HTTP_11),
        ..Default::default()
    };
    s.apply_request_headers(None, &mut r.headers, &vars);
    r.headers
}

#[test]
fn removals_happen_before_additions_and_actions_are_honoured() {
    let h = apply_route(
        "    request_headers_to_remove: [x-gone, x-replaced]\n    request_headers_to_add:\n    - {header: {key: x-replaced, value: new}}\n    - {header: {key: x-present, value: no}, append_action: ADD_IF_ABSENT}\n    - {header: {key: x-absent, value: yes}, append_action: ADD_IF_ABSENT}\n    - {header: {key: x-only-if, value: no}, append_action: OVERWRITE_IF_EXISTS}\n    - {header: {key: x-app, value: two}}\n    - {header: {key: x-legacy, value: set}, append: false}\n",
        &[("x-gone", "1"), ("x-replaced", "old"), ("x-present", "orig"), ("x-app", "one"), ("x-legacy", "a"), ("x-legacy", "b")],
    );
    assert!(h.get("x-gone").is_none());
    assert_eq!(values(&h, "x-replaced"), vec!["new"]);
    assert_eq!(values(&h, "x-present"), vec!["orig"]);
    assert_eq!(values(&h, "x-absent"), vec!["yes"]);
    assert!(h.get("x-only-if").is_none());
    assert_eq!(values(&h, "x-app"), vec!["one", "two"]);
    assert_eq!(values(&h, "x-legacy"), vec!["set"]);
}

#[test]
fn empty_values_are_skipped_unless_kept() {
    let h = apply_route(
        "    request_headers_to_add:\n    - {header: {key: x-empty, value: ''}}\n    - {header: {key: x-kept, value: ''}, keep_empty_value: true}\n    - {header: {key: x-upstream, value: '%UPSTREAM_REMOTE_ADDRESS%'}}\n",
        &[],
    );
    assert!(h.get("x-empty").is_none());
    assert_eq!(values(&h, "x-kept"), vec![""]);
    assert!(h.get("x-upstream").is_none());
}

#[test]
fn command_operators_expand_per_request() {
    let h = apply_route(
        "    request_headers_to_add:\n    - {header: {key: x-client, value: '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%'}}\n    - {header: {key: x-peer, value: 'peer=%DOWNSTREAM_REMOTE_ADDRESS% %PROTOCOL% 100%%'}}\n    - {header: {key: x-copy, value: '%REQ(x-src)%'}}\n",
        &[("x-src", "copied")],
    );
    assert_eq!(values(&h, "x-client"), vec!["192.0.2.7"]);
    assert_eq!(
        values(&h, "x-peer"),
        vec!["peer=192.0.2.7:4242 HTTP/1.1 100%"]
    );
    assert_eq!(values(&h, "x-copy"), vec!["copied"]);
}

#[test]
fn response_side_reads_request_and_response_headers() {
    let t = routes(
        "  - name: r\n    match: {prefix: /}\n    route: {cluster: c}\n    response_headers_to_remove: [server]\n    response_headers_to_add:\n    - {header: {key: x-req, value: '%REQ(x-id)%'}}\n    - {header: {key: x-resp, value: '%RESP(x-up)%'}}\n    - {header: {key: x-upstream, value: '%UPSTREAM_REMOTE_ADDRESS%'}}\n",
    );
    let r = req("GET", "/", "h", &[("x-id", "42")]);
    let s = t.select(&r).expect("selected");
    let mut resp = HeaderMap::new();
    resp.insert("server", "upstream".parse().expect("value"));
    resp.insert("x-up", "u".parse().expect("value"));
    let vars = HeaderVars {
        upstream_remote: Some("10.0.0.1:8080".parse().expect("addr")),
        request_headers: Some(&r.headers),
        ..Default::default()
    };
    s.apply_response_headers(None, &mut resp, &vars);
    assert!(resp.get("server").is_none());
    assert_eq!(values(&resp, "x-req"), vec!["42"]);
    assert_eq!(values(&resp, "x-resp"), vec!["u"]);
    assert_eq!(values(&resp, "x-upstream"), vec!["10.0.0.1:8080"]);
}

#[test]
fn direct_responses_get_route_vhost_and_table_headers() {
    // Envoy 1.40 sends x-order: route, vh, rc on a direct response.
    let t = table(
        r#"
name: rc
response_headers_to_add: [{header: {key: x-order, value: rc}}]
virtual_hosts:
- name: vh
  domains: ["*"]
  response_headers_to_add: [{header: {key: x-order, value: vh}}]
  routes:
  - match: {prefix: /}
    direct_response: {status: 200, body: {inline_string: hello}}
    response_headers_to_add: [{header: {key: x-order, value: route}}]
"#,
    );
    let r = get("/", "h");
    let s = t.select(&r).expect("selected");
    let mut resp = direct(&s).response(&r);
    s.apply_response_headers(None, resp.headers_mut(), &HeaderVars::default());
    assert_eq!(values(resp.headers(), "x-order"), vec!["route", "vh", "rc"]);
}
