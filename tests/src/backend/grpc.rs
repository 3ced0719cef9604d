//! A gRPC-shaped h2c backend: answers every call with the request's messages echoed back, then
//! trailers carrying `grpc-status` (from the request's `x-grpc-status`, default 0), or with
//! `x-grpc-trailers-only: 1` a trailers-only response (the status in the headers, no body).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

type GrpcBody = BoxBody<Bytes, Infallible>;

/// A running gRPC backend on 127.0.0.1; stops accepting when dropped.
pub struct GrpcBackend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcBackend {
    pub async fn start() -> GrpcBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind grpc backend");
        let addr = listener.local_addr().expect("local_addr");
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service_fn(handle))
                        .await;
                });
            }
        });
        GrpcBackend { addr, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One gRPC message: no compression, a 4-byte big-endian length, the payload.
pub fn message(payload: &[u8]) -> Vec<u8> {
    let mut m = vec![0];
    m.extend((payload.len() as u32).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

async fn handle(req: hyper::Request<Incoming>) -> Result<hyper::Response<GrpcBody>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let status = header("x-grpc-status").unwrap_or_else(|| "0".into());
    let trailers_only = header("x-grpc-trailers-only").is_some();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let response = hyper::Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    let status_value = || {
        status
            .parse()
            .unwrap_or(http::HeaderValue::from_static("2"))
    };
    let response = if trailers_only {
        // HEADERS with END_STREAM: the status travels in the headers.
        response
            .header("grpc-status", status_value())
            .body(Empty::new().boxed())
    } else {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", status_value());
        let frames = vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
        response.body(StreamBody::new(tokio_stream::iter(frames)).boxed())
    };
    Ok(response.expect("a valid response"))
}
