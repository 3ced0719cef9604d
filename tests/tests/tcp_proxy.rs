//! tcp_proxy end to end: `idle_timeout` closes a quiet connection, `access_log` writes one line per
//! connection with its byte counts and upstream.

use std::time::{Duration, Instant};

use remora_tests::access_log::wait_for_lines;
use remora_tests::proxy::StartOptions;
use remora_tests::select::for_each_kind;
use remora_tests::stack::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed_and_logged() {
    for_each_kind(|kind| async move {
        let opts = StartOptions {
            args: vec!["--file-flush-interval-msec".into(), "100".into()],
            ..StartOptions::default()
        };
        let s = Stack::start_with(kind, "tcp/idle.yaml", opts).await;
        let mut conn = TcpStream::connect(s.addr()).await.expect("connect");
        conn.write_all(b"hello, echo").await.expect("write");
        let mut echoed = [0u8; 11];
        conn.read_exact(&mut echoed).await.expect("echo");
        assert_eq!(&echoed, b"hello, echo", "[{kind}]");
        let t0 = Instant::now();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest))
            .await
            .is_ok();
        let took = t0.elapsed();
        assert!(closed, "[{kind}] idle connection still open after 5s");
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "[{kind}] closed after {took:?}, idle_timeout is 0.5s"
        );
        // The harness's readiness probe was the first connection: it sent nothing.
        let lines = wait_for_lines(&s.env.file("tcp.log"), 2).await;
        println!("[{kind}] closed after {took:?}; log: {lines:?}");
        let upstream = format!("127.0.0.1:{}", s.env.tcp[0].1.port());
        assert_eq!(
            lines,
            [
                format!("0 0 {upstream} echo -"),
                format!("11 11 {upstream} echo -")
            ],
            "[{kind}]"
        );
    })
    .await;
}
