//! Unit tests: config errors name their field, the check request a request makes, the decisions
//! of both services and how they change the request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue as HeaderProto, HeaderValueOption,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    ExtAuthz, ExtAuthzPerRoute,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;

use super::config::{ExtAuthzConfig, RouteSettings, Service};
use super::decision::{Action, Allowed, Decision, Mutation, Reply};
use super::*;
use crate::config::parse::{from_yaml, ParseOptions};
use crate::config::{ConfigErrors, Path};
use crate::http::filter::DynamicMetadata;

fn parse(yaml: &str) -> Result<Arc<ExtAuthzConfig>, String> {
    let proto: ExtAuthz = from_yaml(yaml, ParseOptions::default()).map_err(|e| e.to_string())?;
    let mut errs = ConfigErrors::default();
    let cfg = ExtAuthzConfig::from_proto(&proto, &Path::root("f"), &mut errs);
    match cfg {
        Some(c) if errs.is_empty() => Ok(c),
        _ => Err(errs.to_string()),
    }
}

const GRPC: &str = "grpc_service: { envoy_grpc: { cluster_name: authz } }\n";
const HTTP: &str = "http_service:\n  server_uri: { uri: http://authz, cluster: authz, timeout: 1s }\n  path_prefix: /check\n  authorization_request: { allowed_headers: { patterns: [{ exact: x-allow }] } }\n  authorization_response:\n    allowed_upstream_headers: { patterns: [{ exact: x-up }] }\n    allowed_upstream_headers_to_append: { patterns: [{ exact: x-more }] }\n    allowed_client_headers: { patterns: [{ prefix: x-deny }] }\n    allowed_client_headers_on_success: { patterns: [{ exact: x-ok }] }\n";

fn per_route(yaml: &str) -> Result<RouteSettings, String> {
    let proto: ExtAuthzPerRoute =
        from_yaml(yaml, ParseOptions::default()).map_err(|e| e.to_string())?;
    let mut errs = ConfigErrors::default();
    RouteSettings::from_proto(&proto, &Path::root("r"), &mut errs)
        .filter(|_| errs.is_empty())
        .ok_or_else(|| errs.to_string())
}

#[test]
fn a_grpc_service_takes_envoys_defaults() {
    let cfg = parse(GRPC).expect("valid");
    let Service::Grpc(g) = &cfg.service else {
        panic!("grpc")
    };
    assert_eq!(g.cluster, "authz");
    assert_eq!(g.authority, "authz");
    assert_eq!(g.timeout, std::time::Duration::from_millis(200));
    assert_eq!(cfg.status_on_error, StatusCode::FORBIDDEN);
    assert!(!cfg.failure_mode_allow);
    assert!(cfg.charge_cluster_response_stats);
}

#[test]
fn what_remora_cannot_do_is_an_error_naming_the_field() {
    let cases = [
        (
            "grpc_service: { google_grpc: { target_uri: x, stat_prefix: s } }",
            "f.grpc_service.google_grpc",
        ),
        ("clear_route_cache: true", "f.clear_route_cache"),
        (
            "filter_enabled_metadata: { filter: a, path: [{ key: b }, { key: c }], value: { present_match: true } }",
            "f.filter_enabled_metadata.path",
        ),
        (
            "filter_enabled_metadata: { filter: a, path: [{ key: b }], value: { double_match: { exact: 1 } } }",
            "f.filter_enabled_metadata.value",
        ),
        ("transport_api_version: V2", "f.transport_api_version"),
        ("encode_raw_headers: true", "f.encode_raw_headers"),
        ("status_on_error: { code: 42 }", "f.status_on_error.code"),
        (
            "with_request_body: { max_request_bytes: 0 }",
            "f.with_request_body.max_request_bytes",
        ),
        (
            "route_metadata_context_namespaces: [a]",
            "f.route_metadata_context_namespaces",
        ),
    ];
    for (extra, field) in cases {
        let yaml = if extra.starts_with("grpc_service") {
            extra.to_string()
        } else {
            format!("{GRPC}{extra}\n")
        };
        let e = parse(&yaml).expect_err(extra);
        assert!(e.contains(field), "{extra}: {e}");
    }
    let e = parse("failure_mode_allow: true").expect_err("no service");
    assert!(e.contains("grpc_service or http_service"), "{e}");
    let e = parse("http_service: { server_uri: { uri: x, cluster: c } }").expect_err("timeout");
    assert!(e.contains("f.http_service.server_uri.timeout"), "{e}");
    let e = parse(
        "http_service: { server_uri: { uri: x, cluster: c, timeout: 1s }, retry_policy: {} }",
    )
    .expect_err("retry");
    assert!(e.contains("f.http_service.retry_policy"), "{e}");
}

