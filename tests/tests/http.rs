//! HTTP through the proxy with real clients: curl (HTTP/1.1, h2c), h2load, a keep-alive loop for
//! weighted clusters, a raw WebSocket upgrade, forwarding headers and the circuit breaker.
//!
//! Every test runs on each proxy kind selected by `REMORA_TEST_PROXY` (default: Envoy when
//! installed, then remora), so each is a differential check.

use std::time::Duration;

use remora_tests::client::{self, Client, Protocol, Request};
use remora_tests::select::for_each_kind;
use remora_tests::stack::Stack;
use remora_tests::{bins, curl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BASIC: &str = "http/basic.yaml";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http1_and_h2c() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, BASIC).await;
        let url = s.url("/hello?x=1");
        let r = tokio::task::spawn_blocking(move || curl::get(&url, &[]))
            .await
            .expect("join")
            .expect("curl");
        assert_eq!(
            (r.status, r.http_version.as_str()),
            (200, "1.1"),
            "[{kind}] {r:?}"
        );
        let echo: remora_tests::backend::Echo = serde_json::from_str(&r.body).expect("echo body");
        assert_eq!(
            (echo.backend.as_str(), echo.path.as_str()),
            ("app", "/hello?x=1")
        );
        assert!(echo
            .header("user-agent")
            .is_some_and(|u| u.starts_with("curl/")));

        let url = s.url("/h2");
        let r = tokio::task::spawn_blocking(move || curl::get_h2c(&url, &["-d", "payload"]))
            .await
            .expect("join")
            .expect("curl h2c");
        assert_eq!(
            (r.status, r.http_version.as_str()),
            (200, "2"),
            "[{kind}] {r:?}"
        );
        let echo: remora_tests::backend::Echo = serde_json::from_str(&r.body).expect("echo body");
        assert_eq!(echo.method, "POST");
        assert_eq!(echo.body, "payload");
        // The upstream is HTTP/1.1 unless the cluster asks for h2.
        assert_eq!(echo.version, "HTTP/1.1");
        assert_eq!(
            echo.host,
            s.addr().to_string(),
            "curl's :authority becomes Host"
        );
    })
    .await;
}

/// Parse h2load's summary: (succeeded, failed, errored, 2xx).
fn h2load_summary(out: &str) -> (u64, u64, u64, u64) {
    let num = |line: &str, key: &str| -> u64 {
        line.split(',')
            .find(|p| p.trim().ends_with(key))
            .and_then(|p| p.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    };
    let req = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or("");
    let req = req.trim_start_matches("requests:");
    let codes = out
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or("");
    let codes = codes.trim_start_matches("status codes:");
    (
        num(req, "succeeded"),
        num(req, "failed"),
        num(req, "errored"),
        num(codes, "2xx"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_smoke_h2c_and_h1() {
    if !bins::has_tool("h2load") {
        println!("SKIP: h2load not installed (apt-get install nghttp2-client)");
        return;
    }
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, BASIC).await;
        for proto in ["h2c", "h1"] {
            let url = s.url("/load");
            let out = tokio::task::spawn_blocking(move || {
                let mut cmd = std::process::Command::new("h2load");
                cmd.args(["-n", "10000", "-c", "10", "-m", "10"]);
                if proto == "h1" {
                    cmd.arg("--h1");
                }
                cmd.arg(&url).output().expect("run h2load")
            })
            .await
            .expect("join");
            let text = String::from_utf8_lossy(&out.stdout);
            let (ok, failed, errored, xx2) = h2load_summary(&text);
            assert_eq!(
                (ok, failed, errored, xx2),
                (10_000, 0, 0, 10_000),
                "[{kind}] h2load {proto}:\n{text}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_hold_within_two_points() {
    const TOTAL: usize = 10_000;
    const CONNS: usize = 4;
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, BASIC).await;
        let mut tasks = Vec::new();
        for _ in 0..CONNS {
            let addr = s.addr();
            tasks.push(tokio::spawn(async move {
                let mut c = Client::new(addr, Protocol::Http1);
                let mut a = 0usize;
                for _ in 0..TOTAL / CONNS {
                    let r = c.send(&Request::get("/split")).await.expect("request");
                    assert_eq!(r.status, 200);
                    let echo = r.echo().expect("echo");
                    a += usize::from(echo.backend == "a");
                }
                (a, c.connections)
            }));
        }
        let mut a = 0;
        for t in tasks {
            let (n, conns) = t.await.expect("join");
            assert_eq!(conns, 1, "[{kind}] keep-alive: one connection per client");
            a += n;
        }
        let share = a as f64 / TOTAL as f64;
        assert!(
            (share - 0.70).abs() <= 0.02,
            "[{kind}] cluster a got {share:.4} (want 0.70 ± 0.02)"
        );
        assert_eq!(
            s.env.backend("a").requests() + s.env.backend("b").requests(),
            TOTAL
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_tunnelled() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, BASIC).await;
        let mut tcp = tokio::net::TcpStream::connect(s.addr()).await.expect("connect");
        tcp.write_all(
            b"GET /chat HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .expect("write handshake");
        let head = read_head(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 101"), "[{kind}] handshake answer: {head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("upgrade: websocket"), "[{kind}] {head}");
        assert!(lower.contains("connection: upgrade"), "[{kind}] {head}");
        // After the 101 the stream is opaque bytes both ways.
        for msg in [&b"\x81\x05hello"[..], b"second frame"] {
            tcp.write_all(msg).await.expect("write");
            let mut got = vec![0u8; msg.len()];
            tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut got))
                .await
                .expect("echo in time")
                .expect("read echo");
            assert_eq!(got, msg, "[{kind}]");
        }

        // The listener without upgrade_configs forwards the request as a plain GET.
        let plain = s.env.addr("listener_port_plain");
        let req = Request::get("/chat")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket");
        let r = client::send(plain, Protocol::Http1, &req).await.expect("request");
        assert_eq!(r.status, 403, "[{kind}] upgrade on a listener without upgrade_configs: {}", r.text());
    })
    .await;
}

/// A keep-alive connection that idles between requests (remora parks it after 100 ms, dropping
/// the codec's buffers) serves every later request, and can still be upgraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_serves_later_requests_and_upgrades() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, BASIC).await;
        let mut tcp = tokio::net::TcpStream::connect(s.addr()).await.expect("connect");
        for (i, pause) in [0u64, 300, 50, 400].into_iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let req = format!("GET /idle/{i} HTTP/1.1\r\nHost: example.com\r\n\r\n");
            tcp.write_all(req.as_bytes()).await.expect("write");
            let head = read_head(&mut tcp).await;
            assert!(head.starts_with("HTTP/1.1 200"), "[{kind}] request {i}: {head}");
            assert!(
                !head.to_ascii_lowercase().contains("connection: close"),
                "[{kind}] request {i}: {head}"
            );
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_string))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("[{kind}] no content-length: {head}"));
            let mut body = vec![0u8; len];
            tcp.read_exact(&mut body).await.expect("body");
            let echo: remora_tests::backend::Echo = serde_json::from_slice(&body).expect("echo");
            assert_eq!(echo.path, format!("/idle/{i}"), "[{kind}]");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        tcp.write_all(
            b"GET /chat HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .expect("write handshake");
        let head = read_head(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 101"), "[{kind}] handshake answer: {head}");
        let msg = b"\x81\x05hello";
        tcp.write_all(msg).await.expect("write");
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut got))
            .await
            .expect("echo in time")
            .expect("read echo");
        assert_eq!(&got, msg, "[{kind}]");
    })
    .await;
}

