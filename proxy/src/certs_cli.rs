//! `remora certs`: mint a development CA, issue SPIFFE workload certificates in Istio's file
//! layout, and inspect certificates, so a mesh can be tried without a control plane.

mod rfc3339;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use remora_certs::{
    CertError, CertInfo, DevCa, DevCaOptions, IssueOptions, KeyAlgorithm, SpiffeId, TrustDomain,
    CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE,
};

const HOUR: u64 = 60 * 60;
const DAY: u64 = 24 * HOUR;

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Generate a self-signed root CA for a trust domain (writes ca.pem and ca-key.pem).
    Ca(CaArgs),
    /// Issue a SPIFFE workload certificate (writes cert-chain.pem, key.pem, root-cert.pem).
    Issue(IssueArgs),
    /// Print the serial, validity, SANs and SPIFFE ID of each certificate in a PEM file.
    Inspect(InspectArgs),
}

#[derive(Debug, clap::Args)]
pub struct CaArgs {
    /// The trust domain the CA issues for (`cluster.local`).
    #[arg(long = "trust-domain")]
    pub trust_domain: String,
    /// Directory to write ca.pem and ca-key.pem into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Use an Ed25519 key instead of ECDSA P-256.
    #[arg(long)]
    pub ed25519: bool,
    /// How long the root is valid.
    #[arg(long, default_value_t = 3650)]
    pub days: u64,
}

#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// Directory holding the CA's ca.pem and ca-key.pem.
    #[arg(long)]
    pub ca: PathBuf,
    /// The workload's SPIFFE ID (`spiffe://cluster.local/ns/default/sa/web`).
    #[arg(long)]
    pub spiffe: String,
    /// A DNS SAN to add besides the SPIFFE URI (repeatable).
    #[arg(long = "dns")]
    pub dns: Vec<String>,
    /// Lifetime in days from now.
    #[arg(long, conflicts_with_all = ["hours", "not_before", "not_after"])]
    pub days: Option<u64>,
    /// Lifetime in hours from now (24 when no lifetime is given, as Istio's).
    #[arg(long, conflicts_with_all = ["not_before", "not_after"])]
    pub hours: Option<u64>,
    /// Start of validity, RFC 3339 (`2020-01-01T00:00:00Z`); default a minute ago.
    #[arg(long = "not-before")]
    pub not_before: Option<String>,
    /// End of validity, RFC 3339; a past time makes an expired certificate for tests.
    #[arg(long = "not-after")]
    pub not_after: Option<String>,
    /// Use an Ed25519 key instead of ECDSA P-256.
    #[arg(long)]
    pub ed25519: bool,
    /// Directory to write the Istio layout into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A PEM file with one or more certificates (cert-chain.pem, root-cert.pem, ca.pem).
    pub file: PathBuf,
}

