//! Peer certificate verification for mutual TLS: the chain against a trust bundle (webpki, with
//! validity dates), then the SAN matchers against the leaf, with failures typed so the proxy can
//! count Envoy's `ssl.fail_verify_*` stats.

mod downstream;
mod failure;
mod upstream;

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, Error as TlsError, OtherError};

use crate::info::CertInfo;
use crate::san::{any_match, SanMatcher};
use crate::spiffe::TrustDomain;

pub use downstream::{DownstreamCertVerifier, DownstreamVerifierBuilder};
pub use failure::{classify, classify_io, SanMismatch, VerifyFailure};
pub use upstream::{UpstreamCertVerifier, UpstreamVerifierBuilder};

/// Parses the leaf, mapping garbage to the rustls error webpki would have produced.
fn parse_leaf(end_entity: &CertificateDer<'_>) -> Result<CertInfo, TlsError> {
    CertInfo::parse("peer certificate", 0, end_entity)
        .map_err(|_| TlsError::InvalidCertificate(CertificateError::BadEncoding))
}

/// The trust domain whose bundle the leaf is checked against.
fn leaf_trust_domain(leaf: &CertInfo) -> Option<TrustDomain> {
    leaf.spiffe_id().map(|id| id.trust_domain().clone())
}

/// Applies the SAN matchers to a leaf whose chain already verified.
fn check_sans(matchers: &[SanMatcher], leaf: &CertInfo) -> Result<(), TlsError> {
    if any_match(matchers, leaf) {
        return Ok(());
    }
    let mismatch = SanMismatch::new(leaf);
    tracing::debug!(%mismatch, "peer certificate rejected");
    Err(TlsError::InvalidCertificate(CertificateError::Other(
        OtherError(Arc::new(mismatch)),
    )))
}

/// The peer is in a trust domain with no bundle and there is no default bundle.
fn no_bundle(trust_domain: Option<&TrustDomain>) -> TlsError {
    match trust_domain {
        Some(td) => {
            tracing::debug!(trust_domain = %td, "no trust bundle for the peer's trust domain")
        }
        None => tracing::debug!("peer has no SPIFFE ID and there is no default trust bundle"),
    }
    TlsError::InvalidCertificate(CertificateError::UnknownIssuer)
}

/// A chain whose issuer name matches a trusted root but whose signature does not verify against it
/// was not issued by a trusted CA: report it as an unknown issuer (`unknown_ca` on the wire, as
/// BoringSSL does) rather than a bad signature.
pub(crate) fn untrusted_on_bad_signature(e: rustls::Error) -> rustls::Error {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature) => {
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        }
        other => other,
    }
}
