//! File-based xDS (Envoy's `path_config_source`, and the deprecated `path`): a YAML or JSON
//! `DiscoveryResponse` whose resources are the whole state of one type, reloaded when the file
//! changes. Writers replace it by atomic rename (`mv`), as in Envoy's dynamic-config-fs example;
//! polling every [`POLL_INTERVAL`] compares the file's (device, inode, mtime, length), which a
//! rename into `watched_directory` changes.

use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, ConfigSource,
};
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use remora_xds_client::ResourceError;

use super::handlers::{ConfigSink, Decoded, Kind, Named};
use super::stats::UpdateStats;
use crate::config::parse::{from_yaml, unpack_any, ParseOptions};

/// How often watched files are checked.
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

/// The file a config source names, if it is file-based.
#[allow(deprecated)]
pub fn path_of(cs: &ConfigSource) -> Option<PathBuf> {
    match &cs.config_source_specifier {
        Some(ConfigSourceSpecifier::PathConfigSource(p)) => Some(PathBuf::from(&p.path)),
        Some(ConfigSourceSpecifier::Path(p)) => Some(PathBuf::from(p)),
        _ => None,
    }
}

/// One watched file feeding one resource type (LDS or CDS) into a [`ConfigSink`].
pub struct FileSource {
    path: PathBuf,
    kind: Kind,
    sink: Arc<dyn ConfigSink>,
    stats: UpdateStats,
    seen: Mutex<Option<Stamp>>,
}

impl FileSource {
    pub fn new(path: PathBuf, kind: Kind, sink: Arc<dyn ConfigSink>, stats: UpdateStats) -> Self {
        Self {
            path,
            kind,
            sink,
            stats,
            seen: Mutex::new(None),
        }
    }

    /// The last accepted version.
    pub fn stats(&self) -> &UpdateStats {
        &self.stats
    }

    /// Reads and applies the file if it changed since the last attempt. Returns whether an update
    /// was attempted.
    pub fn poll(&self) -> bool {
        let now = stamp(&self.path);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if now.is_none() || *seen == now {
                return false;
            }
            *seen = now;
        }
        let _ = self.load();
        true
    }

    /// Reads and applies the file now. A file that does not parse, or whose resources are rejected,
    /// counts `update_rejected` and leaves the current configuration in place.
    pub fn load(&self) -> Result<(), Vec<ResourceError>> {
        self.stats.attempt();
        let result = std::fs::read_to_string(&self.path)
            .map_err(|e| {
                vec![ResourceError::new(
                    "",
                    format!("cannot read {}: {e}", self.path.display()),
                )]
            })
            .and_then(|text| self.apply(&text));
        match &result {
            Ok(version) => {
                self.stats.success(version);
                tracing::info!(path = %self.path.display(), version = %version, kind = ?self.kind, "file-based xDS update accepted");
            }
            Err(errors) => {
                self.stats.rejected();
                for e in errors {
                    tracing::warn!(path = %self.path.display(), kind = ?self.kind, resource = %e.name, error = %e.message, "file-based xDS update rejected");
                }
            }
        }
        result.map(|_| ())
    }

    fn apply(&self, text: &str) -> Result<String, Vec<ResourceError>> {
        let resp: DiscoveryResponse = from_yaml(text, ParseOptions::default())
            .map_err(|e| vec![ResourceError::new("", e)])?;
        let version = resp.version_info.clone();
        match self.kind {
            Kind::Listener => self.sink.listeners(decode(
                &resp,
                |l: &envoy_types::pb::envoy::config::listener::v3::Listener| l.name.clone(),
            )?),
            Kind::Cluster => self.sink.clusters(decode(
                &resp,
                |c: &envoy_types::pb::envoy::config::cluster::v3::Cluster| c.name.clone(),
            )?),
            Kind::Route => self.sink.routes(decode(
                &resp,
                |r: &envoy_types::pb::envoy::config::route::v3::RouteConfiguration| r.name.clone(),
            )?),
            Kind::Endpoint => self.sink.endpoints(decode(
                &resp,
                |e: &envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment| {
                    e.cluster_name.clone()
                },
            )?),
            Kind::Secret => self.sink.secrets(decode(
                &resp,
                |s: &envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret| {
                    s.name.clone()
                },
            )?),
        }?;
        Ok(version)
    }

    /// Polls the file every [`POLL_INTERVAL`] until `stop` turns true.
    pub fn spawn(
        self: Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let me = self.clone();
                // Reading and translating blocks; keep it off the async workers.
                let _ = tokio::task::spawn_blocking(move || me.poll()).await;
            }
        })
    }
}

/// Reads a file's resources of type `T` as one update (its name, from `name_of`).
pub fn read_update<T: Message + Name + Default>(
    path: &FsPath,
    name_of: impl Fn(&T) -> String,
) -> Result<Decoded<T>, Vec<ResourceError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ResourceError::new(
            "",
            format!("cannot read {}: {e}", path.display()),
        )]
    })?;
    let resp: DiscoveryResponse =
        from_yaml(&text, ParseOptions::default()).map_err(|e| vec![ResourceError::new("", e)])?;
    decode(&resp, name_of)
}

/// The stamp of `path` now, to tell whether it changed since the last look.
pub fn changed(path: &FsPath, seen: &mut Option<(u64, u64, Option<SystemTime>, u64)>) -> bool {
    let now = stamp(path).map(|s| (s.dev, s.ino, s.mtime, s.len));
    if now.is_none() || *seen == now {
        return false;
    }
    *seen = now;
    true
}

/// The resources of a file, all of one type, as a state-of-the-world update.
fn decode<T: Message + Name + Default>(
    resp: &DiscoveryResponse,
    name_of: impl Fn(&T) -> String,
) -> Result<Decoded<T>, Vec<ResourceError>> {
    let mut errors = Vec::new();
    let mut resources = Vec::new();
    for (i, any) in resp.resources.iter().enumerate() {
        match unpack(any) {
            Ok(r) => resources.push(Named {
                name: name_of(&r),
                version: resp.version_info.clone(),
                resource: r,
            }),
            Err(e) => errors.push(ResourceError::new("", format!("resources[{i}]: {e}"))),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Decoded {
        version: resp.version_info.clone(),
        resources,
        removed: Vec::new(),
        full_state: true,
    })
}

fn unpack<T: Message + Name + Default>(any: &Any) -> Result<T, String> {
    unpack_any::<T>(any, ParseOptions::default()).map_err(|e| e.to_string())
}
