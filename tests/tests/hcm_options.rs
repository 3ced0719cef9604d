//! Connection manager options end to end: `request_timeout`, the downstream `idle_timeout`,
//! `max_headers_count`, `xff_num_trusted_hops` and an explicit `codec_type`.

use std::time::{Duration, Instant};

use remora_tests::client::{Client, Protocol, Request};
use remora_tests::curl;
use remora_tests::select::for_each_kind;
use remora_tests::stack::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OPTIONS: &str = "hcm/options.yaml";

/// curl off the runtime's threads (the echo backend shares them): `h2c` picks prior knowledge.
async fn curl(url: String, h2c: bool, args: Vec<String>) -> Result<curl::CurlOutput, String> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if h2c {
            curl::get_h2c(&url, &args)
        } else {
            curl::get(&url, &args)
        }
    })
    .await
    .expect("join")
    .map_err(|e| e.to_string())
}

/// Everything the peer sends until it closes, or what came within `limit`.
async fn read_to_close(conn: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(limit, conn.read_to_end(&mut buf))
        .await
        .is_ok();
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_answers_408_to_a_stalled_body() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, OPTIONS).await;
        let mut conn = TcpStream::connect(s.addr()).await.expect("connect");
        let t0 = Instant::now();
        conn.write_all(
            b"POST /upload HTTP/1.1\r\nhost: example.com\r\ncontent-length: 100\r\n\r\npart",
        )
        .await
        .expect("write");
        let (text, closed) = read_to_close(&mut conn, Duration::from_secs(5)).await;
        let took = t0.elapsed();
        println!("[{kind}] after {took:?} (closed: {closed}): {text:?}");
        assert!(text.starts_with("HTTP/1.1 408 "), "[{kind}] {text:?}");
        assert!(closed, "[{kind}] the connection is closed after the 408");
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "[{kind}] 408 after {took:?}, request_timeout is 0.5s"
        );
    })
    .await;
}

/// An idle HTTP/1 connection drains for `drain_timeout` (1s) after the `idle_timeout` (0.5s), then
/// closes; Envoy then waits its `delayed_close_timeout` (1s) for the client to close first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_an_idle_downstream_connection() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, OPTIONS).await;
        let mut conn = TcpStream::connect(s.env.addr("listener_port_idle"))
            .await
            .expect("connect");
        conn.write_all(b"GET /idle HTTP/1.1\r\nhost: example.com\r\n\r\n")
            .await
            .expect("write");
        let t0 = Instant::now();
        let (text, closed) = read_to_close(&mut conn, Duration::from_secs(5)).await;
        let took = t0.elapsed();
        println!("[{kind}] closed after {took:?}: {closed}");
        assert!(text.starts_with("HTTP/1.1 200 "), "[{kind}] {text:?}");
        assert!(closed, "[{kind}] idle connection still open after 5s");
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_millis(3500),
            "[{kind}] closed after {took:?}: idle_timeout 0.5s + drain_timeout 1s"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_the_idle_timeout_is_served_with_connection_close() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, OPTIONS).await;
        let mut client = Client::new(s.env.addr("listener_port_idle"), Protocol::Http1);
        let r = client.send(&Request::get("/first")).await.expect("first");
        assert_eq!((r.status, r.header("connection")), (200, None), "[{kind}]");
        tokio::time::sleep(Duration::from_millis(800)).await;
        let r = client
            .send(&Request::get("/draining"))
            .await
            .expect("second");
        assert_eq!(r.status, 200, "[{kind}]");
        assert_eq!(r.header("connection"), Some("close"), "[{kind}]");
        assert_eq!(
            client.connections, 1,
            "[{kind}] served on the idle connection"
        );
    })
    .await;
}

fn header_args(n: usize) -> Vec<String> {
    (0..n)
        .flat_map(|i| ["-H".to_string(), format!("x-h{i}: v")])
        .collect()
}

