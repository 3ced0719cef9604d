//! Forwarding: cluster choice, rewrites, timeouts, upgrades.

use std::collections::HashMap;
use std::time::Duration;

use http::StatusCode;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::http::route::HeaderVars;

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

fn only(route_yaml: &str) -> RouteTable {
    routes(&format!("  - name: r\n{route_yaml}"))
}

fn pick(t: &RouteTable, r: &Parts) -> Option<String> {
    let s = t.select(r).expect("selected");
    forward(&s)
        .pick_cluster(&r.headers, &mut rng())
        .map(|p| p.cluster.into_owned())
}

#[test]
fn fixed_and_header_clusters() {
    let t = only("    match: {prefix: /}\n    route: {cluster: backend}\n");
    assert_eq!(pick(&t, &get("/", "h")).as_deref(), Some("backend"));

    let t = only("    match: {prefix: /}\n    route: {cluster_header: X-Cluster}\n");
    assert_eq!(
        pick(&t, &req("GET", "/", "h", &[("x-cluster", "dyn")])).as_deref(),
        Some("dyn")
    );
    assert_eq!(pick(&t, &get("/", "h")), None);
    assert_eq!(pick(&t, &req("GET", "/", "h", &[("x-cluster", "")])), None);
    let s = t.select(&get("/", "h")).expect("selected");
    assert_eq!(
        forward(&s).cluster_not_found_status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    let t = only("    match: {prefix: /}\n    route: {cluster_header: x-cluster, cluster_not_found_response_code: NOT_FOUND}\n");
    let s = t.select(&get("/", "h")).expect("selected");
    assert_eq!(
        forward(&s).cluster_not_found_status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn weighted_split_follows_the_weights() {
    let t = only(
        "    match: {prefix: /}\n    route:\n      weighted_clusters:\n        clusters:\n        - {name: a, weight: 50}\n        - {name: b, weight: 30}\n        - {name: c, weight: 20}\n        - {name: never, weight: 0}\n",
    );
    let r = get("/", "h");
    let s = t.select(&r).expect("selected");
    let f = forward(&s);
    let mut counts: HashMap<String, u32> = HashMap::new();
    let mut g = rng();
    let n = 10_000;
    for _ in 0..n {
        let p = f.pick_cluster(&r.headers, &mut g).expect("picked");
        *counts.entry(p.cluster.into_owned()).or_default() += 1;
    }
    for (name, want) in [("a", 50.0), ("b", 30.0), ("c", 20.0)] {
        let got = f64::from(counts.get(name).copied().unwrap_or(0)) * 100.0 / f64::from(n);
        assert!(
            (got - want).abs() <= 2.0,
            "{name}: {got}% instead of {want}%"
        );
    }
    assert!(!counts.contains_key("never"));
}

#[test]
fn weighted_random_header_is_consistent_and_header_arms_read_the_request() {
    let t = only(
        "    match: {prefix: /}\n    route:\n      weighted_clusters:\n        header_name: x-rand\n        clusters:\n        - {name: a, weight: 1}\n        - {cluster_header: x-c, weight: 1}\n",
    );
    let even = req("GET", "/", "h", &[("x-rand", "4"), ("x-c", "from-header")]);
    let odd = req("GET", "/", "h", &[("x-rand", "5"), ("x-c", "from-header")]);
    for _ in 0..20 {
        assert_eq!(pick(&t, &even).as_deref(), Some("a"));
        assert_eq!(pick(&t, &odd).as_deref(), Some("from-header"));
    }
    assert_eq!(pick(&t, &req("GET", "/", "h", &[("x-rand", "5")])), None);
}

#[test]
fn timeouts_defaults_and_overrides() {
    let t = only("    match: {prefix: /}\n    route: {cluster: c}\n");
    let s = t.select(&get("/", "h")).expect("selected");
    let f = forward(&s);
    assert_eq!(f.timeout(), Some(Duration::from_secs(15)));
    assert_eq!(f.idle_timeout(), None);
    assert!(f.retry_policy().is_none());

    let t = only("    match: {prefix: /}\n    route: {cluster: c, timeout: 0s, idle_timeout: 2.5s, max_stream_duration: {max_stream_duration: 60s}}\n");
    let s = t.select(&get("/", "h")).expect("selected");
    let f = forward(&s);
    assert_eq!(f.timeout(), None);
    assert_eq!(f.idle_timeout(), Some(Duration::from_millis(2500)));
    assert_eq!(
        f.max_stream_duration().max_stream_duration,
        Some(Duration::from_secs(60))
    );
}

#[test]
fn route_retry_policy_overrides_the_virtual_host_one() {
    let t = table(
        r#"
name: rc
virtual_hosts:
- name: vh
  domains: ["*"]
  retry_policy: {retry_on: 5xx, num_retries: 4}
  routes:
  - {name: inherits, match: {prefix: /i}, route: {cluster: c}}
  - {name: own, match: {prefix: /o}, route: {cluster: c, retry_policy: {retry_on: connect-failure}}}
"#,
    );
    let s = t.select(&get("/i", "h")).expect("selected");
    assert_eq!(forward(&s).retry_policy().map(|p| p.num_retries()), Some(4));
    let s = t.select(&get("/o", "h")).expect("selected");
    let p = forward(&s).retry_policy().expect("policy");
    assert_eq!(p.num_retries(), 1);
    assert!(!p.should_retry_status(503));
    assert!(p.should_retry_connect_failure());
}

#[test]
fn upgrade_overrides() {
    let t = only(
        "    match: {prefix: /}\n    route: {cluster: c, upgrade_configs: [{upgrade_type: WebSocket}, {upgrade_type: CONNECT, enabled: false}]}\n",
    );
    let s = t.select(&get("/", "h")).expect("selected");
    let f = forward(&s);
    assert_eq!(f.upgrade_override("websocket"), Some(true));
    assert_eq!(f.upgrade_override("connect"), Some(false));
    assert_eq!(f.upgrade_override("h2c"), None);
}

/// Runs the forward rewrite on a request and returns it.
fn rewritten(t: &RouteTable, mut r: Parts) -> Parts {
    let s = t.select(&r).expect("selected");
    let f = forward(&s);
    let picked = f.pick_cluster(&r.headers, &mut rng());
    f.rewrite(&mut r, picked.as_ref(), &HeaderVars::default(), true);
    r
}

fn header<'a>(r: &'a Parts, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

#[test]
fn prefix_rewrite_replaces_the_matched_prefix_and_keeps_the_query() {
    let t = only("    match: {prefix: /api/}\n    route: {cluster: c, prefix_rewrite: /v2/}\n");
    let r = rewritten(&t, get("/api/users?id=1", "h"));
    assert_eq!(r.uri.to_string(), "/v2/users?id=1");
    assert_eq!(header(&r, "x-envoy-original-path"), Some("/api/users?id=1"));

    let t = only("    match: {prefix: /API, case_sensitive: false}\n    route: {cluster: c, prefix_rewrite: /}\n");
    assert_eq!(rewritten(&t, get("/api/x", "h")).uri.to_string(), "//x");

    let t = only("    match: {path: /old}\n    route: {cluster: c, prefix_rewrite: /new}\n");
    assert_eq!(
        rewritten(&t, get("/old?a=b", "h")).uri.to_string(),
        "/new?a=b"
    );

    let t = only(
        "    match: {path_separated_prefix: /svc}\n    route: {cluster: c, prefix_rewrite: /}\n",
    );
    assert_eq!(rewritten(&t, get("/svc/a", "h")).uri.to_string(), "//a");

    let t = only("    match: {safe_regex: {regex: '/r/.*'}}\n    route: {cluster: c, prefix_rewrite: /whole}\n");
    assert_eq!(
        rewritten(&t, get("/r/x?q", "h")).uri.to_string(),
        "/whole?q"
    );
}

#[test]
fn regex_rewrite_substitutes_groups_in_the_path_only() {
    let t = only(
        "    match: {prefix: /}\n    route: {cluster: c, regex_rewrite: {pattern: {regex: '^/service/([^/]+)(/.*)$'}, substitution: '\\2/instance/\\1'}}\n",
    );
    let r = rewritten(&t, get("/service/foo/v1/api?x=/service/y/z", "h"));
    assert_eq!(r.uri.to_string(), "/v1/api/instance/foo?x=/service/y/z");

    let t = only("    match: {prefix: /}\n    route: {cluster: c, regex_rewrite: {pattern: {regex: 'a'}, substitution: b}}\n");
    assert_eq!(rewritten(&t, get("/aaa?a", "h")).uri.to_string(), "/bbb?a");
}

#[test]
fn original_path_is_only_added_on_request() {
    let t = only("    match: {prefix: /a}\n    route: {cluster: c, prefix_rewrite: /b}\n");
    let mut r = get("/a", "h");
    let s = t.select(&r).expect("selected");
    forward(&s).rewrite(&mut r, None, &HeaderVars::default(), false);
    assert_eq!(r.uri.to_string(), "/b");
    assert_eq!(header(&r, "x-envoy-original-path"), None);
    let t = only("    match: {prefix: /a}\n    route: {cluster: c}\n");
    assert_eq!(
        header(&rewritten(&t, get("/a", "h")), "x-envoy-original-path"),
        None
    );
}

#[test]
fn host_rewrites() {
    let t =
        only("    match: {prefix: /}\n    route: {cluster: c, host_rewrite_literal: new.host}\n");
    let r = rewritten(&t, get("/", "old.host"));
    assert_eq!(header(&r, "host"), Some("new.host"));
    let r = rewritten(&t, get("http://old.host/p", "old.host"));
    assert_eq!(r.uri.to_string(), "http://new.host/p");

    let t = only("    match: {prefix: /}\n    route: {cluster: c, host_rewrite_header: x-host}\n");
    assert_eq!(
        header(
            &rewritten(&t, req("GET", "/", "old", &[("x-host", "h2")])),
            "host"
        ),
        Some("h2")
    );
    assert_eq!(
        header(
            &rewritten(&t, req("GET", "/", "old", &[("x-host", "")])),
            "host"
        ),
        Some("old")
    );
    assert_eq!(header(&rewritten(&t, get("/", "old")), "host"), Some("old"));

    let t = only(
        "    match: {prefix: /}\n    route: {cluster: c, host_rewrite_path_regex: {pattern: {regex: '^/(.+)/.+$'}, substitution: '\\1.svc'}}\n",
    );
    assert_eq!(
        header(&rewritten(&t, get("/foo/bar?x", "old")), "host"),
        Some("foo.svc")
    );

    let t = only("    match: {prefix: /}\n    route: {cluster: c, host_rewrite: 'p-%REQ(x-h)%'}\n");
    assert_eq!(
        header(
            &rewritten(&t, req("GET", "/", "old", &[("x-h", "v")])),
            "host"
        ),
        Some("p-v")
    );
}

#[test]
fn append_x_forwarded_host_records_the_original_once() {
    let t = only("    match: {prefix: /}\n    route: {cluster: c, host_rewrite_literal: new, append_x_forwarded_host: true}\n");
    let r = rewritten(&t, get("/", "orig"));
    assert_eq!(header(&r, "x-forwarded-host"), Some("orig"));
    let r = rewritten(
        &t,
        req("GET", "/", "orig", &[("x-forwarded-host", "first")]),
    );
    assert_eq!(header(&r, "x-forwarded-host"), Some("first,orig"));
    let r = rewritten(&t, req("GET", "/", "orig", &[("x-forwarded-host", "orig")]));
    assert_eq!(header(&r, "x-forwarded-host"), Some("orig"));
}

#[test]
fn auto_host_rewrite_uses_the_endpoint_hostname() {
    let t = only("    match: {prefix: /}\n    route: {cluster: c, auto_host_rewrite: true}\n");
    let mut r = get("/", "orig");
    let s = t.select(&r).expect("selected");
    let f = forward(&s);
    assert!(f.auto_host_rewrite());
    f.apply_auto_host_rewrite(&mut r, "backend.internal");
    assert_eq!(header(&r, "host"), Some("backend.internal"));
}

#[test]
fn weighted_cluster_host_rewrite_is_overridden_by_the_route() {
    let t = only(
        "    match: {prefix: /}\n    route:\n      weighted_clusters: {clusters: [{name: a, weight: 1, host_rewrite_literal: from-cluster}]}\n",
    );
    assert_eq!(
        header(&rewritten(&t, get("/", "orig")), "host"),
        Some("from-cluster")
    );
    let t = only(
        "    match: {prefix: /}\n    route:\n      host_rewrite_literal: from-route\n      weighted_clusters: {clusters: [{name: a, weight: 1, host_rewrite_literal: from-cluster}]}\n",
    );
    assert_eq!(
        header(&rewritten(&t, get("/", "orig")), "host"),
        Some("from-route")
    );
}

#[test]
fn mirror_policies_from_route_or_vhost() {
    let t = table(
        r#"
name: rc
virtual_hosts:
- name: vh
  domains: ["*"]
  request_mirror_policies: [{cluster: shadow-vh}]
  routes:
  - {name: inherits, match: {prefix: /i}, route: {cluster: c}}
  - name: own
    match: {prefix: /o}
    route:
      cluster: c
      request_mirror_policies: [{cluster: shadow, runtime_fraction: {default_value: {numerator: 0}}}]
"#,
    );
    let r = get("/i", "h");
    let s = t.select(&r).expect("selected");
    let m = forward(&s).mirror_policies();
    assert_eq!(m.len(), 1);
    assert_eq!(
        m[0].cluster_for(&r.headers, &mut rng()).as_deref(),
        Some("shadow-vh")
    );
    let s = t.select(&get("/o", "h")).expect("selected");
    assert_eq!(
        forward(&s).mirror_policies()[0].cluster_for(&r.headers, &mut rng()),
        None
    );
}

#[test]
fn path_rewrite_template_keeps_the_query_and_ignores_empty_results() {
    let t = only(
        "    match: {prefix: /}\n    route: {cluster: c, path_rewrite: '/v/%REQ(x-version)%'}\n",
    );
    let r = rewritten(&t, req("GET", "/old?q=1", "h", &[("x-version", "2")]));
    assert_eq!(r.uri.to_string(), "/v/2?q=1");
    assert_eq!(header(&r, "x-envoy-original-path"), Some("/old?q=1"));

    let t =
        only("    match: {prefix: /}\n    route: {cluster: c, path_rewrite: '%REQ(x-version)%'}\n");
    let r = rewritten(&t, get("/old?q=1", "h"));
    assert_eq!(r.uri.to_string(), "/old?q=1");
    assert_eq!(header(&r, "x-envoy-original-path"), None);

    let t = only("    match: {prefix: /}\n    route: {cluster: c, regex_rewrite: {pattern: {regex: '.*'}, substitution: ''}}\n");
    assert_eq!(rewritten(&t, get("/keep", "h")).uri.to_string(), "/keep");
}

#[test]
fn host_rewrite_records_the_original_host_as_envoy_does() {
    // Envoy 1.40 sends x-envoy-original-host: orig.com:81 upstream for a literal host rewrite.
    let t =
        only("    match: {prefix: /}\n    route: {cluster: c, host_rewrite_literal: new.host}\n");
    let r = rewritten(&t, get("/", "orig.com:81"));
    assert_eq!(header(&r, "x-envoy-original-host"), Some("orig.com:81"));
    let mut r = get("/", "orig.com:81");
    let s = t.select(&r).expect("selected");
    forward(&s).rewrite(&mut r, None, &HeaderVars::default(), false);
    assert_eq!(header(&r, "x-envoy-original-host"), None);
    assert_eq!(header(&r, "host"), Some("new.host"));
}
