//! Verifying upstream servers from a cluster (Envoy `UpstreamTlsContext` with a
//! `validation_context`): a rustls `ServerCertVerifier`.
//!
//! Envoy does not compare the certificate with the SNI or the cluster's hostname: it checks the
//! chain, then the configured SAN matchers. SPIFFE workload certificates usually carry only a URI
//! SAN, so a hostname check would reject every mesh peer. This verifier therefore ignores the
//! rustls `server_name` unless [`UpstreamVerifierBuilder::verify_server_name`] asks for it, and
//! even then only when no SAN matcher is configured (the matchers are the identity check).

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme};

use super::{check_sans, leaf_trust_domain, no_bundle, parse_leaf};
use crate::bundle::TrustBundleSet;
use crate::error::CertError;
use crate::san::SanMatcher;
use crate::spiffe::TrustDomain;

/// Builds an [`UpstreamCertVerifier`].
#[derive(Debug)]
pub struct UpstreamVerifierBuilder {
    bundles: TrustBundleSet,
    matchers: Vec<SanMatcher>,
    verify_server_name: bool,
    provider: Arc<CryptoProvider>,
}

impl UpstreamVerifierBuilder {
    /// Accept only leaves that some matcher accepts (Envoy `match_typed_subject_alt_names`).
    pub fn san_matchers(mut self, matchers: Vec<SanMatcher>) -> Self {
        self.matchers = matchers;
        self
    }

    /// Also require the certificate to be valid for the rustls `ServerName` (as a browser would),
    /// when no SAN matcher is configured. Off by default, as in Envoy.
    pub fn verify_server_name(mut self, verify: bool) -> Self {
        self.verify_server_name = verify;
        self
    }

    /// Builds the verifier; fails when the set has no bundle at all.
    pub fn build(self) -> Result<Arc<UpstreamCertVerifier>, CertError> {
        if self.bundles.is_empty() {
            return Err(CertError::Verifier(
                "no trust bundle configured".to_string(),
            ));
        }
        let domains = self
            .bundles
            .domains()
            .map(|(td, b)| (td.clone(), b.root_store()))
            .collect();
        let default = self.bundles.default_bundle().map(|b| b.root_store());
        Ok(Arc::new(UpstreamCertVerifier {
            domains,
            default,
            matchers: self.matchers,
            verify_server_name: self.verify_server_name,
            provider: self.provider,
        }))
    }
}

/// Verifies server certificates: the chain against the bundle of the server's trust domain
/// (webpki, `serverAuth` usage, validity dates), then the SAN matchers against the leaf.
#[derive(Debug)]
pub struct UpstreamCertVerifier {
    domains: BTreeMap<TrustDomain, Arc<RootCertStore>>,
    default: Option<Arc<RootCertStore>>,
    matchers: Vec<SanMatcher>,
    verify_server_name: bool,
    provider: Arc<CryptoProvider>,
}

impl UpstreamCertVerifier {
    /// Starts a verifier over `bundles` with no SAN matchers and no hostname check, using the
    /// ring provider.
    pub fn builder(bundles: TrustBundleSet) -> UpstreamVerifierBuilder {
        UpstreamVerifierBuilder {
            bundles,
            matchers: Vec::new(),
            verify_server_name: false,
            provider: crate::provider(),
        }
    }

    /// The configured SAN matchers.
    pub fn san_matchers(&self) -> &[SanMatcher] {
        &self.matchers
    }
}

impl ServerCertVerifier for UpstreamCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let leaf = parse_leaf(end_entity)?;
        let td = leaf_trust_domain(&leaf);
        let roots = td
            .as_ref()
            .and_then(|td| self.domains.get(td))
            .or(self.default.as_ref())
            .ok_or_else(|| no_bundle(td.as_ref()))?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )
        .map_err(super::untrusted_on_bad_signature)?;
        if !self.matchers.is_empty() {
            check_sans(&self.matchers, &leaf)?;
        } else if self.verify_server_name {
            verify_server_name(&parsed, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
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
