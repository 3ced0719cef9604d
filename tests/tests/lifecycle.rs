//! Process lifecycle: SIGTERM or SIGINT while a request is in flight; the drain-time cutoff.
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
    drains_on(Signal::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_like_sigterm() {
    drains_on(Signal::Int).await;
}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Term,
    Int,
}

async fn drains_on(signal: Signal) {
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
        match signal {
            Signal::Term => s.proxy.terminate(),
            Signal::Int => s.proxy.interrupt(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let new_conn = tokio::net::TcpStream::connect(addr).await;
        let flight = in_flight.await.expect("join");
        let status = s.proxy.wait_exit(Duration::from_secs(10)).await;
        println!(
            "[{kind}] {signal:?}: in-flight: {:?}; new connection after it: {}; exit {status:?} after {:?}",
            flight.as_ref().map(|r| r.status).map_err(|e| e.to_string()),
            if new_conn.is_ok() { "accepted" } else { "refused" },
            t0.elapsed()
        );
        assert!(new_conn.is_err(), "[{kind}] new connections must be refused after {signal:?}");
        assert!(status.is_some_and(|s| s.success()), "[{kind}] exit status {status:?}");
        assert!(t0.elapsed() < Duration::from_secs(4), "[{kind}] exits within the drain time");
        match kind {
            // remora drains on SIGTERM and SIGINT: what istio-agent otherwise does through the admin API.
            Kind::Remora => {
                assert_eq!(flight.expect("in-flight request").status, 200, "[{kind}] in-flight request completes");
            }
            // Envoy 1.40 exits at once and cuts the in-flight request.
            Kind::Envoy => assert!(flight.is_err(), "[{kind}] envoy resets in-flight requests on {signal:?}"),
        }
    })
    .await;
}

/// A request longer than `--drain-time-s` is cut when the drain time is up, and the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_time_cuts_a_longer_request() {
    for_each_kind(|kind| async move {
        let opts = StartOptions {
            args: vec!["--drain-time-s".into(), "1".into()],
            ..StartOptions::default()
        };
        let mut s = Stack::start_with(kind, "http/basic.yaml", opts).await;
        let addr = s.addr();
        let in_flight = tokio::spawn(async move { client::get(addr, "/delay/5000").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t0 = Instant::now();
        s.proxy.terminate();
        let flight = in_flight.await.expect("join");
        let cut_after = t0.elapsed();
        let status = s.proxy.wait_exit(Duration::from_secs(10)).await;
        println!(
            "[{kind}] in-flight: {:?} after {cut_after:?}; exit {status:?} after {:?}",
            flight.as_ref().map(|r| r.status).map_err(|e| e.to_string()),
            t0.elapsed()
        );
        assert!(
            flight.is_err(),
            "[{kind}] the request outlasting the drain time is cut"
        );
        assert!(
            cut_after < Duration::from_millis(2500),
            "[{kind}] cut after {cut_after:?}"
        );
        assert!(
            status.is_some_and(|s| s.success()),
            "[{kind}] exit status {status:?}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "[{kind}] exits at the drain time"
        );
    })
    .await;
}
