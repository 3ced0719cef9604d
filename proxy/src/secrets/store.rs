//! Secrets, store: every named secret the TLS contexts use, its current value, and who to tell
//! when it changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::ApiConfigSource;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{SdsSecretConfig, Secret};

use super::file_watch::FileWatch;
use super::source::{load_secret, SecretValue};
use crate::config::{ConfigError, ConfigErrors, Path};
use crate::stats::{Counter, Gauge, Store};

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretSource {
    /// `static_resources.secrets`, or a certificate inlined in a TLS context.
    Static,
    /// SDS from a file (`sds_config.path_config_source`), watched for rotation.
    File(PathBuf),
    /// SDS over an xDS stream; values arrive through [`SecretStore::update`].
    Api,
}

/// A secret's identity: its name and its source (two SDS files may both define `default`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretKey {
    pub name: String,
    pub source: SecretSource,
}

/// Envoy's per-secret SDS stats (`sds.<name>.`).
#[derive(Debug, Clone, Default)]
pub struct SdsStats {
    /// Every new version offered: an SDS file that changed, a secret pushed by a stream.
    pub update_attempt: Counter,
    pub update_success: Counter,
    /// The secret arrived but did not load (bad PEM, mismatched key, missing name).
    pub update_rejected: Counter,
    /// The SDS file could not be read or parsed at all.
    pub update_failure: Counter,
    /// A referenced certificate or key file changed but did not load (Envoy's name).
    pub key_rotation_failed: Counter,
}

type Subscriber = Box<dyn Fn() + Send + Sync>;

/// One named secret. Its value is `None` until it first loads; after that a bad update never
/// replaces a good value.
pub struct SecretEntry {
    key: SecretKey,
    value: ArcSwapOption<SecretValue>,
    subscribers: Mutex<Vec<Subscriber>>,
    pub stats: SdsStats,
    store: std::sync::Weak<Inner>,
}

impl std::fmt::Debug for SecretEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretEntry")
            .field("key", &self.key)
            .field("ready", &self.value.load().is_some())
            .finish()
    }
}

impl SecretEntry {
    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    pub fn name(&self) -> &str {
        &self.key.name
    }

    /// The current value, or `None` while the secret has never loaded.
    pub fn current(&self) -> Option<Arc<SecretValue>> {
        self.value.load_full()
    }

    /// Calls `f` after every change of the value (from the thread that made it).
    pub fn subscribe(&self, f: impl Fn() + Send + Sync + 'static) {
        lock(&self.subscribers).push(Box::new(f));
    }

