//! The services' answers as decisions, and what the filter does with them.

use super::*;

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
