//! rustls configs assembled from this crate's parts, always on the ring provider.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::ResolvesClientCert;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::ResolvesServerCert;
use rustls::{ClientConfig, ServerConfig, SupportedProtocolVersion};

use crate::error::CertError;

/// A server config presenting `certs` and verifying clients with `clients` (for example a
/// [`crate::DownstreamCertVerifier`], or `rustls::server::WebPkiClientVerifier::no_client_auth()`).
///
/// `versions` restricts the protocol versions (`&[&rustls::version::TLS13]` for Envoy's
/// `tls_minimum_protocol_version: TLSv1_3`).
pub fn server_config(
    versions: &[&'static SupportedProtocolVersion],
    clients: Arc<dyn ClientCertVerifier>,
    certs: Arc<dyn ResolvesServerCert>,
) -> Result<ServerConfig, CertError> {
    Ok(ServerConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(versions)
        .map_err(CertError::Tls)?
        .with_client_cert_verifier(clients)
        .with_cert_resolver(certs))
}

/// A client config verifying servers with `servers` (for example a
/// [`crate::UpstreamCertVerifier`]) and presenting `certs` when the server asks, if given.
pub fn client_config(
    versions: &[&'static SupportedProtocolVersion],
    servers: Arc<dyn ServerCertVerifier>,
    certs: Option<Arc<dyn ResolvesClientCert>>,
) -> Result<ClientConfig, CertError> {
    let builder = ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(versions)
        .map_err(CertError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(servers);
    Ok(match certs {
        Some(certs) => builder.with_client_cert_resolver(certs),
        None => builder.with_no_client_auth(),
    })
}
