//! Format parsing and rendering of every operator, in text and JSON.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};

use super::*;
use crate::tls::{PeerCert, TlsInfo};
use envoy_types::pb::google::protobuf as pbjson;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_796_226_303_719)
}

fn text(format: &str, ctx: &LogContext<'_>) -> String {
    let tokens = parse(format).expect("format parses");
    let mut out = String::new();
    render_text(&tokens, ctx, false, &mut out);
    out
}

fn full_ctx<'a>(
    req: &'a HeaderMap,
    resp: &'a HeaderMap,
    trailers: &'a HeaderMap,
) -> LogContext<'a> {
    LogContext {
        request_headers: Some(req),
        response_headers: Some(resp),
        response_trailers: Some(trailers),
        method: Some("GET"),
        path: Some("/r?x=1"),
        authority: Some("example.com"),
        scheme: Some("http"),
        protocol: Some("HTTP/1.1"),
        response_code: Some(200),
        response_code_details: Some("via_upstream"),
        response_flags: "UH,UF",
        bytes_received: 12,
        bytes_sent: 447,
        duration: Some(Duration::from_micros(2_900)),
        request_duration: Some(Duration::from_millis(0)),
        response_duration: Some(Duration::from_millis(1)),
        upstream_host: Some("127.0.0.1:19904".parse().expect("addr")),
        upstream_cluster: Some("web"),
        upstream_local_address: Some("127.0.0.1:52384".parse().expect("addr")),
        upstream_transport_failure_reason: Some("delayed connect error: Connection refused"),
        downstream_remote_address: Some("10.0.0.1:42046".parse().expect("addr")),
        downstream_local_address: Some("[::1]:19902".parse().expect("addr")),
        downstream_direct_remote_address: Some("127.0.0.1:42046".parse().expect("addr")),
        requested_server_name: Some("sni.example"),
        route_name: Some("myroute"),
        upstream_request_attempt_count: Some(1),
        connection_id: Some(7),
        connection_termination_details: Some("closed"),
        ..LogContext::new(start())
    }
}

#[test]
fn default_format_matches_envoy_line() {
    let req = headers(&[("user-agent", "curl/7.88.1"), ("x-request-id", "4d41798e")]);
    let resp = headers(&[("x-envoy-upstream-service-time", "1")]);
    let ctx = LogContext {
        request_headers: Some(&req),
        response_headers: Some(&resp),
        method: Some("GET"),
        path: Some("/"),
        authority: Some("localhost:19902"),
        protocol: Some("HTTP/1.1"),
        response_code: Some(200),
        bytes_sent: 447,
        duration: Some(Duration::from_millis(2)),
        upstream_host: Some("127.0.0.1:19904".parse().expect("addr")),
        ..LogContext::new(start())
    };
    // The line a real Envoy 1.40 wrote for the same request.
    assert_eq!(
        text(DEFAULT_FORMAT, &ctx),
        "[2026-12-02T15:45:03.719Z] \"GET / HTTP/1.1\" 200 - 0 447 2 1 \"-\" \"curl/7.88.1\" \
         \"4d41798e\" \"localhost:19902\" \"127.0.0.1:19904\"\n"
    );
}

#[test]
fn every_operator_in_text() {
    let req = headers(&[
        ("user-agent", "curl/7.88.1"),
        ("x-b", "bee"),
        ("x-multi", "1"),
        ("x-multi", "2"),
    ]);
    let resp = headers(&[("content-type", "text/html")]);
    let trailers = headers(&[("grpc-status", "0")]);
    let ctx = full_ctx(&req, &resp, &trailers);
    let cases = [
        ("%START_TIME%", "2026-12-02T15:45:03.719Z"),
        ("%START_TIME(%s)%", "1796226303"),
        (
            "%REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)% %REQ(:SCHEME)%",
            "GET /r?x=1 example.com http",
        ),
        ("%REQ(USER-AGENT):4%", "curl"),
        (
            "%REQ(X-A?X-B)% %REQ(x-missing)% %REQ(x-multi)%",
            "bee - 1,2",
        ),
        ("%RESP(CONTENT-TYPE)% %RESP(:STATUS)%", "text/html 200"),
        ("%TRAILER(GRPC-STATUS)% %TRAILER(x)%", "0 -"),
        (
            "%PROTOCOL% %RESPONSE_CODE% %RESPONSE_CODE_DETAILS%",
            "HTTP/1.1 200 via_upstream",
        ),
        (
            "%RESPONSE_FLAGS% %RESPONSE_FLAGS_LONG%",
            "UH,UF NoHealthyUpstream,UpstreamConnectionFailure",
        ),
        ("%BYTES_RECEIVED% %BYTES_SENT%", "12 447"),
        ("%DURATION% %REQUEST_DURATION% %RESPONSE_DURATION%", "2 0 1"),
        (
            "%UPSTREAM_HOST% %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS%",
            "127.0.0.1:19904 web 127.0.0.1:52384",
        ),
        (
            "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
            "delayed_connect_error:_Connection_refused",
        ),
        (
            "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
            "10.0.0.1:42046 10.0.0.1",
        ),
        (
            "%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%",
            "[::1]:19902 ::1",
        ),
        ("%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%", "127.0.0.1:42046"),
        (
            "%REQUESTED_SERVER_NAME% %ROUTE_NAME%",
            "sni.example myroute",
        ),
        ("%UPSTREAM_REQUEST_ATTEMPT_COUNT% %CONNECTION_ID%", "1 7"),
        ("%CONNECTION_TERMINATION_DETAILS%", "closed"),
        ("100%% done", "100% done"),
    ];
    for (format, want) in cases {
        assert_eq!(text(format, &ctx), want, "{format}");
    }
    assert!(!text("%HOSTNAME%", &ctx).is_empty());
}

