//! Connection pools: keep-alive reuse, HTTP/2 multiplexing, connect failures and timeouts, DNS.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http_body_util::BodyExt;

use super::{backend, fetch, get, manager, one_cluster};
use crate::upstream::{SendContext, UpstreamError};

const NO_DELAY: Duration = Duration::ZERO;

#[tokio::test]
async fn http1_reuses_one_keep_alive_connection() {
    let b = backend("one", false, NO_DELAY).await;
    let (m, store) = manager(&one_cluster("", &[b.addr])).expect("valid");
    for _ in 0..5 {
        let f = fetch(&m, "example.com").await;
        assert_eq!(f.body, "one");
        assert_eq!(f.upstream, b.addr);
        // Origin-form on the wire, Host as given.
        assert_eq!(f.parts.headers["x-uri"], "/path?q=1");
        assert_eq!(f.parts.headers["x-host"], "example.com");
        // The connection returns to the pool once the response has been read.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.seen.accepts.load(Ordering::SeqCst), 1);
    assert_eq!(b.seen.requests.load(Ordering::SeqCst), 5);
    assert_eq!(store.counter("cluster.c.upstream_cx_total").get(), 1);
    assert_eq!(store.counter("cluster.c.upstream_cx_http1_total").get(), 1);
    assert_eq!(store.counter("cluster.c.upstream_rq_total").get(), 5);
    assert_eq!(store.counter("cluster.c.upstream_rq_completed").get(), 5);
    assert_eq!(store.gauge("cluster.c.upstream_rq_active").get(), 0);
    assert_eq!(store.gauge("cluster.c.upstream_cx_active").get(), 1);
    assert!(store.counter("cluster.c.upstream_cx_rx_bytes_total").get() > 0);
    let text = m.admin_text();
    assert!(
        text.contains(&format!("c::{}::cx_total::1\n", b.addr)),
        "{text}"
    );
    assert!(
        text.contains(&format!("c::{}::rq_success::5\n", b.addr)),
        "{text}"
    );
}

#[tokio::test]
async fn concurrent_http1_requests_use_separate_connections() {
    let b = backend("slow", false, Duration::from_millis(100)).await;
    let (m, _) = manager(&one_cluster("", &[b.addr])).expect("valid");
    let c = m.get("c").expect("c");
    let ctx = SendContext::default();
    let (r1, r2) = tokio::join!(c.send(get("a"), &ctx), c.send(get("a"), &ctx));
    assert!(r1.is_ok() && r2.is_ok());
    assert_eq!(b.seen.accepts.load(Ordering::SeqCst), 2);
    assert_eq!(b.seen.max_in_flight.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn max_requests_per_connection_recycles_connections() {
    let b = backend("x", false, NO_DELAY).await;
    let extra = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        common_http_protocol_options: { max_requests_per_connection: 2 }\n        explicit_http_config: { http_protocol_options: {} }\n";
    let (m, store) = manager(&one_cluster(extra, &[b.addr])).expect("valid");
    for _ in 0..4 {
        fetch(&m, "h").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.seen.accepts.load(Ordering::SeqCst), 2);
    assert_eq!(store.counter("cluster.c.upstream_cx_max_requests").get(), 2);
}

#[tokio::test]
async fn idle_timers_last_one_idle_period_and_close_idle_connections() {
    let b = backend("x", false, NO_DELAY).await;
    let (m, store) = manager(&one_cluster("", &[b.addr])).expect("valid");
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    fetch(&m, "h").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = tasks();
    for _ in 0..30 {
        fetch(&m, "h").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Each reuse ends the previous idle period's timer (the default idle_timeout is an hour).
    assert!(
        tasks() <= before + 2,
        "tasks grew from {before} to {} over 30 reuses",
        tasks()
    );
    assert_eq!(b.seen.accepts.load(Ordering::SeqCst), 1);

    let b = backend("y", false, NO_DELAY).await;
    let extra = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        common_http_protocol_options: { idle_timeout: 0.2s }\n        explicit_http_config: { http_protocol_options: {} }\n";
    let (m, store2) = manager(&one_cluster(extra, &[b.addr])).expect("valid");
    fetch(&m, "h").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        store2.counter("cluster.c.upstream_cx_idle_timeout").get(),
        1
    );
    fetch(&m, "h").await;
    assert_eq!(
        b.seen.accepts.load(Ordering::SeqCst),
        2,
        "a new connection after the timeout"
    );
    drop(store);
}

#[tokio::test]
async fn http2_multiplexes_streams_on_one_connection() {
    let b = backend("h2", true, Duration::from_millis(100)).await;
    let extra = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }\n";
    let (m, store) = manager(&one_cluster(extra, &[b.addr])).expect("valid");
    let c = m.get("c").expect("c");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let sent = c
                .send(get("svc.example:8443"), &SendContext::default())
                .await
                .expect("response");
            let authority = sent.response.headers()["x-authority"].clone();
            let body = sent.response.into_body().collect().await.expect("body");
            (authority, body.to_bytes())
        }));
    }
    for t in tasks {
        let (authority, body) = t.await.expect("task");
        // :authority carries the Host header, not the endpoint address.
        assert_eq!(authority, "svc.example:8443");
        assert_eq!(&body[..], b"h2");
    }
    assert_eq!(b.seen.accepts.load(Ordering::SeqCst), 1);
    assert!(b.seen.max_in_flight.load(Ordering::SeqCst) > 1);
    assert_eq!(store.counter("cluster.c.upstream_cx_http2_total").get(), 1);
    assert_eq!(store.counter("cluster.c.upstream_rq_total").get(), 8);
}

