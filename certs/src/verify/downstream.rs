//! Verifying downstream clients on a listener (Envoy `DownstreamTlsContext` with a
//! `validation_context`): a rustls `ClientCertVerifier`.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, Error as TlsError, SignatureScheme};

use super::{check_sans, leaf_trust_domain, no_bundle, parse_leaf};
use crate::bundle::{TrustBundle, TrustBundleSet};
use crate::error::CertError;
use crate::san::SanMatcher;
use crate::spiffe::TrustDomain;

/// Builds a [`DownstreamCertVerifier`].
#[derive(Debug)]
pub struct DownstreamVerifierBuilder {
    bundles: TrustBundleSet,
    matchers: Vec<SanMatcher>,
    require_client_certificate: bool,
    provider: Arc<CryptoProvider>,
}

impl DownstreamVerifierBuilder {
    /// Accept only leaves that some matcher accepts (Envoy `match_typed_subject_alt_names`).
    pub fn san_matchers(mut self, matchers: Vec<SanMatcher>) -> Self {
        self.matchers = matchers;
        self
    }

    /// Envoy's `require_client_certificate`: when false (Envoy's default) a client without a
    /// certificate completes the handshake (count it as `ssl.no_certificate`); a client that does
    /// present one is still verified.
    pub fn require_client_certificate(mut self, require: bool) -> Self {
        self.require_client_certificate = require;
        self
    }

    /// Builds the verifier; fails when the set has no bundle at all.
    pub fn build(self) -> Result<Arc<DownstreamCertVerifier>, CertError> {
        if self.bundles.is_empty() {
            return Err(CertError::Verifier(
                "no trust bundle configured".to_string(),
            ));
        }
        let webpki = |bundle: &TrustBundle| {
            WebPkiClientVerifier::builder_with_provider(
                bundle.root_store(),
                Arc::clone(&self.provider),
            )
            .build()
            .map_err(|e| CertError::Verifier(format!("{}: {e}", bundle.origin())))
        };
        let mut domains = BTreeMap::new();
        for (td, bundle) in self.bundles.domains() {
            domains.insert(td.clone(), webpki(bundle)?);
        }
        let default = self.bundles.default_bundle().map(webpki).transpose()?;
        let mut root_hints: Vec<DistinguishedName> = Vec::new();
        for verifier in domains.values().chain(default.as_ref()) {
            for hint in verifier.root_hint_subjects() {
                if !root_hints.iter().any(|h| h.as_ref() == hint.as_ref()) {
                    root_hints.push(hint.clone());
                }
            }
        }
        Ok(Arc::new(DownstreamCertVerifier {
            domains,
            default,
            matchers: self.matchers,
            require_client_certificate: self.require_client_certificate,
            root_hints,
            provider: self.provider,
        }))
    }
}

/// Verifies client certificates: the chain against the bundle of the client's trust domain
/// (webpki, `clientAuth` usage, validity dates), then the SAN matchers against the leaf.
///
/// Failures surface as `rustls::Error`s on the server connection; [`super::classify`] maps
/// them to Envoy's stats.
#[derive(Debug)]
pub struct DownstreamCertVerifier {
    domains: BTreeMap<TrustDomain, Arc<dyn ClientCertVerifier>>,
    default: Option<Arc<dyn ClientCertVerifier>>,
    matchers: Vec<SanMatcher>,
    require_client_certificate: bool,
    root_hints: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
}

impl DownstreamCertVerifier {
    /// Starts a verifier over `bundles`, with no SAN matchers and client certificates optional
    /// (Envoy's defaults), using the ring provider.
    pub fn builder(bundles: TrustBundleSet) -> DownstreamVerifierBuilder {
        DownstreamVerifierBuilder {
            bundles,
            matchers: Vec::new(),
            require_client_certificate: false,
            provider: crate::provider(),
        }
    }

    /// The configured SAN matchers.
    pub fn san_matchers(&self) -> &[SanMatcher] {
        &self.matchers
    }
}

impl ClientCertVerifier for DownstreamCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.require_client_certificate
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.root_hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        let leaf = parse_leaf(end_entity)?;
        let td = leaf_trust_domain(&leaf);
        let chain = td
            .as_ref()
            .and_then(|td| self.domains.get(td))
            .or(self.default.as_ref())
            .ok_or_else(|| no_bundle(td.as_ref()))?;
        chain
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(super::untrusted_on_bad_signature)?;
        check_sans(&self.matchers, &leaf)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
