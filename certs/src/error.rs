//! Errors of the certs crate: every one names where the bad input came from and what is wrong.

use std::path::PathBuf;

use crate::spiffe::SpiffeIdError;

/// Everything that can go wrong loading, building or issuing certificates.
///
/// `origin` fields name the input: a file path, or the label the caller gave for in-memory PEM
/// (for example `"sds secret default"`), so an operator can find the offending file.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file or directory could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM text is malformed (bad base64, an unterminated section, ...).
    #[error("{origin}: malformed PEM: {reason}")]
    Pem {
        /// Where the PEM came from.
        origin: String,
        /// What the PEM decoder said.
        reason: String,
    },
    /// No `CERTIFICATE` block was found where at least one is needed.
    #[error("{origin}: no CERTIFICATE PEM block found")]
    NoCertificates {
        /// Where the PEM came from.
        origin: String,
    },
    /// No private key block was found.
    #[error("{origin}: no private key found (expected a PKCS#8 \"PRIVATE KEY\", SEC1 \"EC PRIVATE KEY\" or PKCS#1 \"RSA PRIVATE KEY\" PEM block)")]
    NoPrivateKey {
        /// Where the PEM came from.
        origin: String,
    },
    /// The private key is present but cannot be used.
    #[error("{origin}: unusable private key: {reason}")]
    UnsupportedKey {
        /// Where the key came from.
        origin: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The private key is not the key of the leaf certificate.
    #[error(
        "{key_origin}: the private key does not match the certificate in {cert_origin}: {reason}"
    )]
    KeyMismatch {
        /// Where the key came from.
        key_origin: String,
        /// Where the certificate chain came from.
        cert_origin: String,
        /// What the check found.
        reason: String,
    },
    /// A certificate could not be parsed as X.509.
    #[error("{origin}: certificate {index} is not valid X.509: {reason}")]
    Certificate {
        /// Where the certificate came from.
        origin: String,
        /// Position of the certificate in its PEM file, from 0.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// A root CA certificate cannot be a webpki trust anchor.
    #[error("{origin}: certificate {index} cannot be used as a root CA: {reason}")]
    InvalidRootCa {
        /// Where the bundle came from.
        origin: String,
        /// Position of the certificate in its PEM file, from 0.
        index: usize,
        /// What webpki said.
        reason: String,
    },
    /// A verifier could not be built (for example, an empty trust bundle).
    #[error("cannot build a certificate verifier: {0}")]
    Verifier(String),
    /// rustls refused a configuration (for example, no usable protocol version).
    #[error("TLS configuration: {0}")]
    Tls(rustls::Error),
    /// A `safe_regex` SAN matcher does not compile.
    #[error("invalid SAN regex {pattern:?}: {source}")]
    Regex {
        /// The pattern as configured.
        pattern: String,
        /// The compile error.
        source: regex::Error,
    },
    /// A SPIFFE ID or trust domain is malformed.
    #[error(transparent)]
    Spiffe(#[from] SpiffeIdError),
    /// The dev CA could not create a key or certificate.
    #[error("dev CA: {0}")]
    Generate(String),
    /// The dev CA was asked for something it will not do (another trust domain, a bad validity).
    #[error("dev CA: {0}")]
    Issue(String),
}

impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        CertError::Generate(e.to_string())
    }
}
