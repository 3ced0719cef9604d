use super::*;
use crate::config::parse::{from_yaml, ParseOptions};

fn build(yaml: &str) -> Result<RbacConfig, String> {
    let proto: RbacProto = from_yaml(yaml, ParseOptions::default()).expect("parses");
    let mut errs = ConfigErrors::default();
    let cfg = RbacConfig::from_proto(&proto, &Path::root("rbac"), &mut errs);
    match cfg {
        Some(c) if errs.is_empty() => Ok(c),
        _ => Err(errs.to_string()),
    }
}

fn request<'a>(parts: &'a http::request::Parts, peer: &str) -> Request<'a> {
    let peer: std::net::SocketAddr = peer.parse().expect("addr");
    Request {
        parts: Some(parts),
        peer,
        remote: peer.ip(),
        local: "10.0.0.1:8080".parse().expect("addr"),
        tls: None,
        requested_server_name: None,
        filter_state: None,
    }
}

fn parts(method: &str, uri: &str) -> http::request::Parts {
    let (parts, ()) = http::Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .expect("request")
        .into_parts();
    parts
}

#[test]
fn unsupported_permissions_and_principals_are_errors_naming_the_field() {
    let e = build(
        r#"
rules:
  action: ALLOW
  policies:
    p:
      permissions: [{ metadata: { filter: f, path: [{ key: k }], value: { present_match: true } } }]
      principals: [{ sourced_metadata: { metadata_matcher: { filter: f, path: [{ key: k }], value: { present_match: true } } } }]
"#,
    )
    .expect_err("fails closed");
    assert!(
        e.contains("rbac.rules.policies.p.permissions[0].metadata"),
        "{e}"
    );
    assert!(
        e.contains("rbac.rules.policies.p.principals[0].sourced_metadata"),
        "{e}"
    );
    let e = build("rules: { policies: { p: { permissions: [{ any: true }] } } }")
        .expect_err("no principals");
    assert!(e.contains("rbac.rules.policies.p.principals"), "{e}");
    let e = build("matcher: { matcher_list: { matchers: [] } }").expect_err("matcher tree");
    assert!(e.contains("rbac.matcher"), "{e}");
}

#[test]
fn deny_rules_deny_what_matches_and_log_rules_allow_everything() {
    let policy = "{ permissions: [{ destination_port_range: { start: 8000, end: 8081 } }], principals: [{ not_id: { direct_remote_ip: { address_prefix: 10.1.0.0, prefix_len: 16 } } }] }";
    let deny = build(&format!(
        "rules: {{ action: DENY, policies: {{ p: {policy} }} }}"
    ))
    .expect("valid");
    let log = build(&format!(
        "rules: {{ action: LOG, policies: {{ p: {policy} }} }}"
    ))
    .expect("valid");
    let p = parts("GET", "/x");
    let outside = request(&p, "192.168.1.1:5000");
    let inside = request(&p, "10.1.2.3:5000");
    let rules = |c: &RbacConfig| c.engines.rules.as_ref().map(|r| r.decide(&outside).0);
    assert_eq!(rules(&deny), Some(false));
    assert_eq!(rules(&log), Some(true));
    assert_eq!(
        deny.engines.rules.as_ref().map(|r| r.decide(&inside)),
        Some((true, None))
    );
}

#[test]
fn url_path_ignores_the_query_and_authenticated_needs_tls() {
    let cfg = build(
        "rules: { policies: { p: { permissions: [{ url_path: { path: { exact: /a } } }], principals: [{ authenticated: {} }] } } }",
    )
    .expect("valid");
    let p = parts("GET", "/a?b=c");
    let plain = request(&p, "127.0.0.1:1");
    let rules = cfg.engines.rules.as_ref().expect("rules");
    assert!(!rules.decide(&plain).0, "no TLS, not authenticated");
    let tls = crate::tls::TlsInfo {
        version: "TLSv1.3",
        cipher: "TLS_AES_128_GCM_SHA256",
        sni: None,
        alpn: None,
        peer: None,
        local_uri_sans: Vec::new(),
    };
    let over_tls = Request {
        tls: Some(&tls),
        ..request(&p, "127.0.0.1:1")
    };
    assert!(rules.decide(&over_tls).0);
}

#[test]
fn filter_state_principals_match_the_objects_value() {
    use crate::filter_state::{FilterState, Object, Sharing, Value};
    let cfg = build(
        r#"
rules:
  action: ALLOW
  policies:
    mesh:
      permissions: [{ any: true }]
      principals:
      - filter_state: { key: io.istio.peer_principal, string_match: { prefix: "spiffe://cluster.local/" } }
"#,
    )
    .expect("valid");
    let rules = cfg.engines.rules.as_ref().expect("rules");
    let p = parts("GET", "/");
    assert!(
        !rules.decide(&request(&p, "127.0.0.1:1")).0,
        "no object, no match"
    );
    let mut state = FilterState::default();
    state.set(Object {
        key: "io.istio.peer_principal".into(),
        value: Value::String("spiffe://cluster.local/ns/a/sa/b".into()),
        read_only: true,
        sharing: Sharing::Once,
    });
    let with_state = Request {
        filter_state: Some(&state),
        ..request(&p, "127.0.0.1:1")
    };
    assert!(rules.decide(&with_state).0);
    let e = build(
        "rules: { action: ALLOW, policies: { p: { permissions: [{ any: true }], principals: [{ filter_state: { key: k, address_match: {} } }] } } }",
    )
    .expect_err("address_match");
    assert!(e.contains("filter_state.address_match"), "{e}");
}
