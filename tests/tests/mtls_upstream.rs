//! The proxy originating mTLS: to nginx verifying client certificates, to a real Envoy sidecar
//! and from one (SPIFFE SAN checks both ways), and server certificate rotation over SDS on a
//! file while a keep-alive connection keeps working.

use std::time::Duration;

use remora_tests::access_log::wait_for_lines;
use remora_tests::backend::Echo;
use remora_tests::peers::{server_serial, MeshStack, Nginx, TlsClient};
use remora_tests::pki::{istio_id, Pki};
use remora_tests::proxy::Kind;
use remora_tests::select::for_each_kind;
use remora_tests::template::Vars;
use remora_tests::{bins, client, ports};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("join")
}

fn mesh_pki() -> Pki {
    let mut pki = Pki::new();
    pki.issue("server", &istio_id("server"), &["server.mesh"]);
    pki.issue("client", &istio_id("client"), &[]);
    pki.issue("nginx", &istio_id("nginx"), &["nginx.mesh"]);
    pki
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originates_mtls_to_nginx_that_verifies_the_client() {
    if !Nginx::available() {
        println!("SKIP: nginx not installed (apt-get install nginx)");
        return;
    }
    for_each_kind(|kind| async move {
        let pki = mesh_pki();
        let nginx = Nginx::start(pki.get("nginx"), Some(pki.ca_pem())).await;
        let extra = Vars::new()
            .with("nginx_port", nginx.port)
            .with("peer_port", ports::dead_port());
        let s = MeshStack::start(kind, "mtls/outbound.yaml", &pki, &extra).await;
        let addr = ports::loopback(s.port("listener_port"));

        let r = client::get(addr, "/nginx").await.expect("request");
        assert_eq!(r.status, 200, "[{kind}] {}\nnginx: {}", r.text(), nginx.error_log());
        assert_eq!(r.text(), "nginx verify=SUCCESS sni=nginx.mesh\n", "[{kind}]");

        // Without a client certificate nginx answers 400 itself; the proxy passes it on.
        let r = client::get(addr, "/nginx-nocert").await.expect("request");
        assert_eq!(r.status, 400, "[{kind}] {}", r.text());
        assert!(r.text().contains("No required SSL certificate was sent"), "[{kind}] {}", r.text());

        // nginx's SPIFFE ID is not the one expected: the proxy refuses the upstream.
        let r = client::get(addr, "/nginx-wrongsan").await.expect("request");
        assert_eq!(r.status, 503, "[{kind}] {}", r.text());
        assert_eq!(
            remora_tests::admin::stat(s.admin(), "cluster.nginx_wrongsan.ssl.fail_verify_san").await,
            Some(1),
            "[{kind}]"
        );
        let mut lines = wait_for_lines(&s.env.file("access.log"), 3).await;
        // The failure reason is BoringSSL's error queue, with Envoy's SAN detail. remora is not
        // BoringSSL: it keeps Envoy's `TLS_error:` framing and SAN detail but has no error queue
        // (`|268435581:SSL_routines:...`), so for remora only that stable part is compared.
        let envoy_reason = "TLS_error:|268435581:SSL_routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:verify_cert_failed:_SAN_matcher,_certificate_SANs_are_[spiffe://cluster.local/ns/default/sa/nginx,_nginx.mesh]:TLS_error_end";
        if kind == Kind::Remora {
            let last = lines.last_mut().expect("three lines");
            let (head, reason) = last.split_once("failure=").expect("a failure field");
            assert!(
                reason.starts_with("TLS_error:")
                    && reason.ends_with("verify_cert_failed:_SAN_matcher,_certificate_SANs_are_[spiffe://cluster.local/ns/default/sa/nginx,_nginx.mesh]:TLS_error_end"),
                "[{kind}] failure reason: {reason}"
            );
            *last = format!("{head}failure={envoy_reason}");
        }
        assert_eq!(
            lines,
            // Envoy's upstream TLS defaults to a 1.2 maximum, so nginx (which offers 1.3) is
            // spoken to in 1.2.
            vec![
                format!("/nginx code=200 flags=- upstream_peer={} upstream_tls=TLSv1.2 failure=-", istio_id("nginx")),
                format!("/nginx-nocert code=400 flags=- upstream_peer={} upstream_tls=TLSv1.2 failure=-", istio_id("nginx")),
                format!("/nginx-wrongsan code=503 flags=UF upstream_peer=- upstream_tls=- failure={envoy_reason}"),
            ],
            "[{kind}] access log"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_to_envoy_sidecar_and_back() {
    if bins::envoy().is_none() {
        println!("{}", bins::ENVOY_SKIP);
        return;
    }
    for_each_kind(|kind| async move {
        let pki = mesh_pki();

        // This proxy outbound → mTLS → an Envoy sidecar in STRICT mode.
        let peer = MeshStack::start(Kind::Envoy, "mtls/strict.yaml", &pki, &Vars::new()).await;
        let extra = Vars::new()
            .with("peer_port", peer.port("listener_port"))
            .with("nginx_port", ports::dead_port());
        let out = MeshStack::start(kind, "mtls/outbound.yaml", &pki, &extra).await;
        let r = client::get(ports::loopback(out.port("listener_port")), "/to-envoy")
            .await
            .expect("request");
        assert_eq!(r.status, 200, "[{kind}] {}", r.text());
        let echo: Echo = serde_json::from_str(&r.text()).expect("echo");
        assert_eq!(echo.backend, "app");
        assert!(
            echo.header("x-forwarded-client-cert")
                .is_some_and(|x| x.ends_with(&format!("URI={}", istio_id("client")))),
            "[{kind}] the Envoy sidecar saw our identity: {:?}",
            echo.headers
        );
        let lines = wait_for_lines(&out.env.file("access.log"), 1).await;
        assert_eq!(
            lines[0],
            format!(
                "/to-envoy code=200 flags=- upstream_peer={} upstream_tls=TLSv1.3 failure=-",
                istio_id("server")
            ),
            "[{kind}]"
        );
        drop(out);
        drop(peer);

        // An Envoy sidecar outbound → mTLS (offering Istio's ALPN) → this proxy in STRICT mode.
        let inbound = MeshStack::start(kind, "mtls/strict.yaml", &pki, &Vars::new()).await;
        let extra = Vars::new()
            .with("peer_port", inbound.port("listener_port"))
            .with("nginx_port", ports::dead_port());
        let envoy_out = MeshStack::start(Kind::Envoy, "mtls/outbound.yaml", &pki, &extra).await;
        let r = client::get(
            ports::loopback(envoy_out.port("listener_port")),
            "/from-envoy",
        )
        .await
        .expect("request");
        assert_eq!(r.status, 200, "[{kind}] {}", r.text());
        let lines = wait_for_lines(&inbound.env.file("access.log"), 1).await;
        let serial = &pki.get("client").serial;
        assert_eq!(
            lines[0],
            format!(
                "peer={} local={} tls=TLSv1.3 sni=- serial={serial} code=200",
                istio_id("client"),
                istio_id("server")
            ),
            "[{kind}] inbound access log"
        );
    })
    .await;
}

/// The SDS file: one `Secret` named `server_cert` with the identity's PEM inline.
fn sds_file(id: &remora_tests::pki::Identity) -> String {
    serde_json::json!({
        "resources": [{
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": "server_cert",
            "tls_certificate": {
                "certificate_chain": { "inline_string": id.cert_pem() },
                "private_key": { "inline_string": id.key_pem() },
            }
        }]
    })
    .to_string()
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write sds tmp");
    std::fs::rename(&tmp, path).expect("rename sds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_server_cert_keeps_connections_and_serves_the_new_one() {
    for_each_kind(|kind| async move {
        let mut pki = mesh_pki();
        let v1 = pki.get("server").clone();
        let sds = pki.path("sds-server.json");
        write_atomically(&sds, &sds_file(&v1));
        let extra = Vars::new().with("sds_path", sds.display());
        let s = MeshStack::start(kind, "mtls/rotation.yaml", &pki, &extra).await;
        let port = s.port("listener_port");
        let c = TlsClient::new("server.mesh")
            .cert(pki.get("client"))
            .ca(pki.ca_pem());
        let probe = c.clone();
        let r = blocking(move || probe.s_client(port, &[], b"")).await;
        assert_eq!(
            server_serial(&r.stdout).as_deref(),
            Some(v1.serial.as_str()),
            "[{kind}] {}",
            r.all()
        );

        // 60 requests at 20/s over one keep-alive connection; rotate after one second.
        let looper = c.clone();
        let load = tokio::task::spawn_blocking(move || looper.curl_loop(port, "/loop", 60, "20/s"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let v2 = pki.issue("server", &istio_id("server"), &["server.mesh"]);
        assert_ne!(v1.serial, v2.serial);
        write_atomically(&sds, &sds_file(&v2));

        let mut seen = None;
        for _ in 0..50 {
            let probe = c.clone();
            let r = blocking(move || probe.s_client(port, &[], b"")).await;
            seen = server_serial(&r.stdout);
            if seen.as_deref() == Some(v2.serial.as_str()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            seen.as_deref(),
            Some(v2.serial.as_str()),
            "[{kind}] a new handshake presents the new cert"
        );

        let run = load.await.expect("join");
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 60, "[{kind}] {run:?}");
        assert!(
            lines.iter().all(|l| l.starts_with("200 ")),
            "[{kind}] every request succeeded: {lines:?}"
        );
        let connects: u32 = lines
            .iter()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u32>().ok())
            .sum();
        assert_eq!(
            connects, 1,
            "[{kind}] the keep-alive connection survived the rotation: {lines:?}"
        );
    })
    .await;
}