#[test]
fn per_route_settings_disable_or_add_context() {
    assert!(per_route("disabled: true").expect("valid").disabled);
    let r = per_route(
        "check_settings: { context_extensions: { a: b }, disable_request_body_buffering: true }",
    )
    .expect("valid");
    assert!(!r.disabled && r.disable_request_body_buffering);
    assert_eq!(r.context_extensions.get("a").map(String::as_str), Some("b"));
    let e = per_route("disabled: false").expect_err("false");
    assert!(e.contains("r.disabled"), "{e}");
    let e = per_route("check_settings: { grpc_service: { envoy_grpc: { cluster_name: other } } }")
        .expect_err("override");
    assert!(e.contains("r.check_settings.service_override"), "{e}");
}

fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("request").into_parts().0
}

fn conn() -> Request<'static> {
    let peer: SocketAddr = "10.0.0.1:5555".parse().expect("addr");
    Request {
        parts: None,
        peer,
        remote: peer.ip(),
        local: "10.0.0.2:8080".parse().expect("addr"),
        tls: None,
        requested_server_name: None,
    }
}

#[test]
fn the_check_request_describes_the_request_and_its_connection() {
    let cfg = parse(&format!(
        "{GRPC}disallowed_headers: {{ patterns: [{{ exact: cookie }}] }}\n"
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
    let check = attributes::check_request(
        &cfg,
        &conn(),
        &p,
        "https",
        &ctx,
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

fn opt(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderProto {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn grpc_ok_responses_change_the_request_as_asked() {
    let mut set = opt("x-set", "new");
    set.append_action = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
    let mut legacy = opt("x-joined", "b");
    #[allow(deprecated)]
    {
        legacy.append = Some(BoolValue { value: true });
    }
    let mut absent = opt("x-set", "ignored");
    absent.append_action = HeaderAppendAction::AddIfAbsent as i32;
    let resp = CheckResponse {
        status: Some(RpcStatus::default()),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: vec![opt("x-added", "1"), set, legacy, absent],
            headers_to_remove: vec!["x-gone".into(), "host".into()],
            response_headers_to_add: vec![opt("x-resp", "r")],
            ..Default::default()
        })),
        ..Default::default()
    };
    let Decision::Allow(allowed) = grpc::decide(resp, false) else {
        panic!("allowed")
    };
    let mut p = parts(
        "GET",
        "/",
        &[
            ("host", "h"),
            ("x-set", "old"),
            ("x-joined", "a"),
            ("x-added", "0"),
            ("x-gone", "g"),
        ],
    );
    allowed.apply(&mut p);
    let all = |k: &str| -> Vec<&str> {
        p.headers
            .get_all(k)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    // Envoy 1.40 ignores append_action on upstream headers: unset or false `append` replaces.
    assert_eq!(all("x-added"), ["1"]);
    assert_eq!(all("x-set"), ["ignored"]);
    assert_eq!(all("x-joined"), ["a,b"]);
    assert!(all("x-gone").is_empty());
    assert_eq!(all("host"), ["h"], "the host is never removed");
    assert_eq!(allowed.response.len(), 1);
}

#[test]
fn grpc_denials_and_errors_carry_the_services_reply() {
    let denied = CheckResponse {
        status: Some(RpcStatus {
            code: 7,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: 401 }),
            headers: vec![opt("x-why", "no")],
            body: "go away".into(),
        })),
        ..Default::default()
    };
    let Decision::Deny(reply) = grpc::decide(denied, false) else {
        panic!("denied")
    };
    assert_eq!(reply.status, Some(StatusCode::UNAUTHORIZED));
    assert_eq!(reply.body, "go away");
    // A non-OK status without a denied response: the filter's 403.
    let bare = CheckResponse {
        status: Some(RpcStatus {
            code: 16,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(grpc::decide(bare, false), Decision::Deny(Reply::default()));
    let error = CheckResponse {
        http_response: Some(HttpResponse::ErrorResponse(DeniedHttpResponse {
            body: "broken".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    assert!(matches!(
        grpc::decide(error, false),
        Decision::Error { reply: Some(r), .. } if r.body == "broken"
    ));
    // An invalid header fails the check only with validate_mutations.
    let bad = CheckResponse {
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: vec![opt("bad header", "v")],
            ..Default::default()
        })),
        ..Default::default()
    };
    assert!(matches!(
        grpc::decide(bad.clone(), false),
        Decision::Allow(_)
    ));
    assert!(matches!(grpc::decide(bad, true), Decision::Error { .. }));
}

#[test]
fn http_responses_allow_on_200_and_pass_only_allowed_headers() {
    let cfg = parse(HTTP).expect("valid");
    let Service::Http(svc) = &cfg.service else {
        panic!("http")
    };
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("x-up", "u"),
        ("x-more", "m"),
        ("x-ok", "o"),
        ("x-deny-why", "d"),
        ("x-secret", "s"),
        ("content-length", "0"),
    ] {
        h.insert(k, v.parse().expect("value"));
    }
    let Decision::Allow(a) = http_service::decide(svc, StatusCode::OK, &h, Bytes::new()) else {
        panic!("allowed")
    };
    let names = |m: &[Mutation]| -> Vec<(String, Action)> {
        m.iter().map(|m| (m.name.to_string(), m.action)).collect()
    };
    assert_eq!(
        names(&a.upstream),
        [("x-up".into(), Action::Set), ("x-more".into(), Action::Add)]
    );
    assert_eq!(names(&a.response), [("x-ok".into(), Action::Set)]);
    let d = http_service::decide(svc, StatusCode::UNAUTHORIZED, &h, Bytes::from("no"));
    let Decision::Deny(reply) = d else {
        panic!("denied")
    };
    assert_eq!(reply.status, Some(StatusCode::UNAUTHORIZED));
    assert_eq!(names(&reply.headers), [("x-deny-why".into(), Action::Add)]);
    assert_eq!(reply.body, "no");
    let boom = http_service::decide(svc, StatusCode::BAD_GATEWAY, &h, Bytes::new());
    assert!(matches!(boom, Decision::Error { .. }), "{boom:?}");
}

fn filter(yaml: &str) -> ExtAuthzFilter {
    let cfg = parse(yaml).expect("valid");
    let shared = Shared {
        clusters: Arc::default(),
        cluster_stats: Arc::default(),
    };
    ExtAuthzFilter::new(&cfg, shared, &crate::stats::Store::new(), "t")
}

#[test]
fn failures_answer_status_on_error_or_go_on_marked() {
    let closed = filter(&format!("{GRPC}status_on_error: {{ code: 503 }}\n"));
    let mut p = parts("GET", "/", &[]);
    let (mut flags, mut respond) = ("", None);
    let r = closed.conclude(
        Decision::error("down"),
        &mut p,
        Some("app"),
        &mut flags,
        &mut respond,
    );
    let (resp, details) = r.expect("stopped");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!((flags, details), ("UAEX", "ext_authz_error"));
    assert_eq!(closed.error.get(), 1);

    let open = filter(&format!(
        "{GRPC}failure_mode_allow: true\nfailure_mode_allow_header_add: true\n"
    ));
    let mut flags = "";
    let r = open.conclude(
        Decision::error("down"),
        &mut p,
        None,
        &mut flags,
        &mut respond,
    );
    assert!(r.is_none());
    assert_eq!(flags, "");
    assert_eq!(
        p.headers
            .get("x-envoy-auth-failure-mode-allowed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!((open.error.get(), open.failure_mode_allowed.get()), (1, 1));
}

#[tokio::test]
async fn denials_answer_with_the_services_reply_and_allowances_add_response_headers() {
    let f = filter(&format!("{GRPC}max_denied_response_body_bytes: 4\n"));
    let mut p = parts("GET", "/", &[]);
    let (mut flags, mut respond) = ("", None);
    let reply = Reply {
        status: None,
        headers: vec![Mutation {
            name: http::HeaderName::from_static("content-type"),
            value: http::HeaderValue::from_static("application/json"),
            action: Action::Set,
        }],
        body: Bytes::from_static(b"{\"a\":1}"),
    };
    let (resp, details) = f
        .conclude(
            Decision::Deny(reply),
            &mut p,
            None,
            &mut flags,
            &mut respond,
        )
        .expect("denied");
    assert_eq!(
        (resp.status(), details, flags),
        (StatusCode::FORBIDDEN, DENIED_DETAILS, FLAG)
    );
    assert_eq!(
        resp.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(
        body, "{\"a\"",
        "truncated to max_denied_response_body_bytes"
    );

    let allowed = Allowed {
        response: vec![Mutation {
            name: http::HeaderName::from_static("x-r"),
            value: http::HeaderValue::from_static("1"),
            action: Action::Set,
        }],
        ..Allowed::default()
    };
    let mut flags = "";
    let r = f.conclude(
        Decision::Allow(allowed),
        &mut p,
        None,
        &mut flags,
        &mut respond,
    );
    assert!(r.is_none(), "allowed");
    assert!(respond.is_some_and(|h| h.contains_key("x-r")));
    assert_eq!((f.ok.get(), f.denied.get()), (1, 1));
}

#[tokio::test]
async fn buffering_reads_up_to_the_limit_and_replays_the_body() {
    let mut body = crate::http::body::full("hello world");
    match buffer::buffer(&mut body, 5, true).await {
        buffer::Buffered::Body(b) => assert_eq!(b, "hello"),
        _ => panic!("partial body"),
    }
    let all = body.collect().await.expect("body").to_bytes();
    assert_eq!(all, "hello world", "the upstream still gets the whole body");

    let mut body = crate::http::body::full("hello world");
    assert!(matches!(
        buffer::buffer(&mut body, 5, false).await,
        buffer::Buffered::TooLarge
    ));
    let mut body = crate::http::body::full("hi");
    match buffer::buffer(&mut body, 5, false).await {
        buffer::Buffered::Body(b) => assert_eq!(b, "hi"),
        _ => panic!("whole body"),
    }
}

#[test]
fn query_parameters_are_set_and_removed() {
    let allowed = Allowed {
        query_set: vec![("a".into(), "9".into()), ("n".into(), "new".into())],
        query_remove: vec!["b".into()],
        ..Allowed::default()
    };
    let mut p = parts("GET", "/p?a=1&b=2&c=3", &[]);
    allowed.apply(&mut p);
    assert_eq!(p.uri, "/p?a=9&c=3&n=new");
    let mut p = parts("GET", "/p?z=1&b=2&a=3", &[]);
    allowed.apply(&mut p);
    assert_eq!(
        p.uri, "/p?a=9&n=new&z=1",
        "in key order, as Envoy rebuilds it"
    );
}

#[test]
fn filter_enabled_metadata_reads_the_rbac_shadow_verdict() {
    let cfg = parse(&format!(
        "{GRPC}filter_enabled_metadata: {{ filter: envoy.filters.http.rbac, path: [{{ key: p_shadow_effective_policy_id }}], value: {{ string_match: {{ prefix: istio-ext-authz }} }} }}\n"
    ))
    .expect("valid");
    let mut meta = DynamicMetadata::default();
    assert!(!cfg.enabled.enabled(&meta), "no shadow verdict");
    meta.set(
        "envoy.filters.http.rbac",
        "p_shadow_effective_policy_id".into(),
        "istio-ext-authz-ns[a]".into(),
    );
    assert!(cfg.enabled.enabled(&meta));
    let never = parse(&format!(
        "{GRPC}filter_enabled: {{ default_value: {{ numerator: 0 }} }}\ndeny_at_disable: {{ default_value: true, runtime_key: k }}\n"
    ))
    .expect("valid");
    assert!(!never.enabled.enabled(&meta));
    assert!(never.enabled.deny_at_disable);
    assert!(parse(GRPC).expect("valid").enabled.enabled(&meta));
}
