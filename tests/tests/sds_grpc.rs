//! SDS over gRPC from a separate server on a Unix socket (Istio's `sds-grpc` cluster to
//! istio-agent): the listener's certificate (`default`) and client root (`ROOTCA`) arrive by name,
//! a pushed certificate is served by new handshakes while a keep-alive connection carries on, and
//! every response is ACKed with its nonce. Same fixture, same pushes on remora and on Envoy.

use std::time::Duration;

use remora_tests::peers::{server_serial, MeshStack, TlsClient};
use remora_tests::pki::{istio_id, Identity, Pki};
use remora_tests::sds_server::{certificate, validation, SdsServer};
use remora_tests::select::for_each_kind;
use remora_tests::template::Vars;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("join")
}

fn push_identity(sds: &SdsServer, id: &Identity) {
    sds.set(certificate("default", &id.cert_pem(), &id.key_pem()));
}

/// A server and a client identity, and an SDS server on a socket that already serves `ROOTCA`;
/// returns the first server identity (not pushed yet) and the fixture's `sds_socket` variable.
async fn mesh_with_sds(pki: &mut Pki) -> (Identity, SdsServer, Vars) {
    let v1 = pki.issue("server", &istio_id("server"), &["server.mesh"]);
    pki.issue("client", &istio_id("client"), &[]);
    let socket = pki.path("sds.sock");
    let sds = SdsServer::start(&socket).await;
    let ca = std::fs::read_to_string(pki.ca_pem()).expect("ca");
    sds.set(validation("ROOTCA", &ca));
    let extra = Vars::new().with("sds_socket", socket.display());
    (v1, sds, extra)
}

async fn served_serial(c: &TlsClient, port: u16) -> Option<String> {
    let probe = c.clone();
    let r = blocking(move || probe.s_client(port, &[], b"")).await;
    server_serial(&r.stdout)
}