#[test]
fn missing_values_print_dash_or_nothing() {
    let ctx = LogContext::new(start());
    assert_eq!(
        text("%PROTOCOL% %RESPONSE_CODE% %DURATION% %UPSTREAM_HOST% %RESPONSE_FLAGS% %BYTES_SENT% %ROUTE_NAME%", &ctx),
        "- 0 - - - 0 -"
    );
    // Observed from Envoy: with omit_empty_values, missing becomes empty but RESPONSE_FLAGS keeps `-`.
    let tokens = parse("[%REQ(x-missing)%] [%RESPONSE_FLAGS%] %UPSTREAM_HOST%|").expect("parse");
    let mut out = String::new();
    render_text(&tokens, &ctx, true, &mut out);
    assert_eq!(out, "[] [-] |");
}

#[test]
fn parse_errors_name_the_operator() {
    assert_eq!(
        parse("%NOPE%").expect_err("unknown"),
        "unknown command operator %NOPE%"
    );
    assert!(parse("100% done")
        .expect_err("stray")
        .contains("position 3"));
    assert!(parse("%REQ()%").is_err());
    assert!(parse("%PROTOCOL(x)%").is_err());
    assert!(parse("%START_TIME(%Q)%").is_err());
    // START_TIME formats may hold `%` and `)`.
    assert_eq!(parse("%START_TIME(%H:%M)%").expect("parse").len(), 1);
    assert_eq!(parse("a%START_TIME(%s):3%b").expect("parse").len(), 3);
}

fn json(yaml: &str, ctx: &LogContext<'_>, omit: bool) -> String {
    let s: pbjson::Struct = serde_json::from_str::<serde_json::Value>(yaml)
        .map(|v| to_struct(&v))
        .expect("json");
    let node = compile_json(&s).expect("compiles");
    let mut out = String::new();
    if !render_json(&node, ctx, omit, &mut out) {
        out.push_str("{}");
    }
    out
}

