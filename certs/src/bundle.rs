//! Trust bundles: the root CAs a peer's chain must lead to, one set per SPIFFE trust domain.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::error::CertError;
use crate::info::CertInfo;
use crate::pem::{certs_from_pem, origin_of, read_file};
use crate::spiffe::TrustDomain;

/// One or more root CA certificates, ready for webpki.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    origin: String,
    roots: Vec<CertificateDer<'static>>,
    store: Arc<RootCertStore>,
}

impl TrustBundle {
    /// Builds a bundle from every `CERTIFICATE` block of `pem` (a file may concatenate several
    /// roots, as Envoy's `trusted_ca` does). `origin` names the input in errors.
    pub fn from_pem(origin: &str, pem: &[u8]) -> Result<Self, CertError> {
        Self::from_der(origin, certs_from_pem(origin, pem)?)
    }

    /// Reads a PEM bundle file.
    pub fn from_file(path: &Path) -> Result<Self, CertError> {
        Self::from_pem(&origin_of(path), &read_file(path)?)
    }

    /// Builds a bundle from DER certificates; each must be usable as a trust anchor.
    pub fn from_der(origin: &str, roots: Vec<CertificateDer<'static>>) -> Result<Self, CertError> {
        if roots.is_empty() {
            return Err(CertError::NoCertificates {
                origin: origin.to_string(),
            });
        }
        let mut store = RootCertStore::empty();
        for (index, root) in roots.iter().enumerate() {
            store
                .add(root.clone())
                .map_err(|e| CertError::InvalidRootCa {
                    origin: origin.to_string(),
                    index,
                    reason: e.to_string(),
                })?;
        }
        Ok(Self {
            origin: origin.to_string(),
            roots,
            store: Arc::new(store),
        })
    }

    /// Where the bundle was loaded from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The root certificates in file order; never empty.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The roots as a rustls store.
    pub fn root_store(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.store)
    }

    /// Serial, validity and SANs of each root, for the admin `/certs` endpoint.
    pub fn cert_infos(&self) -> Result<Vec<CertInfo>, CertError> {
        self.roots
            .iter()
            .enumerate()
            .map(|(i, der)| CertInfo::parse(&self.origin, i, der))
            .collect()
    }
}

/// Trust bundles by SPIFFE trust domain, plus an optional default bundle.
///
/// A peer is verified against the bundle of the trust domain in its SPIFFE ID when that domain
/// has one, otherwise against the default bundle. A configured domain never falls back to the
/// default, so a CA trusted only by default cannot mint identities in a federated domain. A plain
/// Envoy `trusted_ca` is a set with only a default; Envoy's SPIFFE validator (`trust_domains`) is a
/// set without one, which rejects peers from unlisted domains.
#[derive(Debug, Clone, Default)]
pub struct TrustBundleSet {
    domains: BTreeMap<TrustDomain, TrustBundle>,
    default: Option<TrustBundle>,
}

impl TrustBundleSet {
    /// An empty set; a verifier over it rejects everyone.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set whose only bundle is the default (the `trusted_ca` case).
    pub fn single(bundle: TrustBundle) -> Self {
        Self::new().with_default(bundle)
    }

    /// Sets the default bundle.
    pub fn with_default(mut self, bundle: TrustBundle) -> Self {
        self.default = Some(bundle);
        self
    }

    /// Adds (or replaces) the bundle of a trust domain.
    pub fn with_domain(mut self, trust_domain: TrustDomain, bundle: TrustBundle) -> Self {
        self.insert(trust_domain, bundle);
        self
    }

    /// Adds or replaces the bundle of a trust domain, returning the old one.
    pub fn insert(
        &mut self,
        trust_domain: TrustDomain,
        bundle: TrustBundle,
    ) -> Option<TrustBundle> {
        self.domains.insert(trust_domain, bundle)
    }

    /// The bundle configured for exactly this trust domain.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&TrustBundle> {
        self.domains.get(trust_domain)
    }

    /// The default bundle.
    pub fn default_bundle(&self) -> Option<&TrustBundle> {
        self.default.as_ref()
    }

    /// The bundle a peer in `trust_domain` (or with no SPIFFE ID) is verified against.
    pub fn bundle_for(&self, trust_domain: Option<&TrustDomain>) -> Option<&TrustBundle> {
        trust_domain
            .and_then(|td| self.domains.get(td))
            .or(self.default.as_ref())
    }

    /// The per-domain bundles in trust-domain order.
    pub fn domains(&self) -> impl Iterator<Item = (&TrustDomain, &TrustBundle)> {
        self.domains.iter()
    }

    /// Every bundle: the per-domain ones, then the default.
    pub fn bundles(&self) -> impl Iterator<Item = &TrustBundle> {
        self.domains.values().chain(self.default.as_ref())
    }

    /// Whether no bundle at all is configured.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.default.is_none()
    }
}
