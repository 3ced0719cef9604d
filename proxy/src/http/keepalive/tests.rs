use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::{Http1, Shared};
use crate::http::body::{self, BoxBody};
use crate::http::codec::Rewind;

type Fut = Pin<Box<dyn Future<Output = Result<hyper::Response<BoxBody>, Infallible>> + Send>>;

/// Answers with the request path repeated `n` times, where the path is `/<n>`, or upgrades
/// (`/upgrade`: 101, then the stream echoes what it reads).
fn service(
    shared: Arc<Shared>,
) -> impl hyper::service::HttpService<Incoming, ResBody = BoxBody, Future = Fut, Error = Infallible>
       + Unpin
       + Clone {
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| -> Fut {
        let shared = shared.clone();
        Box::pin(async move {
            let path = req.uri().path().trim_start_matches('/').to_string();
            let _ = req.into_body().collect().await;
            if path == "upgrade" {
                let stream = shared.upgrade();
                tokio::spawn(async move {
                    if let Ok(mut io) = stream.await {
                        let mut buf = [0u8; 64];
                        while let Ok(n) = io.read(&mut buf).await {
                            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                });
                let resp = hyper::Response::builder()
                    .status(101)
                    .header("connection", "upgrade")
                    .header("upgrade", "echo")
                    .body(body::empty())
                    .expect("response");
                return Ok(resp);
            }
            let n: usize = path.parse().unwrap_or(1);
            Ok(hyper::Response::new(body::full("x".repeat(n))))
        })
    })
}

fn start(
    buffer: usize,
) -> (
    DuplexStream,
    Http1<
        DuplexStream,
        impl hyper::service::HttpService<
                Incoming,
                ResBody = BoxBody,
                Future = Fut,
                Error = Infallible,
            > + Unpin
            + Clone,
    >,
) {
    let (client, server) = tokio::io::duplex(buffer);
    let shared = Arc::new(Shared::default());
    let conn = Http1::new(
        http1::Builder::new(),
        Rewind::new(server, Vec::new()),
        service(shared.clone()),
        shared,
    );
    (client, conn)
}

/// Polls the driver until nothing more happens without the peer.
async fn settle<F: Future + Unpin>(conn: &mut F) -> Option<F::Output> {
    tokio::select! {
        out = conn => Some(out),
        () = tokio::time::sleep(std::time::Duration::from_millis(20)) => None,
    }
}

async fn read_response(client: &mut DuplexStream, body_len: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = client.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            if got.len() >= end + 4 + body_len {
                return text.into_owned();
            }
        }
    }
}

#[tokio::test]
async fn a_parked_connection_serves_the_next_requests() {
    let (mut client, mut conn) = start(1 << 16);
    client
        .write_all(b"GET /3 HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    assert!(settle(&mut conn).await.is_none());
    assert!(read_response(&mut client, 3).await.ends_with("\r\n\r\nxxx"));
    conn.park();
    assert!(
        settle(&mut conn).await.is_none(),
        "parking does not end the connection"
    );
    assert!(conn.is_parked());
    for n in [5, 7] {
        let req = format!("GET /{n} HTTP/1.1\r\nhost: a\r\n\r\n");
        client.write_all(req.as_bytes()).await.expect("write");
        assert!(settle(&mut conn).await.is_none());
        assert!(!conn.is_parked());
        let resp = read_response(&mut client, n).await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(
            !resp.to_ascii_lowercase().contains("connection: close"),
            "{resp}"
        );
        assert!(resp.ends_with(&"x".repeat(n)), "{resp}");
        conn.park();
        assert!(settle(&mut conn).await.is_none());
        assert!(conn.is_parked());
    }
    // The peer closes its parked connection: the driver ends.
    drop(client);
    assert!(matches!(settle(&mut conn).await, Some(Ok(()))));
}

#[tokio::test]
async fn bytes_of_the_next_request_survive_parking() {
    let (mut client, mut conn) = start(1 << 16);
    client
        .write_all(b"GET /1 HTTP/1.1\r\nhost: a\r\n\r\nGET /2 HT")
        .await
        .expect("write");
    assert!(settle(&mut conn).await.is_none());
    conn.park();
    assert!(settle(&mut conn).await.is_none());
    client
        .write_all(b"TP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    assert!(settle(&mut conn).await.is_none());
    let resp = read_response(&mut client, 0).await;
    assert!(resp.contains("\r\n\r\nx"), "{resp}");
    let resp = if resp.matches("HTTP/1.1 200").count() < 2 {
        format!("{resp}{}", read_response(&mut client, 2).await)
    } else {
        resp
    };
    assert_eq!(resp.matches("HTTP/1.1 200 OK").count(), 2, "{resp}");
    assert!(resp.ends_with("xx"), "{resp}");
}

#[tokio::test]
async fn a_response_the_peer_has_not_read_keeps_the_codec() {
    // The pipe holds 1 KB; the response is 64 KB and the client reads nothing yet.
    let (mut client, mut conn) = start(1024);
    client
        .write_all(b"GET /65536 HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    assert!(settle(&mut conn).await.is_none());
    conn.park();
    assert!(settle(&mut conn).await.is_none());
    assert!(!conn.is_parked());
    let reading = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        read_response(&mut client, 65536),
    );
    let (resp, _) = tokio::join!(reading, settle(&mut conn));
    let resp = resp.expect("the whole response arrives");
    assert!(resp.ends_with(&"x".repeat(65536)), "{} bytes", resp.len());
}

#[tokio::test]
async fn a_graceful_shutdown_closes_a_parked_connection() {
    let (mut client, mut conn) = start(1 << 16);
    client
        .write_all(b"GET /1 HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    assert!(settle(&mut conn).await.is_none());
    read_response(&mut client, 1).await;
    conn.park();
    assert!(settle(&mut conn).await.is_none());
    conn.graceful_shutdown();
    assert!(matches!(settle(&mut conn).await, Some(Ok(()))));
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.expect("read");
    assert!(rest.is_empty());
}

#[tokio::test]
async fn an_upgrade_hands_the_stream_over_with_the_bytes_after_the_request() {
    let (mut client, mut conn) = start(1 << 16);
    client
        .write_all(b"GET /1 HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    assert!(settle(&mut conn).await.is_none());
    read_response(&mut client, 1).await;
    conn.park();
    assert!(settle(&mut conn).await.is_none());
    client
        .write_all(b"GET /upgrade HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\nhello")
        .await
        .expect("write");
    assert!(
        matches!(settle(&mut conn).await, Some(Ok(()))),
        "the driver hands over and ends"
    );
    let head = read_response(&mut client, 0).await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    let echoed = if head.ends_with("hello") {
        String::new()
    } else {
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).await.expect("echo");
        String::from_utf8_lossy(&buf).into_owned()
    };
    assert!(
        head.ends_with("hello") || echoed == "hello",
        "{head:?} {echoed:?}"
    );
    client.write_all(b" again").await.expect("write");
    let mut buf = [0u8; 6];
    client.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b" again");
}
