//! Istio's sidecar bootstrap (the `envoy-rev.json` istio-agent renders): both proxies validate it,
//! and without a control plane yet both start their admin API, report PRE_INITIALIZING with `/ready`
//! 503, keep retrying the xDS socket (`update_failure` grows) and stay not ready — which is what
//! istio-agent's readiness probe relies on.

use std::time::{Duration, Instant};

use remora_tests::proxy::StartOptions;
use remora_tests::tempdir::TempDir;
use remora_tests::template::{render, Vars};
use remora_tests::{admin, exec, fixture, ports, select, Kind, Proxy};

fn rendered(dir: &TempDir, xds_type: &str) -> (String, u16) {
    let admin = ports::free_port();
    let vars = Vars::new()
        .with("admin_port", admin)
        .with("agent_port", ports::dead_port())
        .with("prometheus_port", ports::free_port())
        .with("status_port", ports::free_port())
        .with("xds_socket", dir.join("XDS").display())
        .with("sds_socket", dir.join("sds.sock").display())
        .with("xds_type", xds_type);
    (render(&fixture("istio/envoy-rev.json"), &vars), admin)
}

#[test]
fn istio_bootstrap_validates() {
    let dir = TempDir::new("istio-validate");
    for xds_type in ["GRPC", "DELTA_GRPC"] {
        let (text, _) = rendered(&dir, xds_type);
        let path = dir.join("envoy-rev.json");
        std::fs::write(&path, text).expect("write");
        for kind in select::kinds() {
            let mut args = vec!["--mode", "validate", "-c"];
            let p = path.to_string_lossy().into_owned();
            args.push(&p);
            let base_id = (std::process::id() % 20_000 + 40_000).to_string();
            if kind == Kind::Envoy {
                args.extend(["--disable-hot-restart", "--base-id", &base_id]);
            }
            let o = exec::run(
                &kind.binary().expect("binary"),
                &args,
                Duration::from_secs(30),
            );
            assert_eq!(o.code, Some(0), "{kind} {xds_type}: {}", o.all());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_control_plane_the_sidecar_waits_not_ready() {
    for kind in select::kinds() {
        let dir = TempDir::new("istio-run");
        let (text, admin_port) = rendered(&dir, "GRPC");
        let proxy = Proxy::start_with(
            kind,
            &text,
            StartOptions {
                no_wait: true,
                ..Default::default()
            },
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let failures = loop {
            let n = admin::stat(admin_port, "cluster_manager.cds.update_failure").await;
            if n.is_some_and(|n| n >= 2) || Instant::now() > deadline {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            failures.is_some_and(|n| n >= 2),
            "{kind}: the xDS stream should keep failing and be retried: {failures:?}\n{}",
            proxy.stderr()
        );
        let ready = admin::get(admin_port, "/ready").await.expect("ready");
        assert_eq!(ready.status, 503, "{kind}");
        assert!(
            ready.text().contains("PRE_INITIALIZING"),
            "{kind}: {}",
            ready.text()
        );
        // The bootstrap's stats_matcher keeps only the prefixes Istio lists: control_plane.* is not
        // instantiated, server.* is.
        assert_eq!(
            admin::stat(admin_port, "control_plane.connected_state").await,
            None,
            "{kind}"
        );
        assert!(
            admin::stat(admin_port, "server.live").await.is_some(),
            "{kind}: server.live"
        );
    }
}
