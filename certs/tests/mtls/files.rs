//! The dev CA and issued certificates on disk, and loading errors that name the file.

use std::time::{Duration, SystemTime};

use remora_certs::{
    certified_key_from_files, certified_key_from_pem, CertError, CertInfo, DevCa, IssueOptions,
    SanMatcher, TrustBundle, TrustBundleSet, CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, KEY_FILE,
    ROOT_CERT_FILE,
};

use crate::mtls::support::*;

#[test]
fn dev_ca_round_trips_through_files_and_issues_verifiable_certificates() {
    let dir = TempDir::new("dev-ca");
    let original = ca("cluster.local");
    original.write(&dir.0.join("ca")).expect("write CA");
    assert!(dir.0.join("ca").join(CA_CERT_FILE).exists());
    assert!(dir.0.join("ca").join(CA_KEY_FILE).exists());

    let loaded = DevCa::load(&dir.0.join("ca")).expect("load CA");
    assert_eq!(loaded.trust_domain(), &td("cluster.local"));
    assert_eq!(loaded.cert_der(), original.cert_der());

    // The reloaded CA signs; workload files are written in Istio's layout and read back.
    let server_id = "spiffe://cluster.local/ns/default/sa/server";
    let client_id = "spiffe://cluster.local/ns/default/sa/client";
    for (name, spiffe) in [("server", server_id), ("client", client_id)] {
        loaded
            .issue(&id(spiffe), &IssueOptions::default())
            .expect("issue")
            .write(&dir.0.join(name))
            .expect("write workload");
    }
    let load_key = |name: &str| {
        std::sync::Arc::new(
            certified_key_from_files(
                &dir.0.join(name).join(CERT_CHAIN_FILE),
                &dir.0.join(name).join(KEY_FILE),
            )
            .expect("load workload"),
        )
    };
    // Trust comes from the workload's own root-cert.pem, as an Istio sidecar would load it.
    let roots = || {
        TrustBundleSet::single(
            TrustBundle::from_file(&dir.0.join("server").join(ROOT_CERT_FILE)).expect("root"),
        )
    };
    let srv = server(
        roots(),
        vec![SanMatcher::SpiffeId(id(client_id))],
        true,
        resolver(load_key("server")),
        TLS13,
    );
    let cli = client(
        roots(),
        vec![SanMatcher::SpiffeId(id(server_id))],
        Some(resolver(load_key("client"))),
        TLS13,
    );
    let pair = handshake(cli, srv);
    assert!(
        pair.ok(),
        "client {:?} server {:?}",
        pair.client_error,
        pair.server_error
    );

    // The original (in-memory) CA's certificates verify against the reloaded one: same root.
    let cli = client(
        bundle_of(&loaded),
        Vec::new(),
        Some(resolver(leaf(&original, client_id))),
        TLS13,
    );
    let srv = server(
        bundle_of(&original),
        Vec::new(),
        true,
        resolver(leaf(&loaded, server_id)),
        TLS13,
    );
    assert!(handshake(cli, srv).ok());
}

#[cfg(unix)]
#[test]
fn private_keys_are_written_owner_only_and_no_temp_files_remain() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("modes");
    let ca = ca("cluster.local");
    ca.write(&dir.0).expect("write CA");
    ca.issue(
        &id("spiffe://cluster.local/ns/a/sa/b"),
        &IssueOptions::default(),
    )
    .expect("issue")
    .write(&dir.0)
    .expect("write");
    let mode = |f: &str| {
        std::fs::metadata(dir.0.join(f))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(CA_KEY_FILE), 0o600);
    assert_eq!(mode(KEY_FILE), 0o600);
    assert_eq!(mode(CERT_CHAIN_FILE), 0o644);
    let mut names: Vec<String> = std::fs::read_dir(&dir.0)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ca-key.pem",
            "ca.pem",
            "cert-chain.pem",
            "key.pem",
            "root-cert.pem"
        ]
    );
}

