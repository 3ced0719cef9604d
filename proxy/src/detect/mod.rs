//! Detect: the listener filters that read a connection's first bytes, without consuming them, to
//! choose its filter chain — `tls_inspector` (TLS or not, SNI, ALPN) and `http_inspector` (`h2c`,
//! `http/1.1`, `http/1.0`).
//!
//! Per connection, as Envoy's listener filter manager: the listener's filters run in order (a
//! filter whose `filter_disabled` matches the destination port is skipped) within
//! `listener_filters_timeout` (zero: no limit). On the timeout the connection closes, or, with
//! `continue_on_listener_filters_timeout`, goes on with what the filters that finished found (so a
//! server-first protocol waits once, then works). A peer that closes before the filters finish
//! closes the connection. What was not detected stays `raw_buffer`, no SNI, no ALPN.
//!
//! ```text
//! let detector = Detector::new(&listener_config, &store);      // once per listener
//! let detected = detector.run(&stream, local).await?;           // per connection; Err: close it
//! let protocols = detected.protocols();
//! accepted.select(&detected.match_input(local, peer, &protocols));
//! ```

pub mod client_hello;
mod cursor;
pub mod http;
mod inspect;
pub mod peek;
pub mod stats;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::listener::{ListenerConfig, ListenerFilter, ListenerFilterKind, MatchInput};
use crate::stats::Store;
pub use inspect::MAX_CLIENT_HELLO;
use peek::{PeekError, Peeker};
use stats::{HttpStats, ListenerFilterStats, TlsStats};

/// The transport protocol of a TLS ClientHello.
pub const TLS: &str = "tls";
/// The transport protocol of everything else.
pub const RAW_BUFFER: &str = "raw_buffer";

/// What the listener filters found; later stages read it (TLS termination, `%REQUESTED_SERVER_NAME%`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// [`TLS`] or [`RAW_BUFFER`].
    pub transport_protocol: &'static str,
    /// The SNI, lowercased.
    pub server_name: Option<String>,
    /// The ClientHello's ALPN list, or the one protocol `http_inspector` found.
    pub application_protocols: Vec<String>,
}

impl Default for Detected {
    fn default() -> Self {
        Self {
            transport_protocol: RAW_BUFFER,
            server_name: None,
            application_protocols: Vec::new(),
        }
    }
}

impl Detected {
    /// The application protocols borrowed, in the shape `MatchInput` takes.
    pub fn protocols(&self) -> Vec<&str> {
        self.application_protocols
            .iter()
            .map(String::as_str)
            .collect()
    }

    /// The filter-chain match input for a connection from `source` to `destination`.
    pub fn match_input<'a>(
        &'a self,
        destination: SocketAddr,
        source: SocketAddr,
        protocols: &'a [&'a str],
    ) -> MatchInput<'a> {
        MatchInput {
            destination,
            source,
            direct_source: source,
            server_name: self.server_name.as_deref(),
            transport_protocol: self.transport_protocol,
            application_protocols: protocols,
        }
    }
}

/// Why the connection must close before a chain is chosen.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("listener filters did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the peer closed the connection during listener filters")]
    Closed,
    #[error("reading the first bytes: {0}")]
    Io(std::io::Error),
    #[error("no complete ClientHello within {0} bytes")]
    ClientHelloTooLarge(usize),
    #[error("not a TLS ClientHello (close_connection_on_client_hello_parsing_errors)")]
    NotTls,
    #[error("no HTTP request line within {0} bytes")]
    RequestLineTooLong(usize),
}

impl From<PeekError> for DetectError {
    fn from(e: PeekError) -> Self {
        match e {
            PeekError::Closed => DetectError::Closed,
            PeekError::Io(e) => DetectError::Io(e),
        }
    }
}

/// One listener's listener filters, with their stats; built once per listener.
#[derive(Debug)]
pub struct Detector {
    filters: Vec<ListenerFilter>,
    timeout: Option<Duration>,
    continue_on_timeout: bool,
    tls: Option<TlsStats>,
    http: Option<HttpStats>,
    stats: ListenerFilterStats,
}

