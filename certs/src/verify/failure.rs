//! Why a handshake failed, in the terms of Envoy's ssl stats.

use std::error::Error as StdError;
use std::fmt;

use rustls::{CertificateError, Error as TlsError};

use crate::info::CertInfo;

/// The leaf's chain verified but no SAN matcher accepted it. Carried inside
/// `rustls::Error::InvalidCertificate(CertificateError::Other(..))`; [`classify`] finds it there.
#[derive(Debug, Clone)]
pub struct SanMismatch {
    presented: Vec<String>,
}

impl SanMismatch {
    pub(crate) fn new(leaf: &CertInfo) -> Self {
        let presented = leaf
            .uri_sans()
            .iter()
            .chain(leaf.dns_sans())
            .chain(leaf.email_sans())
            .cloned()
            .chain(leaf.ip_sans().iter().map(|ip| ip.to_string()))
            .collect();
        Self { presented }
    }

    /// The SANs the peer presented (URI, DNS, email, IP), for logs.
    pub fn presented(&self) -> &[String] {
        &self.presented
    }
}

impl fmt::Display for SanMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.presented.is_empty() {
            f.write_str("SAN verification failed: the peer certificate has no subjectAltName")
        } else {
            write!(
                f,
                "SAN verification failed: none of the peer's SANs {:?} is accepted",
                self.presented
            )
        }
    }
}

impl StdError for SanMismatch {}

/// What went wrong in a TLS handshake, as the side that verified the peer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifyFailure {
    /// A client certificate was required and none was sent.
    NoCertificate,
    /// The peer's certificate (or one in its chain) has expired.
    Expired,
    /// The peer's certificate is not valid yet.
    NotYetValid,
    /// The chain does not lead to a trusted root (unknown CA, bad signature, no bundle for
    /// the peer's trust domain).
    UntrustedChain,
    /// The certificate is malformed or not usable for this purpose (encoding, key usage,
    /// critical extension, hostname when checked).
    BadCertificate,
    /// The chain verified but no SAN matcher accepted the leaf.
    SanMismatch,
    /// Not a certificate verification failure: protocol version, cipher, alert from the peer,
    /// I/O.
    Other,
}

impl VerifyFailure {
    /// The Envoy ssl stat this failure counts against (under the `ssl.` prefix of a listener or
    /// cluster): `fail_verify_no_cert`, `fail_verify_error`, `fail_verify_san` or
    /// `connection_error`.
    ///
    /// Envoy's `no_certificate` counts successful handshakes without a client certificate (when
    /// `require_client_certificate` is false); it is not a failure and has no variant here.
    pub fn envoy_stat(self) -> &'static str {
        match self {
            VerifyFailure::NoCertificate => "fail_verify_no_cert",
            VerifyFailure::Expired
            | VerifyFailure::NotYetValid
            | VerifyFailure::UntrustedChain
            | VerifyFailure::BadCertificate => "fail_verify_error",
            VerifyFailure::SanMismatch => "fail_verify_san",
            VerifyFailure::Other => "connection_error",
        }
    }

    /// Whether this is a failed certificate verification (anything but [`VerifyFailure::Other`]).
    pub fn is_verification(self) -> bool {
        self != VerifyFailure::Other
    }
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VerifyFailure::NoCertificate => "no peer certificate",
            VerifyFailure::Expired => "peer certificate expired",
            VerifyFailure::NotYetValid => "peer certificate not yet valid",
            VerifyFailure::UntrustedChain => "peer certificate chain not trusted",
            VerifyFailure::BadCertificate => "peer certificate unusable",
            VerifyFailure::SanMismatch => "peer certificate SAN not accepted",
            VerifyFailure::Other => "TLS error",
        })
    }
}

/// Classifies the error a rustls connection returned on the verifying side.
pub fn classify(error: &TlsError) -> VerifyFailure {
    match error {
        TlsError::NoCertificatesPresented => VerifyFailure::NoCertificate,
        TlsError::InvalidCertificate(cert) => classify_certificate(cert),
        _ => VerifyFailure::Other,
    }
}

/// Classifies an I/O error from tokio-rustls, which wraps the rustls error in `InvalidData`.
pub fn classify_io(error: &std::io::Error) -> VerifyFailure {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>())
        .map_or(VerifyFailure::Other, classify)
}

#[allow(deprecated)] // UnsupportedSignatureAlgorithm is still produced by older paths.
fn classify_certificate(error: &CertificateError) -> VerifyFailure {
    use CertificateError as C;
    match error {
        C::Expired | C::ExpiredContext { .. } => VerifyFailure::Expired,
        C::NotValidYet | C::NotValidYetContext { .. } => VerifyFailure::NotYetValid,
        C::UnknownIssuer
        | C::BadSignature
        | C::UnsupportedSignatureAlgorithm
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. }
        | C::Revoked
        | C::UnknownRevocationStatus
        | C::ExpiredRevocationList
        | C::ExpiredRevocationListContext { .. } => VerifyFailure::UntrustedChain,
        C::Other(other) if other.0.downcast_ref::<SanMismatch>().is_some() => {
            VerifyFailure::SanMismatch
        }
        _ => VerifyFailure::BadCertificate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_from_tokio_rustls_are_unwrapped() {
        // tokio-rustls reports handshake failures as InvalidData carrying the rustls error.
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            TlsError::NoCertificatesPresented,
        );
        assert_eq!(classify_io(&io), VerifyFailure::NoCertificate);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(classify_io(&reset).envoy_stat(), "connection_error");
    }

    #[test]
    fn not_yet_valid_and_unknown_ca_count_as_verify_errors() {
        let early = TlsError::InvalidCertificate(CertificateError::NotValidYet);
        assert_eq!(classify(&early), VerifyFailure::NotYetValid);
        assert_eq!(classify(&early).envoy_stat(), "fail_verify_error");
        let purpose = TlsError::InvalidCertificate(CertificateError::InvalidPurpose);
        assert_eq!(classify(&purpose).envoy_stat(), "fail_verify_error");
        let other = TlsError::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(std::fmt::Error),
        )));
        assert_eq!(classify(&other), VerifyFailure::BadCertificate);
    }
}