fn to_struct(v: &serde_json::Value) -> pbjson::Struct {
    let serde_json::Value::Object(m) = v else {
        return pbjson::Struct::default();
    };
    pbjson::Struct {
        fields: m.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

fn to_value(v: &serde_json::Value) -> pbjson::Value {
    use envoy_types::pb::google::protobuf::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(pbjson::ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(to_struct(v)),
    };
    pbjson::Value { kind: Some(kind) }
}

#[test]
fn json_keeps_types_sorts_keys_and_nests() {
    let req = headers(&[("user-agent", "curl/7.88.1")]);
    let (resp, trailers) = (HeaderMap::new(), HeaderMap::new());
    let ctx = full_ctx(&req, &resp, &trailers);
    // Shape and types as a real Envoy 1.40 printed them.
    assert_eq!(
        json(
            r#"{"code":"%RESPONSE_CODE%","dur":"%DURATION%","br":"%BYTES_RECEIVED%","bs":"%BYTES_SENT%",
                "st":"%START_TIME%","m":"%REQ(:METHOD)%","missing":"%REQ(x-missing)%",
                "nested":{"a":"%PROTOCOL%","n":5},"mixed":"x %RESPONSE_CODE%","att":"%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
                "cid":"%CONNECTION_ID%","reqd":"%REQUEST_DURATION%","ua":"%REQ(USER-AGENT):3%","pct":"%%",
                "list":["%PROTOCOL%",true]}"#,
            &ctx,
            false
        ),
        r#"{"att":1,"br":12,"bs":447,"cid":7,"code":200,"dur":2,"list":["HTTP/1.1",true],"m":"GET","missing":null,"mixed":"x 200","nested":{"a":"HTTP/1.1","n":5},"pct":"%","reqd":0,"st":"2026-12-02T15:45:03.719Z","ua":"cur"}"#
    );
}

#[test]
fn json_omit_empty_values_drops_keys_and_empty_objects() {
    let mut ctx = LogContext::new(start());
    ctx.response_code = Some(404);
    let format = r#"{"missing":"%REQ(x-missing)%","code":"%RESPONSE_CODE%","n":{"x":"%REQ(x-missing)%"},"fl":"%RESPONSE_FLAGS%"}"#;
    assert_eq!(json(format, &ctx, true), r#"{"code":404,"fl":"-"}"#);
    assert_eq!(
        json(format, &ctx, false),
        r#"{"code":404,"fl":"-","missing":null,"n":{"x":null}}"#
    );
    assert_eq!(json(r#"{"a":"%UPSTREAM_HOST%"}"#, &ctx, true), "{}");
}

#[test]
fn json_errors_carry_the_key_path() {
    let s = to_struct(&serde_json::json!({"outer": {"inner": ["ok", "%BAD%"]}}));
    let (path, err) = compile_json(&s).expect_err("bad operator");
    assert_eq!(path, "outer.inner[1]");
    assert_eq!(err, "unknown command operator %BAD%");
}

fn tls_info(peer: Option<PeerCert>) -> TlsInfo {
    TlsInfo {
        version: "TLSv1.3",
        cipher: "TLS_AES_128_GCM_SHA256",
        sni: Some("outbound_.8080_._.app.default.svc.cluster.local".into()),
        alpn: Some(b"istio-peer-exchange".to_vec()),
        peer,
        local_uri_sans: vec![
            "spiffe://cluster.local/ns/default/sa/server".into(),
            "spiffe://other/ns/x/sa/y".into(),
        ],
    }
}

fn client_cert() -> PeerCert {
    PeerCert {
        uri_sans: vec![
            "spiffe://cluster.local/ns/default/sa/client".into(),
            "spiffe://cluster.local/ns/default/sa/alias".into(),
        ],
        dns_sans: vec!["client.mesh".into(), "client.default".into()],
        subject: "CN=client,O=mesh".into(),
        serial: "1d3a9f0c".into(),
        spiffe_id: Some("spiffe://cluster.local/ns/default/sa/client".into()),
        sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        der: Default::default(),
        signature_scheme: Some("ecdsa_secp256r1_sha256"),
    }
}

#[test]
fn downstream_tls_operators_read_the_handshake() {
    let tls = tls_info(Some(client_cert()));
    let ctx = LogContext {
        downstream_tls: Some(&tls),
        ..LogContext::new(start())
    };
    let cases = [
        ("%DOWNSTREAM_TLS_VERSION%", "TLSv1.3"),
        ("%DOWNSTREAM_TLS_CIPHER%", "TLS_AES_128_GCM_SHA256"),
        (
            "%DOWNSTREAM_PEER_URI_SAN%",
            "spiffe://cluster.local/ns/default/sa/client,spiffe://cluster.local/ns/default/sa/alias",
        ),
        ("%DOWNSTREAM_PEER_DNS_SAN%", "client.mesh,client.default"),
        ("%DOWNSTREAM_PEER_SUBJECT%", "CN=client,O=mesh"),
        ("%DOWNSTREAM_PEER_SERIAL%", "1d3a9f0c"),
        (
            "%DOWNSTREAM_PEER_FINGERPRINT_256%",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ),
        (
            "%DOWNSTREAM_LOCAL_URI_SAN%",
            "spiffe://cluster.local/ns/default/sa/server,spiffe://other/ns/x/sa/y",
        ),
        // The upstream side is a different connection, plaintext here.
        ("%UPSTREAM_TLS_VERSION% %UPSTREAM_PEER_URI_SAN%", "- -"),
    ];
    for (format, want) in cases {
        assert_eq!(text(format, &ctx), want, "{format}");
    }
}

#[test]
fn tls_operators_print_dash_without_tls_or_peer_certificate() {
    let plain = LogContext::new(start());
    let all = "%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_TLS_CIPHER% %DOWNSTREAM_PEER_URI_SAN% \
%DOWNSTREAM_PEER_SERIAL% %DOWNSTREAM_PEER_SUBJECT% %DOWNSTREAM_PEER_DNS_SAN% \
%DOWNSTREAM_PEER_FINGERPRINT_256% %DOWNSTREAM_LOCAL_URI_SAN%";
    assert_eq!(text(all, &plain), "- - - - - - - -");

    // One-way TLS: the connection has a version and cipher but no peer identity.
    let mut tls = tls_info(None);
    tls.local_uri_sans.clear();
    let ctx = LogContext {
        downstream_tls: Some(&tls),
        ..LogContext::new(start())
    };
    assert_eq!(
        text(all, &ctx),
        "TLSv1.3 TLS_AES_128_GCM_SHA256 - - - - - -"
    );

    // A peer certificate without URI SANs (a plain DNS certificate).
    let mut cert = client_cert();
    cert.uri_sans.clear();
    let tls = tls_info(Some(cert));
    let ctx = LogContext {
        downstream_tls: Some(&tls),
        ..LogContext::new(start())
    };
    assert_eq!(
        text("%DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_PEER_DNS_SAN%", &ctx),
        "- client.mesh,client.default"
    );
}

#[test]
fn upstream_tls_operators_read_the_upstream_connection() {
    let mut server = client_cert();
    server.uri_sans = vec!["spiffe://cluster.local/ns/default/sa/nginx".into()];
    server.subject = "CN=nginx".into();
    let mut tls = tls_info(Some(server));
    tls.version = "TLSv1.2";
    tls.cipher = "ECDHE-RSA-AES128-GCM-SHA256";
    let ctx = LogContext {
        upstream_tls: Some(&tls),
        ..LogContext::new(start())
    };
    assert_eq!(
        text(
            "%UPSTREAM_TLS_VERSION% %UPSTREAM_TLS_CIPHER% %UPSTREAM_PEER_URI_SAN% %UPSTREAM_PEER_SUBJECT% %DOWNSTREAM_TLS_VERSION%",
            &ctx
        ),
        "TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256 spiffe://cluster.local/ns/default/sa/nginx CN=nginx -"
    );
}

#[test]
fn tls_operator_names_follow_envoy() {
    // Envoy has serial and fingerprint operators for the downstream peer only.
    for name in [
        "UPSTREAM_PEER_SERIAL",
        "UPSTREAM_PEER_FINGERPRINT_256",
        "DOWNSTREAM_TLS_FOO",
    ] {
        assert!(parse(&format!("%{name}%")).is_err(), "{name}");
    }
    assert!(parse("%DOWNSTREAM_PEER_SERIAL(x)%").is_err());
    assert_eq!(
        parse("%UPSTREAM_TLS_VERSION%").expect("parses"),
        vec![Token::Op(
            Operator::Tls(TlsSide::Upstream, TlsField::Version),
            None
        )]
    );
}

#[test]
fn transport_failure_reason_replaces_spaces_and_empty_is_dash() {
    let ctx = LogContext {
        upstream_transport_failure_reason: Some(
            "TLS error: invalid peer certificate: NotValidForName:TLS error end",
        ),
        ..LogContext::new(start())
    };
    assert_eq!(
        text("%UPSTREAM_TRANSPORT_FAILURE_REASON%", &ctx),
        "TLS_error:_invalid_peer_certificate:_NotValidForName:TLS_error_end"
    );
    let empty = LogContext {
        upstream_transport_failure_reason: Some(""),
        ..LogContext::new(start())
    };
    assert_eq!(text("%UPSTREAM_TRANSPORT_FAILURE_REASON%", &empty), "-");
}

#[test]
fn upstream_address_operators_follow_the_connection() {
    let (req, resp, tr) = (HeaderMap::new(), HeaderMap::new(), HeaderMap::new());
    let ctx = full_ctx(&req, &resp, &tr);
    let all = "%UPSTREAM_REMOTE_ADDRESS% %UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_REMOTE_PORT% \
%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %UPSTREAM_LOCAL_PORT% %DOWNSTREAM_LOCAL_PORT% %DOWNSTREAM_REMOTE_PORT%";
    assert_eq!(
        text(all, &ctx),
        "127.0.0.1:19904 127.0.0.1 19904 127.0.0.1 52384 19902 42046"
    );
    // A connect failure: the host is known, the connection's addresses are not.
    let failed = LogContext {
        upstream_local_address: None,
        ..ctx.clone()
    };
    assert_eq!(
        text(
            "%UPSTREAM_HOST% %UPSTREAM_REMOTE_ADDRESS% %UPSTREAM_REMOTE_PORT% %UPSTREAM_LOCAL_ADDRESS%",
            &failed
        ),
        "127.0.0.1:19904 - - -"
    );
    // To an internal listener: `envoy://` addresses and no ports.
    let internal = LogContext {
        upstream_internal: Some("envoy://inner/ep1"),
        upstream_local_address: Some(crate::listener::internal::INTERNAL_ADDRESS),
        ..ctx.clone()
    };
    assert_eq!(
        text(
            "%UPSTREAM_REMOTE_ADDRESS% %UPSTREAM_LOCAL_ADDRESS% [%UPSTREAM_LOCAL_PORT%]",
            &internal
        ),
        "envoy://inner/ep1 envoy://internal_client_address/ []"
    );
}
