//! HTTP echo backend: answers with a JSON view of the request, honouring the knobs.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use super::knobs::Knobs;

/// What the backend saw, as it reports it in every response body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Echo {
    pub backend: String,
    pub method: String,
    /// Path with query.
    pub path: String,
    /// `Host` header, or the `:authority` of an h2 request.
    pub host: String,
    /// Lowercased names; repeated headers joined with `,`.
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
}

impl Echo {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

struct State {
    name: String,
    connections: AtomicUsize,
    /// Connections still open.
    open: AtomicUsize,
    requests: AtomicUsize,
    failures: Mutex<HashMap<String, u32>>,
}

/// A running echo backend on 127.0.0.1; stops accepting when dropped.
pub struct HttpBackend {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpBackend {
    /// Bind on a fresh loopback port and serve HTTP/1.1 and h2c.
    pub async fn start(name: &str) -> HttpBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("local_addr");
        let state = Arc::new(State {
            name: name.to_string(),
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            failures: Mutex::new(HashMap::new()),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                st.connections.fetch_add(1, Ordering::Relaxed);
                st.open.fetch_add(1, Ordering::Relaxed);
                let _ = tcp.set_nodelay(true);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc_st = st.clone();
                    let svc = service_fn(move |req| handle(svc_st.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                        .await;
                    st.open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        HttpBackend { addr, state, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Connections open now (the proxy's pooled and busy ones).
    pub fn open(&self) -> usize {
        self.state.open.load(Ordering::Relaxed)
    }

    /// Requests received so far (including failed and reset ones).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::Relaxed)
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The error a handler returns to make hyper drop the connection without answering.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset by test backend")
    }
}

impl std::error::Error for Reset {}

async fn handle(
    st: Arc<State>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Reset> {
    st.requests.fetch_add(1, Ordering::Relaxed);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let knobs = Knobs::read(&path, req.headers());
    if let Some(d) = knobs.delay {
        tokio::time::sleep(d).await;
    }
    if knobs.reset {
        return Err(Reset);
    }
    let mut status = knobs.status.unwrap_or(200);
    if knobs.fail_times > 0 {
        let mut failures = st.failures.lock().await;
        let seen = failures.entry(knobs.fail_key.clone()).or_insert(0);
        *seen += 1;
        if *seen <= knobs.fail_times {
            if knobs.fail_reset {
                return Err(Reset);
            }
            status = knobs.fail_status;
        }
    }
    if is_websocket(&req) {
        return Ok(upgrade(req));
    }

    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (n, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(n.as_str().to_string())
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let body = match req.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => return Err(Reset),
    };
    let echo = Echo {
        backend: st.name.clone(),
        method,
        path,
        host,
        headers,
        body,
        version,
    };
    let json = serde_json::to_vec(&echo).unwrap_or_default();
    let mut resp = hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-echo-backend", st.name.as_str());
    for (n, v) in &knobs.response_headers {
        resp = resp.header(n.as_str(), v.as_str());
    }
    resp.body(Full::new(Bytes::from(json))).map_err(|_| Reset)
}

fn is_websocket(req: &hyper::Request<Incoming>) -> bool {
    req.headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Accept the upgrade and echo raw bytes on the upgraded stream; the handshake's accept key is
/// not checked by proxies, so a fixed one does.
fn upgrade(req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    hyper::Response::builder()
        .status(101)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}
