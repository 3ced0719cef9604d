//! Istio's `istio.alpn` on a remora outbound sidecar, against a peer's inbound listener that picks
//! its filter chain by the ALPN the client offers (`application_protocols`), as istiod's inbound
//! listeners do: Envoy and remora as that peer. The clusters offer Istio's TCP ALPN
//! (`istio-peer-exchange`, `istio`); with the filter, an HTTP/1.1 upstream request offers
//! `istio-http/1.1` and lands on the HTTP/1.1 chain, an HTTP/2 cluster's request offers `istio-h2`
//! and lands on the h2 chain, and a cluster that follows the downstream protocol does either. A
//! connection manager without the filter, sharing the cluster, keeps the cluster's ALPN: its
//! pooled connections are never handed to requests that need the override, nor the reverse.

use remora_tests::client::{Client, Protocol, Request};
use remora_tests::peers::MeshStack;
use remora_tests::pki::{istio_id, Pki};
use remora_tests::proxy::Kind;
use remora_tests::select::for_each_kind;
use remora_tests::template::Vars;

/// The inbound chain a request reached and the HTTP version it was spoken to in.
async fn reached(client: &mut Client, path: &str) -> (String, String) {
    let r = client.send(&Request::get(path)).await.expect("response");
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    let protocol = r
        .header("x-inbound-protocol")
        .unwrap_or_default()
        .to_string();
    (r.text(), protocol)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_alpn_follows_the_upstream_http_version() {
    for_each_kind(|peer| async move {
        let mut pki = Pki::new();
        pki.issue("server", &istio_id("reviews"), &[]);
        pki.issue("client", &istio_id("productpage"), &[]);
        let inbound = MeshStack::start(peer, "istio/alpn/inbound.yaml", &pki, &Vars::new()).await;
        let extra = Vars::new().with("peer_port", inbound.port("listener_port"));
        let outbound =
            MeshStack::start(Kind::Remora, "istio/alpn/outbound.yaml", &pki, &extra).await;
        let with_filter = outbound.env.addr("listener_port");
        let without = outbound.env.addr("listener_port2");
        let h11 = || ("chain=istio-http/1.1".to_string(), "HTTP/1.1".to_string());
        let h2 = || ("chain=istio-h2".to_string(), "HTTP/2".to_string());
        let tcp = || ("chain=istio".to_string(), "HTTP/1.1".to_string());

        // No filter: the cluster's own ALPN reaches the TCP chain (which serves HTTP here).
        let mut plain = Client::new(without, Protocol::Http1);
        assert_eq!(reached(&mut plain, "/h11").await, tcp(), "[peer {peer}]");

        let mut h1_client = Client::new(with_filter, Protocol::Http1);
        let mut h2_client = Client::new(with_filter, Protocol::H2c);
        for _ in 0..2 {
            assert_eq!(
                reached(&mut h1_client, "/h11").await,
                h11(),
                "[peer {peer}]"
            );
            assert_eq!(
                reached(&mut h2_client, "/h11").await,
                h11(),
                "[peer {peer}]"
            );
            assert_eq!(reached(&mut h1_client, "/h2").await, h2(), "[peer {peer}]");
            assert_eq!(
                reached(&mut h1_client, "/down").await,
                h11(),
                "[peer {peer}]"
            );
            assert_eq!(
                reached(&mut h2_client, "/down").await,
                h2(),
                "[peer {peer}]"
            );
            // The pooled connection of the manager without the filter is still its own.
            assert_eq!(reached(&mut plain, "/h11").await, tcp(), "[peer {peer}]");
        }
        // One connection per (cluster, protocol, offered ALPN), reused on the second round.
        let opened =
            remora_tests::admin::stat(outbound.admin(), "cluster.h11.upstream_cx_total").await;
        assert_eq!(
            opened,
            Some(2),
            "[peer {peer}] h11: the override's and the plain one"
        );
        let opened =
            remora_tests::admin::stat(outbound.admin(), "cluster.down.upstream_cx_total").await;
        assert_eq!(
            opened,
            Some(2),
            "[peer {peer}] down: one HTTP/1.1, one HTTP/2"
        );
    })
    .await;
}
