//! `envoy.filters.http.ext_authz` on Envoy and remora with the same bootstrap, against the
//! authorization services of `remora_tests::authz`: gRPC and HTTP services allowing, denying and
//! changing requests, per-route `disabled` and context extensions, the request body in the check,
//! an unreachable service with `status_on_error` and with `failure_mode_allow`, Istio's CUSTOM
//! action (RBAC shadow rules deciding which requests are checked), the peer identity on mTLS, the
//! access log's flags and details, and the filter's and the route cluster's stats.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::value::Kind;
use remora_tests::access_log::wait_for_lines;
use remora_tests::admin;
use remora_tests::authz::{percent_decode, start_grpc, start_http, GrpcAuthz, HttpSeen};
use remora_tests::client::{Client, Protocol, Request};
use remora_tests::peers::{MeshStack, TlsClient};
use remora_tests::pki::{istio_id, Pki};
use remora_tests::proxy::{Proxy, StartOptions};
use remora_tests::select::for_each_kind;
use remora_tests::stack::Env;
use remora_tests::template::{render, Vars};

const FIXTURE: &str = "filters/ext_authz.yaml";

struct Authz {
    grpc: GrpcAuthz,
    http: HttpSeen,
    env: Env,
    proxy: Proxy,
    env_addrs: BTreeMap<&'static str, SocketAddr>,
}

impl Authz {
    async fn start(kind: remora_tests::proxy::Kind) -> Authz {
        let grpc = GrpcAuthz::default();
        let http: HttpSeen = Arc::default();
        let g = start_grpc(grpc.clone()).await;
        let h = start_http(http.clone()).await;
        let template = remora_tests::fixture(FIXTURE)
            .replace("{{authz_grpc_port}}", &g.port().to_string())
            .replace("{{authz_http_port}}", &h.port().to_string());
        let env = Env::for_template(&template).await;
        let config = render(&template, &env.vars);
        let proxy = Proxy::start_with(kind, &config, StartOptions::default()).await;
        let mut env_addrs = BTreeMap::new();
        for (name, placeholder) in [
            ("grpc", "listener_port"),
            ("http", "listener_port_http"),
            ("down", "listener_port_down"),
            ("open", "listener_port_open"),
            ("istio", "listener_port_istio"),
            ("reroute", "listener_port_reroute"),
        ] {
            env_addrs.insert(name, env.addr(placeholder));
        }
        Authz {
            grpc,
            http,
            env,
            proxy,
            env_addrs,
        }
    }

    fn client(&self, listener: &str) -> Client {
        Client::new(self.env_addrs[listener], Protocol::Http1)
    }

