//! A development CA on rcgen: a self-signed root for one trust domain that issues SPIFFE
//! X.509-SVIDs, for tests, demos and `remora` without a mesh control plane. Not for production.

mod issue;

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, SignatureAlgorithm,
};
use rustls::pki_types::CertificateDer;

use crate::bundle::TrustBundle;
use crate::error::CertError;
use crate::fs::{create_dir, write_atomic, Secrecy};
use crate::info::CertInfo;
use crate::pem::{certs_from_pem, read_file};
use crate::resolver::certified_key_from_pem;
use crate::spiffe::TrustDomain;

pub use issue::{IssueOptions, IssuedCert, CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE};

/// File name of the CA certificate written by [`DevCa::write`].
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key (PKCS#8 PEM, mode 0600) written by [`DevCa::write`].
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// The key type of a generated CA or leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256, what Istio issues.
    #[default]
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

impl KeyAlgorithm {
    fn rcgen(self) -> &'static SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    fn generate(self) -> Result<KeyPair, CertError> {
        Ok(KeyPair::generate_for(self.rcgen())?)
    }
}

/// How [`DevCa::generate`] makes the root.
#[derive(Debug, Clone)]
pub struct DevCaOptions {
    /// The root's key type (ECDSA P-256 by default).
    pub key_algorithm: KeyAlgorithm,
    /// How long the root is valid from now (10 years by default).
    pub validity: Duration,
}

impl Default for DevCaOptions {
    fn default() -> Self {
        Self {
            key_algorithm: KeyAlgorithm::default(),
            validity: Duration::from_secs(10 * 365 * 24 * 60 * 60),
        }
    }
}

/// A self-signed root CA for one trust domain.
///
/// The root carries the trust domain's SPIFFE ID (`spiffe://<td>`) as its URI SAN, which is how
/// [`DevCa::load`] recovers the trust domain.
pub struct DevCa {
    trust_domain: TrustDomain,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("DevCa")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl DevCa {
    /// Generates a new root for `trust_domain`.
    pub fn generate(trust_domain: &TrustDomain, opts: &DevCaOptions) -> Result<Self, CertError> {
        let key = opts.key_algorithm.generate()?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "remora dev CA");
        dn.push(DnType::CommonName, format!("{trust_domain} root"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{trust_domain}")
                .try_into()
                .map_err(|e: rcgen::Error| CertError::Generate(e.to_string()))?,
        )];
        params.not_before = (now - issue::CLOCK_SKEW).into();
        params.not_after = (now + opts.validity).into();
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Ok(Self {
            trust_domain: trust_domain.clone(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a root written by [`DevCa::write`] from `dir` (`ca.pem`, `ca-key.pem`).
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_origin = cert_path.display().to_string();
        let key_origin = key_path.display().to_string();
        let cert_bytes = read_file(&cert_path)?;
        let key_bytes = read_file(&key_path)?;
        // Checks the PEM, the key type and that the key is the certificate's.
        certified_key_from_pem(&cert_origin, &cert_bytes, &key_origin, &key_bytes)?;

        let cert_der = certs_from_pem(&cert_origin, &cert_bytes)?.swap_remove(0);
        let info = CertInfo::parse(&cert_origin, 0, &cert_der)?;
        if !info.is_ca() {
            return Err(CertError::Issue(format!(
                "{cert_origin}: not a CA certificate"
            )));
        }
        let trust_domain = info
            .uri_sans()
            .iter()
            .find_map(|uri| uri.strip_prefix("spiffe://"))
            .ok_or_else(|| {
                CertError::Issue(format!(
                    "{cert_origin}: the CA has no spiffe://<trust-domain> URI SAN"
                ))
            })
            .and_then(|td| Ok(TrustDomain::new(td)?))?;

        let key_pem = String::from_utf8_lossy(&key_bytes).into_owned();
        let cert_pem = String::from_utf8_lossy(&cert_bytes).into_owned();
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CertError::UnsupportedKey {
            origin: key_origin.clone(),
            reason: e.to_string(),
        })?;
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| CertError::Certificate {
                origin: cert_origin,
                index: 0,
                reason: e.to_string(),
            })?;
        Ok(Self {
            trust_domain,
            cert_pem,
            cert_der,
            key_pem,
            issuer,
        })
    }

    /// Writes `ca.pem` and `ca-key.pem` (owner-only) into `dir`, creating it, each atomically.
    pub fn write(&self, dir: &Path) -> Result<(), CertError> {
        create_dir(dir)?;
        write_atomic(
            &dir.join(CA_KEY_FILE),
            self.key_pem.as_bytes(),
            Secrecy::Secret,
        )?;
        write_atomic(
            &dir.join(CA_CERT_FILE),
            self.cert_pem.as_bytes(),
            Secrecy::Public,
        )
    }

    /// The trust domain this CA issues for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The root certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The root certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A trust bundle holding just this root.
    pub fn trust_bundle(&self) -> Result<TrustBundle, CertError> {
        TrustBundle::from_der(
            &format!("dev CA {}", self.trust_domain),
            vec![self.cert_der.clone()],
        )
    }
}

/// A random positive 128-bit serial, as RFC 5280 asks (unique per issuer, not derived from the key).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, and no leading zero byte, so it always encodes in 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}
