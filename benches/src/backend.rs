//! The backend: an in-process HTTP/1.1 + h2c server with a fixed 200 answer, and a TCP sink.
//!
//! It runs on the load generator's runtime (core 1). hyper answers a keep-alive request in a few
//! microseconds, faster here than an nginx `return 200` in another process would be, and being in
//! process lets the TCP sink count received bytes exactly.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::ports::loopback;

/// The body every request gets: small, as a typical JSON API answer.
pub const BODY: &[u8] = b"{\"status\":\"ok\",\"service\":\"remora-bench-backend\"}\n";

/// The running backend: where it listens and what the TCP sink has received.
#[derive(Debug, Clone)]
pub struct Backend {
    pub http: SocketAddr,
    pub tcp: SocketAddr,
    tcp_bytes: Arc<AtomicU64>,
}

impl Backend {
    /// Binds both servers on loopback ports and serves them on the current runtime.
    pub async fn start() -> anyhow::Result<Backend> {
        let http = TcpListener::bind(loopback(0)).await?;
        let tcp = TcpListener::bind(loopback(0)).await?;
        let tcp_bytes = Arc::new(AtomicU64::new(0));
        let b = Backend {
            http: http.local_addr()?,
            tcp: tcp.local_addr()?,
            tcp_bytes: tcp_bytes.clone(),
        };
        tokio::spawn(serve_http(http));
        tokio::spawn(serve_sink(tcp, tcp_bytes));
        Ok(b)
    }

    /// Bytes received by the TCP sink so far.
    pub fn tcp_bytes(&self) -> u64 {
        self.tcp_bytes.load(Ordering::Relaxed)
    }
}

async fn answer(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

async fn serve_http(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: keep serving the connections there are.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut b = auto::Builder::new(TokioExecutor::new());
            b.http2().max_concurrent_streams(1024);
            // A connection error is the peer going away; nothing to report.
            let _ = b
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

async fn serve_sink(listener: TcpListener, count: Arc<AtomicU64>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            continue;
        };
        let count = count.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
    }
}
