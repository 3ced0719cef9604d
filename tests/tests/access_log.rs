//! Access logs: Envoy's default text format and a json_format log, line by line.

use remora_tests::access_log::{default_format, wait_for_lines};
use remora_tests::client::{self, Protocol, Request};
use remora_tests::proxy::StartOptions;
use remora_tests::select::for_each_kind;
use remora_tests::stack::Stack;

const BASIC: &str = "http/basic.yaml";

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