#[tokio::test]
async fn downstream_protocol_picks_the_upstream_version() {
    let b = backend("h2", true, NO_DELAY).await;
    let extra = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        use_downstream_protocol_config: {}\n";
    let (m, _) = manager(&one_cluster(extra, &[b.addr])).expect("valid");
    let c = m.get("c").expect("c");
    let ctx = SendContext {
        downstream_version: Some(http::Version::HTTP_2),
        ..Default::default()
    };
    let sent = c.send(get("h"), &ctx).await.expect("h2 upstream");
    assert_eq!(sent.response.version(), http::Version::HTTP_2);
}

#[tokio::test]
async fn connect_failure_is_uf_and_counted() {
    // A port nothing listens on: bind, note the port, close.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let (m, store) = manager(&one_cluster("", &[addr])).expect("valid");
    let c = m.get("c").expect("c");
    let e = c
        .send(get("h"), &SendContext::default())
        .await
        .expect_err("refused");
    assert!(matches!(e, UpstreamError::ConnectFailure { .. }), "{e}");
    assert_eq!(e.response_flag(), "UF");
    assert!(e.is_retryable_connect_failure());
    assert_eq!(e.endpoint(), Some(addr));
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert_eq!(store.counter("cluster.c.upstream_cx_connect_fail").get(), 1);
    assert_eq!(store.counter("cluster.c.upstream_cx_destroy").get(), 1);
    assert_eq!(store.gauge("cluster.c.upstream_cx_active").get(), 0);
    // Never attached to a connection: not an upstream request.
    assert_eq!(store.counter("cluster.c.upstream_rq_total").get(), 0);
    assert_eq!(store.gauge("cluster.c.upstream_rq_pending_active").get(), 0);
    let text = m.admin_text();
    assert!(
        text.contains(&format!("c::{addr}::cx_connect_fail::1\n")),
        "{text}"
    );
}

#[tokio::test]
async fn connect_timeout_is_uf_and_counted() {
    // A listener that never accepts, with its backlog filled, leaves further SYNs unanswered.
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .expect("addr")
            .into(),
    )
    .expect("bind");
    sock.listen(0).expect("listen");
    let addr = sock.local_addr().expect("addr").as_socket().expect("inet");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let (m, store) =
        manager(&one_cluster("", &[addr]).replace("connect_timeout: 1s", "connect_timeout: 0.2s"))
            .expect("valid");
    let c = m.get("c").expect("c");
    let e = c
        .send(get("h"), &SendContext::default())
        .await
        .expect_err("times out");
    assert!(matches!(e, UpstreamError::ConnectTimeout { .. }), "{e}");
    assert_eq!(e.response_flag(), "UF");
    assert_eq!(
        store.counter("cluster.c.upstream_cx_connect_timeout").get(),
        1
    );
    assert_eq!(store.counter("cluster.c.upstream_cx_connect_fail").get(), 1);
    drop(sock);
}

#[tokio::test]
async fn strict_dns_resolves_localhost_and_serves() {
    let b = backend("dns", false, NO_DELAY).await;
    let y = format!(
        "static_resources:\n  clusters:\n  - name: c\n    type: STRICT_DNS\n    dns_lookup_family: V4_ONLY\n    load_assignment:\n      cluster_name: c\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: localhost, port_value: {} }} }} }}\n",
        b.addr.port()
    );
    let (m, store) = manager(&y).expect("valid");
    assert!(m.get("c").expect("c").host_set().hosts.is_empty());
    m.start();
    tokio::time::timeout(Duration::from_secs(5), m.initialized())
        .await
        .expect("resolved");
    let c = m.get("c").expect("c");
    let hosts = c.host_set();
    assert!(!hosts.hosts.is_empty());
    assert!(hosts.hosts.iter().all(|h| h.address().is_ipv4()));
    assert_eq!(hosts.hosts[0].hostname, "localhost");
    assert_eq!(
        store.gauge("cluster.c.membership_total").get(),
        hosts.hosts.len() as i64
    );
    let f = fetch(&m, "x").await;
    assert_eq!(f.body, "dns");
    assert_eq!(c.pick_hostname().as_deref(), Some("localhost"));
    let j = m.admin_json();
    assert_eq!(
        j["cluster_statuses"][0]["host_statuses"][0]["hostname"],
        "localhost"
    );
}

#[tokio::test]
async fn logical_dns_has_one_host() {
    let b = backend("logical", false, NO_DELAY).await;
    let y = format!(
        "static_resources:\n  clusters:\n  - name: c\n    type: LOGICAL_DNS\n    dns_lookup_family: V4_ONLY\n    load_assignment:\n      cluster_name: c\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: localhost, port_value: {} }} }} }}\n",
        b.addr.port()
    );
    let (m, _) = manager(&y).expect("valid");
    m.start();
    tokio::time::timeout(Duration::from_secs(5), m.initialized())
        .await
        .expect("resolved");
    assert_eq!(m.get("c").expect("c").host_set().hosts.len(), 1);
    assert_eq!(fetch(&m, "x").await.body, "logical");
}

#[tokio::test]
async fn tcp_connect_counts_connections_until_the_guard_drops() {
    let b = backend("tcp", false, NO_DELAY).await;
    let (m, store) = manager(&one_cluster("", &[b.addr])).expect("valid");
    let c = m.get("c").expect("c");
    let conn = c.connect_tcp(&Default::default()).await.expect("connects");
    assert_eq!(conn.upstream, b.addr);
    assert_eq!(store.gauge("cluster.c.upstream_cx_active").get(), 1);
    drop(conn);
    assert_eq!(store.gauge("cluster.c.upstream_cx_active").get(), 0);
    assert_eq!(store.counter("cluster.c.upstream_cx_destroy").get(), 1);
}