impl Detector {
    pub fn new<C>(config: &ListenerConfig<C>, store: &Store) -> Self {
        let has =
            |f: fn(&ListenerFilterKind) -> bool| config.listener_filters.iter().any(|l| f(&l.kind));
        Self {
            filters: config.listener_filters.clone(),
            timeout: Some(config.listener_filters_timeout).filter(|t| !t.is_zero()),
            continue_on_timeout: config.continue_on_listener_filters_timeout,
            tls: has(|k| matches!(k, ListenerFilterKind::TlsInspector(_)))
                .then(|| TlsStats::new(store)),
            http: has(|k| matches!(k, ListenerFilterKind::HttpInspector))
                .then(|| HttpStats::new(store)),
            stats: ListenerFilterStats::new(store, &config.stat_prefix),
        }
    }

    /// Runs the listener filters on `stream`, accepted on `destination`. An error means: close.
    pub async fn run(
        &self,
        stream: &TcpStream,
        destination: SocketAddr,
    ) -> Result<Detected, DetectError> {
        let mut detected = Detected::default();
        let work = self.inspect(stream, destination.port(), &mut detected);
        let result = match self.timeout {
            None => work.await,
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(r) => r,
                Err(_) => {
                    self.stats.downstream_pre_cx_timeout.inc();
                    if self.continue_on_timeout {
                        Ok(())
                    } else {
                        Err(DetectError::Timeout(limit))
                    }
                }
            },
        };
        match &result {
            Err(DetectError::Closed) => self.stats.downstream_listener_filter_remote_close.inc(),
            Err(DetectError::Io(_)) => self.stats.downstream_listener_filter_error.inc(),
            _ => {}
        }
        result.map(|()| detected)
    }

    async fn inspect(
        &self,
        stream: &TcpStream,
        destination_port: u16,
        detected: &mut Detected,
    ) -> Result<(), DetectError> {
        let mut peeker = Peeker::new(stream);
        for filter in &self.filters {
            if filter
                .disabled
                .as_ref()
                .is_some_and(|p| p.matches(destination_port))
            {
                continue;
            }
            let (tls, http) = (self.tls.as_ref(), self.http.as_ref());
            match (&filter.kind, tls, http) {
                (ListenerFilterKind::TlsInspector(cfg), Some(stats), _) => {
                    inspect::tls(&mut peeker, cfg, stats, detected).await?;
                }
                (ListenerFilterKind::HttpInspector, _, Some(stats)) => {
                    inspect::http(&mut peeker, stats, detected).await?;
                }
                // original_dst restores the destination in the accept stage; it reads no bytes.
                _ => {}
            }
        }
        Ok(())
    }
}

/// What the first bytes on a TLS filter chain are, before the handshake reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsStart {
    /// A TLS handshake record, or nothing yet: leave it to the handshake.
    Handshake,
    /// An HTTP/1 request line (`GET `, `POST `, ...): BoringSSL, and so Envoy, closes silently.
    Http,
    /// Anything else: BoringSSL answers a `protocol_version` alert.
    Garbage,
}

/// Peeks (without consuming) at the start of a connection on a TLS chain.
pub async fn tls_start(stream: &tokio::net::TcpStream) -> TlsStart {
    let mut buf = [0u8; 8];
    let peeked =
        tokio::time::timeout(std::time::Duration::from_millis(100), stream.peek(&mut buf)).await;
    let Ok(Ok(n)) = peeked else {
        return TlsStart::Handshake;
    };
    let head = &buf[..n];
    match head.first() {
        None | Some(0x16) => TlsStart::Handshake,
        _ => match head.iter().position(|b| *b == b' ') {
            Some(i) if i >= 3 && head[..i].iter().all(u8::is_ascii_uppercase) => TlsStart::Http,
            _ => TlsStart::Garbage,
        },
    }
}