/// `max_headers_count: 20` over HTTP/1: curl sends host, user-agent and accept besides ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_headers_count_rejects_a_request_with_more() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, OPTIONS).await;
        let ok = curl(s.url("/twenty"), false, header_args(17))
            .await
            .expect("curl");
        assert_eq!(ok.status, 200, "[{kind}] 20 headers pass");
        let r = curl(s.url("/many"), false, header_args(18))
            .await
            .expect("curl");
        assert_eq!(
            (r.status, r.body.as_str(), r.header("connection")),
            (431, "Request Header Fields Too Large", Some("close")),
            "[{kind}] 21 headers"
        );
    })
    .await;
}

/// The default limit (100) over h2 counts the four pseudo-headers; one more resets the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_headers_count_resets_an_h2_stream_with_more() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, OPTIONS).await;
        let url = format!("http://{}/h2-headers", s.env.addr("listener_port_xff"));
        // Passed on (the echo backend itself answers 431 to so many with the proxy's additions).
        let ok = curl(url.clone(), true, header_args(94)).await;
        assert!(ok.is_ok(), "[{kind}] 100 header fields pass: {ok:?}");
        let r = curl(url, true, header_args(95)).await;
        assert!(
            r.as_ref().is_err_and(|e| e.contains("(92)")),
            "[{kind}] 101 header fields: curl should see a stream error (92): {r:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xff_num_trusted_hops_picks_the_client_address() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, OPTIONS).await;
        let url = format!("http://{}/xff", s.env.addr("listener_port_xff"));
        let xff = vec![
            "-H".into(),
            "x-forwarded-for: 198.51.100.1, 203.0.113.7".into(),
        ];
        let r = curl(url, false, xff).await.expect("curl");
        assert_eq!(r.status, 200, "[{kind}]");
        let echo: remora_tests::backend::Echo = serde_json::from_str(&r.body).expect("echo body");
        println!("[{kind}] forwarded: {:?}", echo.headers);
        // One trusted hop: the address before the last hop is the client's.
        assert_eq!(
            echo.header("x-envoy-external-address"),
            Some("203.0.113.7"),
            "[{kind}]"
        );
        let xff = echo.header("x-forwarded-for").unwrap_or_default();
        assert!(
            xff.starts_with("198.51.100.1, 203.0.113.7,")
                || xff.starts_with("198.51.100.1,203.0.113.7,"),
            "[{kind}] the peer is appended: {xff}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_type_http1_refuses_h2c() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, OPTIONS).await;
        let r = curl(s.url("/h1"), false, vec![]).await.expect("curl");
        assert_eq!(
            (r.status, r.http_version.as_str()),
            (200, "1.1"),
            "[{kind}]"
        );
        let h2 = curl(s.url("/h2"), true, vec![]).await;
        println!("[{kind}] h2c on an HTTP1 codec: {h2:?}");
        assert!(
            h2.as_ref().is_err_and(|e| e.contains("(52)")),
            "[{kind}] prior-knowledge h2c gets no h2 answer: {h2:?}"
        );
        // What the HTTP/1 codec answers the preface with.
        let mut conn = TcpStream::connect(s.addr()).await.expect("connect");
        conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("write");
        let (text, closed) = read_to_close(&mut conn, Duration::from_secs(3)).await;
        assert!(closed, "[{kind}] closed after the answer");
        assert!(
            text.starts_with("HTTP/1.1 400 Bad Request\r\n")
                && text.contains("\r\nconnection: close\r\n")
                && text.ends_with("\r\n\r\nBad Request"),
            "[{kind}] {text:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codec_type_http2_refuses_http1() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, OPTIONS).await;
        let url = format!("http://{}/h2", s.env.addr("listener_port_h2"));
        let r = curl(url.clone(), true, vec![]).await.expect("curl");
        assert_eq!((r.status, r.http_version.as_str()), (200, "2"), "[{kind}]");
        let h1 = curl(url, false, vec![]).await;
        println!("[{kind}] HTTP/1.1 on an HTTP2 codec: {h1:?}");
        assert!(
            h1.as_ref().is_err_and(|e| e.contains("(52)")),
            "[{kind}] HTTP/1.1 is closed unanswered: {h1:?}"
        );
    })
    .await;
}
