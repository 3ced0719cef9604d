//! Certificates minted per test: a dev CA per trust domain and SPIFFE workload identities in
//! Istio's file layout, plus the placeholders that put their paths into a fixture.
//!
//! Placeholders a fixture may use once the identity `NAME` is issued: `{{pki_NAME_cert}}`,
//! `{{pki_NAME_key}}`, `{{pki_NAME_root}}` (the issuing CA), `{{pki_NAME_dir}}` and
//! `{{pki_ca}}` (the first CA's certificate).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use remora_certs::{
    DevCa, DevCaOptions, IssueOptions, SpiffeId, TrustDomain, CERT_CHAIN_FILE, KEY_FILE,
    ROOT_CERT_FILE,
};

use crate::tempdir::TempDir;
use crate::template::Vars;

/// The trust domain of the default CA.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// An Istio SPIFFE ID in `cluster.local`: `spiffe://cluster.local/ns/default/sa/<sa>`.
pub fn istio_id(sa: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{sa}")
}

/// One issued workload certificate on disk.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub spiffe: String,
    pub dir: PathBuf,
    /// Lowercase hex, no separators (as Envoy's `/certs` prints it).
    pub serial: String,
}

impl Identity {
    pub fn cert(&self) -> PathBuf {
        self.dir.join(CERT_CHAIN_FILE)
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }
    pub fn root(&self) -> PathBuf {
        self.dir.join(ROOT_CERT_FILE)
    }
    pub fn cert_pem(&self) -> String {
        std::fs::read_to_string(self.cert()).expect("read cert")
    }
    pub fn key_pem(&self) -> String {
        std::fs::read_to_string(self.key()).expect("read key")
    }
}

/// A scratch PKI: one CA per trust domain and the identities issued so far.
pub struct Pki {
    dir: TempDir,
    cas: Vec<(String, DevCa, PathBuf)>,
    pub identities: Vec<Identity>,
}

impl Pki {
    /// A PKI with a CA for `cluster.local` (written to `<dir>/ca/ca.pem`).
    pub fn new() -> Pki {
        let mut pki = Pki {
            dir: TempDir::new("pki"),
            cas: Vec::new(),
            identities: Vec::new(),
        };
        pki.add_ca("ca", TRUST_DOMAIN);
        pki
    }

    /// Adds another root (`label` names it, for a second CA of the same trust domain too).
    pub fn add_ca(&mut self, label: &str, trust_domain: &str) -> PathBuf {
        let td = TrustDomain::new(trust_domain).expect("trust domain");
        let ca = DevCa::generate(&td, &DevCaOptions::default()).expect("generate CA");
        let dir = self.dir.join(label);
        ca.write(&dir).expect("write CA");
        let pem = dir.join(remora_certs::CA_CERT_FILE);
        self.cas.push((label.to_string(), ca, pem.clone()));
        pem
    }

    /// The first CA's certificate file.
    pub fn ca_pem(&self) -> &Path {
        &self.cas[0].2
    }

    fn ca(&self, label: &str) -> &DevCa {
        &self
            .cas
            .iter()
            .find(|(l, _, _)| l == label)
            .unwrap_or_else(|| panic!("no CA {label}"))
            .1
    }

    /// Issues `spiffe` from the first CA, valid for a day, with `dns` SANs.
    pub fn issue(&mut self, name: &str, spiffe: &str, dns: &[&str]) -> Identity {
        let opts = IssueOptions {
            dns_names: dns.iter().map(|d| d.to_string()).collect(),
            ..IssueOptions::default()
        };
        self.issue_from("ca", name, spiffe, &opts)
    }

    /// Issues an already expired certificate (valid 2020-01-01 to 2020-01-02).
    pub fn issue_expired(&mut self, name: &str, spiffe: &str) -> Identity {
        let day = std::time::Duration::from_secs(86_400);
        let start = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800);
        let opts = IssueOptions {
            not_before: Some(start),
            not_after: Some(start + day),
            ..IssueOptions::default()
        };
        self.issue_from("ca", name, spiffe, &opts)
    }

    /// Issues from the CA labelled `ca`.
    pub fn issue_from(
        &mut self,
        ca: &str,
        name: &str,
        spiffe: &str,
        opts: &IssueOptions,
    ) -> Identity {
        let id = SpiffeId::parse(spiffe).expect("SPIFFE ID");
        let cert = self.ca(ca).issue(&id, opts).expect("issue");
        let dir = self.dir.join(name);
        cert.write(&dir).expect("write identity");
        let serial = cert.leaf_info().expect("leaf info").serial().to_string();
        let ident = Identity {
            name: name.to_string(),
            spiffe: spiffe.to_string(),
            dir,
            serial,
        };
        self.identities.retain(|i| i.name != name);
        self.identities.push(ident.clone());
        ident
    }

    pub fn get(&self, name: &str) -> &Identity {
        self.identities
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no identity {name}"))
    }

    /// A path in the PKI's scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Placeholder values for every identity and CA.
    pub fn vars(&self) -> Vars {
        let mut v = Vars::new();
        v.set("pki_ca", self.ca_pem().display());
        for (label, _, pem) in &self.cas {
            v.set(&format!("pki_{label}_ca"), pem.display());
        }
        for i in &self.identities {
            let n = &i.name;
            v.set(&format!("pki_{n}_cert"), i.cert().display());
            v.set(&format!("pki_{n}_key"), i.key().display());
            v.set(&format!("pki_{n}_root"), i.root().display());
            v.set(&format!("pki_{n}_dir"), i.dir.display());
        }
        v
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// Replaces the placeholders `vars` has values for and leaves the others for the stack.
pub fn prerender(template: &str, vars: &Vars) -> String {
    let mut out = template.to_string();
    for name in crate::template::placeholders(template) {
        if let Some(value) = vars.get(&name) {
            out = out.replace(&format!("{{{{{name}}}}}", name = name), value);
        }
    }
    out
}

/// The hex SHA-256 of a PEM certificate's DER, as Envoy puts it in XFCC `Hash=` (via openssl).
pub fn cert_sha256(pem_path: &Path) -> String {
    let der = std::process::Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(pem_path)
        .output()
        .expect("openssl x509");
    let dir = TempDir::new("hash");
    let der_path = dir.join("cert.der");
    std::fs::write(&der_path, &der.stdout).expect("write der");
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .arg(&der_path)
        .output()
        .expect("openssl dgst");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