    /// Installs a new value and tells the subscribers.
    pub fn set(&self, value: SecretValue) {
        self.value.store(Some(Arc::new(value)));
        self.stats.update_success.inc();
        // Subscribers may read other entries; none touches this list.
        for s in lock(&self.subscribers).iter() {
            s();
        }
        if let Some(store) = self.store.upgrade() {
            store.refresh_expiry();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; a poisoned list is still a valid list.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Inner {
    stats: Store,
    entries: Mutex<BTreeMap<SecretKey, Arc<SecretEntry>>>,
    /// Certificates inlined in TLS contexts: not addressable by name, counted for expiry.
    anonymous: Mutex<Vec<Arc<SecretEntry>>>,
    files: Mutex<BTreeMap<PathBuf, Arc<FileWatch>>>,
    days_until_first_cert_expiring: Gauge,
    /// Secrets pushed by a stream, by name: `None` over ADS, else the SDS `api_config_source`.
    api_sources: Mutex<BTreeMap<String, Option<ApiConfigSource>>>,
    /// Bumped whenever `api_sources` gains a name, so SDS clients can subscribe to it.
    api_changed: tokio::sync::watch::Sender<u64>,
}

impl Inner {
    fn all(&self) -> Vec<Arc<SecretEntry>> {
        let mut v: Vec<_> = lock(&self.entries).values().cloned().collect();
        v.extend(lock(&self.anonymous).iter().cloned());
        v
    }

    fn refresh_expiry(&self) {
        let now = SystemTime::now();
        let days = self
            .all()
            .iter()
            .filter_map(|e| e.current())
            .flat_map(|v| {
                v.cert_infos()
                    .into_iter()
                    .map(|c| c.days_until_expiry_at(now))
                    .collect::<Vec<_>>()
            })
            .min();
        // Envoy reports 0 when no certificate is loaded.
        self.days_until_first_cert_expiring
            .set(days.map_or(0, |d| i64::try_from(d).unwrap_or(i64::MAX)));
    }
}

/// The named secrets of one configuration.
///
/// Sources feed it: `static_resources.secrets` at configuration time ([`SecretStore::add_static`]),
/// SDS files through their watchers ([`SecretStore::start`] polls them), and — for a gRPC SDS
/// client — [`SecretStore::update`], which is all such a client has to call with each `Secret`
/// it receives. TLS contexts hold [`SecretEntry`] handles and subscribe to their changes; they never
/// see how a value arrived.
#[derive(Clone)]
pub struct SecretStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore")
            .field("entries", &lock(&self.inner.entries).len())
            .finish()
    }
}

impl SecretStore {
    /// An empty store registering its stats in `stats`.
    pub fn new(stats: &Store) -> Self {
        Self {
            inner: Arc::new(Inner {
                stats: stats.clone(),
                entries: Mutex::default(),
                anonymous: Mutex::default(),
                files: Mutex::default(),
                days_until_first_cert_expiring: stats
                    .gauge("server.days_until_first_cert_expiring"),
                api_sources: Mutex::default(),
                api_changed: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    fn entry(&self, key: SecretKey) -> Arc<SecretEntry> {
        let mut entries = lock(&self.inner.entries);
        entries
            .entry(key.clone())
            .or_insert_with(|| {
                let scope = self.inner.stats.scope(format!("sds.{}.", key.name));
                Arc::new(SecretEntry {
                    stats: SdsStats {
                        update_attempt: scope.counter("update_attempt"),
                        update_success: scope.counter("update_success"),
                        update_rejected: scope.counter("update_rejected"),
                        update_failure: scope.counter("update_failure"),
                        key_rotation_failed: scope.counter("key_rotation_failed"),
                    },
                    key,
                    value: ArcSwapOption::empty(),
                    subscribers: Mutex::default(),
                    store: Arc::downgrade(&self.inner),
                })
            })
            .clone()
    }

    /// Loads `static_resources.secrets` (`path` points at the list).
    pub fn add_static(&self, secrets: &[Secret], path: &Path) -> Result<(), ConfigErrors> {
        let mut errs = ConfigErrors::default();
        for (i, s) in secrets.iter().enumerate() {
            let p = path.index(i);
            if s.name.is_empty() {
                errs.push(p.field("name"), "a static secret needs a name");
                continue;
            }
            let key = SecretKey {
                name: s.name.clone(),
                source: SecretSource::Static,
            };
            if lock(&self.inner.entries).contains_key(&key) {
                errs.push(
                    p.field("name"),
                    format!("duplicate static secret \"{}\"", s.name),
                );
                continue;
            }
            match load_secret(s, &p) {
                Ok(v) => self.entry(key).set(v),
                Err(e) => errs.extend(e),
            }
        }
        errs.finish(())
    }

    /// A value that is not a named secret (a certificate inlined in a TLS context); it never
    /// changes but counts for `server.days_until_first_cert_expiring`.
    pub fn fixed(&self, value: SecretValue) -> Arc<SecretEntry> {
        let entry = Arc::new(SecretEntry {
            key: SecretKey {
                name: String::new(),
                source: SecretSource::Static,
            },
            value: ArcSwapOption::new(Some(Arc::new(value))),
            subscribers: Mutex::default(),
            stats: SdsStats::default(),
            store: Arc::downgrade(&self.inner),
        });
        lock(&self.inner.anonymous).push(entry.clone());
        self.inner.refresh_expiry();
        entry
    }

    /// The secret an `SdsSecretConfig` names (`path` points at it): a static secret when it has
    /// no `sds_config`, else the SDS source's entry (an SDS file is loaded now and watched).
    pub fn resolve(
        &self,
        cfg: &SdsSecretConfig,
        path: &Path,
    ) -> Result<Arc<SecretEntry>, ConfigErrors> {
        if cfg.name.is_empty() {
            return Err(ConfigError::new(path.field("name"), "a secret name is required").into());
        }
        let Some(source) = &cfg.sds_config else {
            let key = SecretKey {
                name: cfg.name.clone(),
                source: SecretSource::Static,
            };
            return lock(&self.inner.entries).get(&key).cloned().ok_or_else(|| {
                ConfigError::new(
                    path.field("name"),
                    format!("Unknown static secret: {}", cfg.name),
                )
                .into()
            });
        };
        let spath = path.field("sds_config");
        #[allow(deprecated)]
        let file = match &source.config_source_specifier {
            Some(ConfigSourceSpecifier::Path(p)) => PathBuf::from(p),
            Some(ConfigSourceSpecifier::PathConfigSource(pcs)) => PathBuf::from(&pcs.path),
            // Pushed by an SDS stream through `update`; the context is not ready until it arrives.
            Some(ConfigSourceSpecifier::Ads(_))
            | Some(ConfigSourceSpecifier::ApiConfigSource(_)) => {
                let api = match &source.config_source_specifier {
                    Some(ConfigSourceSpecifier::ApiConfigSource(a)) => Some(a.clone()),
                    _ => None,
                };
                let added = {
                    let mut sources = lock(&self.inner.api_sources);
                    let before = sources.get(&cfg.name);
                    let new = before != Some(&api);
                    sources.insert(cfg.name.clone(), api);
                    new
                };
                if added {
                    self.inner.api_changed.send_modify(|v| *v += 1);
                }
                return Ok(self.entry(SecretKey {
                    name: cfg.name.clone(),
                    source: SecretSource::Api,
                }));
            }
            Some(_) | None => {
                return Err(ConfigError::new(&spath, "sds_config needs path_config_source").into())
            }
        };
        if !file.exists() {
            return Err(ConfigError::new(
                spath.field("path_config_source").field("path"),
                format!(
                    "paths must refer to an existing path in the system: '{}' does not exist",
                    file.display()
                ),
            )
            .into());
        }
        let entry = self.entry(SecretKey {
            name: cfg.name.clone(),
            source: SecretSource::File(file.clone()),
        });
        let watch = lock(&self.inner.files)
            .entry(file.clone())
            .or_insert_with(|| Arc::new(FileWatch::new(file)))
            .clone();
        if watch.add(entry.clone()) {
            watch.poll();
        }
        Ok(entry)
    }

    /// Installs a `Secret` received from an SDS stream. A secret that does not load leaves the
    /// previous value in place and counts `sds.<name>.update_rejected`.
    pub fn update(&self, secret: &Secret) -> Result<(), ConfigErrors> {
        let entry = self.entry(SecretKey {
            name: secret.name.clone(),
            source: SecretSource::Api,
        });
        entry.stats.update_attempt.inc();
        match load_secret(secret, &Path::root("secret").field(&secret.name)) {
            Ok(v) => {
                entry.set(v);
                Ok(())
            }
            Err(e) => {
                entry.stats.update_rejected.inc();
                Err(e)
            }
        }
    }

    /// Checks every watched SDS file once (the watcher task does this every 500 ms).
    pub fn poll_files(&self) {
        let files: Vec<_> = lock(&self.inner.files).values().cloned().collect();
        for f in files {
            f.poll();
        }
    }

    /// Starts watching the SDS files (needs a tokio runtime); the task ends with the store.
    pub fn start(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(super::file_watch::POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let store = SecretStore { inner };
                // Reading files blocks; keep it off the async workers.
                let s = store.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    s.poll_files();
                    s.inner.refresh_expiry();
                })
                .await;
            }
        });
    }

