//! HTTP filters before the router, on Envoy and remora with the same bootstrap: RBAC's enforced and
//! shadow rules, per-route `RBACPerRoute`, routes that disable or enable a filter, mTLS principals;
//! fault injection (abort, delay, by header and per route).

use remora_tests::admin;
use remora_tests::client::{Client, Protocol, Request};
use remora_tests::peers::{MeshStack, TlsClient};
use remora_tests::pki::{istio_id, Pki};
use remora_tests::select::for_each_kind;
use remora_tests::stack::Stack;
use remora_tests::template::Vars;

const RBAC: &str = "filters/rbac.yaml";
const DENIED: &str = "RBAC: access denied";

/// `(request, status)` on the `rbac` listener: which policy lets each through, or none.
fn rbac_cases() -> Vec<(Request, u16)> {
    vec![
        // public-reads: GET under /public.
        (Request::get("/public/page"), 200),
        (Request::new("POST", "/public/page"), 403),
        (Request::get("/private"), 403),
        // admins: the x-user header, or an ops- user from loopback.
        (Request::get("/private").header("x-user", "admin"), 200),
        (Request::get("/private").header("x-user", "ops-anna"), 200),
        (Request::get("/private").header("x-user", "guest"), 403),
        // not-secret-on-this-port: any path but /secret with an x-token.
        (Request::get("/private").header("x-token", "t"), 200),
        (Request::get("/secret").header("x-token", "t"), 403),
        // The filter runs before direct responses too.
        (Request::get("/direct"), 403),
        (Request::get("/direct").header("x-user", "admin"), 200),
        // Per route: an empty RBACPerRoute enforces nothing; FilterConfig.disabled skips the filter;
        // /strict's own rules deny everyone, admins included.
        (Request::get("/open"), 200),
        (Request::get("/nofilter"), 200),
        (Request::get("/strict").header("x-user", "admin"), 403),
        // The shadow DENY policy counts this one as denied but lets it through.
        (Request::get("/public/shadow"), 200),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_allows_and_denies_as_envoy_and_counts_it() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, RBAC).await;
        let mut client = Client::new(s.addr(), Protocol::Http1);
        for (req, want) in rbac_cases() {
            let r = client.send(&req).await.expect("response");
            let what = format!("[{kind}] {} {} {:?}", req.method, req.path, req.headers);
            assert_eq!(r.status, want, "{what}: {}", r.text());
            if want == 403 {
                assert_eq!(r.text(), DENIED, "{what}");
                assert_eq!(r.header("content-type"), Some("text/plain"), "{what}");
            }
        }
        let admin = s.proxy.admin();
        let stats = admin::get(admin, "/stats").await.expect("stats").text();
        let stat = |name: &str| admin::stat_in(&stats, &format!("http.rbac.rbac.{name}"));
        // /open enforces nothing (no rules) and /nofilter skips the filter: neither is counted.
        assert_eq!(stat("allowed"), Some(6), "[{kind}]");
        assert_eq!(stat("denied"), Some(6), "[{kind}]");
        // The shadow rules are the filter's: a route's RBACPerRoute (/open, /strict) replaces them
        // with none, so they ran on 11 requests. Envoy joins `shadow_rules_stat_prefix` with a dot.
        assert_eq!(stat("audit_.shadow_denied"), Some(1), "[{kind}]");
        assert_eq!(stat("audit_.shadow_allowed"), Some(10), "[{kind}]");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_rbac_filter_runs_only_where_a_route_enables_it() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, RBAC).await;
        let mut client = Client::new(s.env.addr("listener_port_opt_in"), Protocol::H2c);
        let cases = [
            (Request::get("/free"), 200),
            (Request::get("/locked"), 403),
            (Request::get("/locked").header("x-user", "admin"), 200),
        ];
        for (req, want) in cases {
            let r = client.send(&req).await.expect("response");
            assert_eq!(r.status, want, "[{kind}] {} {:?}", req.path, req.headers);
        }
        let admin = s.proxy.admin();
        assert_eq!(
            admin::stat(admin, "http.opt_in.rbac.denied").await,
            Some(1),
            "[{kind}]"
        );
    })
    .await;
}