#[test]
fn the_dev_ca_refuses_foreign_trust_domains_and_empty_validity() {
    let ca = ca("cluster.local");
    let err = ca
        .issue(
            &id("spiffe://other.local/ns/a/sa/b"),
            &IssueOptions::default(),
        )
        .expect_err("foreign");
    assert!(err.to_string().contains("other.local"), "{err}");
    let now = SystemTime::now();
    let backwards = IssueOptions {
        not_before: Some(now),
        not_after: Some(now - Duration::from_secs(1)),
        ..IssueOptions::default()
    };
    assert!(ca
        .issue(&id("spiffe://cluster.local/x"), &backwards)
        .is_err());
}

#[test]
fn loading_a_missing_ca_names_the_file() {
    let dir = TempDir::new("missing");
    let err = DevCa::load(&dir.0).expect_err("nothing there");
    assert!(matches!(err, CertError::Read { .. }));
    assert!(err.to_string().contains(CA_CERT_FILE), "{err}");
}

#[test]
fn a_key_that_is_not_the_certificates_is_named_with_both_files() {
    let ca = ca("cluster.local");
    let a = ca
        .issue(&id("spiffe://cluster.local/a"), &IssueOptions::default())
        .expect("a");
    let b = ca
        .issue(&id("spiffe://cluster.local/b"), &IssueOptions::default())
        .expect("b");
    let err = certified_key_from_pem(
        "/var/run/secrets/a/cert-chain.pem",
        a.chain_pem.as_bytes(),
        "/var/run/secrets/b/key.pem",
        b.key_pem.as_bytes(),
    )
    .expect_err("mismatch");
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("/var/run/secrets/b/key.pem: the private key does not match"),
        "{text}"
    );
    assert!(text.contains("/var/run/secrets/a/cert-chain.pem"), "{text}");

    // A certificate where the key should be, and the reverse.
    let err = certified_key_from_pem(
        "chain.pem",
        a.chain_pem.as_bytes(),
        "key.pem",
        a.chain_pem.as_bytes(),
    )
    .expect_err("no key");
    assert!(matches!(err, CertError::NoPrivateKey { ref origin } if origin == "key.pem"));
    let err = certified_key_from_pem(
        "chain.pem",
        a.key_pem.as_bytes(),
        "key.pem",
        a.key_pem.as_bytes(),
    )
    .expect_err("no cert");
    assert!(matches!(err, CertError::NoCertificates { ref origin } if origin == "chain.pem"));
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mtls/fixtures")
        .join(name)
}

