//! `envoy.filters.network.rbac` on an mTLS TCP chain (Istio's AuthorizationPolicy for a TCP port),
//! on Envoy and remora with the same bootstrap: the allowed principal's bytes are proxied, another
//! principal's connection is closed, and both count the same stats.

use std::time::Duration;

use remora_tests::admin;
use remora_tests::client::Tls;
use remora_tests::peers::MeshStack;
use remora_tests::pki::{istio_id, Pki};
use remora_tests::ports::loopback;
use remora_tests::select::for_each_kind;
use remora_tests::template::Vars;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends a line over mTLS as `who`; what comes back before the connection closes (or 2 s pass).
async fn exchange(port: u16, tls: Tls) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(loopback(port))
        .await
        .expect("connect");
    let mut stream = match tls.connect(tcp).await {
        Ok(s) => s,
        Err(_) => return Vec::new(),
    };
    if stream.write_all(b"ping\n").await.is_err() {
        return Vec::new();
    }
    let mut got = vec![0u8; 64];
    match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut got)).await {
        Ok(Ok(n)) => got[..n].to_vec(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_rbac_admits_the_allowed_principal_only() {
    for_each_kind(|kind| async move {
        let mut pki = Pki::new();
        pki.issue("server", &istio_id("server"), &["server.mesh"]);
        pki.issue("client", &istio_id("client"), &[]);
        pki.issue("other", &istio_id("other"), &[]);
        let s = MeshStack::start(kind, "filters/rbac_network.yaml", &pki, &Vars::new()).await;
        let port = s.port("listener_port");
        for (who, echoed) in [("client", true), ("other", false)] {
            let tls = Tls::new("server.mesh", pki.ca_pem(), Some(pki.get(who)));
            let got = exchange(port, tls).await;
            match echoed {
                true => assert_eq!(got, b"ping\n", "[{kind}] {who} is proxied"),
                false => assert!(got.is_empty(), "[{kind}] {who} got {got:?}"),
            }
        }
        let stat = |name: &'static str| admin::stat(s.admin(), name);
        assert_eq!(stat("tcp.rbac.allowed").await, Some(1), "[{kind}]");
        assert_eq!(stat("tcp.rbac.denied").await, Some(1), "[{kind}]");
        assert_eq!(
            stat("tcp.rbac.istio_dry_run_allow_.shadow_denied").await,
            Some(1),
            "[{kind}] the dry-run DENY policy matched `other`"
        );
        assert_eq!(
            stat("tcp.rbac.istio_dry_run_allow_.shadow_allowed").await,
            Some(1),
            "[{kind}]"
        );
    })
    .await;
}

/// Istio's newer form of the same policy: `istio_authn` (`io.istio.network.authn`) stores the
/// peer's SPIFFE principal as the filter state object `io.istio.peer_principal`, and the RBAC
/// principal matches that object. Stock Envoy has no `istio_authn`, so remora only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_authn_principals_feed_filter_state_rbac() {
    let mut pki = Pki::new();
    pki.issue("server", &istio_id("server"), &["server.mesh"]);
    pki.issue("client", &istio_id("client"), &[]);
    pki.issue("other", &istio_id("other"), &[]);
    let native = remora_tests::fixture("filters/rbac_network.yaml");
    let authenticated = r#"                        - authenticated:
                            principal_name: { exact: "spiffe://cluster.local/ns/default/sa/client" }"#;
    let by_state = r#"                        - filter_state:
                            key: io.istio.peer_principal
                            string_match: { exact: "spiffe://cluster.local/ns/default/sa/client" }"#;
    let rbac = "      - name: envoy.filters.network.rbac\n";
    assert!(
        native.contains(authenticated) && native.contains(rbac),
        "the fixture's policy"
    );
    let template = native.replacen(authenticated, by_state, 1).replacen(
        rbac,
        &format!("      - name: istio_authn\n        typed_config:\n          \"@type\": type.googleapis.com/io.istio.network.authn.Config\n{rbac}"),
        1,
    );
    let s = MeshStack::start_text(remora_tests::Kind::Remora, &template, &pki, &Vars::new()).await;
    let port = s.port("listener_port");
    for (who, echoed) in [("client", true), ("other", false)] {
        let tls = Tls::new("server.mesh", pki.ca_pem(), Some(pki.get(who)));
        let got = exchange(port, tls).await;
        match echoed {
            true => assert_eq!(got, b"ping\n", "{who} is proxied"),
            false => assert!(got.is_empty(), "{who} got {got:?}"),
        }
    }
    assert_eq!(admin::stat(s.admin(), "tcp.rbac.denied").await, Some(1));
}
