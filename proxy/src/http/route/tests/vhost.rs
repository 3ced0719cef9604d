//! Virtual host selection.

use super::*;

const DOMAINS: &str = r#"
name: rc
virtual_hosts:
- name: exact
  domains: ["www.foo.com", "Mixed.Case.com", "ported.com:8080"]
  routes: [{name: r, match: {prefix: "/"}, route: {cluster: c}}]
- name: short_suffix
  domains: ["*.com"]
  routes: [{name: r, match: {prefix: "/"}, route: {cluster: c}}]
- name: long_suffix
  domains: ["*.foo.com"]
  routes: [{name: r, match: {prefix: "/"}, route: {cluster: c}}]
- name: dash_suffix
  domains: ["*-bar.foo.com"]
  routes: [{name: r, match: {prefix: "/"}, route: {cluster: c}}]
- name: short_prefix
  domains: ["api.*"]
  routes: [{name: r, match: {prefix: "/"}, route: {cluster: c}}]
- name: long_prefix
  domains: ["api.foo.*"]
  routes: [{name: r, match: {prefix: "/"}, route: {cluster: c}}]
- name: catch_all
  domains: ["*"]
  routes: [{name: r, match: {prefix: "/"}, route: {cluster: c}}]
"#;

fn vhost(t: &RouteTable, host: &str) -> Option<String> {
    t.virtual_host(&get("/", host))
        .map(|v| v.name().to_string())
}

#[test]
fn exact_then_longest_suffix_then_longest_prefix_then_catch_all() {
    let t = table(DOMAINS);
    assert_eq!(vhost(&t, "www.foo.com").as_deref(), Some("exact"));
    assert_eq!(vhost(&t, "a.foo.com").as_deref(), Some("long_suffix"));
    assert_eq!(vhost(&t, "baz-bar.foo.com").as_deref(), Some("dash_suffix"));
    assert_eq!(vhost(&t, "other.com").as_deref(), Some("short_suffix"));
    // Suffix wildcards beat prefix wildcards even when the prefix is longer.
    assert_eq!(vhost(&t, "api.foo.com").as_deref(), Some("long_suffix"));
    assert_eq!(vhost(&t, "api.foo.org").as_deref(), Some("long_prefix"));
    assert_eq!(
        vhost(&t, "api.example.org").as_deref(),
        Some("short_prefix")
    );
    assert_eq!(vhost(&t, "unrelated.net").as_deref(), Some("catch_all"));
}

#[test]
fn wildcards_do_not_match_the_empty_string() {
    let t = table(DOMAINS);
    // "-bar.foo.com" would need "*" to match nothing, so the next longest suffix takes it.
    assert_eq!(vhost(&t, "-bar.foo.com").as_deref(), Some("long_suffix"));
    assert_eq!(vhost(&t, ".foo.com").as_deref(), Some("short_suffix"));
    assert_eq!(vhost(&t, "api.").as_deref(), Some("catch_all"));
}

#[test]
fn domains_and_hosts_are_case_insensitive() {
    let t = table(DOMAINS);
    assert_eq!(vhost(&t, "WWW.FOO.COM").as_deref(), Some("exact"));
    assert_eq!(vhost(&t, "mixed.case.com").as_deref(), Some("exact"));
    assert_eq!(vhost(&t, "A.Foo.Com").as_deref(), Some("long_suffix"));
}

#[test]
fn port_is_part_of_the_host_unless_ignored() {
    let t = table(DOMAINS);
    // Envoy does not strip the port in the route table: "www.foo.com:80" is not "www.foo.com".
    assert_eq!(vhost(&t, "www.foo.com:80").as_deref(), Some("catch_all"));
    assert_eq!(vhost(&t, "ported.com:8080").as_deref(), Some("exact"));
    assert_eq!(vhost(&t, "a.foo.com:80").as_deref(), Some("catch_all"));
    assert_eq!(vhost(&t, "api.x:80").as_deref(), Some("short_prefix"));

    let t = table(
        r#"
name: rc
ignore_port_in_host_matching: true
virtual_hosts:
- name: a
  domains: ["a.com"]
  routes: [{match: {prefix: "/"}, route: {cluster: c}}]
- name: v6
  domains: ["[::1]"]
  routes: [{match: {prefix: "/"}, route: {cluster: c}}]
"#,
    );
    assert_eq!(vhost(&t, "a.com:8080").as_deref(), Some("a"));
    assert_eq!(vhost(&t, "[::1]:443").as_deref(), Some("v6"));
    assert_eq!(vhost(&t, "[::1]").as_deref(), Some("v6"));
}

#[test]
fn authority_comes_from_the_uri_before_the_host_header() {
    let t = table(DOMAINS);
    let r = get("http://www.foo.com/x", "other.net");
    assert_eq!(t.virtual_host(&r).map(|v| v.name()), Some("exact"));
}

#[test]
fn no_matching_vhost_and_no_host() {
    let t = table(
        r#"
name: rc
virtual_hosts:
- name: a
  domains: ["a.com"]
  routes: [{match: {prefix: "/"}, route: {cluster: c}}]
"#,
    );
    assert!(t.select(&get("/", "b.com")).is_none());
    assert!(t.select(&get("/", "")).is_none());
    assert_eq!(t.name(), "rc");
}

#[test]
fn vhost_header_replaces_the_authority() {
    let t = table(
        r#"
name: rc
vhost_header: x-vhost
virtual_hosts:
- name: a
  domains: ["a.com"]
  routes: [{match: {prefix: "/"}, route: {cluster: c}}]
"#,
    );
    assert!(t.select(&get("/", "a.com")).is_none());
    assert!(t
        .select(&req("GET", "/", "b.com", &[("x-vhost", "A.com")]))
        .is_some());
}

#[test]
fn require_tls_redirects_plain_text_requests() {
    let t = table(
        r#"
name: rc
virtual_hosts:
- name: all
  domains: ["all.com", "all.com:8080"]
  require_tls: ALL
  routes: [{name: real, match: {prefix: "/"}, route: {cluster: c}}]
- name: ext
  domains: ["ext.com"]
  require_tls: EXTERNAL_ONLY
  routes: [{name: real, match: {prefix: "/"}, route: {cluster: c}}]
"#,
    );
    let plain = get("/p?q=1", "all.com:8080");
    let s = t.select(&plain).expect("selected");
    let r = redirect(&s);
    assert_eq!(r.status(), http::StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.location(&plain), "https://all.com:8080/p?q=1");
    let tls = req("GET", "/p", "all.com", &[("x-forwarded-proto", "https")]);
    assert_eq!(route_name(&t, &tls).as_deref(), Some("real"));

    assert!(matches!(
        t.select(&get("/", "ext.com"))
            .map(|s| s.route.action().clone()),
        Some(Action::Redirect(_))
    ));
    let internal = req("GET", "/", "ext.com", &[("x-envoy-internal", "true")]);
    assert_eq!(route_name(&t, &internal).as_deref(), Some("real"));
}
