//! Tests of the balance and connect stages, against in-process hyper servers on 127.0.0.1:0.

mod balance;
mod breakers;
mod config;
mod dynamic;
mod internal;
mod pool;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::{ClusterManager, SendContext, Sent};
use crate::config::parse::{from_yaml, ParseOptions};
use crate::config::{ConfigErrors, Path};
use crate::http::body;
use crate::stats::Store;

/// What a test backend saw.
#[derive(Debug, Default)]
pub(super) struct Seen {
    pub accepts: AtomicUsize,
    pub requests: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

pub(super) struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

/// A backend answering `name` (and the request's authority and Host in headers) after `delay`.
pub(super) async fn backend(name: &'static str, h2: bool, delay: Duration) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            s.accepts.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        s.requests.fetch_add(1, Ordering::SeqCst);
                        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        s.in_flight.fetch_sub(1, Ordering::SeqCst);
                        let authority = req
                            .uri()
                            .authority()
                            .map(|a| a.to_string())
                            .unwrap_or_default();
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        let resp = http::Response::builder()
                            .header("x-authority", authority)
                            .header("x-host", host)
                            .header("x-uri", req.uri().to_string())
                            .body(Full::new(Bytes::from_static(name.as_bytes())))
                            .expect("response");
                        Ok::<_, Infallible>(resp)
                    }
                });
                let io = TokioIo::new(stream);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    Backend { addr, seen }
}

pub(super) fn parse(yaml: &str) -> Vec<envoy_types::pb::envoy::config::cluster::v3::Cluster> {
    let b: Bootstrap = from_yaml(yaml, ParseOptions::default()).expect("bootstrap parses");
    b.static_resources.expect("static_resources").clusters
}

pub(super) fn manager(yaml: &str) -> Result<(ClusterManager, Store), ConfigErrors> {
    let store = Store::new();
    let path = Path::root("static_resources").field("clusters");
    ClusterManager::from_protos(&parse(yaml), &path, &store).map(|m| (m, store))
}

/// A one-cluster config named `c` with the given extra cluster fields and endpoints.
pub(super) fn one_cluster(extra: &str, endpoints: &[SocketAddr]) -> String {
    let eps: String = endpoints
        .iter()
        .map(|a| {
            format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!(
        "static_resources:\n  clusters:\n  - name: c\n    connect_timeout: 1s\n{extra}    load_assignment:\n      cluster_name: c\n      endpoints:\n      - lb_endpoints:\n{eps}"
    )
}

pub(super) fn get(host: &str) -> http::Request<body::BoxBody> {
    http::Request::builder()
        .uri("/path?q=1")
        .header("host", host)
        .body(body::empty())
        .expect("request")
}

pub(super) struct Fetched {
    pub parts: http::response::Parts,
    pub upstream: SocketAddr,
    pub body: String,
}

/// Sends a GET through cluster `c` and reads the whole body.
pub(super) async fn fetch(m: &ClusterManager, host: &str) -> Fetched {
    let c = m.get("c").expect("cluster c");
    let sent: Sent = c
        .send(get(host), &SendContext::default())
        .await
        .expect("response");
    let (parts, body) = sent.response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    Fetched {
        parts,
        upstream: sent.upstream,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

#[test]
fn manager_and_send_future_cross_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let (m, _) = manager(&one_cluster("", &["127.0.0.1:1".parse().expect("addr")])).expect("valid");
    send_sync(&m);
    let c = m.get("c").expect("c");
    let ctx = SendContext::default();
    let fut = c.send(get("h"), &ctx);
    send(&fut);
}