    async fn stats(&self) -> String {
        admin::get(self.proxy.admin(), "/stats")
            .await
            .expect("stats")
            .text()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_service_allows_denies_and_changes_the_request() {
    for_each_kind(|kind| async move {
        let s = Authz::start(kind).await;
        let mut c = s.client("grpc");

        // Allowed: the service's headers reach the backend, x-remove-me does not, and the
        // client's response carries the service's response header.
        let req = Request::get("/app?q=1")
            .header("x-allow", "yes")
            .header("x-remove-me", "1");
        let r = c.send(&req).await.expect("response");
        assert_eq!(r.status, 200, "[{kind}] {}", r.text());
        let echo = r.echo().expect("echo");
        assert_eq!(echo.header("x-authz"), Some("grpc"), "[{kind}] {echo:?}");
        assert_eq!(echo.header("x-remove-me"), None, "[{kind}] {echo:?}");
        assert_eq!(r.header("x-authz-resp"), Some("yes"), "[{kind}] {r:?}");

        // Denied: the service's status, header and body.
        let r = c.send(&Request::get("/app")).await.expect("response");
        assert_eq!(r.status, 401, "[{kind}]");
        assert_eq!(r.text(), "denied by grpc", "[{kind}]");
        assert_eq!(r.header("x-denied"), Some("grpc"), "[{kind}]");

        // The service's content type replaces the local reply's; repeated headers stay repeated.
        let r = c
            .send(&Request::get("/app").header("x-json", "1"))
            .await
            .expect("response");
        assert_eq!(r.status, 403, "[{kind}]");
        assert_eq!(
            r.header_all("content-type"),
            ["application/json"],
            "[{kind}]"
        );
        assert_eq!(r.header_all("x-a"), ["1", "2"], "[{kind}]");
        assert_eq!(r.text(), "{}", "[{kind}]");
        // A denial without a DeniedHttpResponse: 403, no body.
        let r = c
            .send(&Request::get("/app").header("x-bare", "1"))
            .await
            .expect("response");
        assert_eq!((r.status, r.text().as_str()), (403, ""), "[{kind}]");

        // Per route: disabled skips the check; context extensions reach the service.
        let r = c.send(&Request::get("/nocheck")).await.expect("response");
        assert_eq!(r.status, 200, "[{kind}] {}", r.text());
        let r = c
            .send(&Request::get("/ctx").header("x-allow", "yes"))
            .await
            .expect("response");
        assert_eq!(r.status, 200, "[{kind}]");
        assert_eq!(r.echo().expect("echo").header("x-ctx"), Some("ctx"));

        // The body goes into the check (under max_request_bytes) and on to the backend.
        let r = c
            .send(
                &Request::new("POST", "/app")
                    .header("x-allow", "yes")
                    .body("hello"),
            )
            .await
            .expect("response");
        assert_eq!(r.status, 200, "[{kind}]");
        let echo = r.echo().expect("echo");
        assert_eq!(echo.header("x-body-seen"), Some("hello"), "[{kind}]");
        assert_eq!(echo.body, "hello", "[{kind}]");
        // Over it, without allow_partial_message: 413.
        let big = "x".repeat(100);
        let r = Client::new(s.env_addrs["grpc"], Protocol::Http1)
            .send(
                &Request::new("POST", "/app")
                    .header("x-allow", "yes")
                    .body(big),
            )
            .await
            .expect("response");
        assert_eq!(r.status, 413, "[{kind}]");

        // What the service was told about the first request.
        let first = s.grpc.seen.lock().expect("seen")[0].clone();
        let attrs = first.attributes.expect("attributes");
        let http = attrs.request.and_then(|r| r.http).expect("http");
        assert_eq!(http.method, "GET", "[{kind}]");
        assert_eq!(http.path, "/app?q=1", "[{kind}]");
        assert_eq!(http.host, "example.com", "[{kind}]");
        assert_eq!(http.scheme, "http", "[{kind}]");
        assert_eq!(http.protocol, "HTTP/1.1", "[{kind}]");
        assert_eq!(
            http.headers.get(":path").map(String::as_str),
            Some("/app?q=1")
        );
        assert_eq!(http.headers.get(":method").map(String::as_str), Some("GET"));
        assert_eq!(
            http.headers.get(":authority").map(String::as_str),
            Some("example.com")
        );
        assert_eq!(
            http.headers.get("x-remove-me").map(String::as_str),
            Some("1")
        );
        assert!(
            http.id.parse::<u64>().is_ok(),
            "[{kind}] the stream id: {}",
            http.id
        );
        let md = s.grpc.metadata.lock().expect("metadata")[0].clone();
        let md = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(md("x-envoy-internal").as_deref(), Some("true"), "[{kind}]");
        assert_eq!(md("grpc-timeout").as_deref(), Some("2000m"), "[{kind}]");
        assert_eq!(
            md("x-envoy-expected-rq-timeout-ms").as_deref(),
            Some("2000"),
            "[{kind}]"
        );
        let source = attrs.source.expect("source");
        assert!(source.address.is_some(), "[{kind}]");
        assert!(attrs.destination.expect("destination").address.is_some());

        let stats = s.stats().await;
        let stat = |n: &str| admin::stat_in(&stats, &format!("http.grpc.ext_authz.{n}"));
        assert_eq!(stat("ok"), Some(3), "[{kind}]\n{stats}");
        assert_eq!(stat("denied"), Some(3), "[{kind}]");
        assert_eq!(stat("error").unwrap_or(0), 0, "[{kind}]");
        assert_eq!(
            stat("disabled"),
            Some(0),
            "[{kind}] a route's disabled is not counted"
        );
        // The route's cluster counts the verdicts, and a denial as its response.
        let cluster = |n: &str| admin::stat_in(&stats, &format!("cluster.app.{n}"));
        assert_eq!(cluster("ext_authz.ok"), Some(3), "[{kind}]");
        assert_eq!(cluster("ext_authz.denied"), Some(3), "[{kind}]");
        assert_eq!(cluster("upstream_rq_401"), Some(1), "[{kind}]");
        assert_eq!(cluster("upstream_rq_403"), Some(2), "[{kind}]");

        // A denial is UAEX with ext_authz_denied; a 413 is the connection manager's.
        let log = wait_for_lines(&s.env.file("grpc.log"), 8).await;
        assert_eq!(log[1], "/app 401 UAEX ext_authz_denied", "[{kind}] {log:?}");
        assert_eq!(log[0], "/app?q=1 200 - via_upstream", "[{kind}] {log:?}");
        assert_eq!(
            log[7], "/app 413 - request_payload_too_large",
            "[{kind}] {log:?}"
        );
    })
    .await;
}

/// Istio's CUSTOM action: only requests an RBAC shadow policy matches are checked; the others
/// count as `disabled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_shadow_rules_pick_the_requests_checked_as_istio_configures_it() {
    for_each_kind(|kind| async move {
        let s = Authz::start(kind).await;
        let mut c = s.client("istio");
        let cases = [
            (Request::get("/public"), 200),
            (Request::get("/protected"), 401),
            (Request::get("/protected/x").header("x-allow", "yes"), 200),
        ];
        for (req, want) in cases {
            let r = c.send(&req).await.expect("response");
            assert_eq!(r.status, want, "[{kind}] {} {}", req.path, r.text());
        }
        let seen = s.grpc.seen.lock().expect("seen").clone();
        assert_eq!(seen.len(), 2, "[{kind}]");
        // metadata_context carries the RBAC filter's shadow verdict.
        let meta = seen[0]
            .attributes
            .clone()
            .and_then(|a| a.metadata_context)
            .map(|m| m.filter_metadata)
            .unwrap_or_default();
        let rbac = meta.get("envoy.filters.http.rbac").expect("rbac metadata");
        let field = |k: &str| match rbac.fields.get(k).and_then(|v| v.kind.clone()) {
            Some(Kind::StringValue(v)) => v,
            other => panic!("[{kind}] {k}: {other:?}"),
        };
        assert_eq!(
            field("istio_ext_authz_shadow_effective_policy_id"),
            "istio-ext-authz-ns[default]-policy[custom]-rule[0]",
            "[{kind}]"
        );
        assert_eq!(field("istio_ext_authz_shadow_engine_result"), "denied");
        let stats = s.stats().await;
        let stat = |n: &str| admin::stat_in(&stats, &format!("http.istio.{n}"));
        assert_eq!(stat("ext_authz.disabled"), Some(1), "[{kind}]\n{stats}");
        assert_eq!(stat("ext_authz.ok"), Some(1), "[{kind}]");
        assert_eq!(stat("ext_authz.denied"), Some(1), "[{kind}]");
        assert_eq!(
            stat("rbac.istio_ext_authz_.shadow_denied"),
            Some(2),
            "[{kind}]"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_service_decides_with_its_status_and_allowed_headers() {
    for_each_kind(|kind| async move {
        let s = Authz::start(kind).await;
        let mut c = s.client("http");
        let req = Request::new("PUT", "/res?x=1")
            .header("x-allow", "yes")
            .header("x-private", "p")
            .header("authorization", "Bearer t");
        let r = c.send(&req).await.expect("response");
        assert_eq!(r.status, 200, "[{kind}] {}", r.text());
        let echo = r.echo().expect("echo");
        assert_eq!(echo.header("x-authz"), Some("http"), "[{kind}] {echo:?}");
        assert_eq!(echo.header("x-not-upstream"), None, "[{kind}] {echo:?}");
        // allowed_upstream_headers_to_append adds to what the request had, or sets.
        assert_eq!(echo.header("x-more"), Some("m2"), "[{kind}] {echo:?}");
        assert_eq!(echo.method, "PUT", "[{kind}]");
        assert_eq!(r.header("x-authz-resp"), Some("http"), "[{kind}] {r:?}");
        let r = c
            .send(
                &Request::get("/more")
                    .header("x-allow", "yes")
                    .header("x-more", "m1"),
            )
            .await
            .expect("response");
        let echo = r.echo().expect("echo");
        assert_eq!(echo.header("x-more"), Some("m1,m2"), "[{kind}] {echo:?}");

        let r = c.send(&Request::get("/res")).await.expect("response");
        assert_eq!(r.status, 403, "[{kind}]");
        assert_eq!(r.text(), "denied by http", "[{kind}]");
        assert_eq!(r.header("x-denied"), Some("http"), "[{kind}]");
        assert_eq!(r.header("x-hidden"), None, "[{kind}]");

        // Another status denies with it; a 5xx from the service is an error (status_on_error).
        let r = c.send(&Request::get("/nocontent")).await.expect("response");
        assert_eq!(r.status, 204, "[{kind}]");
        let r = c.send(&Request::get("/boom")).await.expect("response");
        assert_eq!((r.status, r.text().as_str()), (403, ""), "[{kind}]");

        // The check: the original method, path_prefix + path, allowed headers only.
        let (method, path, headers) = s.http.lock().expect("seen")[0].clone();
        assert_eq!(method, "PUT", "[{kind}]");
        assert_eq!(path, "/authz/res?x=1", "[{kind}]");
        assert_eq!(headers.get("x-allow").map(String::as_str), Some("yes"));
        assert_eq!(
            headers.get("authorization").map(String::as_str),
            Some("Bearer t")
        );
        assert_eq!(headers.get("x-private"), None, "[{kind}] {headers:?}");
        assert_eq!(
            headers.get("x-authz-from").map(String::as_str),
            Some("proxy")
        );
        assert_eq!(headers.get("host").map(String::as_str), Some("example.com"));
        assert_eq!(
            headers.get("x-envoy-internal").map(String::as_str),
            Some("true")
        );
        assert_eq!(headers.get("content-length").map(String::as_str), Some("0"));

        let stats = s.stats().await;
        let stat = |n: &str| admin::stat_in(&stats, &format!("http.http.ext_authz.web.{n}"));
        assert_eq!(stat("ok"), Some(2), "[{kind}]\n{stats}");
        assert_eq!(stat("denied"), Some(2), "[{kind}]");
        assert_eq!(stat("error"), Some(1), "[{kind}]");
        // The route cluster's counters carry the filter's stat_prefix too.
        let cluster = |n: &str| admin::stat_in(&stats, &format!("cluster.app.ext_authz.web.{n}"));
        assert_eq!(cluster("ok"), Some(2), "[{kind}]");
        assert_eq!(cluster("denied"), Some(2), "[{kind}]");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_service_fails_closed_or_open_as_configured() {
    for_each_kind(|kind| async move {
        let s = Authz::start(kind).await;
        let r = s
            .client("down")
            .send(&Request::get("/app").header("x-allow", "yes"))
            .await
            .expect("response");
        assert_eq!(r.status, 503, "[{kind}]");
        assert_eq!(r.text(), "", "[{kind}]");

        let r = s
            .client("open")
            .send(&Request::get("/app"))
            .await
            .expect("response");
        assert_eq!(r.status, 200, "[{kind}]");
        let echo = r.echo().expect("echo");
        assert_eq!(
            echo.header("x-envoy-auth-failure-mode-allowed"),
            Some("true"),
            "[{kind}] {echo:?}"
        );

        // A route's own service (unreachable here) replaces the filter's.
        let r = s
            .client("grpc")
            .send(&Request::get("/other-service").header("x-allow", "yes"))
            .await
            .expect("response");
        assert_eq!(r.status, 403, "[{kind}] {}", r.text());

        // A service slower than the timeout (2 s) is an error too.
        let r = s
            .client("grpc")
            .send(
                &Request::get("/app")
                    .header("x-allow", "yes")
                    .header("x-slow", "1"),
            )
            .await
            .expect("response");
        assert_eq!((r.status, r.text().as_str()), (403, ""), "[{kind}]");

        let log = wait_for_lines(&s.env.file("down.log"), 1).await;
        assert_eq!(log[0], "/app 503 UAEX ext_authz_error", "[{kind}] {log:?}");

        let stats = s.stats().await;
        let stat = |n: &str| admin::stat_in(&stats, n).unwrap_or(0);
        assert_eq!(stat("cluster.app.ext_authz.error"), 4, "[{kind}]\n{stats}");
        assert_eq!(stat("http.grpc.ext_authz.error"), 2, "[{kind}]");
        assert_eq!(
            stat("cluster.app.ext_authz.failure_mode_allowed"),
            1,
            "[{kind}]"
        );
        assert_eq!(stat("cluster.app.upstream_rq_503"), 0, "[{kind}]");
        assert_eq!(stat("http.down.ext_authz.error"), 1, "[{kind}]\n{stats}");
        assert_eq!(
            stat("http.down.ext_authz.failure_mode_allowed"),
            0,
            "[{kind}]"
        );
        assert_eq!(stat("http.open.ext_authz.error"), 1, "[{kind}]");
        assert_eq!(
            stat("http.open.ext_authz.failure_mode_allowed"),
            1,
            "[{kind}]"
        );
    })
    .await;
}

/// On an mTLS listener the check names both workloads by SPIFFE ID and carries the peer's
/// certificate (URL-encoded PEM) and the SNI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_check_carries_the_peer_identity_and_certificate() {
    for_each_kind(|kind| async move {
        let mut pki = Pki::new();
        pki.issue("server", &istio_id("server"), &["server.mesh"]);
        let client = pki.issue("client", &istio_id("client"), &[]);
        let grpc = GrpcAuthz::default();
        let addr = start_grpc(grpc.clone()).await;
        let mut vars = Vars::new();
        vars.set("authz_grpc_port", addr.port());
        let s = MeshStack::start(kind, "filters/ext_authz_mtls.yaml", &pki, &vars).await;
        let port = s.port("listener_port");
        let c = TlsClient::new("server.mesh").cert(&client).ca(pki.ca_pem());
        let r = tokio::task::spawn_blocking(move || c.curl(port, "/"))
            .await
            .expect("join");
        assert!(r.stdout.ends_with("401"), "[{kind}] {r:?}");
        let check = grpc.seen.lock().expect("seen")[0].clone();
        let attrs = check.attributes.expect("attributes");
        let source = attrs.source.expect("source");
        assert_eq!(source.principal, istio_id("client"), "[{kind}]");
        let destination = attrs.destination.expect("destination");
        assert_eq!(destination.principal, istio_id("server"), "[{kind}]");
        assert!(source.certificate.contains("%0A"), "[{kind}] URL-encoded");
        let leaf = client.cert_pem();
        let leaf = leaf
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .unwrap_or_default();
        assert_eq!(percent_decode(&source.certificate), leaf, "[{kind}]");
        let sni = attrs.tls_session.map(|t| t.sni);
        assert_eq!(sni.as_deref(), Some("server.mesh"), "[{kind}]");
        let http = attrs.request.and_then(|r| r.http).expect("http");
        assert_eq!(http.scheme, "https", "[{kind}]");
    })
    .await;
}

/// An OK response's changes: Envoy 1.40 replaces upstream headers unless the legacy `append` is
/// true (then joins to an existing one only), whatever `append_action` says; a changed query is
/// rebuilt in key order; the host and pseudo-headers are never removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_responses_change_headers_and_query_as_envoy_does() {
    for_each_kind(|kind| async move {
        let s = Authz::start(kind).await;
        let req = Request::get("/app?q=1&r=1&k=3")
            .header("x-allow", "yes")
            .header("x-mut", "1")
            .header("x-authz", "orig")
            .header("x-set", "old")
            .header("x-legacy", "a")
            .header("x-ifabsent", "keep");
        let r = s.client("grpc").send(&req).await.expect("response");
        assert_eq!(r.status, 200, "[{kind}] {}", r.text());
        assert_eq!(r.header_all("x-resp"), ["1", "2"], "[{kind}]");
        let echo = r.echo().expect("echo");
        assert_eq!(echo.path, "/app?k=3&n=new&q=2", "[{kind}]");
        assert_eq!(echo.host, "example.com", "[{kind}]");
        let h = |k: &str| echo.header(k);
        assert_eq!(h("x-authz"), Some("grpc"), "[{kind}]");
        assert_eq!(h("x-set"), Some("new"), "[{kind}]");
        assert_eq!(h("x-legacy"), Some("a,b"), "[{kind}]");
        assert_eq!(h("x-legacy-absent"), None, "[{kind}]");
        assert_eq!(h("x-ifabsent"), Some("v"), "[{kind}]");
        assert_eq!(h("x-overwrite"), Some("v"), "[{kind}]");

        // The service's headers pick another route only with clear_route_cache.
        let req = Request::get("/app")
            .header("x-allow", "yes")
            .header("x-want-reroute", "1");
        let r = s.client("grpc").send(&req).await.expect("response");
        let echo = r.echo().expect("the first route's backend");
        assert_eq!(echo.header("x-authz-route"), Some("b"), "[{kind}]");
        let r = s.client("reroute").send(&req).await.expect("response");
        assert_eq!((r.status, r.text().as_str()), (200, "rerouted"), "[{kind}]");
        // That listener has encode_raw_headers: header_map, in order, instead of headers.
        let last = s.grpc.seen.lock().expect("seen").last().cloned();
        let http = last
            .and_then(|c| c.attributes)
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .expect("http");
        assert!(http.headers.is_empty(), "[{kind}]");
        let raw = http.header_map.map(|m| m.headers).unwrap_or_default();
        let keys: Vec<&str> = raw.iter().map(|h| h.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                ":authority",
                ":path",
                ":method",
                ":scheme",
                "x-allow",
                "x-want-reroute",
                "x-forwarded-proto",
                "x-request-id"
            ],
            "[{kind}]"
        );
        assert_eq!(raw[0].raw_value, b"example.com", "[{kind}]");

        // Over HTTP/2 the check says so, with the authority as a pseudo-header.
        let mut h2 = Client::new(s.env_addrs["grpc"], Protocol::H2c);
        let r = h2
            .send(&Request::get("/h2").header("x-allow", "yes"))
            .await
            .expect("response");
        assert_eq!(r.status, 200, "[{kind}]");
        let last = s.grpc.seen.lock().expect("seen").last().cloned();
        let http = last
            .and_then(|c| c.attributes)
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .expect("http");
        assert_eq!(http.protocol, "HTTP/2", "[{kind}]");
        assert_eq!(http.host, "example.com", "[{kind}]");
        let authority = http.headers.get(":authority").map(String::as_str);
        assert_eq!(authority, Some("example.com"), "[{kind}]");
    })
    .await;
}
