//! Detect, inspectors: `tls_inspector` and `http_inspector` run over the shared peek buffer, each
//! adding what it found to the `Detected` of the connection.

use tracing::debug;

use super::client_hello::{self, Outcome as Hello};
use super::http::{self, Outcome as Http};
use super::peek::Peeker;
use super::stats::{HttpStats, TlsStats};
use super::{DetectError, Detected, RAW_BUFFER, TLS};
use crate::listener::TlsInspector;

/// Envoy's `TLS_MAX_CLIENT_HELLO`, the default and the ceiling of `max_client_hello_size`.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

pub(super) async fn tls(
    peeker: &mut Peeker<'_>,
    config: &TlsInspector,
    stats: &TlsStats,
    detected: &mut Detected,
) -> Result<(), DetectError> {
    let max = config
        .max_client_hello_size
        .map_or(MAX_CLIENT_HELLO, |m| {
            usize::try_from(m).unwrap_or(usize::MAX)
        })
        .min(MAX_CLIENT_HELLO);
    loop {
        let seen = peeker.data().len();
        match client_hello::parse(peeker.data()) {
            Hello::Incomplete if seen >= max => {
                stats.client_hello_too_large.inc();
                return Err(DetectError::ClientHelloTooLarge(max));
            }
            Hello::Incomplete => peeker.more(max).await?,
            Hello::NotTls if config.close_connection_on_client_hello_parsing_errors => {
                if seen >= max {
                    stats.client_hello_too_large.inc();
                }
                return Err(DetectError::NotTls);
            }
            Hello::NotTls => {
                debug!(bytes = seen, "tls_inspector: not TLS");
                stats.tls_not_found.inc();
                return Ok(());
            }
            Hello::Hello(hello) => {
                stats.tls_found.inc();
                match &hello.server_name {
                    Some(_) => stats.sni_found.inc(),
                    None => stats.sni_not_found.inc(),
                }
                match &hello.alpn {
                    Some(_) => stats.alpn_found.inc(),
                    None => stats.alpn_not_found.inc(),
                }
                debug!(sni = ?hello.server_name, alpn = ?hello.alpn, "tls_inspector: ClientHello");
                detected.transport_protocol = TLS;
                detected.server_name = hello.server_name;
                if let Some(alpn) = hello.alpn {
                    detected.application_protocols = alpn;
                }
                return Ok(());
            }
        }
    }
}

pub(super) async fn http(
    peeker: &mut Peeker<'_>,
    stats: &HttpStats,
    detected: &mut Detected,
) -> Result<(), DetectError> {
    // HTTP inside TLS is for the TLS stack's ALPN to tell.
    if detected.transport_protocol != RAW_BUFFER {
        return Ok(());
    }
    loop {
        let seen = peeker.data().len();
        let outcome = http::parse(peeker.data());
        let counter = match outcome {
            Http::Incomplete if seen >= http::MAX_INSPECT => {
                stats.read_error.inc();
                return Err(DetectError::RequestLineTooLong(http::MAX_INSPECT));
            }
            Http::Incomplete => {
                peeker.more(http::MAX_INSPECT).await?;
                continue;
            }
            Http::NotHttp => &stats.http_not_found,
            Http::Http10 => &stats.http10_found,
            Http::Http11 => &stats.http11_found,
            Http::H2c => &stats.http2_found,
        };
        counter.inc();
        debug!(protocol = ?outcome.alpn(), "http_inspector");
        if let Some(alpn) = outcome.alpn() {
            detected.application_protocols = vec![alpn.to_string()];
        }
        return Ok(());
    }
}
