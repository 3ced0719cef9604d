//! Filter chains chosen by what the tls_inspector reads: PERMISSIVE (mTLS and plaintext on one
//! port, Istio's ALPN on its own chain) and SNI passthrough to per-name TLS terminators.

use remora_tests::backend::Echo;
use remora_tests::peers::{MeshStack, Run, TlsClient};
use remora_tests::pki::{istio_id, Pki};
use remora_tests::select::for_each_kind;
use remora_tests::template::Vars;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("join")
}

fn split(run: &Run) -> (u16, Option<Echo>) {
    let (body, status) = run.stdout.rsplit_once('\n').unwrap_or(("", ""));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(body).ok(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_accepts_mtls_and_plaintext_on_one_port() {
    for_each_kind(|kind| async move {
        let mut pki = Pki::new();
        pki.issue("server", &istio_id("server"), &["server.mesh"]);
        pki.issue("client", &istio_id("client"), &[]);
        let s = MeshStack::start(kind, "mtls/permissive.yaml", &pki, &Vars::new()).await;
        let port = s.port("listener_port");

        let mtls = TlsClient::new("server.mesh")
            .cert(pki.get("client"))
            .ca(pki.ca_pem());
        let c = mtls.clone();
        let r = blocking(move || c.curl(port, "/m")).await;
        let (status, echo) = split(&r);
        assert_eq!(status, 200, "[{kind}] mTLS: {r:?}");
        assert_eq!(
            echo.and_then(|e| e.header("x-chain").map(str::to_string))
                .as_deref(),
            Some("mtls"),
            "[{kind}]"
        );

        // Istio's sidecars offer istio-peer-exchange: that chain wins over the bare TLS one.
        let c = mtls.clone();
        let r = blocking(move || {
            c.s_client(
                port,
                &["-alpn", "istio-peer-exchange,istio"],
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
        })
        .await;
        assert!(r.stdout.contains("HTTP/1.1 200 OK"), "[{kind}] {}", r.all());
        assert!(
            r.stdout.contains("\"x-chain\":\"mtls-istio\""),
            "[{kind}] {}",
            r.stdout
        );
        // The chain's own alpn_protocols (h2, http/1.1) do not include Istio's: none negotiated.
        assert!(
            r.stdout.contains("No ALPN negotiated"),
            "[{kind}] {}",
            r.stdout
        );

        let url = format!("http://127.0.0.1:{port}/p");
        let r = blocking(move || remora_tests::curl::get(&url, &[]))
            .await
            .expect("plaintext curl");
        assert_eq!(r.status, 200, "[{kind}] plaintext");
        let echo: Echo = serde_json::from_str(&r.body).expect("echo");
        assert_eq!(echo.header("x-chain"), Some("plaintext"), "[{kind}]");

        // TLS still demands the certificate on the TLS chains.
        let c = TlsClient::new("server.mesh").ca(pki.ca_pem());
        let r = blocking(move || c.s_client(port, &[], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")).await;
        assert!(!r.stdout.contains("HTTP/1.1 200"), "[{kind}] {}", r.all());
        assert!(
            r.all().contains("SSL alert number 116"),
            "[{kind}] {}",
            r.all()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_the_passthrough_target() {
    for_each_kind(|kind| async move {
        let mut pki = Pki::new();
        pki.issue("a", "spiffe://cluster.local/ns/default/sa/a", &["a.mesh"]);
        pki.issue(
            "b",
            "spiffe://cluster.local/ns/default/sa/b",
            &["b.mesh", "*.b.mesh"],
        );
        pki.issue(
            "fallback",
            "spiffe://cluster.local/ns/default/sa/fallback",
            &["fallback.mesh"],
        );
        let s = MeshStack::start(kind, "mtls/sni.yaml", &pki, &Vars::new()).await;
        let port = s.port("listener_port");

        for (host, backend) in [("a.mesh", "a"), ("b.mesh", "b"), ("api.b.mesh", "b")] {
            let c = TlsClient::new(host).ca(pki.ca_pem());
            let r = blocking(move || c.curl(port, "/sni")).await;
            let (status, echo) = split(&r);
            assert_eq!(status, 200, "[{kind}] {host}: {r:?}");
            assert_eq!(
                echo.map(|e| e.backend).as_deref(),
                Some(backend),
                "[{kind}] {host}"
            );
        }

        // Unknown name: the default chain's target, whose certificate is fallback.mesh's, so a
        // verifying client refuses it and a non-verifying one reaches the fallback backend.
        let c = TlsClient::new("c.mesh").ca(pki.ca_pem());
        let r = blocking(move || c.curl(port, "/")).await;
        assert_eq!(r.code, Some(60), "[{kind}] c.mesh verified: {r:?}");
        let c = TlsClient::new("c.mesh");
        let r = blocking(move || c.curl(port, "/")).await;
        assert_eq!(
            split(&r).1.map(|e| e.backend).as_deref(),
            Some("fallback"),
            "[{kind}] {r:?}"
        );

        // No default chain: the connection is closed before any TLS byte comes back, and the
        // listener counts it.
        let nodefault = s.port("listener_port_nodefault");
        let stat = format!(
            "{}no_filter_chain_match",
            s.listener_prefix("listener_port_nodefault")
        );
        let before = remora_tests::admin::stat(s.admin(), &stat)
            .await
            .unwrap_or(0);
        let c = TlsClient::new("c.mesh");
        let r = blocking(move || c.curl(nodefault, "/")).await;
        assert_eq!(r.code, Some(35), "[{kind}] c.mesh without default: {r:?}");
        let after = remora_tests::admin::stat(s.admin(), &stat)
            .await
            .unwrap_or(0);
        assert_eq!(after - before, 1, "[{kind}] {stat}");
        // The same listener still routes known names.
        let c = TlsClient::new("a.mesh").ca(pki.ca_pem());
        let r = blocking(move || c.curl(nodefault, "/")).await;
        assert_eq!(
            split(&r).1.map(|e| e.backend).as_deref(),
            Some("a"),
            "[{kind}] {r:?}"
        );
    })
    .await;
}
