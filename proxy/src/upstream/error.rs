//! Connect stage failures: why a request or connection never got an upstream response, with Envoy's
//! response flag and whether a retry policy may try again.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

/// A failure of the balance or connect stage. Every variant names its cluster (and endpoint when one
/// was picked) so that logs and local replies say where it happened.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A circuit breaker refused the request (`max_requests`, `max_pending_requests`,
    /// `max_connections` for tcp_proxy).
    #[error("cluster {cluster}: {limit} circuit breaker open")]
    Overflow {
        cluster: String,
        limit: &'static str,
    },
    /// No endpoint to pick (none configured, none resolved, or all unhealthy without panic routing).
    #[error("cluster {cluster}: no healthy upstream")]
    NoHealthyUpstream { cluster: String },
    #[error("cluster {cluster}: connecting to {endpoint}: {source}")]
    ConnectFailure {
        cluster: String,
        endpoint: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cluster {cluster}: connecting to {endpoint}: timed out after {timeout:?}")]
    ConnectTimeout {
        cluster: String,
        endpoint: SocketAddr,
        timeout: Duration,
    },
    /// The HTTP handshake on a fresh connection failed.
    #[error("cluster {cluster}: handshake with {endpoint}: {source}")]
    Handshake {
        cluster: String,
        endpoint: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// The TLS handshake with the endpoint failed (or the cluster's TLS secrets are not ready).
    #[error("cluster {cluster}: TLS with {endpoint}: {source}")]
    Tls {
        cluster: String,
        endpoint: SocketAddr,
        #[source]
        source: crate::tls::ConnectError,
    },
    /// The connection closed before the response headers arrived.
    #[error("cluster {cluster}: {endpoint} closed the connection before responding: {source}")]
    ConnectionTermination {
        cluster: String,
        endpoint: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// The stream was reset (HTTP/2 RST_STREAM, or a protocol error) before the response headers.
    #[error("cluster {cluster}: {endpoint} reset the stream before responding: {source}")]
    Reset {
        cluster: String,
        endpoint: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// The response from the endpoint was not valid HTTP.
    #[error("cluster {cluster}: protocol error from {endpoint}: {source}")]
    Protocol {
        cluster: String,
        endpoint: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    /// The request could not be sent because its own body failed (a downstream problem).
    #[error("cluster {cluster}: sending the request body to {endpoint}: {source}")]
    RequestBody {
        cluster: String,
        endpoint: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

impl UpstreamError {
    /// Envoy's `%RESPONSE_FLAGS%` letter code for this failure.
    pub fn response_flag(&self) -> &'static str {
        match self {
            Self::Overflow { .. } => "UO",
            Self::NoHealthyUpstream { .. } => "UH",
            Self::ConnectFailure { .. }
            | Self::ConnectTimeout { .. }
            | Self::Handshake { .. }
            | Self::Tls { .. } => "UF",
            Self::ConnectionTermination { .. } => "UC",
            Self::Reset { .. } => "UR",
            Self::Protocol { .. } => "UPE",
            Self::RequestBody { .. } => "DPE",
        }
    }

    /// The status of the local reply Envoy sends for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Protocol { .. } => StatusCode::BAD_GATEWAY,
            Self::RequestBody { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// `retry_on: connect-failure` (also part of `5xx`, `gateway-error` and `reset`).
    pub fn is_retryable_connect_failure(&self) -> bool {
        matches!(
            self,
            Self::ConnectFailure { .. }
                | Self::ConnectTimeout { .. }
                | Self::Handshake { .. }
                | Self::Tls { .. }
        )
    }

    /// `retry_on: reset`: the upstream disconnected or reset before responding.
    pub fn is_reset(&self) -> bool {
        matches!(
            self,
            Self::ConnectionTermination { .. } | Self::Reset { .. } | Self::Protocol { .. }
        )
    }

    /// `retry_on: retriable-status-codes`/`5xx` treat overflow as not retryable; Envoy never retries a
    /// request its own circuit breaker refused.
    pub fn is_overflow(&self) -> bool {
        matches!(self, Self::Overflow { .. })
    }

    /// The endpoint the failure happened on, if one was picked (`%UPSTREAM_HOST%`).
    pub fn endpoint(&self) -> Option<SocketAddr> {
        match self {
            Self::Overflow { .. } | Self::NoHealthyUpstream { .. } => None,
            Self::ConnectFailure { endpoint, .. }
            | Self::ConnectTimeout { endpoint, .. }
            | Self::Handshake { endpoint, .. }
            | Self::Tls { endpoint, .. }
            | Self::ConnectionTermination { endpoint, .. }
            | Self::Reset { endpoint, .. }
            | Self::Protocol { endpoint, .. }
            | Self::RequestBody { endpoint, .. } => Some(*endpoint),
        }
    }

    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`: why the connection to the endpoint failed, for
    /// failures of the connection itself. Envoy 1.40 says `delayed connect error: Connection refused`
    /// for a refused connect; for TLS it prints BoringSSL's error queue, which rustls has no
    /// equivalent of, so the reason keeps Envoy's `TLS error:` framing around rustls' own words.
    pub fn transport_failure_reason(&self) -> Option<String> {
        match self {
            Self::ConnectFailure { source, .. } => {
                Some(format!("delayed connect error: {}", os_error_text(source)))
            }
            Self::Tls { source, .. } => {
                Some(format!("TLS error: {}:TLS error end", tls_reason(source)))
            }
            _ => None,
        }
    }

    /// Envoy's local reply body text (`upstream connect error or disconnect/reset before headers...`).
    pub fn local_reply_body(&self) -> String {
        match self {
            Self::Overflow { .. } => "upstream connect error or disconnect/reset before headers. reset reason: overflow".into(),
            Self::NoHealthyUpstream { .. } => "no healthy upstream".into(),
            // Envoy names the transport failure only for TLS handshakes; a refused TCP connect reads so.
            Self::ConnectFailure { .. } => {
                "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure".into()
            }
            Self::Tls { source, .. } => format!("upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: {source}"),
            Self::ConnectTimeout { .. } => "upstream connect error or disconnect/reset before headers. reset reason: connection timeout".into(),
            Self::Handshake { .. } | Self::ConnectionTermination { .. } => "upstream connect error or disconnect/reset before headers. reset reason: connection termination".into(),
            Self::Reset { .. } => "upstream connect error or disconnect/reset before headers. reset reason: remote reset".into(),
            Self::Protocol { .. } => "upstream connect error or disconnect/reset before headers. reset reason: protocol error".into(),
            Self::RequestBody { .. } => "upstream connect error or disconnect/reset before headers. reset reason: local reset".into(),
        }
    }
}

/// A handshake failure in words. A SAN mismatch reads as Envoy's own detail does
/// (`verify cert failed: SAN matcher, certificate SANs are [a, b]`); rustls' other errors keep
/// their own text.
fn tls_reason(e: &crate::tls::ConnectError) -> String {
    use rustls::{CertificateError, Error};
    let crate::tls::ConnectError::Handshake { source, .. } = e else {
        return e.to_string();
    };
    let san = source
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .and_then(|tls| match tls {
            Error::InvalidCertificate(CertificateError::Other(other)) => {
                other.0.downcast_ref::<remora_certs::SanMismatch>()
            }
            _ => None,
        });
    match san {
        Some(m) => format!(
            "verify cert failed: SAN matcher, certificate SANs are [{}]",
            m.presented().join(", ")
        ),
        None => match source.get_ref() {
            Some(inner) => inner.to_string(),
            None => source.to_string(),
        },
    }
}

/// The system's text for an error without Rust's ` (os error N)` suffix, as strerror prints it.
fn os_error_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match (e.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => text[..at].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connect_reads_as_envoy_1_40_prints_it() {
        let e = UpstreamError::ConnectFailure {
            cluster: "web".into(),
            endpoint: "127.0.0.1:1".parse().expect("addr"),
            source: std::io::Error::from_raw_os_error(111),
        };
        assert_eq!(
            e.transport_failure_reason().as_deref(),
            Some("delayed connect error: Connection refused")
        );
    }

    #[test]
    fn tls_failures_keep_envoys_framing_and_others_have_none() {
        let e = UpstreamError::Tls {
            cluster: "web".into(),
            endpoint: "127.0.0.1:1".parse().expect("addr"),
            source: crate::tls::ConnectError::NotReady("cluster web".into()),
        };
        let reason = e.transport_failure_reason().expect("a reason");
        assert!(reason.starts_with("TLS error: "), "{reason}");
        assert!(reason.ends_with(":TLS error end"), "{reason}");
        assert!(reason.contains("not ready"), "{reason}");
        let e = UpstreamError::NoHealthyUpstream {
            cluster: "web".into(),
        };
        assert_eq!(e.transport_failure_reason(), None);
    }
}