/// Istio's AuthorizationPolicy on an mTLS inbound listener: the peer certificate's SPIFFE ID is the
/// principal, so only the allowed service account gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_principals_are_the_peer_certificates_spiffe_id() {
    for_each_kind(|kind| async move {
        let mut pki = Pki::new();
        pki.issue("server", &istio_id("server"), &["server.mesh"]);
        pki.issue("client", &istio_id("client"), &[]);
        pki.issue("other", &istio_id("other"), &[]);
        let s = MeshStack::start(kind, "filters/rbac_mtls.yaml", &pki, &Vars::new()).await;
        let port = s.port("listener_port");
        for (who, want) in [("client", "200"), ("other", "403")] {
            let c = TlsClient::new("server.mesh")
                .cert(pki.get(who))
                .ca(pki.ca_pem());
            let r = tokio::task::spawn_blocking(move || c.curl(port, "/"))
                .await
                .expect("join");
            let (body, status) = r.stdout.rsplit_once('\n').unwrap_or(("", ""));
            assert_eq!(status.trim(), want, "[{kind}] {who}: {r:?}");
            if want == "403" {
                assert_eq!(body, DENIED, "[{kind}] {who}");
            }
        }
        assert_eq!(
            admin::stat(s.admin(), "http.inbound.rbac.denied").await,
            Some(1),
            "[{kind}]"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_abort_and_delay_as_configured_per_route_and_by_header() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, "filters/fault.yaml").await;
        let mut client = Client::new(s.addr(), Protocol::Http1);
        let cases = [
            (Request::get("/abort"), 503, Some("fault filter abort")),
            (Request::get("/never"), 200, None),
            // The route's HTTPFault replaces the filter's header faults.
            (
                Request::get("/never").header("x-envoy-fault-abort-request", "429"),
                200,
                None,
            ),
            (Request::get("/delayed"), 200, None),
            (
                Request::get("/delayed").header("x-fail", "1"),
                502,
                Some("fault filter abort"),
            ),
            (Request::get("/"), 200, None),
            (
                Request::get("/").header("x-envoy-fault-abort-request", "429"),
                429,
                Some("fault filter abort"),
            ),
            (
                Request::get("/").header("x-envoy-fault-delay-request", "10"),
                200,
                None,
            ),
        ];
        for (req, want, body) in cases {
            let r = client.send(&req).await.expect("response");
            let what = format!("[{kind}] {} {:?}", req.path, req.headers);
            assert_eq!(r.status, want, "{what}: {}", r.text());
            if let Some(body) = body {
                assert_eq!(r.text(), body, "{what}");
            }
        }
        let grpc = Request::new("POST", "/grpc").header("content-type", "application/grpc");
        let r = client.send(&grpc).await.expect("response");
        assert_eq!(
            (r.status, r.header("grpc-status")),
            (200, Some("14")),
            "[{kind}] {r:?}"
        );
        let admin = s.proxy.admin();
        let stats = admin::get(admin, "/stats").await.expect("stats").text();
        let stat = |name: &str| admin::stat_in(&stats, &format!("http.fault.fault.{name}"));
        assert_eq!(stat("aborts_injected"), Some(4), "[{kind}]");
        // `headers` gate the whole fault: /delayed without x-fail is neither delayed nor aborted.
        assert_eq!(stat("delays_injected"), Some(2), "[{kind}]");
    })
    .await;
}

/// CORS from the routes' CorsPolicy: preflights answered by the proxy with the most specific
/// level's fields, allow-origin on the responses of allowed origins, nothing for others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_and_responses_follow_the_route_policies() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, "filters/cors.yaml").await;
        let mut client = Client::new(s.addr(), Protocol::Http1);
        let preflight = |path: &str, origin: &str| {
            Request::new("OPTIONS", path)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "x-a")
        };
        let backend = s.env.backend("app");

        // The route's policy: its own origins, `*` echoing the asked headers, the vhost's methods
        // and max-age, credentials.
        let before = backend.requests();
        let r = client
            .send(&preflight("/api/x", "https://a.trusted.example"))
            .await
            .expect("preflight");
        assert_eq!(r.status, 200, "[{kind}]");
        assert_eq!(
            backend.requests(),
            before,
            "[{kind}] the proxy answers the preflight"
        );
        let mut names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "access-control-allow-credentials",
                "access-control-allow-headers",
                "access-control-allow-methods",
                "access-control-allow-origin",
                "access-control-expose-headers",
                "access-control-max-age",
                "content-length",
                "date",
                "server"
            ],
            "[{kind}] the preflight answer's headers"
        );
        assert_eq!(r.header("content-length"), Some("0"), "[{kind}]");
        for (name, want) in [
            (
                "access-control-allow-origin",
                Some("https://a.trusted.example"),
            ),
            ("access-control-allow-methods", Some("GET, POST")),
            ("access-control-allow-headers", Some("x-a")),
            ("access-control-max-age", Some("600")),
            ("access-control-allow-credentials", Some("true")),
            // The answer passes the filter's response side too.
            ("access-control-expose-headers", Some("x-trace")),
        ] {
            assert_eq!(r.header(name), want, "[{kind}] preflight {name}");
        }

        // The vhost's policy alone on other paths: that origin is unknown there, so the preflight
        // goes to the backend.
        let r = client
            .send(&preflight("/other", "https://a.trusted.example"))
            .await
            .expect("forwarded");
        assert_eq!(r.status, 200, "[{kind}]");
        assert_eq!(backend.requests(), before + 1, "[{kind}] forwarded");
        assert_eq!(r.header("access-control-allow-origin"), None, "[{kind}]");

        // A simple request from an allowed origin gets allow-origin on the backend's response.
        let r = client
            .send(&Request::get("/api/x").header("origin", "https://app.example"))
            .await
            .expect("simple");
        assert_eq!(r.status, 200, "[{kind}]");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example"),
            "[{kind}]"
        );
        assert_eq!(
            r.header("access-control-expose-headers"),
            Some("x-trace"),
            "[{kind}]"
        );
        let r = client
            .send(&Request::get("/api/x").header("origin", "https://evil.example"))
            .await
            .expect("other origin");
        assert_eq!(r.header("access-control-allow-origin"), None, "[{kind}]");

        for (name, want) in [("origin_valid", 2), ("origin_invalid", 2)] {
            assert_eq!(
                admin::stat(s.admin(), &format!("http.ingress.cors.{name}")).await,
                Some(want),
                "[{kind}] {name}"
            );
        }
    })
    .await;
}
