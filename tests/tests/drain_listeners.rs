//! Draining a sidecar: `POST /drain_listeners` (what istio-agent sends when the pod terminates) and
//! remora's own SIGTERM drain, on a bootstrap with an INBOUND and an OUTBOUND listener.
//!
//! `/drain_listeners` is checked against Envoy: same requests, same answers. SIGTERM is remora's
//! own (Envoy exits at once), checked on remora only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use remora_tests::admin;
use remora_tests::client::{self, Client, Protocol, Request};
use remora_tests::proxy::StartOptions;
use remora_tests::select::for_each_kind;
use remora_tests::stack::Stack;
use remora_tests::Kind;

const CONFIG: &str = "http/directions.yaml";

fn drain_time(seconds: u64) -> StartOptions {
    StartOptions {
        args: vec!["--drain-time-s".into(), seconds.to_string()],
        ..StartOptions::default()
    }
}

async fn refused(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

/// Polls until `addr` refuses connections, or `within` passes.
async fn refused_within(addr: SocketAddr, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if refused(addr).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn listener_stopped(s: &Stack) -> Option<u64> {
    admin::stat(s.admin(), "listener_manager.listener_stopped").await
}

/// istio-agent's drain: inbound connections are told to close over the drain time while the
/// inbound listener still accepts; then it stops accepting. Outbound keeps working throughout, an
/// in-flight request finishes, and the process keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_inbound_drain_stops_only_inbound_after_the_drain_time() {
    for_each_kind(|kind| async move {
        let s = Stack::start_with(kind, CONFIG, drain_time(2)).await;
        let (inbound, outbound) = (s.addr(), s.env.addr("listener_port_out"));
        let in_flight = tokio::spawn(async move { client::get(inbound, "/delay/1000").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t0 = Instant::now();
        let r = admin::post(s.admin(), "/drain_listeners?inboundonly&graceful")
            .await
            .expect("drain_listeners");
        assert_eq!(r.status, 200, "[{kind}] drain_listeners");

        // During the drain: still accepting inbound, and the in-flight request completes.
        let during = client::get(inbound, "/").await;
        assert_eq!(
            during.as_ref().map(|r| r.status).ok(),
            Some(200),
            "[{kind}] a new inbound connection during the drain time is served: {during:?}"
        );
        let flight = in_flight.await.expect("join");
        assert_eq!(
            flight.as_ref().map(|r| r.status).ok(),
            Some(200),
            "[{kind}] the in-flight request finishes: {flight:?}"
        );
        assert_eq!(
            listener_stopped(&s).await,
            Some(0),
            "[{kind}] nothing stopped yet"
        );

        // A kept-alive inbound connection is asked to close before the drain time is over.
        let mut keep = Client::new(inbound, Protocol::Http1);
        let mut closed = false;
        while t0.elapsed() < Duration::from_millis(1900) {
            let r = keep
                .send(&Request::get("/"))
                .await
                .expect("inbound request");
            assert_eq!(r.status, 200, "[{kind}] inbound during the drain");
            if r.header("connection") == Some("close") {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            closed,
            "[{kind}] no Connection: close within the drain time"
        );

        // After it: inbound refuses, outbound serves, the process is still there.
        assert!(
            refused_within(inbound, Duration::from_secs(3)).await,
            "[{kind}] the inbound listener still accepts {:?} after the drain began",
            t0.elapsed()
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(1800),
            "[{kind}] inbound stopped before the drain time was over: {:?}",
            t0.elapsed()
        );
        let out = client::get(outbound, "/").await.expect("outbound request");
        assert_eq!(out.status, 200, "[{kind}] outbound after the drain");
        assert_eq!(
            listener_stopped(&s).await,
            Some(1),
            "[{kind}] listener_stopped"
        );
        let ready = admin::get(s.admin(), "/ready").await.expect("ready");
        assert_eq!(
            ready.status,
            200,
            "[{kind}] the process keeps running: {}",
            ready.text()
        );
        println!(
            "[{kind}] inbound refused after {:?}; outbound served",
            t0.elapsed()
        );
    })
    .await;
}

/// Without `graceful` every listener stops accepting at once; connections already open stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_without_graceful_stops_every_listener_at_once() {
    for_each_kind(|kind| async move {
        let s = Stack::start_with(kind, CONFIG, drain_time(30)).await;
        let (inbound, outbound) = (s.addr(), s.env.addr("listener_port_out"));
        let mut kept = Client::new(outbound, Protocol::Http1);
        assert_eq!(
            kept.send(&Request::get("/")).await.expect("first").status,
            200
        );
        let r = admin::post(s.admin(), "/drain_listeners")
            .await
            .expect("drain_listeners");
        assert_eq!(r.status, 200, "[{kind}] drain_listeners");
        for (side, addr) in [("inbound", inbound), ("outbound", outbound)] {
            assert!(
                refused_within(addr, Duration::from_secs(2)).await,
                "[{kind}] the {side} listener still accepts"
            );
        }
        let again = kept
            .send(&Request::get("/"))
            .await
            .expect("kept-alive request");
        assert_eq!(
            again.status, 200,
            "[{kind}] the open connection is still served"
        );
        assert_eq!(kept.connections, 1, "[{kind}] on the same connection");
        assert_eq!(
            listener_stopped(&s).await,
            Some(2),
            "[{kind}] listener_stopped"
        );
    })
    .await;
}

/// `skip_exit` keeps the listeners accepting after the graceful drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_exit_keeps_the_listeners_after_the_drain() {
    for_each_kind(|kind| async move {
        let s = Stack::start_with(kind, CONFIG, drain_time(1)).await;
        let r = admin::post(s.admin(), "/drain_listeners?graceful&skip_exit")
            .await
            .expect("drain_listeners");
        assert_eq!(r.status, 200, "[{kind}] drain_listeners");
        tokio::time::sleep(Duration::from_millis(1800)).await;
        let r = client::get(s.addr(), "/").await;
        assert_eq!(
            r.as_ref().map(|r| r.status).ok(),
            Some(200),
            "[{kind}] inbound still accepts after the drain time: {r:?}"
        );
        assert_eq!(
            listener_stopped(&s).await,
            Some(0),
            "[{kind}] listener_stopped"
        );
    })
    .await;
}

/// remora's SIGTERM: inbound stops accepting at once while outbound keeps serving the application;
/// the in-flight inbound request finishes and the process exits when nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_outbound_serving_while_inbound_drains() {
    for_each_kind(|kind| async move {
        if kind != Kind::Remora {
            return; // Envoy exits at once on SIGTERM (see lifecycle.rs).
        }
        let mut s = Stack::start_with(kind, CONFIG, drain_time(10)).await;
        let (inbound, outbound) = (s.addr(), s.env.addr("listener_port_out"));
        let in_flight = tokio::spawn(async move { client::get(inbound, "/delay/1500").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t0 = Instant::now();
        s.proxy.terminate();
        assert!(
            refused_within(inbound, Duration::from_millis(500)).await,
            "inbound still accepts after SIGTERM"
        );
        let ready = admin::get(s.admin(), "/ready").await.expect("ready");
        assert_eq!(ready.status, 503, "/ready while draining: {}", ready.text());
        for _ in 0..3 {
            let out = client::get(outbound, "/")
                .await
                .expect("outbound during the drain");
            assert_eq!(out.status, 200, "outbound during the drain");
        }
        let flight = in_flight.await.expect("join").expect("in-flight request");
        assert_eq!(flight.status, 200, "the in-flight inbound request finishes");
        let status = s.proxy.wait_exit(Duration::from_secs(5)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "exit status {status:?}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "exits once nothing is in flight, not at the drain time: {:?}",
            t0.elapsed()
        );
    })
    .await;
}
