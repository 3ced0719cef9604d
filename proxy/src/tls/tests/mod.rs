//! Tests of the TLS stage: translation errors, and handshakes over loopback sockets.

mod config;
mod handshake;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use remora_certs::{
    DevCa, DevCaOptions, IssueOptions, IssuedCert, RotatingCertResolver, SpiffeId, TrustBundleSet,
    TrustDomain, UpstreamCertVerifier,
};
use rustls::{ClientConfig, SupportedProtocolVersion};

pub fn ca(td: &str) -> DevCa {
    DevCa::generate(&TrustDomain::new(td).expect("td"), &DevCaOptions::default()).expect("ca")
}

pub fn issue(ca: &DevCa, id: &str) -> IssuedCert {
    issue_with(ca, id, &IssueOptions::default())
}

pub fn issue_with(ca: &DevCa, id: &str, opts: &IssueOptions) -> IssuedCert {
    ca.issue(&SpiffeId::parse(id).expect("id"), opts)
        .expect("issue")
}

pub fn expired() -> IssueOptions {
    let now = SystemTime::now();
    IssueOptions {
        not_before: Some(now - Duration::from_secs(2 * 86_400)),
        not_after: Some(now - Duration::from_secs(86_400)),
        ..IssueOptions::default()
    }
}

/// A PEM as a quoted YAML scalar.
pub fn q(pem: &str) -> String {
    serde_json::to_string(pem).expect("json")
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "remora-tls-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A client trusting `server_ca`, presenting `cert` if given.
pub fn client(
    server_ca: &DevCa,
    cert: Option<&IssuedCert>,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let verifier = UpstreamCertVerifier::builder(TrustBundleSet::single(
        server_ca.trust_bundle().expect("bundle"),
    ))
    .build()
    .expect("verifier");
    let resolver = cert.map(|c| {
        Arc::new(RotatingCertResolver::new(Arc::new(
            c.certified_key().expect("key"),
        ))) as Arc<dyn rustls::client::ResolvesClientCert>
    });
    let mut cfg = remora_certs::client_config(versions, verifier, resolver).expect("client config");
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}
