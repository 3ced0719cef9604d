//! Process lifecycle: SIGTERM while a request is in flight.
//!
//! Here remora deliberately differs from Envoy: Envoy 1.40 exits on SIGTERM without draining (the
//! in-flight request is cut; launchers drain through `/drain_listeners?graceful` first), remora
//! stops accepting, lets in-flight requests finish within `--drain-time-s`, and exits 0.

use std::time::{Duration, Instant};

use remora_tests::client;
use remora_tests::proxy::StartOptions;
use remora_tests::select::for_each_kind;
use remora_tests::stack::Stack;
use remora_tests::Kind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    for_each_kind(|kind| async move {
        let opts = StartOptions {
            args: vec!["--drain-time-s".into(), "3".into()],
            ..StartOptions::default()
        };
        let mut s = Stack::start_with(kind, "http/basic.yaml", opts).await;
        let addr = s.addr();
        let in_flight = tokio::spawn(async move { client::get(addr, "/delay/1500").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t0 = Instant::now();
        s.proxy.terminate();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let new_conn = tokio::net::TcpStream::connect(addr).await;
        let flight = in_flight.await.expect("join");
        let status = s.proxy.wait_exit(Duration::from_secs(10)).await;
        println!(
            "[{kind}] in-flight: {:?}; new connection after SIGTERM: {}; exit {status:?} after {:?}",
            flight.as_ref().map(|r| r.status).map_err(|e| e.to_string()),
            if new_conn.is_ok() { "accepted" } else { "refused" },
            t0.elapsed()
        );
        assert!(new_conn.is_err(), "[{kind}] new connections must be refused after SIGTERM");
        assert!(status.is_some_and(|s| s.success()), "[{kind}] exit status {status:?}");
        assert!(t0.elapsed() < Duration::from_secs(4), "[{kind}] exits within the drain time");
        match kind {
            // remora drains on SIGTERM: what istio-agent otherwise does through the admin API.
            Kind::Remora => {
                assert_eq!(flight.expect("in-flight request").status, 200, "[{kind}] in-flight request completes");
            }
            // Envoy 1.40 exits at once on SIGTERM and cuts the in-flight request.
            Kind::Envoy => assert!(flight.is_err(), "[{kind}] envoy resets in-flight requests on SIGTERM"),
        }
    })
    .await;
}
