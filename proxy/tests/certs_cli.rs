//! `remora certs` end to end: the files it writes are checked with the real `openssl`, the way an
//! operator would check them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn remora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_remora"))
        .args(args)
        .output()
        .expect("run remora")
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (is it installed?)")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "remora-certs-cli-{label}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn path(&self, rel: &str) -> String {
        self.0.join(rel).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn make_ca(s: &Scratch, td: &str, extra: &[&str]) -> String {
    let dir = s.path(&format!("ca-{td}"));
    let out = remora(&[&["certs", "ca", "--trust-domain", td, "--out", &dir], extra].concat());
    assert!(out.status.success(), "{}", text(&out));
    dir
}

fn issue(s: &Scratch, ca: &str, name: &str, args: &[&str]) -> Output {
    let out_dir = s.path(name);
    remora(&[&["certs", "issue", "--ca", ca, "--out", &out_dir], args].concat())
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn issued_workload_cert_verifies_against_the_ca_with_openssl() {
    let s = Scratch::new("verify");
    let ca = make_ca(&s, "cluster.local", &[]);
    assert_eq!(mode(&Path::new(&ca).join("ca-key.pem")), 0o600);
    let out = issue(
        &s,
        &ca,
        "web",
        &[
            "--spiffe",
            "spiffe://cluster.local/ns/default/sa/web",
            "--dns",
            "web.default.svc",
            "--dns",
            "web",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let chain = s.path("web/cert-chain.pem");
    assert_eq!(mode(Path::new(&s.path("web/key.pem"))), 0o600);

    let v = openssl(&["verify", "-CAfile", &format!("{ca}/ca.pem"), &chain]);
    assert!(v.status.success(), "{}", text(&v));
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("{chain}: OK")
    );
    // root-cert.pem is the same root: a peer trusting it verifies the chain too.
    let v = openssl(&["verify", "-CAfile", &s.path("web/root-cert.pem"), &chain]);
    assert!(v.status.success(), "{}", text(&v));

    let san = openssl(&["x509", "-noout", "-ext", "subjectAltName", "-in", &chain]);
    assert!(san.status.success(), "{}", text(&san));
    let san = String::from_utf8_lossy(&san.stdout);
    assert!(
        san.contains("URI:spiffe://cluster.local/ns/default/sa/web, DNS:web.default.svc, DNS:web"),
        "{san}"
    );
    // Usable as both a server and a client certificate (mTLS both ways).
    let eku = openssl(&["x509", "-noout", "-ext", "extendedKeyUsage", "-in", &chain]);
    let eku = String::from_utf8_lossy(&eku.stdout);
    assert!(
        eku.contains("TLS Web Server Authentication")
            && eku.contains("TLS Web Client Authentication"),
        "{eku}"
    );
    // The key matches the certificate.
    let cert_pub = openssl(&["x509", "-noout", "-pubkey", "-in", &chain]);
    let key_pub = openssl(&["pkey", "-pubout", "-in", &s.path("web/key.pem")]);
    assert!(key_pub.status.success(), "{}", text(&key_pub));
    assert_eq!(cert_pub.stdout, key_pub.stdout);
}

#[test]
fn a_cert_from_another_ca_does_not_verify() {
    let s = Scratch::new("other-ca");
    let ca = make_ca(&s, "cluster.local", &[]);
    let other = s.path("other");
    let out = remora(&[
        "certs",
        "ca",
        "--trust-domain",
        "cluster.local",
        "--out",
        &other,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = issue(
        &s,
        &other,
        "w",
        &["--spiffe", "spiffe://cluster.local/ns/a/sa/b"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v = openssl(&[
        "verify",
        "-CAfile",
        &format!("{ca}/ca.pem"),
        &s.path("w/cert-chain.pem"),
    ]);
    assert!(!v.status.success(), "{}", text(&v));
}

#[test]
fn ed25519_ca_and_leaf_verify() {
    let s = Scratch::new("ed25519");
    let ca = make_ca(&s, "example.org", &["--ed25519"]);
    let out = issue(
        &s,
        &ca,
        "e",
        &[
            "--spiffe",
            "spiffe://example.org/svc",
            "--ed25519",
            "--hours",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v = openssl(&[
        "verify",
        "-CAfile",
        &format!("{ca}/ca.pem"),
        &s.path("e/cert-chain.pem"),
    ]);
    assert!(v.status.success(), "{}", text(&v));
    let t = openssl(&[
        "x509",
        "-noout",
        "-text",
        "-in",
        &s.path("e/cert-chain.pem"),
    ]);
    assert!(
        String::from_utf8_lossy(&t.stdout).contains("ED25519"),
        "{}",
        text(&t)
    );
}

#[test]
fn explicit_validity_makes_an_expired_cert_that_openssl_rejects() {
    let s = Scratch::new("expired");
    let ca = make_ca(&s, "cluster.local", &[]);
    let out = issue(
        &s,
        &ca,
        "old",
        &[
            "--spiffe",
            "spiffe://cluster.local/ns/default/sa/old",
            "--not-before",
            "2020-01-01T00:00:00Z",
            "--not-after",
            "2020-01-02T00:00:00Z",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let chain = s.path("old/cert-chain.pem");
    let dates = openssl(&["x509", "-noout", "-dates", "-in", &chain]);
    assert_eq!(
        String::from_utf8_lossy(&dates.stdout),
        "notBefore=Jan  1 00:00:00 2020 GMT\nnotAfter=Jan  2 00:00:00 2020 GMT\n"
    );
    let v = openssl(&["verify", "-CAfile", &format!("{ca}/ca.pem"), &chain]);
    assert!(!v.status.success());
    assert!(text(&v).contains("certificate has expired"), "{}", text(&v));

    let i = remora(&["certs", "inspect", &chain]);
    assert!(i.status.success(), "{}", text(&i));
    let t = String::from_utf8_lossy(&i.stdout);
    assert!(
        t.contains("not after:         2020-01-02T00:00:00Z\n"),
        "{t}"
    );
    assert!(t.contains("status:            expired\n"), "{t}");
    assert!(t.contains("days until expiry: 0\n"), "{t}");
}

#[test]
fn lifetime_flags_set_not_after() {
    let s = Scratch::new("days");
    let ca = make_ca(&s, "cluster.local", &[]);
    let out = issue(
        &s,
        &ca,
        "d",
        &["--spiffe", "spiffe://cluster.local/x", "--days", "30"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let chain = s.path("d/cert-chain.pem");
    // Valid for 29 days and a bit more from now, not for 31.
    let ok = openssl(&[
        "x509",
        "-noout",
        "-checkend",
        &(29 * 86_400).to_string(),
        "-in",
        &chain,
    ]);
    assert!(ok.status.success(), "{}", text(&ok));
    let gone = openssl(&[
        "x509",
        "-noout",
        "-checkend",
        &(31 * 86_400).to_string(),
        "-in",
        &chain,
    ]);
    assert!(!gone.status.success(), "{}", text(&gone));
}

#[test]
fn inspect_prints_serial_validity_sans_and_spiffe_id() {
    let s = Scratch::new("inspect");
    let ca = make_ca(&s, "cluster.local", &[]);
    let out = issue(
        &s,
        &ca,
        "web",
        &[
            "--spiffe",
            "spiffe://cluster.local/ns/default/sa/web",
            "--dns",
            "web.default",
            // 36 hours: one whole day left however long the test takes.
            "--hours",
            "36",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let chain = s.path("web/cert-chain.pem");
    let i = remora(&["certs", "inspect", &chain]);
    assert!(i.status.success(), "{}", text(&i));
    let t = String::from_utf8_lossy(&i.stdout);

    // The serial is openssl's, lowercased.
    let serial = openssl(&["x509", "-noout", "-serial", "-in", &chain]);
    let serial = String::from_utf8_lossy(&serial.stdout);
    let serial = serial
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    assert!(
        t.contains(&format!("serial:            {serial}\n")),
        "{t}\nopenssl: {serial}"
    );
    for line in [
        "certificate:       0\n",
        "uri sans:          spiffe://cluster.local/ns/default/sa/web\n",
        "dns sans:          web.default\n",
        "spiffe id:         spiffe://cluster.local/ns/default/sa/web\n",
        "status:            valid\n",
        "days until expiry: 1\n",
        "ca:                no\n",
        "issuer:            O=remora dev CA, CN=cluster.local root\n",
    ] {
        assert!(t.contains(line), "missing {line:?} in\n{t}");
    }
    // The CA file reads as a CA with the trust domain's ID.
    let i = remora(&["certs", "inspect", &format!("{ca}/ca.pem")]);
    let t = String::from_utf8_lossy(&i.stdout);
    assert!(
        t.contains("ca:                yes\n")
            && t.contains("spiffe id:         spiffe://cluster.local\n"),
        "{t}"
    );
}

#[test]
fn errors_name_the_file_or_flag() {
    let s = Scratch::new("errors");
    let missing = s.path("no-ca");
    let out = issue(&s, &missing, "x", &["--spiffe", "spiffe://cluster.local/x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{missing}/ca.pem: cannot read")),
        "{err}"
    );

    let ca = make_ca(&s, "cluster.local", &[]);
    let out = issue(
        &s,
        &ca,
        "x",
        &["--spiffe", "spiffe://other.domain/ns/a/sa/b"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cluster.local cannot issue spiffe://other.domain/ns/a/sa/b"),
        "{err}"
    );

    let out = issue(&s, &ca, "x", &["--spiffe", "https://web"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--spiffe \"https://web\""), "{err}");

    let out = issue(
        &s,
        &ca,
        "x",
        &[
            "--spiffe",
            "spiffe://cluster.local/x",
            "--not-after",
            "soon",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--not-after \"soon\": not an RFC 3339 time"),
        "{err}"
    );

    // --days and --not-after are exclusive: clap refuses.
    let out = issue(
        &s,
        &ca,
        "x",
        &[
            "--spiffe",
            "spiffe://cluster.local/x",
            "--days",
            "1",
            "--not-after",
            "2030-01-01T00:00:00Z",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let garbage = s.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let out = remora(&["certs", "inspect", &garbage]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&garbage), "{err}");

    let out = remora(&[
        "certs",
        "ca",
        "--trust-domain",
        "Bad Domain",
        "--out",
        &s.path("b"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--trust-domain \"Bad Domain\""), "{err}");
}