async fn read_head(tcp: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut byte))
            .await
            .expect("response head in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed before the response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_and_request_id() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, BASIC).await;
        // use_remote_address defaults to false: a client's x-forwarded-for passes untouched and
        // none is invented.
        let r = client::send(
            s.addr(),
            Protocol::Http1,
            &Request::get("/x").header("x-forwarded-for", "203.0.113.7"),
        )
        .await
        .expect("request");
        let echo = r.echo().expect("echo");
        assert_eq!(
            echo.header("x-forwarded-for"),
            Some("203.0.113.7"),
            "[{kind}]"
        );
        assert_eq!(echo.header("x-forwarded-proto"), Some("http"), "[{kind}]");
        let r = client::get(s.addr(), "/y").await.expect("request");
        let echo = r.echo().expect("echo");
        assert_eq!(echo.header("x-forwarded-for"), None, "[{kind}]");
        // generate_request_id defaults to true: a UUID v4.
        let id = echo.header("x-request-id").expect("x-request-id added");
        let uuid = regex::Regex::new(
            "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
        )
        .expect("regex");
        assert!(
            uuid.is_match(id),
            "[{kind}] x-request-id {id:?} is not a UUID v4"
        );
        // Not echoed to the client unless always_set_request_id_in_response.
        assert_eq!(r.header("x-request-id"), None, "[{kind}]");
        // Without use_remote_address a loopback client's id is trusted and kept.
        let r = client::send(
            s.addr(),
            Protocol::Http1,
            &Request::get("/z").header("x-request-id", "abc-123"),
        )
        .await
        .expect("request");
        assert_eq!(
            r.echo().expect("echo").header("x-request-id"),
            Some("abc-123"),
            "[{kind}]"
        );

        let plain = s.env.addr("listener_port_plain");
        let r = client::get(plain, "/q").await.expect("request");
        assert_eq!(
            r.echo().expect("echo").header("x-request-id"),
            None,
            "[{kind}] generate_request_id: false"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_overflow_is_503_uo() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, BASIC).await;
        let addr = s.addr();
        let slow = tokio::spawn(async move { client::get(addr, "/guarded/delay/1500").await });
        // Let the slow request occupy the only request slot.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut overflowed = None;
        for _ in 0..3 {
            let r = client::get(addr, "/guarded/now").await.expect("request");
            if r.status == 503 {
                overflowed = Some(r);
                break;
            }
        }
        let r = overflowed.unwrap_or_else(|| panic!("[{kind}] no 503 while the breaker was full"));
        assert_eq!(
            r.header("x-envoy-overloaded"),
            Some("true"),
            "[{kind}] {:?}",
            r.headers
        );
        assert_eq!(
            r.text(),
            "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            "[{kind}]"
        );
        let first = slow.await.expect("join").expect("slow request");
        assert_eq!(
            first.status, 200,
            "[{kind}] the request holding the slot completes"
        );
        let log = remora_tests::access_log::wait_for_lines(&s.env.file("access.log"), 2).await;
        assert!(
            log.iter().any(|l| l.contains(" 503 UO ")),
            "[{kind}] access log lacks a 503 UO line:\n{}",
            log.join("\n")
        );
        let stats = remora_tests::admin::get(s.admin(), "/stats?filter=cluster.guarded.&usedonly")
            .await
            .expect("stats")
            .text();
        assert_eq!(
            remora_tests::admin::stat_in(&stats, "cluster.guarded.upstream_rq_active_overflow"),
            Some(1),
            "[{kind}] overflow counter:\n{stats}"
        );
    })
    .await;
}
