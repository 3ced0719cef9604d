//! The proxy originating mTLS: to nginx verifying client certificates, to a real Envoy sidecar
//! and from one (SPIFFE SAN checks both ways), and certificate rotation over SDS on a file while
//! keep-alive connections keep working: the server certificate alone, then both sidecars' (the
//! outbound's client certificate and the inbound's server certificate) under a load loop.

use std::time::Duration;

use remora_tests::access_log::wait_for_lines;
use remora_tests::backend::Echo;
use remora_tests::curl::{keep_alive_loop, loop_transfers};
use remora_tests::peers::{server_serial, MeshStack, Nginx, TlsClient};
use remora_tests::pki::{istio_id, Identity, Pki};
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

/// An SDS file: one `Secret` named `name` holding the identity's PEM inline.
fn sds_file(name: &str, id: &Identity) -> String {
    sds_pem(name, &id.cert_pem(), &id.key_pem())
}

fn sds_pem(name: &str, cert: &str, key: &str) -> String {
    serde_json::json!({
        "resources": [{
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": name,
            "tls_certificate": {
                "certificate_chain": { "inline_string": cert },
                "private_key": { "inline_string": key },
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
        write_atomically(&sds, &sds_file("server_cert", &v1));
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
        write_atomically(&sds, &sds_file("server_cert", &v2));

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
        let (statuses, connects) = loop_transfers(&run.stdout);
        assert_eq!(
            statuses, [200; 60],
            "[{kind}] every request succeeded: {run:?}"
        );
        assert_eq!(
            connects, 1,
            "[{kind}] the keep-alive connection survived the rotation: {run:?}"
        );
    })
    .await;
}

/// The serial the inbound logged for each request whose path starts with `path`, in order.
fn logged_serials(log: &std::path::Path, path: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(&format!("{path} ")))
        .filter_map(|l| Some(l.split_once("serial=")?.1.split(' ').next()?.to_string()))
        .collect()
}

/// The server serial a new handshake to `port` presents, once it is `want` (None after 5 s).
async fn wait_server_serial(c: &TlsClient, port: u16, want: &str) -> Option<String> {
    let mut seen = None;
    for _ in 0..50 {
        let probe = c.clone();
        let r = blocking(move || probe.s_client(port, &[], b"")).await;
        seen = server_serial(&r.stdout);
        if seen.as_deref() == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// Sends `/fresh` (a new upstream connection each) until the inbound logs `want` as the client
/// serial; every response must be 200. Returns the last logged serial.
async fn wait_client_serial(
    out: std::net::SocketAddr,
    log: &std::path::Path,
    want: &str,
) -> String {
    let mut last = String::new();
    for sent in 1..=50 {
        let r = client::get(out, "/fresh").await.expect("request");
        assert_eq!(r.status, 200, "/fresh #{sent}: {}", r.text());
        // The access log is flushed every 100 ms.
        for _ in 0..40 {
            let serials = logged_serials(log, "/fresh");
            if serials.len() >= sent {
                last = serials[sent - 1].clone();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// Polls a counter until it reaches `want` (5 s at most); returns the last value read.
async fn wait_stat(admin: u16, name: &str, want: u64) -> Option<u64> {
    let mut v = None;
    for _ in 0..50 {
        v = remora_tests::admin::stat(admin, name).await;
        if v >= Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_both_sidecars_certs_under_load_keeps_connections_and_serves_the_new_ones() {
    const LOOP: usize = 120;
    for_each_kind(|kind| async move {
        // curl (keep-alive loop) → outbound (client cert from SDS file A) → mTLS → inbound
        // (server cert from SDS file B, client SAN checked) → echo.
        let mut pki = mesh_pki();
        let (server_v1, client_v1) = (pki.get("server").clone(), pki.get("client").clone());
        let (server_sds, client_sds) = (pki.path("sds-server.json"), pki.path("sds-client.json"));
        write_atomically(&server_sds, &sds_file("server_cert", &server_v1));
        write_atomically(&client_sds, &sds_file("client_cert", &client_v1));
        let extra = Vars::new().with("sds_path", server_sds.display());
        let inbound = MeshStack::start(kind, "mtls/rotation.yaml", &pki, &extra).await;
        let in_port = inbound.port("listener_port");
        let extra = Vars::new()
            .with("sds_client_path", client_sds.display())
            .with("peer_port", in_port);
        let out = MeshStack::start(kind, "mtls/rotation_outbound.yaml", &pki, &extra).await;
        let out_addr = ports::loopback(out.port("listener_port"));
        let log = inbound.env.file("access.log");
        let s_client = TlsClient::new("server.mesh")
            .cert(pki.get("client"))
            .ca(pki.ca_pem());

        // 120 requests at 20/s (6 s) over one keep-alive connection; rotate both files after
        // one second and probe new handshakes while the loop runs.
        let url = format!("http://{out_addr}/loop");
        let load = tokio::task::spawn_blocking(move || keep_alive_loop(&[], &url, LOOP, "20/s"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let server_v2 = pki.issue("server", &istio_id("server"), &["server.mesh"]);
        let client_v2 = pki.issue("client", &istio_id("client"), &[]);
        assert_ne!(server_v1.serial, server_v2.serial);
        assert_ne!(client_v1.serial, client_v2.serial);
        write_atomically(&server_sds, &sds_file("server_cert", &server_v2));
        write_atomically(&client_sds, &sds_file("client_cert", &client_v2));

        assert_eq!(
            wait_server_serial(&s_client, in_port, &server_v2.serial)
                .await
                .as_deref(),
            Some(server_v2.serial.as_str()),
            "[{kind}] a new handshake to the inbound presents the new server cert"
        );
        assert_eq!(
            wait_client_serial(out_addr, &log, &client_v2.serial).await,
            client_v2.serial,
            "[{kind}] a new upstream handshake presents the new client cert"
        );
        let still_loading = !load.is_finished();
        let run = load.await.expect("join");
        let (statuses, connects) = loop_transfers(&run.stdout);
        assert_eq!(
            statuses, [200; LOOP],
            "[{kind}] every request succeeded: {run:?}"
        );
        assert_eq!(connects, 1, "[{kind}] curl's connection survived: {run:?}");
        assert!(
            still_loading,
            "[{kind}] the new certs were seen while the loop ran"
        );
        let stat = |name: &'static str| remora_tests::admin::stat(out.admin(), name);
        assert_eq!(
            stat("cluster.peer.upstream_cx_total").await,
            Some(1),
            "[{kind}] the pooled outbound → inbound connection survived the rotation"
        );
        // That connection was established with the first client cert and still is.
        let fresh = logged_serials(&log, "/fresh").len();
        wait_for_lines(&log, LOOP + fresh).await;
        let mut serials = logged_serials(&log, "/loop");
        assert_eq!(
            serials.len(),
            LOOP,
            "[{kind}] /loop lines in the inbound access log"
        );
        serials.dedup();
        assert_eq!(
            serials,
            std::slice::from_ref(&client_v1.serial),
            "[{kind}] /loop rode the pre-rotation connection (client v2 is {})",
            client_v2.serial
        );

        // Envoy's SDS counters: the rotation is the second version of each file, and each
        // context (both clusters share the client secret) took both.
        let in_ctx = format!(
            "{}server_ssl_socket_factory.ssl_context_update_by_sds",
            inbound.listener_prefix("listener_port")
        );
        let counters = [
            (out.admin(), "sds.client_cert.update_attempt".to_string()),
            (out.admin(), "sds.client_cert.update_success".into()),
            (
                out.admin(),
                "cluster.peer.client_ssl_socket_factory.ssl_context_update_by_sds".into(),
            ),
            (
                out.admin(),
                "cluster.peer_fresh.client_ssl_socket_factory.ssl_context_update_by_sds".into(),
            ),
            (inbound.admin(), "sds.server_cert.update_attempt".into()),
            (inbound.admin(), "sds.server_cert.update_success".into()),
            (inbound.admin(), in_ctx),
        ];
        for (admin, name) in &counters {
            let v = remora_tests::admin::stat(*admin, name).await;
            assert_eq!(v, Some(2), "[{kind}] {name}");
        }

        // A file replaced by a secret whose PEM does not load is a rejected update, one that does
        // not parse a failed one; either way the last good cert stays.
        let garbage = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        for (bad, counter) in [
            (sds_pem("X", garbage, garbage), "update_rejected"),
            ("not { json: [".to_string(), "update_failure"),
        ] {
            write_atomically(&client_sds, &bad.replace("\"X\"", "\"client_cert\""));
            write_atomically(&server_sds, &bad.replace("\"X\"", "\"server_cert\""));
            for (admin, name) in [
                (out.admin(), format!("sds.client_cert.{counter}")),
                (inbound.admin(), format!("sds.server_cert.{counter}")),
            ] {
                assert_eq!(wait_stat(admin, &name, 1).await, Some(1), "[{kind}] {name}");
            }
        }
        for (admin, name) in [
            (out.admin(), "sds.client_cert.update_rejected"),
            (inbound.admin(), "sds.server_cert.update_rejected"),
            (out.admin(), "sds.client_cert.update_success"),
            (inbound.admin(), "sds.server_cert.update_success"),
        ] {
            let want = if name.ends_with("rejected") { 1 } else { 2 };
            let v = remora_tests::admin::stat(admin, name).await;
            assert_eq!(v, Some(want), "[{kind}] {name}");
        }
        let r = blocking(move || s_client.s_client(in_port, &[], b"")).await;
        assert_eq!(
            server_serial(&r.stdout).as_deref(),
            Some(server_v2.serial.as_str()),
            "[{kind}] the inbound kept the last good server cert: {}",
            r.all()
        );
        let before = logged_serials(&log, "/fresh").len();
        let r = client::get(out_addr, "/fresh").await.expect("request");
        assert_eq!(r.status, 200, "[{kind}] {}", r.text());
        let lines = wait_for_lines(&log, LOOP + before + 1).await;
        assert_eq!(
            logged_serials(&log, "/fresh").get(before),
            Some(&client_v2.serial),
            "[{kind}] the outbound kept the last good client cert: {lines:?}"
        );
    })
    .await;
}
