//! Secrets, SDS from a file: a `DiscoveryResponse`-shaped YAML/JSON file of `Secret`s, polled for
//! changes to itself and to the certificate, key and CA files its secrets name.
//!
//! Polling compares each file's (device, inode, mtime, length) every [`POLL_INTERVAL`]; an atomic
//! rename (how Istio, cert-manager and `mv -Tf` of a symlinked directory rotate) changes the
//! inode, an in-place rewrite the mtime or length. The stamps are taken before the files are read,
//! so a change that lands while reading is seen by the next poll. A secret that does not load
//! keeps its previous value: a half-rotated pair (new key, old chain) fails the key check, counts
//! `sds.<name>.key_rotation_failed`, and loads on the poll after the second rename.
//!
//! The counters follow Envoy's filesystem subscription: each change of the SDS file is an
//! `update_attempt`; a file that does not read or parse is an `update_failure`, one that parses
//! but whose secret does not load an `update_rejected`.

use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use tracing::{info, warn};

use super::source::load_secret;
use super::store::SecretEntry;
use crate::config::parse::{from_yaml, unpack_any, ParseOptions};
use crate::config::Path;

/// How often SDS files are checked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &FsPath) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        mtime: m.modified().ok(),
        len: m.len(),
    })
}

#[derive(Default)]
struct State {
    entries: Vec<Arc<SecretEntry>>,
    /// Files named by the secrets of the last parse of the SDS file.
    referenced: Vec<PathBuf>,
    /// Stamps of the SDS file, then of `referenced`, at the last load attempt.
    stamps: Vec<Option<Stamp>>,
    attempted: bool,
}

/// One SDS file and the secrets read from it.
pub struct FileWatch {
    path: PathBuf,
    state: Mutex<State>,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch")
            .field("path", &self.path)
            .finish()
    }
}

impl FileWatch {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a secret to load from this file; true when it was not there yet (the caller then polls
    /// so that the new secret loads at once).
    pub fn add(&self, entry: Arc<SecretEntry>) -> bool {
        let mut st = self.lock();
        if st.entries.iter().any(|e| Arc::ptr_eq(e, &entry)) {
            return false;
        }
        st.entries.push(entry);
        st.attempted = false;
        true
    }

    /// Reloads the secrets if the SDS file or a file it names changed since the last attempt.
    pub fn poll(&self) {
        let mut st = self.lock();
        let stamps: Vec<Option<Stamp>> = std::iter::once(self.path.as_path())
            .chain(st.referenced.iter().map(PathBuf::as_path))
            .map(stamp)
            .collect();
        if st.attempted && stamps == st.stamps {
            return;
        }
        let sds_changed = !st.attempted || st.stamps.first() != stamps.first();
        st.stamps = stamps;
        st.attempted = true;
        if sds_changed {
            for entry in &st.entries {
                entry.stats.update_attempt.inc();
            }
        }
        let secrets = match parse_file(&self.path) {
            Ok(s) => s,
            Err(e) => {
                warn!(file = %self.path.display(), error = %e, "SDS file unreadable; keeping the current secrets");
                for entry in &st.entries {
                    entry.stats.update_failure.inc();
                }
                return;
            }
        };
        let referenced: Vec<PathBuf> = secrets.iter().flat_map(referenced_files).collect();
        if referenced != st.referenced {
            // Stamp the new files as they are now, before reading them below.
            st.referenced = referenced;
            let mut stamps = vec![st.stamps.first().copied().flatten()];
            stamps.extend(st.referenced.iter().map(|p| stamp(p)));
            st.stamps = stamps;
        }
        for entry in &st.entries {
            self.load_one(entry, &secrets, sds_changed);
        }
    }

    fn load_one(&self, entry: &SecretEntry, secrets: &[Secret], sds_changed: bool) {
        let fail = |what: String| {
            if sds_changed || entry.current().is_none() {
                entry.stats.update_rejected.inc();
            } else {
                entry.stats.key_rotation_failed.inc();
            }
            warn!(secret = %entry.name(), file = %self.path.display(), error = %what, "secret update rejected; keeping the current value");
        };
        let Some(s) = secrets.iter().find(|s| s.name == entry.name()) else {
            return fail(format!(
                "Unexpected SDS secret (expecting {}): the file has {:?}",
                entry.name(),
                secrets.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
            ));
        };
        let path = Path::root(&self.path.display().to_string()).field(&s.name);
        match load_secret(s, &path) {
            Ok(v) => {
                let first = entry.current().is_none();
                entry.set(v);
                info!(secret = %entry.name(), file = %self.path.display(), first, "secret loaded");
            }
            Err(e) => fail(e.to_string()),
        }
    }
}

/// The secrets of an SDS file: `resources: [ { "@type": ...Secret, name, ... } ]`.
pub fn parse_file(path: &FsPath) -> Result<Vec<Secret>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    parse_text(&text)
}

/// [`parse_file`] over the file's text.
pub fn parse_text(text: &str) -> Result<Vec<Secret>, String> {
    let resp: DiscoveryResponse =
        from_yaml(text, ParseOptions::default()).map_err(|e| e.to_string())?;
    resp.resources
        .iter()
        .enumerate()
        .map(|(i, any)| {
            unpack_any::<Secret>(any, ParseOptions::default())
                .map_err(|e| format!("resources[{i}]: {}", e.message))
        })
        .collect()
}

fn referenced_files(s: &Secret) -> Vec<PathBuf> {
    let sources: Vec<&Option<DataSource>> = match &s.r#type {
        Some(secret::Type::TlsCertificate(c)) => vec![&c.certificate_chain, &c.private_key],
        Some(secret::Type::ValidationContext(v)) => vec![&v.trusted_ca],
        _ => Vec::new(),
    };
    sources
        .into_iter()
        .flatten()
        .filter_map(|ds| match &ds.specifier {
            Some(data_source::Specifier::Filename(f)) => Some(PathBuf::from(f)),
            _ => None,
        })
        .collect()
}
