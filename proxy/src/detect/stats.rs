//! Detect, stats: the counters Envoy keeps for its listener filters.
//!
//! The inspectors count at the root scope (`tls_inspector.tls_found`, `http_inspector.http11_found`),
//! shared by every listener that has them; the listener filter manager counts per listener
//! (`listener.<address>.downstream_pre_cx_timeout`).

use crate::stats::{Counter, Store};

/// `tls_inspector.*`.
#[derive(Debug, Clone)]
pub struct TlsStats {
    pub client_hello_too_large: Counter,
    pub tls_found: Counter,
    pub tls_not_found: Counter,
    pub alpn_found: Counter,
    pub alpn_not_found: Counter,
    pub sni_found: Counter,
    pub sni_not_found: Counter,
}

impl TlsStats {
    pub fn new(store: &Store) -> Self {
        let s = store.scope("tls_inspector.");
        Self {
            client_hello_too_large: s.counter("client_hello_too_large"),
            tls_found: s.counter("tls_found"),
            tls_not_found: s.counter("tls_not_found"),
            alpn_found: s.counter("alpn_found"),
            alpn_not_found: s.counter("alpn_not_found"),
            sni_found: s.counter("sni_found"),
            sni_not_found: s.counter("sni_not_found"),
        }
    }
}

/// `http_inspector.*`.
#[derive(Debug, Clone)]
pub struct HttpStats {
    pub read_error: Counter,
    pub http10_found: Counter,
    pub http11_found: Counter,
    pub http2_found: Counter,
    pub http_not_found: Counter,
}

impl HttpStats {
    pub fn new(store: &Store) -> Self {
        let s = store.scope("http_inspector.");
        Self {
            read_error: s.counter("read_error"),
            http10_found: s.counter("http10_found"),
            http11_found: s.counter("http11_found"),
            http2_found: s.counter("http2_found"),
            http_not_found: s.counter("http_not_found"),
        }
    }
}

/// The listener's share (`listener.<address>.…`).
#[derive(Debug, Clone)]
pub struct ListenerFilterStats {
    /// The listener filters did not finish within `listener_filters_timeout`.
    pub downstream_pre_cx_timeout: Counter,
    /// The peer closed before the listener filters finished.
    pub downstream_listener_filter_remote_close: Counter,
    /// Reading the first bytes failed.
    pub downstream_listener_filter_error: Counter,
}

impl ListenerFilterStats {
    /// The stats under `prefix` (`listener.127.0.0.1_8080`).
    pub fn new(store: &Store, prefix: &str) -> Self {
        let s = store.scope(format!("{prefix}."));
        Self {
            downstream_pre_cx_timeout: s.counter("downstream_pre_cx_timeout"),
            downstream_listener_filter_remote_close: s
                .counter("downstream_listener_filter_remote_close"),
            downstream_listener_filter_error: s.counter("downstream_listener_filter_error"),
        }
    }
}
