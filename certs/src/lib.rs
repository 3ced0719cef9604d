#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! Workload identity and PKI for remora's mutual TLS: SPIFFE IDs and trust domains, trust bundles,
//! SAN matchers, rustls certificate verifiers, rotating certificate resolvers, certificate facts
//! for the admin endpoint, and a development CA.
//!
//! This crate knows nothing of xDS or routing; the proxy builds its Envoy `DownstreamTlsContext`
//! and `UpstreamTlsContext` support from what is here. All cryptography uses the ring provider
//! explicitly ([`provider`]); the process-wide rustls default is never consulted.

mod bundle;
mod config;
mod dev_ca;
mod error;
mod fs;
mod info;
mod pem;
mod resolver;
mod san;
mod spiffe;
mod verify;

use std::sync::Arc;

pub use bundle::{TrustBundle, TrustBundleSet};
pub use config::{client_config, server_config};
pub use dev_ca::{
    DevCa, DevCaOptions, IssueOptions, IssuedCert, KeyAlgorithm, CA_CERT_FILE, CA_KEY_FILE,
    CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE,
};

pub use error::CertError;
pub use info::CertInfo;
pub use pem::{certs_from_pem, private_key_from_pem};
pub use resolver::{
    certified_key_from_files, certified_key_from_pem, leaf_info, RotatingCertResolver,
};
pub use san::{any_match, SanMatcher, SanType, StringMatcher, StringPattern};
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
pub use verify::{
    classify, classify_io, DownstreamCertVerifier, DownstreamVerifierBuilder, SanMismatch,
    UpstreamCertVerifier, UpstreamVerifierBuilder, VerifyFailure,
};

/// The crypto provider every config and verifier of remora uses: ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
