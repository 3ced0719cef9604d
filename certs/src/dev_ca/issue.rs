//! Issuing SPIFFE X.509-SVIDs from the dev CA, and writing them in Istio's file layout.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType,
};
use rustls::sign::CertifiedKey;

use super::{random_serial, DevCa, KeyAlgorithm};
use crate::error::CertError;
use crate::fs::{create_dir, write_atomic, Secrecy};
use crate::info::CertInfo;
use crate::resolver::certified_key_from_pem;
use crate::spiffe::SpiffeId;

/// How far back `not_before` defaults to, so a peer whose clock is slightly behind accepts a
/// certificate issued a moment ago.
pub(super) const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// File name of the leaf-first certificate chain written by [`IssuedCert::write`] (Istio's name).
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";
/// File name of the leaf private key (PKCS#8 PEM, mode 0600).
pub const KEY_FILE: &str = "key.pem";
/// File name of the root CA certificate to trust peers with.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";

/// What [`DevCa::issue`] puts in a leaf.
#[derive(Debug, Clone)]
pub struct IssueOptions {
    /// DNS SANs besides the SPIFFE URI SAN (none by default, as in Istio workload certs).
    pub dns_names: Vec<String>,
    /// Lifetime from now when `not_after` is not given (24 hours by default, Istio's).
    pub validity: Duration,
    /// Start of validity; defaults to a minute ago.
    pub not_before: Option<SystemTime>,
    /// End of validity; defaults to now + `validity`. A time in the past makes an expired
    /// certificate, for tests.
    pub not_after: Option<SystemTime>,
    /// The leaf's key type.
    pub key_algorithm: KeyAlgorithm,
}

impl Default for IssueOptions {
    fn default() -> Self {
        Self {
            dns_names: Vec::new(),
            validity: Duration::from_secs(24 * 60 * 60),
            not_before: None,
            not_after: None,
            key_algorithm: KeyAlgorithm::default(),
        }
    }
}

/// A leaf certificate and its key, PEM encoded.
#[derive(Clone)]
pub struct IssuedCert {
    /// The chain, leaf first then intermediates (none for the dev CA); the root is not included.
    pub chain_pem: String,
    /// The leaf's private key, PKCS#8.
    pub key_pem: String,
    /// The issuing root, to be trusted by peers.
    pub root_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("chain_pem", &self.chain_pem)
            .finish_non_exhaustive()
    }
}

impl DevCa {
    /// Issues an X.509-SVID for `id`: a URI SAN with the ID, optional DNS SANs, an empty subject
    /// (as Istio's), keyUsage digitalSignature, extendedKeyUsage serverAuth and clientAuth.
    ///
    /// Refuses IDs outside this CA's trust domain.
    pub fn issue(&self, id: &SpiffeId, opts: &IssueOptions) -> Result<IssuedCert, CertError> {
        if id.trust_domain() != &self.trust_domain {
            return Err(CertError::Issue(format!(
                "the CA for trust domain {} cannot issue {id}",
                self.trust_domain
            )));
        }
        let now = SystemTime::now();
        let not_before = opts.not_before.unwrap_or(now - CLOCK_SKEW);
        let not_after = opts.not_after.unwrap_or(now + opts.validity);
        if not_after <= not_before {
            return Err(CertError::Issue(format!(
                "not_after must be later than not_before for {id}"
            )));
        }
        let ia5 = |s: String| -> Result<_, CertError> {
            s.try_into()
                .map_err(|e: rcgen::Error| CertError::Issue(format!("SAN: {e}")))
        };
        let mut sans = vec![SanType::URI(ia5(id.to_string())?)];
        for dns in &opts.dns_names {
            sans.push(SanType::DnsName(ia5(dns.clone())?));
        }

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial());

        let key = opts.key_algorithm.generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            root_pem: self.cert_pem.clone(),
        })
    }
}

impl IssuedCert {
    /// The chain and key as a rustls `CertifiedKey` (ring).
    pub fn certified_key(&self) -> Result<CertifiedKey, CertError> {
        certified_key_from_pem(
            "issued chain",
            self.chain_pem.as_bytes(),
            "issued key",
            self.key_pem.as_bytes(),
        )
    }

    /// Serial, validity and SANs of the leaf.
    pub fn leaf_info(&self) -> Result<CertInfo, CertError> {
        CertInfo::from_pem("issued chain", self.chain_pem.as_bytes())?
            .into_iter()
            .next()
            .ok_or_else(|| CertError::NoCertificates {
                origin: "issued chain".to_string(),
            })
    }

    /// Writes Istio's layout into `dir` (created if missing), each file atomically:
    ///
    /// - `key.pem`: the leaf key (mode 0600),
    /// - `root-cert.pem`: the root to trust peers with,
    /// - `cert-chain.pem`: leaf first, then intermediates.
    ///
    /// They are written in that order so a watcher that reloads when `cert-chain.pem` changes
    /// finds the matching key already in place. A reader that catches the new key with the old
    /// chain gets [`CertError::KeyMismatch`] and should retry.
    pub fn write(&self, dir: &Path) -> Result<(), CertError> {
        create_dir(dir)?;
        write_atomic(
            &dir.join(KEY_FILE),
            self.key_pem.as_bytes(),
            Secrecy::Secret,
        )?;
        write_atomic(
            &dir.join(ROOT_CERT_FILE),
            self.root_pem.as_bytes(),
            Secrecy::Public,
        )?;
        write_atomic(
            &dir.join(CERT_CHAIN_FILE),
            self.chain_pem.as_bytes(),
            Secrecy::Public,
        )
    }
}
