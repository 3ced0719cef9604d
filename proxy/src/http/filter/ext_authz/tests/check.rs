//! The check requests a request makes, for gRPC and HTTP services.

use super::*;

#[test]
fn the_check_request_describes_the_request_and_its_connection() {
    let cfg = parse(&format!(
        "{GRPC}metadata_context_namespaces: [envoy.filters.http.rbac]\ndisallowed_headers: {{ patterns: [{{ exact: cookie }}] }}\n"
    ))
    .expect("valid");
    let p = parts(
        "POST",
        "/a/b?c=d",
        &[
            ("host", "example.com"),
            ("x-request-id", "rid"),
            ("x-multi", "1"),
            ("x-multi", "2"),
            ("cookie", "secret"),
            ("content-length", "5"),
        ],
    );
    let mut ctx = BTreeMap::new();
    ctx.insert("route".to_string(), "r1".to_string());
    let body = Bytes::from_static(b"hello");
    let mut meta = DynamicMetadata::default();
    meta.set("envoy.filters.http.rbac", "k".into(), "v".into());
    let conn = conn();
    let about = attributes::About {
        conn: &conn,
        scheme: "https",
        context_extensions: &ctx,
        meta: &meta,
    };
    let check = attributes::check_request(
        &cfg,
        &about,
        &p,
        Some(attributes::Body {
            bytes: &body,
            pack_as_bytes: false,
        }),
    );
    let attrs = check.attributes.expect("attributes");
    let http = attrs.request.and_then(|r| r.http).expect("http");
    assert_eq!(http.method, "POST");
    assert_eq!(http.path, "/a/b?c=d");
    assert_eq!(http.host, "example.com");
    assert_eq!(http.scheme, "https");
    assert_eq!(http.protocol, "HTTP/1.1");
    assert!(
        http.id.parse::<u64>().is_ok(),
        "a stream id, not x-request-id"
    );
    assert_eq!(http.size, 5);
    assert_eq!(http.body, "hello");
    let h = |k: &str| http.headers.get(k).map(String::as_str);
    assert_eq!(h(":authority"), Some("example.com"));
    assert_eq!(h(":path"), Some("/a/b?c=d"));
    assert_eq!(h(":method"), Some("POST"));
    assert_eq!(h(":scheme"), Some("https"));
    assert_eq!(h("x-multi"), Some("1,2"));
    assert_eq!(h("cookie"), None, "disallowed");
    assert_eq!(h("host"), None, "the host is :authority");
    assert_eq!(
        attrs.context_extensions.get("route").map(String::as_str),
        Some("r1")
    );
    let addr = |p: Option<envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer>| {
        format!("{:?}", p.and_then(|p| p.address))
    };
    let ns = attrs.metadata_context.map(|m| m.filter_metadata);
    let field = ns
        .as_ref()
        .and_then(|ns| ns.get("envoy.filters.http.rbac"))
        .and_then(|s| s.fields.get("k"));
    assert!(format!("{field:?}").contains("\"v\""), "{ns:?}");
    // pack_as_bytes puts the body in raw_body.
    let packed = attributes::check_request(
        &cfg,
        &about,
        &p,
        Some(attributes::Body {
            bytes: &body,
            pack_as_bytes: true,
        }),
    );
    let packed = packed
        .attributes
        .and_then(|a| a.request)
        .and_then(|r| r.http);
    let packed = packed.expect("http");
    assert_eq!(
        (packed.body.as_str(), packed.raw_body.as_slice()),
        ("", &b"hello"[..])
    );
    assert!(addr(attrs.source).contains("10.0.0.1"));
    assert!(addr(attrs.destination).contains("10.0.0.2"));
}

#[test]
fn the_http_check_sends_the_method_prefixed_path_and_allowed_headers() {
    let cfg = parse(HTTP).expect("valid");
    let Service::Http(svc) = &cfg.service else {
        panic!("http")
    };
    let p = parts(
        "DELETE",
        "/x?y=1",
        &[
            ("host", "example.com"),
            ("x-allow", "yes"),
            ("x-other", "no"),
            ("authorization", "Bearer t"),
            ("content-length", "9"),
        ],
    );
    let req = http_service::check_request(&cfg, svc, &p, 0);
    assert_eq!(req.method(), "DELETE");
    assert_eq!(req.uri(), "/check/x?y=1");
    let h = req.headers();
    assert_eq!(
        h.get("host").map(|v| v.as_bytes()),
        Some(&b"example.com"[..])
    );
    assert!(h.contains_key("x-allow") && h.contains_key("authorization"));
    assert!(!h.contains_key("x-other"));
    assert_eq!(
        h.get("content-length").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
}