/// The serial new handshakes present, once it is `want` (or the last one seen within 5 s).
async fn serial_becomes(c: &TlsClient, port: u16, want: &str) -> Option<String> {
    let mut seen = None;
    for _ in 0..50 {
        seen = served_serial(c, port).await;
        if seen.as_deref() == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sds_grpc_delivers_and_rotates_the_listener_certificate() {
    for_each_kind(|kind| async move {
        let mut pki = Pki::new();
        let (v1, sds, extra) = mesh_with_sds(&mut pki).await;
        push_identity(&sds, &v1);

        let s = MeshStack::start(kind, "mtls/sds_grpc.yaml", &pki, &extra).await;
        let port = s.port("listener_port");
        let c = TlsClient::new("server.mesh")
            .cert(pki.get("client"))
            .ca(pki.ca_pem());
        assert_eq!(
            served_serial(&c, port).await.as_deref(),
            Some(v1.serial.as_str()),
            "[{kind}] the SDS certificate is served: {}",
            s.proxy.stderr()
        );

        // A client the pushed ROOTCA does not know is refused.
        let mut other = Pki::new();
        let stranger = other.issue("client", &istio_id("client"), &[]);
        let bad = TlsClient::new("server.mesh")
            .cert(&stranger)
            .ca(pki.ca_pem());
        let r = blocking(move || bad.curl(port, "/")).await;
        assert!(
            !r.stdout.ends_with("200"),
            "[{kind}] a client from another CA is refused: {r:?}"
        );

        // Rotate while one keep-alive connection sends 40 requests at 20/s.
        let looper = c.clone();
        let load = tokio::task::spawn_blocking(move || looper.curl_loop(port, "/loop", 40, "20/s"));
        tokio::time::sleep(Duration::from_millis(700)).await;
        let v2 = pki.issue("server", &istio_id("server"), &["server.mesh"]);
        assert_ne!(v1.serial, v2.serial);
        push_identity(&sds, &v2);
        let seen = serial_becomes(&c, port, &v2.serial).await;
        assert_eq!(
            seen.as_deref(),
            Some(v2.serial.as_str()),
            "[{kind}] new handshakes present the pushed certificate"
        );
        let run = load.await.expect("join");
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), 40, "[{kind}] {run:?}");
        assert!(
            lines.iter().all(|l| l.starts_with("200 ")),
            "[{kind}] no request failed across the rotation: {lines:?}"
        );
        let connects: u32 = lines
            .iter()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u32>().ok())
            .sum();
        assert_eq!(connects, 1, "[{kind}] the connection survived: {lines:?}");

        // The proxy asked for exactly the two names and ACKed each push with its nonce.
        let seen = sds.seen();
        let mut names: Vec<String> = seen
            .requests
            .iter()
            .flat_map(|(n, _, _)| n.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names, ["ROOTCA", "default"], "[{kind}] {seen:?}");
        assert!(
            seen.requests.iter().all(|(_, _, err)| err.is_none()),
            "[{kind}] nothing was NACKed: {seen:?}"
        );
        assert!(
            seen.requests.iter().any(|(_, nonce, _)| !nonce.is_empty()),
            "[{kind}] responses were ACKed by nonce: {seen:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_pushed_certificate_is_nacked_and_the_old_one_stays() {
    for_each_kind(|kind| async move {
        let mut pki = Pki::new();
        let (v1, sds, extra) = mesh_with_sds(&mut pki).await;
        push_identity(&sds, &v1);
        let s = MeshStack::start(kind, "mtls/sds_grpc.yaml", &pki, &extra).await;
        let port = s.port("listener_port");
        let c = TlsClient::new("server.mesh")
            .cert(pki.get("client"))
            .ca(pki.ca_pem());
        assert_eq!(
            served_serial(&c, port).await.as_deref(),
            Some(v1.serial.as_str()),
            "[{kind}] {}",
            s.proxy.stderr()
        );

        sds.set(certificate("default", "not a certificate", "not a key"));
        let mut nack = None;
        for _ in 0..100 {
            nack = sds.seen().requests.iter().find_map(|(_, _, e)| e.clone());
            if nack.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let nack = nack.unwrap_or_else(|| panic!("[{kind}] the push was NACKed: {:?}", sds.seen()));
        assert!(!nack.is_empty(), "[{kind}] the NACK says why");
        assert_eq!(
            served_serial(&c, port).await.as_deref(),
            Some(v1.serial.as_str()),
            "[{kind}] the last good certificate is still served (NACK: {nack})"
        );
    })
    .await;
}

/// A listener whose certificate has not arrived must not hold the others back (Envoy keeps the
/// whole listener warming, unbound; remora binds it, refuses TLS on that chain with a log line
/// and `downstream_context_secrets_not_ready`, and serves it as soon as the secret is pushed).
/// remora only: Envoy's answer here is the warming it is meant to improve on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_waiting_for_its_secret_does_not_block_the_others() {
    if !remora_tests::select::kinds().contains(&remora_tests::Kind::Remora) {
        return;
    }
    let kind = remora_tests::Kind::Remora;
    let mut pki = Pki::new();
    let (v1, sds, extra) = mesh_with_sds(&mut pki).await;

    let s = MeshStack::start_unready(kind, "mtls/sds_pending.yaml", &pki, &extra).await;
    let plain = s.port("listener_port_plain");
    let tls = s.port("listener_port");
    let mut served = None;
    for _ in 0..100 {
        let url = format!("http://127.0.0.1:{plain}/");
        if let Ok(out) = blocking(move || remora_tests::curl::get(&url, &[])).await {
            served = Some(out.status);
            if out.status == 200 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        served,
        Some(200),
        "the plaintext listener serves while the other waits: {}",
        s.proxy.stderr()
    );

    let c = TlsClient::new("server.mesh")
        .cert(pki.get("client"))
        .ca(pki.ca_pem());
    let refused = c.clone();
    let r = blocking(move || refused.curl(tls, "/")).await;
    assert!(!r.stdout.ends_with("200"), "no certificate, no TLS: {r:?}");
    let stat = format!(
        "{}server_ssl_socket_factory.downstream_context_secrets_not_ready",
        s.listener_prefix("listener_port")
    );
    let mut counted = None;
    for _ in 0..50 {
        counted = remora_tests::admin::stat(s.admin(), &stat).await;
        if counted.is_some_and(|n| n > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(counted.is_some_and(|n| n > 0), "{stat}: {counted:?}");
    assert!(
        s.proxy
            .stderr()
            .contains("the TLS context's secrets are not available yet"),
        "the refusal is logged: {}",
        s.proxy.stderr()
    );

    push_identity(&sds, &v1);
    let seen = serial_becomes(&c, tls, &v1.serial).await;
    assert_eq!(
        seen.as_deref(),
        Some(v1.serial.as_str()),
        "served once pushed"
    );
    let ok = c.clone();
    let r = blocking(move || ok.curl(tls, "/")).await;
    assert!(r.stdout.ends_with("200"), "{r:?}");
}
