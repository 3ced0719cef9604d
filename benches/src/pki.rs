//! The mesh's PKI: a dev CA and one SPIFFE X.509-SVID per sidecar, written as PEM files that every
//! peer reads (Envoy and remora by file name, nginx and HAProxy too; HAProxy wants key and chain in
//! one file).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use remora_certs::{DevCa, DevCaOptions, IssueOptions, IssuedCert, SpiffeId, TrustDomain};

pub const TRUST_DOMAIN: &str = "bench.local";
/// The DNS name in the inbound sidecar's certificate, for peers that verify hostnames (nginx,
/// HAProxy) rather than SPIFFE URI SANs.
pub const INBOUND_DNS: &str = "inbound.bench.local";

/// One sidecar's identity on disk.
#[derive(Debug, Clone)]
pub struct Identity {
    pub spiffe_id: String,
    pub chain: PathBuf,
    pub key: PathBuf,
    /// Chain followed by key, for HAProxy's `crt`.
    pub combined: PathBuf,
    issued: IssuedCert,
}

/// The CA root and both sidecars' certificates.
#[derive(Debug, Clone)]
pub struct MeshPki {
    pub root: PathBuf,
    pub outbound: Identity,
    pub inbound: Identity,
}

impl MeshPki {
    /// Mints a fresh CA and both identities into `dir`.
    pub fn mint(dir: &Path) -> anyhow::Result<MeshPki> {
        std::fs::create_dir_all(dir)?;
        let td = TrustDomain::new(TRUST_DOMAIN)?;
        let ca = DevCa::generate(&td, &DevCaOptions::default())?;
        let root = dir.join("root-cert.pem");
        std::fs::write(&root, ca.cert_pem())?;
        let outbound = identity(&ca, dir, "outbound", "outbound.bench.local")?;
        let inbound = identity(&ca, dir, "inbound", INBOUND_DNS)?;
        Ok(MeshPki {
            root,
            outbound,
            inbound,
        })
    }

    /// A rustls client that presents the outbound identity and trusts the CA, without session
    /// resumption so that every connection is a full handshake.
    pub fn outbound_client(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        for c in remora_certs::certs_from_pem("root", self.outbound.issued.root_pem.as_bytes())? {
            roots.add(c)?;
        }
        let chain =
            remora_certs::certs_from_pem("chain", self.outbound.issued.chain_pem.as_bytes())?;
        let key =
            remora_certs::private_key_from_pem("key", self.outbound.issued.key_pem.as_bytes())?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(remora_certs::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("client certificate")?;
        cfg.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(cfg))
    }
}

fn identity(ca: &DevCa, dir: &Path, name: &str, dns: &str) -> anyhow::Result<Identity> {
    let id = SpiffeId::istio(TRUST_DOMAIN, "bench", name)?;
    let issued = ca.issue(
        &id,
        &IssueOptions {
            dns_names: vec![dns.to_string()],
            ..IssueOptions::default()
        },
    )?;
    let chain = dir.join(format!("{name}-chain.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    let combined = dir.join(format!("{name}-combined.pem"));
    std::fs::write(&chain, &issued.chain_pem)?;
    std::fs::write(&key, &issued.key_pem)?;
    std::fs::write(&combined, format!("{}{}", issued.chain_pem, issued.key_pem))?;
    Ok(Identity {
        spiffe_id: id.to_string(),
        chain,
        key,
        combined,
        issued,
    })
}
