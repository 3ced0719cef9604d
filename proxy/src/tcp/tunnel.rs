//! Tunnel origination (`tunneling_config`): the upstream connection carries one HTTP stream, a
//! CONNECT (or a POST) to the configured host; the downstream bytes travel inside it. The cluster's
//! protocol picks HTTP/2 (HBONE over mTLS) or HTTP/1.1.

use std::net::SocketAddr;

use http::{header::HOST, HeaderValue, Method, Request, StatusCode, Uri};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::tcp_proxy::Tunneling;
use crate::http::body;
use crate::http::route::{FormatContext, HeaderVars};
use crate::http::tunnel;
use crate::tls::ClientStream;
use crate::upstream::config::Protocol;
use crate::upstream::Cluster;

/// Either side of a tunnel's byte stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("tunnel hostname {0:?} is not a valid authority")]
    Hostname(String),
    #[error("tunnel handshake: {0}")]
    Http(#[from] hyper::Error),
    #[error("tunnel request: {0}")]
    Request(#[from] http::Error),
    #[error("tunnel post_path: {0}")]
    PostPath(#[from] http::uri::InvalidUri),
    #[error("tunnel refused with status {0}")]
    Refused(StatusCode),
}

/// The connection's addresses, for the hostname's and headers' command operators.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// Whether the tunnel speaks HTTP/2 on `stream`: an HTTP/2 cluster, or ALPN chose h2.
pub fn wants_h2(cluster: &Cluster) -> bool {
    cluster.spec().protocol.protocol == Protocol::Http2
}

/// Sends the tunnel's request on `stream` and returns the byte stream it carries once the upstream
/// answered 2xx; anything else closes the downstream connection, as Envoy does.
pub async fn originate(
    cfg: &Tunneling,
    cluster: &Cluster,
    stream: ClientStream,
    addrs: Addresses,
) -> Result<Box<dyn Io>, TunnelError> {
    let h2 = wants_h2(cluster) || stream.alpn() == Some(b"h2");
    let vars = HeaderVars {
        downstream_remote: Some(addrs.peer),
        downstream_local: Some(addrs.local),
        ..HeaderVars::default()
    };
    let hostname = cfg.hostname.format(&FormatContext {
        vars: &vars,
        request: None,
        response: None,
    });
    let authority: http::uri::Authority = hostname
        .parse()
        .map_err(|_| TunnelError::Hostname(hostname.clone()))?;
    let host = HeaderValue::from_str(&hostname).map_err(|_| TunnelError::Hostname(hostname))?;
    // POST carries the bytes in the bodies (through a pipe whose other end is the tunnel);
    // CONNECT in the upgraded stream.
    let (post_side, req_body, resp_writer) = match cfg.post_path {
        Some(_) => {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            let (r, w) = tokio::io::split(theirs);
            (Some(ours), tunnel::reader_body(r, ()), Some(w))
        }
        None => (None, body::empty(), None),
    };
    let mut req = match &cfg.post_path {
        Some(path) => {
            let uri = if h2 {
                Uri::builder()
                    .scheme("http")
                    .authority(authority)
                    .path_and_query(path.as_str())
                    .build()?
            } else {
                Uri::try_from(path.as_str())?
            };
            Request::builder()
                .method(Method::POST)
                .uri(uri)
                .body(req_body)?
        }
        None => Request::builder()
            .method(Method::CONNECT)
            .uri(Uri::from(authority))
            .body(req_body)?,
    };
    if !h2 {
        req.headers_mut().insert(HOST, host);
    }
    cfg.headers_to_add.apply(req.headers_mut(), &vars, false);
    let io = TokioIo::new(stream);
    let mut resp = if h2 {
        let mut b = http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new());
        let (mut sender, conn) = b.handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "tunnel h2 connection ended with an error");
            }
        });
        let resp = sender.send_request(req).await?;
        // The connection lives as long as its one stream; the sender may go.
        drop(sender);
        resp
    } else {
        let (mut sender, conn) = http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "tunnel HTTP/1.1 connection ended with an error");
            }
        });
        sender.send_request(req).await?
    };
    if !resp.status().is_success() {
        return Err(TunnelError::Refused(resp.status()));
    }
    match (post_side, resp_writer) {
        (Some(ours), Some(w)) => {
            tokio::spawn(tunnel::body_to_writer(resp.into_body(), w));
            Ok(Box::new(ours))
        }
        _ => {
            let upgraded = hyper::upgrade::on(&mut resp).await?;
            Ok(Box::new(TokioIo::new(upgraded)))
        }
    }
}
