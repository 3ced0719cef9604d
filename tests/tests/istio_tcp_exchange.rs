//! Istio's TCP metadata exchange between two remora sidecars: productpage's outbound (plaintext
//! TCP in, mTLS out with the `istio.metadata_exchange` cluster filter) and reviews' inbound
//! (STRICT mTLS, the `istio.metadata_exchange` network filter, `istio.stats`, tcp_proxy to an
//! echo). When TLS negotiates `istio-peer-exchange`, each side learns the other's workload and
//! both report `istio_tcp_*` with the peer's labels; a cluster that offers no ALPN still carries
//! the bytes, with the peer "unknown".
//!
//! remora only: stock Envoy lacks Istio's filters and rejects these configurations.

use remora_tests::admin;
use remora_tests::peers::MeshStack;
use remora_tests::pki::{istio_id, Pki};
use remora_tests::ports::loopback;
use remora_tests::proxy::Kind;
use remora_tests::template::Vars;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `metric{labels}` on the admin at `port` reaches `want`.
async fn expect_sample(port: u16, metric: &str, labels: &[&str], want: f64) {
    let text = admin::wait_for_sample(port, metric, labels, want).await;
    assert_eq!(admin::sample(&text, metric, labels), Some(want), "{text}");
}

/// Sends `payload` through the listener at `port` and reads its echo.
async fn echo(port: u16, payload: &[u8]) {
    let mut conn = tokio::net::TcpStream::connect(loopback(port))
        .await
        .expect("connect");
    conn.write_all(payload).await.expect("write");
    let mut buf = vec![0u8; payload.len()];
    conn.read_exact(&mut buf).await.expect("echo");
    assert_eq!(buf, payload);
}

struct Mesh {
    inbound: MeshStack,
    outbound: MeshStack,
}

async fn mesh() -> Mesh {
    let mut pki = Pki::new();
    pki.issue("server", &istio_id("reviews"), &[]);
    pki.issue("client", &istio_id("productpage"), &[]);
    let inbound = MeshStack::start(
        Kind::Remora,
        "istio/tcp_exchange/inbound.yaml",
        &pki,
        &Vars::new(),
    )
    .await;
    let extra = Vars::new().with("peer_port", inbound.port("listener_port"));
    let outbound = MeshStack::start(
        Kind::Remora,
        "istio/tcp_exchange/outbound.yaml",
        &pki,
        &extra,
    )
    .await;
    Mesh { inbound, outbound }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sidecars_label_tcp_metrics_with_the_exchanged_peer() {
    let m = mesh().await;
    let payload = b"hello over istio-peer-exchange";
    echo(m.outbound.port("listener_port"), payload).await;

    let server = [
        "reporter=\"destination\"",
        "source_workload=\"productpage-v1\"",
        "source_app=\"productpage\"",
        "source_version=\"v1\"",
        "destination_workload=\"reviews-v1\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    // The harness's readiness probes connect through the sidecars too (without bytes), so ours
    // is counted by its bytes.
    let len = payload.len() as f64;
    expect_sample(
        m.inbound.admin(),
        "istio_tcp_received_bytes_total",
        &server,
        len,
    )
    .await;

    let client = [
        "reporter=\"source\"",
        "source_workload=\"productpage-v1\"",
        "destination_workload=\"reviews-v1\"",
        "destination_app=\"reviews\"",
        "destination_version=\"v1\"",
        "destination_service=\"reviews.bookinfo.svc.cluster.local\"",
    ];
    // The application's bytes only: the exchange frames are not payload.
    expect_sample(
        m.outbound.admin(),
        "istio_tcp_sent_bytes_total",
        &client,
        len,
    )
    .await;
    for s in [&m.inbound, &m.outbound] {
        let found = admin::stat(s.admin(), "metadata_exchange.alpn_protocol_found").await;
        assert!(found.is_some_and(|n| n >= 1), "{found:?}");
        let added = admin::stat(s.admin(), "metadata_exchange.metadata_added").await;
        assert_eq!(added, found);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_alpn_still_connects_with_unknown_labels() {
    let m = mesh().await;
    let payload = b"no exchange here";
    echo(m.outbound.port("listener_port2"), payload).await;
    let len = payload.len() as f64;

    let server = [
        "reporter=\"destination\"",
        "source_workload=\"unknown\"",
        "source_app=\"unknown\"",
        // The certificate still names the client.
        "source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\"",
        "destination_workload=\"reviews-v1\"",
    ];
    expect_sample(
        m.inbound.admin(),
        "istio_tcp_received_bytes_total",
        &server,
        len,
    )
    .await;
    let client = [
        "reporter=\"source\"",
        "source_workload=\"productpage-v1\"",
        "destination_workload=\"unknown\"",
        "destination_service=\"legacy.bookinfo.svc.cluster.local\"",
    ];
    expect_sample(
        m.outbound.admin(),
        "istio_tcp_sent_bytes_total",
        &client,
        len,
    )
    .await;
    for s in [&m.inbound, &m.outbound] {
        let missed = admin::stat(s.admin(), "metadata_exchange.alpn_protocol_not_found").await;
        assert!(missed.is_some_and(|n| n >= 1), "{missed:?}");
    }
}
