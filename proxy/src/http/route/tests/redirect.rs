//! Redirect `Location`s, checked against what Envoy 1.40 answers for the same configuration.

use http::StatusCode;

use super::*;

const REDIRECTS: &str = r#"
  - {name: https, match: {prefix: /https}, redirect: {https_redirect: true}}
  - {name: scheme, match: {prefix: /scheme}, redirect: {scheme_redirect: HTTPS}}
  - {name: port, match: {prefix: /port}, redirect: {port_redirect: 9000}}
  - {name: host, match: {prefix: /host}, redirect: {host_redirect: b.com}}
  - {name: hostport, match: {prefix: /hp}, redirect: {host_redirect: b.com, port_redirect: 8443}}
  - {name: pathq, match: {prefix: /pathq}, redirect: {path_redirect: "/new?x=1", strip_query: true}}
  - {name: path, match: {prefix: /path}, redirect: {path_redirect: new}}
  - {name: prefix, match: {prefix: /pre/}, redirect: {prefix_rewrite: /post/, response_code: PERMANENT_REDIRECT}}
  - {name: strip, match: {prefix: /strip}, redirect: {strip_query: true}}
  - {name: regex, match: {prefix: /rx}, redirect: {regex_rewrite: {pattern: {regex: "^/rx/(.*)$"}, substitution: "/y/\\1"}}}
  - {name: found, match: {prefix: /found}, redirect: {response_code: FOUND}}
  - {name: see, match: {prefix: /see}, redirect: {response_code: SEE_OTHER}}
  - {name: temp, match: {prefix: /temp}, redirect: {response_code: TEMPORARY_REDIRECT}}
"#;

fn location(r: &Parts) -> (StatusCode, String) {
    let t = routes(REDIRECTS);
    let s = t.select(r).expect("selected");
    let resp = redirect(&s).response(r);
    let loc = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("location")
        .to_string();
    (resp.status(), loc)
}

fn loc(uri: &str, host: &str) -> String {
    location(&get(uri, host)).1
}

#[test]
fn each_option_builds_the_location_envoy_does() {
    let h = "a.com:8080";
    assert_eq!(loc("/https", h), "https://a.com:8080/https");
    assert_eq!(loc("/scheme", h), "HTTPS://a.com:8080/scheme");
    assert_eq!(loc("/port", h), "http://a.com:9000/port");
    assert_eq!(loc("/host", h), "http://b.com/host");
    assert_eq!(loc("/hp", h), "http://b.com:8443/hp");
    assert_eq!(loc("/pathq/a?b=2", h), "http://a.com:8080/new?x=1");
    assert_eq!(loc("/path?b=2", h), "http://a.com:8080/new?b=2");
    assert_eq!(loc("/pre/a/b?c", h), "http://a.com:8080/post/a/b?c");
    assert_eq!(loc("/strip?x=y", h), "http://a.com:8080/strip");
    assert_eq!(loc("/rx/abc?z", h), "http://a.com:8080/y/abc?z");
}

#[test]
fn response_codes() {
    assert_eq!(
        location(&get("/https", "a.com")).0,
        StatusCode::MOVED_PERMANENTLY
    );
    assert_eq!(
        location(&get("/pre/x", "a.com")).0,
        StatusCode::PERMANENT_REDIRECT
    );
    assert_eq!(location(&get("/found", "a.com")).0, StatusCode::FOUND);
    assert_eq!(location(&get("/see", "a.com")).0, StatusCode::SEE_OTHER);
    assert_eq!(
        location(&get("/temp", "a.com")).0,
        StatusCode::TEMPORARY_REDIRECT
    );
}

#[test]
fn default_ports_are_dropped_only_when_the_scheme_changes_away_from_them() {
    let xfp = |host: &str, proto: &str, path: &str| {
        location(&req("GET", path, host, &[("x-forwarded-proto", proto)])).1
    };
    assert_eq!(xfp("a.com:80", "http", "/https"), "https://a.com/https");
    assert_eq!(xfp("a.com:80", "https", "/https"), "https://a.com:80/https");
    assert_eq!(
        xfp("a.com:443", "http", "/https"),
        "https://a.com:443/https"
    );
    assert_eq!(
        xfp("a.com:443", "https", "/https"),
        "https://a.com:443/https"
    );
    assert_eq!(xfp("a.com", "http", "/https"), "https://a.com/https");
    // With no new scheme the request's own (here from x-forwarded-proto) is kept.
    assert_eq!(xfp("a.com:80", "https", "/port"), "https://a.com:9000/port");
    assert_eq!(xfp("a.com:443", "http", "/port"), "http://a.com:9000/port");
}

#[test]
fn ipv6_hosts_keep_their_brackets() {
    assert_eq!(loc("/port", "[::1]:8080"), "http://[::1]:9000/port");
    assert_eq!(loc("/https", "[::1]"), "https://[::1]/https");
}

#[test]
fn redirect_body_is_empty() {
    let t = routes(REDIRECTS);
    let r = get("/https", "a.com");
    let s = t.select(&r).expect("selected");
    let resp = redirect(&s).response(&r);
    assert!(resp.headers().get("content-type").is_none());
}

#[test]
fn path_rewrite_template_redirects() {
    let t = routes(
        "  - {name: t, match: {prefix: /}, redirect: {path_rewrite: '/new/%REQ(x-version)%'}}\n",
    );
    let r = req("GET", "/old?a=1", "a.com", &[("x-version", "v2")]);
    let s = t.select(&r).expect("selected");
    assert_eq!(redirect(&s).location(&r), "http://a.com/new/v2?a=1");
    let t =
        routes("  - {name: t, match: {prefix: /}, redirect: {path_rewrite: '%REQ(x-version)%'}}\n");
    let r = get("/old?a=1", "a.com");
    let s = t.select(&r).expect("selected");
    assert_eq!(redirect(&s).location(&r), "http://a.com/old?a=1");
}
