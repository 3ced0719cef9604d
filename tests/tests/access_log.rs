//! Access logs: Envoy's default text format and a json_format log, line by line; the response
//! flag of each upstream failure.

use remora_tests::access_log::{default_format, wait_for_lines};
use remora_tests::admin;
use remora_tests::client::{self, Protocol, Request};
use remora_tests::proxy::StartOptions;
use remora_tests::select::for_each_kind;
use remora_tests::stack::Stack;

const BASIC: &str = "http/basic.yaml";
const FLAGS: &str = "http/flags.yaml";

fn fast_flush() -> StartOptions {
    StartOptions {
        args: vec!["--file-flush-interval-msec".into(), "100".into()],
        ..StartOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_format_line_shape() {
    for_each_kind(|kind| async move {
        let s = Stack::start_with(kind, BASIC, fast_flush()).await;
        let req = Request::get("/logged?q=1")
            .host("logs.example.com")
            .header("user-agent", "remora-tests/1")
            .header("x-forwarded-for", "203.0.113.5");
        let r = client::send(s.addr(), Protocol::Http1, &req)
            .await
            .expect("request");
        assert_eq!(r.status, 200);
        let r = client::send(
            s.addr(),
            Protocol::H2c,
            &Request::get("/missing-cluster/status/404"),
        )
        .await
        .expect("request");
        assert_eq!(r.status, 404);
        let lines = wait_for_lines(&s.env.file("access.log"), 2).await;
        let first = &lines[0];
        assert!(
            default_format("GET", "/logged?q=1", "HTTP/1.1", 200, "-").is_match(first),
            "[{kind}] default format line: {first}"
        );
        assert!(
            first.contains(r#""203.0.113.5" "remora-tests/1""#),
            "[{kind}] {first}"
        );
        assert!(first.contains(r#""logs.example.com""#), "[{kind}] {first}");
        let upstream = format!("\"127.0.0.1:{}\"", s.env.backend("app").port());
        assert!(
            first.ends_with(&upstream),
            "[{kind}] {first} should end with {upstream}"
        );
        assert!(
            default_format("GET", "/missing-cluster/status/404", "HTTP/2", 404, "-")
                .is_match(&lines[1]),
            "[{kind}] h2 line: {}",
            lines[1]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_format_fields() {
    for_each_kind(|kind| async move {
        let s = Stack::start_with(kind, BASIC, fast_flush()).await;
        let req = Request::get("/json-logged")
            .host("j.example.com")
            .header("x-request-id", "rid-1");
        client::send(s.addr(), Protocol::Http1, &req)
            .await
            .expect("request");
        // A local reply: no upstream host, a response flag.
        let r = client::get(s.addr(), "/app/reset").await.expect("request");
        assert_eq!(r.status, 503);
        let lines = wait_for_lines(&s.env.file("access.json"), 2).await;
        let v: serde_json::Value = serde_json::from_str(&lines[0])
            .unwrap_or_else(|e| panic!("[{kind}] {e}: {}", lines[0]));
        let port = s.env.backend("app").port();
        let want = serde_json::json!({
            "method": "GET",
            "path": "/json-logged",
            "protocol": "HTTP/1.1",
            "code": 200,
            "flags": "-",
            "upstream_host": format!("127.0.0.1:{port}"),
            "cluster": "app",
            "authority": "j.example.com",
            "request_id": "rid-1",
            "bytes_sent": v["bytes_sent"].clone(),
        });
        assert_eq!(v, want, "[{kind}] json line");
        assert!(
            v["bytes_sent"].as_u64().is_some_and(|n| n > 0),
            "[{kind}] bytes_sent is a number: {v}"
        );
        let v: serde_json::Value = serde_json::from_str(&lines[1]).expect("json");
        assert_eq!(v["code"], 503, "[{kind}] {v}");
        assert_eq!(
            v["flags"], "UC",
            "[{kind}] upstream connection termination flag: {v}"
        );
    })
    .await;
}

/// `%RESPONSE_CODE% %RESPONSE_FLAGS%` for each way a request can fail upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_flags_in_log_lines() {
    for_each_kind(|kind| async move {
        let s = Stack::start_with(kind, FLAGS, fast_flush()).await;
        let cases = [
            ("/nr", 404, "NR"),
            ("/uh", 503, "UH"),
            ("/uf", 503, "UF"),
            ("/ut/delay/2000", 504, "UT"),
            ("/urx/status/503", 503, "URX"),
            ("/ok", 200, "-"),
        ];
        for (path, status, _) in cases {
            let r = client::get(s.addr(), path).await.expect("request");
            assert_eq!(r.status, status, "[{kind}] {path}: {}", r.text());
        }
        let lines = wait_for_lines(&s.env.file("access.log"), cases.len()).await;
        for (line, (path, status, flags)) in lines.iter().zip(cases) {
            assert_eq!(line, &format!("{path} {status} {flags}"), "[{kind}]");
        }
    })
    .await;
}

/// retry_on connect-failure past a dead host: every request succeeds, the retries are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_retried_on_another_host() {
    for_each_kind(|kind| async move {
        let s = Stack::start_with(kind, FLAGS, fast_flush()).await;
        // Round robin over one dead and one live host: two requests reach the dead one at least once.
        for i in 0..4 {
            let r = client::get(s.addr(), &format!("/half/{i}"))
                .await
                .expect("request");
            assert_eq!(r.status, 200, "[{kind}] request {i}: {}", r.text());
        }
        let retries = admin::stat(s.admin(), "cluster.half.upstream_rq_retry")
            .await
            .unwrap_or(0);
        assert!(retries >= 1, "[{kind}] upstream_rq_retry = {retries}");
        let lines = wait_for_lines(&s.env.file("access.log"), 4).await;
        println!("[{kind}] retries {retries}, log: {lines:?}");
        for line in &lines {
            assert!(line.ends_with(" 200 -"), "[{kind}] {line}");
        }
    })
    .await;
}