    /// Applies an SDS update: every secret is loaded and installed under its name; those that do not
    /// load keep their previous value and are returned, one error each, naming the field.
    pub fn apply_secrets(
        &self,
        update: &crate::xds::Decoded<Secret>,
    ) -> Result<(), Vec<remora_xds_client::ResourceError>> {
        let mut errors = Vec::new();
        for r in &update.resources {
            if let Err(e) = self.update(&r.resource) {
                errors.extend(
                    e.0.into_iter()
                        .map(|e| remora_xds_client::ResourceError::new(&r.resource.name, e)),
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The names of secrets whose `sds_config` is `ads`.
    pub fn ads_names(&self) -> Vec<String> {
        lock(&self.inner.api_sources)
            .iter()
            .filter(|(_, s)| s.is_none())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Each distinct SDS `api_config_source` with the names expected from it.
    pub fn api_sources(&self) -> Vec<(ApiConfigSource, Vec<String>)> {
        let mut out: Vec<(ApiConfigSource, Vec<String>)> = Vec::new();
        for (name, src) in lock(&self.inner.api_sources).iter() {
            let Some(src) = src else { continue };
            match out.iter_mut().find(|(s, _)| s == src) {
                Some((_, names)) => names.push(name.clone()),
                None => out.push((src.clone(), vec![name.clone()])),
            }
        }
        out
    }

    /// Changes whenever a TLS context starts expecting a pushed secret.
    pub fn api_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.api_changed.subscribe()
    }

    /// The names of secrets that TLS contexts expect from an SDS stream.
    pub fn pushed_names(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.inner.entries)
            .keys()
            .filter(|k| k.source == SecretSource::Api)
            .map(|k| k.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Every named secret, for the admin `/certs` view.
    pub fn entries(&self) -> Vec<Arc<SecretEntry>> {
        self.inner.all()
    }
}
