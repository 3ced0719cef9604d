//! HTTP clients: closed-loop HTTP/1.1 keep-alive and h2c multiplexed load, and idle connections.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{join, Outcome, Window};

pub type H1 = http1::SendRequest<Empty<Bytes>>;
pub type H2 = http2::SendRequest<Empty<Bytes>>;

/// Authority every request carries; the proxies route on `*`.
pub const AUTHORITY: &str = "bench.local";

pub async fn tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// An HTTP/1.1 connection over any stream (plain TCP or TLS).
pub async fn h1_over<S>(io: S) -> anyhow::Result<H1>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        // Ends when the peer closes or the SendRequest is dropped.
        let _ = conn.await;
    });
    Ok(send)
}

pub async fn h1_connect(addr: SocketAddr) -> anyhow::Result<H1> {
    h1_over(tcp(addr).await?).await
}

pub async fn h2_connect(addr: SocketAddr) -> anyhow::Result<H2> {
    let io = TokioIo::new(tcp(addr).await?);
    let (send, conn) = http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(1 << 20)
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

fn request(uri: &str, host: bool, close: bool) -> Request<Empty<Bytes>> {
    let mut b = Request::get(uri);
    if host {
        b = b.header(http::header::HOST, AUTHORITY);
    }
    if close {
        b = b.header(http::header::CONNECTION, "close");
    }
    // Constant parts: the builder cannot fail on them.
    b.body(Empty::new()).unwrap_or_default()
}

async fn check(resp: hyper::Response<hyper::body::Incoming>) -> anyhow::Result<()> {
    let status = resp.status();
    // Read the whole body, as a client would, so that the connection can carry the next request.
    resp.into_body().collect().await?;
    anyhow::ensure!(status == StatusCode::OK, "status {status}");
    Ok(())
}

/// One GET / on an HTTP/1.1 connection.
pub async fn h1_get(send: &mut H1, close: bool) -> anyhow::Result<()> {
    timed(async {
        send.ready().await?;
        check(send.send_request(request("/", true, close)).await?).await
    })
    .await
}

/// One GET / on an h2 connection; `:authority` comes from the URI (nginx refuses a request that
/// also carries Host).
pub async fn h2_get(send: &mut H2) -> anyhow::Result<()> {
    let req = request(&format!("http://{AUTHORITY}/"), false, false);
    timed(async { check(send.send_request(req).await?).await }).await
}

/// Bounds a request, so that a peer that stops answering fails the run instead of hanging it.
pub async fn timed<T>(
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(super::REQUEST_TIMEOUT, f)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {:?}", super::REQUEST_TIMEOUT))?
}

/// `conns` HTTP/1.1 keep-alive connections, each sending its next request as soon as the previous
/// answer is read.
pub async fn h1_closed(addr: SocketAddr, conns: usize, w: Window) -> Outcome {
    let tasks = (0..conns)
        .map(|_| tokio::spawn(h1_worker(addr, w)))
        .collect();
    join(tasks).await
}

async fn h1_worker(addr: SocketAddr, w: Window) -> Outcome {
    let mut out = Outcome::default();
    let mut conn: Option<H1> = None;
    while Instant::now() < w.end {
        let send = match conn.as_mut() {
            Some(s) => s,
            None => match h1_connect(addr).await {
                Ok(s) => conn.insert(s),
                Err(e) => {
                    out.fail(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        match h1_get(send, false).await {
            Ok(()) => out.record(&w, t0, Instant::now()),
            Err(e) => {
                out.fail(e);
                conn = None;
            }
        }
    }
    out
}

/// `conns` h2c connections with `streams` concurrent streams each, closed loop per stream.
pub async fn h2_closed(addr: SocketAddr, conns: usize, streams: usize, w: Window) -> Outcome {
    let mut tasks = Vec::new();
    let mut out = Outcome::default();
    for _ in 0..conns {
        match h2_connect(addr).await {
            Ok(send) => {
                for _ in 0..streams {
                    let mut send = send.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut out = Outcome::default();
                        while Instant::now() < w.end {
                            let t0 = Instant::now();
                            match h2_get(&mut send).await {
                                Ok(()) => out.record(&w, t0, Instant::now()),
                                Err(e) => {
                                    out.fail(e);
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                            }
                        }
                        out
                    }));
                }
            }
            Err(e) => out.fail(e),
        }
    }
    out.merge(join(tasks).await);
    out
}

/// Opens `n` keep-alive connections, `batch` at a time, each after one request; they stay open
/// while the returned handles live.
pub async fn open_idle(addr: SocketAddr, n: usize, batch: usize, held: &mut Vec<H1>) -> Outcome {
    let mut out = Outcome::default();
    let mut left = n;
    while left > 0 {
        let k = left.min(batch.max(1));
        left -= k;
        let tasks: Vec<_> = (0..k)
            .map(|_| {
                tokio::spawn(async move {
                    let mut s = timed(h1_connect(addr)).await?;
                    h1_get(&mut s, false).await?;
                    anyhow::Ok(s)
                })
            })
            .collect();
        for t in tasks {
            match t.await {
                Ok(Ok(s)) => {
                    held.push(s);
                    out.requests += 1;
                }
                Ok(Err(e)) => out.fail(e),
                Err(e) => out.fail(e),
            }
        }
    }
    out
}