#[test]
fn pkcs1_rsa_sec1_ec_and_pkcs8_keys_all_load() {
    for (cert, key) in [
        ("rsa-cert.pem", "rsa-key-pkcs1.pem"),
        ("ec-cert.pem", "ec-key-sec1.pem"),
    ] {
        certified_key_from_files(&fixture(cert), &fixture(key))
            .unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    let issued = ca("cluster.local")
        .issue(&id("spiffe://cluster.local/a"), &IssueOptions::default())
        .expect("issue");
    assert!(
        issued.key_pem.contains("BEGIN PRIVATE KEY"),
        "rcgen writes PKCS#8"
    );
    issued.certified_key().expect("pkcs8");

    let err = certified_key_from_files(&fixture("rsa-cert.pem"), &fixture("ec-key-sec1.pem"))
        .expect_err("mismatch");
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
}

#[test]
fn an_rsa_server_certificate_verifies_and_signs() {
    // The self-signed fixture is its own trust anchor.
    let bundle = TrustBundle::from_file(&fixture("rsa-cert.pem")).expect("bundle");
    let key = certified_key_from_files(&fixture("rsa-cert.pem"), &fixture("rsa-key-pkcs1.pem"))
        .expect("rsa key");
    let ca = ca("cluster.local");
    let srv = server(
        bundle_of(&ca),
        Vec::new(),
        false,
        resolver(std::sync::Arc::new(key)),
        TLS13,
    );
    let cli = client(
        TrustBundleSet::single(bundle),
        vec![SanMatcher::SpiffeId(id("spiffe://fixtures.test/rsa"))],
        None,
        TLS13,
    );
    let pair = handshake(cli, srv);
    assert!(
        pair.ok(),
        "client {:?} server {:?}",
        pair.client_error,
        pair.server_error
    );
}

#[test]
fn a_bundle_file_with_several_roots_trusts_each_of_them() {
    let dir = TempDir::new("bundle");
    let first = ca("cluster.local");
    let second = crate::mtls::support::ca("cluster.local");
    let path = dir.0.join("roots.pem");
    std::fs::write(&path, format!("{}{}", first.cert_pem(), second.cert_pem())).expect("write");
    let bundle = TrustBundle::from_file(&path).expect("bundle");
    assert_eq!(bundle.roots().len(), 2);
    assert_eq!(bundle.origin(), path.display().to_string());
    let infos = bundle.cert_infos().expect("infos");
    assert!(infos.iter().all(CertInfo::is_ca));

    let client_id = "spiffe://cluster.local/ns/default/sa/client";
    let server_id = "spiffe://cluster.local/ns/default/sa/server";
    for issuer in [&first, &second] {
        let srv = server(
            TrustBundleSet::single(bundle.clone()),
            Vec::new(),
            true,
            resolver(leaf(&first, server_id)),
            TLS13,
        );
        let cli = client(
            bundle_of(&first),
            Vec::new(),
            Some(resolver(leaf(issuer, client_id))),
            TLS13,
        );
        assert!(handshake(cli, srv).ok());
    }

    let missing = dir.0.join("nope.pem");
    let err = TrustBundle::from_file(&missing).expect_err("missing");
    assert!(
        err.to_string().starts_with(&missing.display().to_string()),
        "{err}"
    );
    std::fs::write(&path, "not a certificate\n").expect("write");
    let err = TrustBundle::from_file(&path).expect_err("empty");
    assert_eq!(
        err.to_string(),
        format!("{}: no CERTIFICATE PEM block found", path.display())
    );
}

#[test]
fn cert_info_reports_serial_validity_and_sans() {
    let ca = ca("cluster.local");
    let opts = IssueOptions {
        dns_names: vec!["web.default.svc.cluster.local".to_string()],
        validity: Duration::from_secs(10 * 86_400),
        ..IssueOptions::default()
    };
    let issued = ca
        .issue(&id("spiffe://cluster.local/ns/default/sa/web"), &opts)
        .expect("issue");
    let info = issued.leaf_info().expect("info");
    let now = SystemTime::now();
    assert_eq!(
        info.uri_sans(),
        ["spiffe://cluster.local/ns/default/sa/web".to_string()]
    );
    assert_eq!(
        info.dns_sans(),
        ["web.default.svc.cluster.local".to_string()]
    );
    assert_eq!(
        info.serial().len(),
        32,
        "128-bit serial in hex: {}",
        info.serial()
    );
    assert!(info
        .serial()
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let later = now + Duration::from_secs(3600);
    assert_eq!(
        info.days_until_expiry_at(later),
        9,
        "rounded down, as Envoy reports it"
    );
    let secs = info.seconds_until_expiry_at(now);
    assert!((10 * 86_400 - 5..=10 * 86_400).contains(&secs), "{secs}");
    assert!(info.is_valid_at(now));
    assert!(!info.is_ca());

    // The serial is the one a peer sees on the wire.
    let key = issued.certified_key().expect("key");
    let wire = CertInfo::parse("wire", 0, &key.cert[0]).expect("parse");
    assert_eq!(wire.serial(), info.serial());

    let gone = ca
        .issue(&id("spiffe://cluster.local/old"), &expired())
        .expect("issue");
    let gone = gone.leaf_info().expect("info");
    assert_eq!(gone.days_until_expiry(), 0);
    assert!(gone.seconds_until_expiry() < -86_000);
    assert!(!gone.is_valid_at(SystemTime::now()));
}
