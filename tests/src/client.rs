//! Downstream client: HTTP/1.1 and h2c (prior knowledge) over hyper, one connection per `Client`,
//! in plaintext or over TLS (rustls).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// How long any one exchange may take before the test gives up on it.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2c,
}

/// A request as a test writes it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path with query, `/a/b?c=d`.
    pub path: String,
    /// `Host` (HTTP/1.1) or `:authority` (h2).
    pub authority: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_string(),
            path: path.to_string(),
            authority: "example.com".to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    pub fn host(mut self, authority: &str) -> Self {
        self.authority = authority.to_string();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// A response with lowercased header names, in arrival order.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Response {
    /// The first value of `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The echo backend's JSON view of the request, when the response is one.
    pub fn echo(&self) -> Option<crate::backend::Echo> {
        serde_json::from_slice(&self.body).ok()
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// How a [`Client`] speaks TLS: the server name it sends and verifies, the roots it trusts and the
/// certificate it presents, if any. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
    server_name: rustls::pki_types::ServerName<'static>,
}

impl Tls {
    /// Verifies the server as `host` against the CA in `ca_pem`; presents `identity` when the
    /// server asks for a client certificate.
    pub fn new(host: &str, ca_pem: &Path, identity: Option<&crate::pki::Identity>) -> Tls {
        let ca = std::fs::read(ca_pem).expect("read CA");
        let mut roots = rustls::RootCertStore::empty();
        for cert in remora_certs::certs_from_pem("ca", &ca).expect("CA PEM") {
            roots.add(cert).expect("CA root");
        }
        let builder = rustls::ClientConfig::builder_with_provider(remora_certs::provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots);
        let config = match identity {
            Some(id) => {
                let chain = remora_certs::certs_from_pem("cert", id.cert_pem().as_bytes())
                    .expect("client chain");
                let key = remora_certs::private_key_from_pem("key", id.key_pem().as_bytes())
                    .expect("client key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client cert")
            }
            None => builder.with_no_client_auth(),
        };
        Tls {
            config: Arc::new(config),
            server_name: rustls::pki_types::ServerName::try_from(host.to_string())
                .expect("server name"),
        }
    }

    /// A TLS connection over `tcp` (raw bytes, for TCP chains).
    pub async fn connect(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
    }
}

/// One downstream connection, reopened transparently when the proxy closes it.
pub struct Client {
    addr: SocketAddr,
    protocol: Protocol,
    tls: Option<Tls>,
    sender: Option<Sender>,
    /// Connections opened so far (1 for a well-behaved keep-alive run).
    pub connections: usize,
    /// The serial of the leaf certificate the server presented on the last TLS handshake
    /// (lowercase hex, as [`crate::pki::Identity::serial`]).
    pub server_serial: Option<String>,
}

impl Client {
    pub fn new(addr: SocketAddr, protocol: Protocol) -> Self {
        Self {
            addr,
            protocol,
            tls: None,
            sender: None,
            connections: 0,
            server_serial: None,
        }
    }

    /// Speaks TLS on every connection (`Protocol::H2c` then means HTTP/2 with prior knowledge).
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    async fn connect(&mut self) -> anyhow::Result<()> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let sender = match &self.tls {
            None => handshake(self.protocol, TokioIo::new(tcp)).await?,
            Some(tls) => {
                let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {}", self.addr))?;
                self.server_serial = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|leaf| remora_certs::CertInfo::parse("server", 0, leaf).ok())
                    .map(|info| info.serial().to_string());
                handshake(self.protocol, TokioIo::new(stream)).await?
            }
        };
        self.sender = Some(sender);
        self.connections += 1;
        Ok(())
    }

    fn usable(&self) -> bool {
        match &self.sender {
            Some(Sender::H1(s)) => !s.is_closed(),
            Some(Sender::H2(s)) => !s.is_closed(),
            None => false,
        }
    }

    pub async fn send(&mut self, req: &Request) -> anyhow::Result<Response> {
        tokio::time::timeout(EXCHANGE_TIMEOUT, self.send_inner(req))
            .await
            .map_err(|_| {
                anyhow!(
                    "no response within {EXCHANGE_TIMEOUT:?} for {} {}",
                    req.method,
                    req.path
                )
            })?
    }

    async fn send_inner(&mut self, req: &Request) -> anyhow::Result<Response> {
        match self.send_once(req).await {
            // Never sent (the connection went away first, e.g. an HTTP/2 GOAWAY): a new connection
            // may carry it, as real clients do.
            Err(e) if never_processed(&e) => {
                self.sender = None;
                self.send_once(req).await
            }
            r => r,
        }
    }

    async fn send_once(&mut self, req: &Request) -> anyhow::Result<Response> {
        if !self.usable() {
            self.connect().await?;
        }
        let mut b = hyper::Request::builder().method(req.method.as_str());
        b = match self.protocol {
            Protocol::Http1 => b
                .uri(req.path.as_str())
                .header("host", req.authority.as_str()),
            Protocol::H2c => b.uri(format!("http://{}{}", req.authority, req.path)),
        };
        for (n, v) in &req.headers {
            b = b.header(n.as_str(), v.as_str());
        }
        let hreq = b.body(Full::new(req.body.clone()))?;
        let resp = match self.sender.as_mut() {
            Some(Sender::H1(s)) => {
                s.ready().await?;
                s.send_request(hreq).await?
            }
            Some(Sender::H2(s)) => {
                s.ready().await?;
                s.send_request(hreq).await?
            }
            None => return Err(anyhow!("not connected")),
        };
        let status = resp.status().as_u16();
        // A client honours `Connection: close`: the next request opens a new connection instead of
        // racing the server's close on this one.
        let closing = resp
            .headers()
            .get_all(hyper::header::CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if closing {
            self.sender = None;
        }
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

async fn handshake<T>(protocol: Protocol, io: T) -> anyhow::Result<Sender>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    Ok(match protocol {
        Protocol::Http1 => {
            let (s, conn) = http1::handshake(io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::H1(s)
        }
        Protocol::H2c => {
            let (s, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::H2(s)
        }
    })
}

/// Whether the server guarantees it did not process the request: hyper canceled it before sending,
/// or HTTP/2 refused the stream (REFUSED_STREAM, or a graceful GOAWAY below its id). Clients retry
/// those on a new connection.
fn never_processed(e: &anyhow::Error) -> bool {
    let Some(h) = e.downcast_ref::<hyper::Error>() else {
        return false;
    };
    if h.is_canceled() {
        return true;
    }
    let mut source = std::error::Error::source(h);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR));
        }
        source = s.source();
    }
    false
}

/// Send one request on a fresh connection.
pub async fn send(addr: SocketAddr, protocol: Protocol, req: &Request) -> anyhow::Result<Response> {
    Client::new(addr, protocol).send(req).await
}

/// `GET path` over HTTP/1.1 on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Response> {
    send(addr, Protocol::Http1, &Request::get(path)).await
}
