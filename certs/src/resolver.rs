//! The local identity: a certificate chain and key from PEM, served to rustls by a resolver that
//! can be swapped atomically when the certificate rotates (SDS push, file watch).

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{Error as TlsError, InconsistentKeys, SignatureScheme};

use crate::error::CertError;
use crate::info::CertInfo;
use crate::pem::{certs_from_pem, origin_of, private_key_from_pem, read_file};

/// Builds a rustls `CertifiedKey` from a PEM chain (leaf first, then intermediates) and a PEM
/// private key (PKCS#8, SEC1 EC or PKCS#1 RSA), with the ring provider.
///
/// Fails, naming the input, when either is malformed, the key type is unsupported, or the key is
/// not the leaf's.
pub fn certified_key_from_pem(
    chain_origin: &str,
    chain_pem: &[u8],
    key_origin: &str,
    key_pem: &[u8],
) -> Result<CertifiedKey, CertError> {
    let chain = certs_from_pem(chain_origin, chain_pem)?;
    for (i, cert) in chain.iter().enumerate() {
        CertInfo::parse(chain_origin, i, cert)?;
    }
    let key = private_key_from_pem(key_origin, key_pem)?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        CertError::UnsupportedKey {
            origin: key_origin.to_string(),
            reason: e.to_string(),
        }
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // ring keys always expose their public key; Unknown would mean nothing to compare.
        Ok(()) | Err(TlsError::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(e) => Err(CertError::KeyMismatch {
            key_origin: key_origin.to_string(),
            cert_origin: chain_origin.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// [`certified_key_from_pem`] over two files.
pub fn certified_key_from_files(chain: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    certified_key_from_pem(
        &origin_of(chain),
        &read_file(chain)?,
        &origin_of(key),
        &read_file(key)?,
    )
}

/// Facts about the leaf of a `CertifiedKey` (for `/certs` and expiry gauges).
pub fn leaf_info(key: &CertifiedKey) -> Result<CertInfo, CertError> {
    let leaf = key.cert.first().ok_or_else(|| CertError::NoCertificates {
        origin: "certified key".to_string(),
    })?;
    CertInfo::parse("certified key", 0, leaf)
}

/// The certificate this side presents, swappable while connections are open.
///
/// Every new handshake reads the current key once; [`RotatingCertResolver::store`] replaces it
/// atomically, so later handshakes present the new certificate while established connections,
/// which finished their handshake with the old one, are untouched.
#[derive(Debug)]
pub struct RotatingCertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl RotatingCertResolver {
    /// A resolver presenting `initial`.
    pub fn new(initial: Arc<CertifiedKey>) -> Self {
        Self {
            current: ArcSwap::new(initial),
        }
    }

    /// Presents `next` from the next handshake on.
    pub fn store(&self, next: Arc<CertifiedKey>) {
        self.current.store(next);
    }

    /// The key presented now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// Facts about the leaf presented now.
    pub fn current_info(&self) -> Result<CertInfo, CertError> {
        leaf_info(&self.current.load())
    }
}

impl ResolvesServerCert for RotatingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ResolvesClientCert for RotatingCertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