/// Why a `remora certs` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CertsCliError {
    /// Reading, parsing or writing a certificate or key; the error names the file.
    #[error(transparent)]
    Certs(#[from] CertError),
    #[error("--trust-domain {value:?}: {source}")]
    TrustDomain {
        value: String,
        source: remora_certs::SpiffeIdError,
    },
    #[error("--spiffe {value:?}: {source}")]
    Spiffe {
        value: String,
        source: remora_certs::SpiffeIdError,
    },
    #[error("{flag} {value:?}: not an RFC 3339 time (expected like 2024-01-02T03:04:05Z)")]
    Time { flag: &'static str, value: String },
    #[error("{flag} must be at least 1")]
    ZeroLifetime { flag: &'static str },
    #[error("{flag} {value} is too long")]
    Lifetime { flag: &'static str, value: u64 },
    #[error("{}: {reason}", path.display())]
    Inspect { path: PathBuf, reason: String },
}

/// Runs one `remora certs` command, returning what to print on stdout.
pub fn run(args: &CertsArgs) -> Result<String, CertsCliError> {
    match &args.command {
        CertsCommand::Ca(a) => ca(a),
        CertsCommand::Issue(a) => issue(a),
        CertsCommand::Inspect(a) => inspect(&a.file, SystemTime::now()),
    }
}

fn algorithm(ed25519: bool) -> KeyAlgorithm {
    if ed25519 {
        KeyAlgorithm::Ed25519
    } else {
        KeyAlgorithm::EcdsaP256
    }
}

fn lifetime(flag: &'static str, n: u64, unit: u64) -> Result<Duration, CertsCliError> {
    if n == 0 {
        return Err(CertsCliError::ZeroLifetime { flag });
    }
    // Beyond ~9999 years an X.509 GeneralizedTime cannot say it anyway.
    n.checked_mul(unit)
        .filter(|s| *s < 9000 * 365 * DAY)
        .map(Duration::from_secs)
        .ok_or(CertsCliError::Lifetime { flag, value: n })
}

fn ca(a: &CaArgs) -> Result<String, CertsCliError> {
    let td = TrustDomain::new(&a.trust_domain).map_err(|source| CertsCliError::TrustDomain {
        value: a.trust_domain.clone(),
        source,
    })?;
    let opts = DevCaOptions {
        key_algorithm: algorithm(a.ed25519),
        validity: lifetime("--days", a.days, DAY)?,
    };
    let ca = DevCa::generate(&td, &opts)?;
    ca.write(&a.out)?;
    Ok(format!(
        "wrote {} and {} for trust domain {td}\n",
        a.out.join(CA_CERT_FILE).display(),
        a.out.join(CA_KEY_FILE).display()
    ))
}

fn time_flag(
    flag: &'static str,
    value: &Option<String>,
) -> Result<Option<SystemTime>, CertsCliError> {
    value
        .as_deref()
        .map(|v| {
            rfc3339::parse(v).ok_or_else(|| CertsCliError::Time {
                flag,
                value: v.to_string(),
            })
        })
        .transpose()
}

fn issue(a: &IssueArgs) -> Result<String, CertsCliError> {
    let ca = DevCa::load(&a.ca)?;
    let id = SpiffeId::parse(&a.spiffe).map_err(|source| CertsCliError::Spiffe {
        value: a.spiffe.clone(),
        source,
    })?;
    let validity = match (a.days, a.hours) {
        (Some(d), _) => lifetime("--days", d, DAY)?,
        (None, Some(h)) => lifetime("--hours", h, HOUR)?,
        (None, None) => IssueOptions::default().validity,
    };
    let opts = IssueOptions {
        dns_names: a.dns.clone(),
        validity,
        not_before: time_flag("--not-before", &a.not_before)?,
        not_after: time_flag("--not-after", &a.not_after)?,
        key_algorithm: algorithm(a.ed25519),
    };
    let cert = ca.issue(&id, &opts)?;
    cert.write(&a.out)?;
    let leaf = cert.leaf_info()?;
    Ok(format!(
        "wrote {}/{{{CERT_CHAIN_FILE},{KEY_FILE},{ROOT_CERT_FILE}}} for {id}\nserial:     {}\nnot after:  {}\n",
        a.out.display(),
        leaf.serial(),
        rfc3339::format(leaf.not_after()),
    ))
}

fn inspect(path: &Path, now: SystemTime) -> Result<String, CertsCliError> {
    let pem = std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertInfo::from_pem(&path.display().to_string(), &pem)?;
    let mut out = String::new();
    for (i, info) in certs.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        describe(&mut out, i, info, now).map_err(|e| CertsCliError::Inspect {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(out)
}

fn describe(out: &mut String, index: usize, c: &CertInfo, now: SystemTime) -> std::fmt::Result {
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let status = if now < c.not_before() {
        "not yet valid"
    } else if c.is_valid_at(now) {
        "valid"
    } else {
        "expired"
    };
    writeln!(out, "certificate:       {index}")?;
    writeln!(out, "serial:            {}", c.serial())?;
    writeln!(out, "subject:           {}", or_dash(c.subject()))?;
    writeln!(out, "issuer:            {}", or_dash(c.issuer()))?;
    writeln!(
        out,
        "ca:                {}",
        if c.is_ca() { "yes" } else { "no" }
    )?;
    writeln!(
        out,
        "not before:        {}",
        rfc3339::format(c.not_before())
    )?;
    writeln!(out, "not after:         {}", rfc3339::format(c.not_after()))?;
    writeln!(out, "status:            {status}")?;
    writeln!(out, "days until expiry: {}", c.days_until_expiry_at(now))?;
    writeln!(out, "uri sans:          {}", list(c.uri_sans()))?;
    writeln!(out, "dns sans:          {}", list(c.dns_sans()))?;
    let spiffe = c.spiffe_id().map(|id| id.to_string());
    writeln!(
        out,
        "spiffe id:         {}",
        spiffe.as_deref().unwrap_or("-")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "remora-certs-cli-{label}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn inspect_reports_identity_and_expiry() {
        let dir = scratch("inspect");
        let td = TrustDomain::new("cluster.local").expect("td");
        let ca = DevCa::generate(&td, &DevCaOptions::default()).expect("ca");
        let id = SpiffeId::istio("cluster.local", "default", "web").expect("id");
        let opts = IssueOptions {
            dns_names: vec!["web.default.svc".into()],
            validity: Duration::from_secs(3 * DAY + HOUR),
            ..IssueOptions::default()
        };
        ca.issue(&id, &opts)
            .expect("issue")
            .write(&dir)
            .expect("write");
        let text = inspect(&dir.join(CERT_CHAIN_FILE), SystemTime::now()).expect("inspect");
        assert!(
            text.contains("spiffe id:         spiffe://cluster.local/ns/default/sa/web\n"),
            "{text}"
        );
        assert!(
            text.contains("dns sans:          web.default.svc\n"),
            "{text}"
        );
        assert!(text.contains("days until expiry: 3\n"), "{text}");
        assert!(text.contains("status:            valid\n"), "{text}");
        assert!(text.contains("ca:                no\n"), "{text}");
        let later = SystemTime::now() + Duration::from_secs(4 * DAY);
        let text = inspect(&dir.join(CERT_CHAIN_FILE), later).expect("inspect");
        assert!(text.contains("status:            expired\n"), "{text}");
        assert!(text.contains("days until expiry: 0\n"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_times_name_the_flag() {
        let err = time_flag("--not-after", &Some("tomorrow".into())).expect_err("bad time");
        assert_eq!(
            err.to_string(),
            "--not-after \"tomorrow\": not an RFC 3339 time (expected like 2024-01-02T03:04:05Z)"
        );
        assert_eq!(
            lifetime("--hours", 0, HOUR).expect_err("zero").to_string(),
            "--hours must be at least 1"
        );
    }

    #[test]
    fn inspect_of_a_missing_file_names_it() {
        let err =
            inspect(Path::new("/nonexistent/cert.pem"), SystemTime::now()).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("/nonexistent/cert.pem: cannot read"),
            "{err}"
        );
    }
}
