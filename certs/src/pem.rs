//! PEM input: certificates and private keys from bytes or files, with errors naming the origin.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::CertError;

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The display name of a file used as an error origin.
pub(crate) fn origin_of(path: &Path) -> String {
    path.display().to_string()
}

fn pem_error(origin: &str, e: pem::Error) -> CertError {
    CertError::Pem {
        origin: origin.to_string(),
        reason: e.to_string(),
    }
}

/// Every `CERTIFICATE` block of `pem`, in file order; other blocks are skipped.
///
/// Fails when the text is malformed or holds no certificate at all.
pub fn certs_from_pem(origin: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(origin, e))?;
    if certs.is_empty() {
        return Err(CertError::NoCertificates {
            origin: origin.to_string(),
        });
    }
    Ok(certs)
}

/// The first private key of `pem`: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#1
/// (`RSA PRIVATE KEY`).
pub fn private_key_from_pem(origin: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            // Say so plainly rather than "no key": an encrypted key is a common operator mistake.
            if contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
                Err(CertError::UnsupportedKey {
                    origin: origin.to_string(),
                    reason: "encrypted private keys are not supported; decrypt the key first"
                        .to_string(),
                })
            } else {
                Err(CertError::NoPrivateKey {
                    origin: origin.to_string(),
                })
            }
        }
        Err(e) => Err(pem_error(origin, e)),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_named_in_the_error() {
        let err = certs_from_pem("/etc/certs/root.pem", b"hello\n").expect_err("no certs");
        assert_eq!(
            err.to_string(),
            "/etc/certs/root.pem: no CERTIFICATE PEM block found"
        );
    }

    #[test]
    fn malformed_pem_is_reported_as_such() {
        let text = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let err = certs_from_pem("chain.pem", text).expect_err("bad base64");
        assert!(matches!(err, CertError::Pem { ref origin, .. } if origin == "chain.pem"));
    }

    #[test]
    fn encrypted_keys_get_a_specific_message() {
        let text =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let err = private_key_from_pem("key.pem", text).expect_err("encrypted");
        assert!(err
            .to_string()
            .contains("encrypted private keys are not supported"));
        let err = private_key_from_pem("key.pem", b"").expect_err("empty");
        assert!(matches!(err, CertError::NoPrivateKey { .. }));
    }
}
