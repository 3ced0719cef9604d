//! Circuit breakers: overflow replies and their stats.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{backend, get, manager, one_cluster};
use crate::upstream::{SendContext, UpstreamError};

fn thresholds(t: &str) -> String {
    format!("    circuit_breakers:\n      thresholds:\n      - {t}\n")
}

#[tokio::test]
async fn max_requests_overflow_is_uo() {
    let b = backend("slow", false, Duration::from_millis(300)).await;
    let (m, store) =
        manager(&one_cluster(&thresholds("{ max_requests: 1 }"), &[b.addr])).expect("valid");
    let c = m.get("c").expect("c");
    let first = {
        let c = c.clone();
        tokio::spawn(async move { c.send(get("h"), &SendContext::default()).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        store
            .gauge("cluster.c.circuit_breakers.default.rq_open")
            .get(),
        1
    );
    let e = c
        .send(get("h"), &SendContext::default())
        .await
        .expect_err("overflow");
    assert!(matches!(e, UpstreamError::Overflow { .. }), "{e}");
    assert_eq!(e.response_flag(), "UO");
    assert_eq!(e.status(), 503);
    assert!(!e.is_retryable_connect_failure() && !e.is_reset());
    assert_eq!(
        store.counter("cluster.c.upstream_rq_active_overflow").get(),
        1
    );
    first.await.expect("task").expect("first succeeds");
}

#[tokio::test]
async fn max_connections_queues_then_pending_overflows() {
    let b = backend("slow", false, Duration::from_millis(200)).await;
    let (m, store) = manager(&one_cluster(
        &thresholds("{ max_connections: 1, max_pending_requests: 1 }"),
        &[b.addr],
    ))
    .expect("valid");
    let c = m.get("c").expect("c");
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let sent = c.send(get("h"), &SendContext::default()).await?;
            let _ = http_body_util::BodyExt::collect(sent.response.into_body()).await;
            Ok::<_, UpstreamError>(())
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One request on the only connection, one pending for it: a third has nowhere to wait.
    assert_eq!(store.gauge("cluster.c.upstream_rq_pending_active").get(), 1);
    assert_eq!(
        store
            .gauge("cluster.c.circuit_breakers.default.cx_open")
            .get(),
        1
    );
    let e = c
        .send(get("h"), &SendContext::default())
        .await
        .expect_err("pending overflow");
    assert_eq!(e.response_flag(), "UO");
    for t in tasks {
        t.await.expect("task").expect("queued request is served");
    }
    assert_eq!(b.seen.accepts.load(Ordering::SeqCst), 1);
    assert_eq!(store.counter("cluster.c.upstream_cx_overflow").get(), 1);
    assert_eq!(
        store
            .counter("cluster.c.upstream_rq_pending_overflow")
            .get(),
        1
    );
    assert_eq!(
        store.counter("cluster.c.upstream_rq_pending_total").get(),
        2
    );
    assert_eq!(store.gauge("cluster.c.upstream_rq_pending_active").get(), 0);
}

#[tokio::test]
async fn max_retries_limits_concurrent_retries() {
    let (m, store) = manager(&one_cluster(
        &thresholds("{ max_retries: 2 }"),
        &["127.0.0.1:1".parse().expect("addr")],
    ))
    .expect("valid");
    let c = m.get("c").expect("c");
    let a = c.try_retry().expect("first");
    let _b = c.try_retry().expect("second");
    assert!(c.try_retry().is_none());
    assert_eq!(
        store.counter("cluster.c.upstream_rq_retry_overflow").get(),
        1
    );
    assert_eq!(
        store
            .gauge("cluster.c.circuit_breakers.default.rq_retry_open")
            .get(),
        1
    );
    drop(a);
    assert!(c.try_retry().is_some());
}

#[tokio::test]
async fn tcp_connect_respects_max_connections() {
    let b = backend("tcp", false, Duration::ZERO).await;
    let (m, store) = manager(&one_cluster(
        &thresholds("{ max_connections: 1 }"),
        &[b.addr],
    ))
    .expect("valid");
    let c = m.get("c").expect("c");
    let _held = c.connect_tcp(&Default::default()).await.expect("first");
    let e = c
        .connect_tcp(&Default::default())
        .await
        .expect_err("overflow");
    assert_eq!(e.response_flag(), "UO");
    assert_eq!(store.counter("cluster.c.upstream_cx_overflow").get(), 1);
}

#[test]
fn admin_lists_thresholds_as_envoy_does() {
    let (m, _) = manager(&one_cluster(
        &thresholds("{ max_connections: 7 }"),
        &["127.0.0.1:18081".parse().expect("addr")],
    ))
    .expect("valid");
    let t = m.admin_text();
    for line in [
        "c::observability_name::c",
        "c::default_priority::max_connections::7",
        "c::default_priority::max_pending_requests::1024",
        "c::high_priority::max_retries::3",
        "c::added_via_api::false",
        "c::127.0.0.1:18081::cx_active::0",
        "c::127.0.0.1:18081::health_flags::healthy",
        "c::127.0.0.1:18081::weight::1",
        "c::127.0.0.1:18081::priority::0",
    ] {
        assert!(t.lines().any(|l| l == line), "missing {line} in\n{t}");
    }
    let j = m.admin_json();
    let cs = &j["cluster_statuses"][0];
    assert_eq!(cs["name"], "c");
    assert_eq!(
        cs["circuit_breakers"]["thresholds"][0]["max_connections"],
        7
    );
    assert_eq!(cs["circuit_breakers"]["thresholds"][1]["priority"], "HIGH");
    let h = &cs["host_statuses"][0];
    assert_eq!(h["address"]["socket_address"]["port_value"], 18081);
    assert_eq!(h["health_status"]["eds_health_status"], "HEALTHY");
    assert_eq!(h["stats"][6]["type"], "GAUGE");
}
