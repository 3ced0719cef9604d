//! The cluster manager: every cluster by name, read by routes at request time and swapped atomically
//! as CDS and EDS updates arrive.
//!
//! Readers load one immutable [`Clusters`] map (arc-swap) per lookup; an update builds the next map
//! from the current one, so a cluster whose proto did not change keeps its `Arc<Cluster>` (pools,
//! counters, circuit breakers). A new or changed cluster that is not yet initialized (EDS without an
//! assignment, DNS before its first resolution) waits in `warming`, while the previous version, if
//! any, keeps serving, as Envoy's cluster warming does. In-flight requests hold their `Arc<Cluster>`
//! and finish on it; a removed cluster's idle pooled connections close at once.

mod apply;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster as ClusterProto;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

use super::cluster::Cluster;
use super::config::ClusterSpec;
use super::{admin, dns};
use crate::config::{ConfigErrors, Path};
use crate::secrets::SecretStore;
use crate::stats::{Gauge, Store};

/// Where a cluster came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `static_resources.clusters`: never touched by CDS.
    Static,
    /// CDS (gRPC or file).
    Dynamic,
}

/// One cluster with the proto it was built from and when it last changed.
#[derive(Debug)]
pub struct ClusterEntry {
    pub cluster: Arc<Cluster>,
    pub proto: ClusterProto,
    pub origin: Origin,
    /// The `version_info` of the update that last changed it (empty for static clusters).
    pub version: String,
    pub last_updated: SystemTime,
}

/// One immutable state of the manager.
#[derive(Debug, Default, Clone)]
pub struct Clusters {
    /// Serving clusters, static ones first in configuration order, then dynamic ones as they came.
    active: Vec<Arc<ClusterEntry>>,
    by_name: HashMap<String, usize>,
    /// New or changed clusters not initialized yet, by name.
    warming: BTreeMap<String, Arc<ClusterEntry>>,
}

impl Clusters {
    fn from_active(
        active: Vec<Arc<ClusterEntry>>,
        warming: BTreeMap<String, Arc<ClusterEntry>>,
    ) -> Self {
        let by_name = active
            .iter()
            .enumerate()
            .map(|(i, e)| (e.cluster.name().to_string(), i))
            .collect();
        Self {
            active,
            by_name,
            warming,
        }
    }

    fn active(&self, name: &str) -> Option<&Arc<ClusterEntry>> {
        self.by_name.get(name).map(|i| &self.active[*i])
    }
}

type Stamp = Option<(u64, u64, Option<SystemTime>, u64)>;

#[derive(Debug)]
struct ManagerStats {
    active: Gauge,
    warming: Gauge,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    secrets: SecretStore,
    state: ArcSwap<Clusters>,
    /// Serializes updates: CDS, EDS and warming completions each build the next state from the last.
    /// Held only while building a state, never across an await.
    update: Mutex<()>,
    /// The last assignment of every EDS service name, so a cluster created or changed after its
    /// endpoints arrived starts with them.
    assignments: Mutex<HashMap<String, ClusterLoadAssignment>>,
    /// File-based EDS (`eds_cluster_config.eds_config.path_config_source`): each file and its stamp.
    eds_files: Mutex<BTreeMap<std::path::PathBuf, Stamp>>,
    /// Whether `start` ran: clusters added later start their DNS resolution at once.
    started: std::sync::atomic::AtomicBool,
    stats: ManagerStats,
    /// The internal listeners that `envoy_internal_address` endpoints reach.
    internal: crate::listener::InternalListeners,
}

/// Every cluster, by name. A cheap handle: clones share the same clusters and see every update.
#[derive(Debug, Clone)]
pub struct ClusterManager {
    inner: Arc<Inner>,
}

impl Default for ClusterManager {
    fn default() -> Self {
        let store = Store::new();
        let secrets = SecretStore::new(&store);
        Self::new(&store, &secrets)
    }
}

impl ClusterManager {
    /// An empty manager registering its clusters' stats in `store` and resolving TLS secrets in
    /// `secrets`.
    pub fn new(store: &Store, secrets: &SecretStore) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: store.clone(),
                secrets: secrets.clone(),
                state: ArcSwap::default(),
                update: Mutex::new(()),
                assignments: Mutex::default(),
                eds_files: Mutex::default(),
                started: Default::default(),
                internal: Default::default(),
                stats: ManagerStats {
                    active: store.gauge("cluster_manager.active_clusters"),
                    warming: store.gauge("cluster_manager.warming_clusters"),
                },
            }),
        }
    }

    /// Validates `clusters` (found at `path`, e.g. `static_resources.clusters`), reporting every
    /// problem with its path, and registers their stats in `stats`.
    pub fn from_protos(
        clusters: &[ClusterProto],
        path: &Path,
        stats: &Store,
    ) -> Result<ClusterManager, ConfigErrors> {
        Self::from_protos_with_secrets(clusters, path, stats, &SecretStore::new(stats))
    }

    /// [`ClusterManager::from_protos`], resolving the TLS contexts' secrets in `secrets`. The
    /// clusters are static: CDS cannot change or remove them.
    pub fn from_protos_with_secrets(
        clusters: &[ClusterProto],
        path: &Path,
        stats: &Store,
        secrets: &SecretStore,
    ) -> Result<ClusterManager, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let mut specs = Vec::with_capacity(clusters.len());
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, c) in clusters.iter().enumerate() {
            let p = path.index(i);
            if let Some(first) = seen.insert(&c.name, i) {
                errs.push(
                    p.field("name"),
                    format!(
                        "duplicate cluster {:?} (first defined at {})",
                        c.name,
                        path.index(first)
                    ),
                );
                continue;
            }
            match ClusterSpec::from_proto_with_secrets(c, &p, secrets) {
                Ok(s) => specs.push((s, c)),
                Err(e) => errs.extend(e),
            }
        }
        errs.finish(())?;
        let mgr = ClusterManager::new(stats, secrets);
        let now = SystemTime::now();
        let active = specs
            .into_iter()
            .map(|(spec, proto)| {
                Arc::new(ClusterEntry {
                    cluster: mgr.build_for(spec, proto),
                    proto: proto.clone(),
                    origin: Origin::Static,
                    version: String::new(),
                    last_updated: now,
                })
            })
            .collect();
        mgr.publish(Clusters::from_active(active, BTreeMap::new()));
        Ok(mgr)
    }

    /// The internal listeners (registered by the listener manager) this manager's clusters reach.
    pub fn internal(&self) -> &crate::listener::InternalListeners {
        &self.inner.internal
    }

    fn build(&self, spec: ClusterSpec) -> Arc<Cluster> {
        let scope = self
            .inner
            .store
            .scope(format!("cluster.{}.", spec.stat_name));
        let cluster = Arc::new(Cluster::new(spec, scope, self.inner.internal.clone()));
        if self
            .inner
            .started
            .load(std::sync::atomic::Ordering::Acquire)
        {
            dns::spawn(&cluster);
        }
        cluster
    }

    fn publish(&self, state: Clusters) {
        self.inner.stats.active.set(state.active.len() as i64);
        self.inner.stats.warming.set(state.warming.len() as i64);
        self.inner.state.store(Arc::new(state));
    }

    /// The serving cluster called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.inner
            .state
            .load()
            .active(name)
            .map(|e| e.cluster.clone())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.inner.state.load().by_name.contains_key(name)
    }

    /// The serving clusters in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = Arc<Cluster>> {
        let state = self.inner.state.load_full();
        (0..state.active.len()).map(move |i| state.active[i].cluster.clone())
    }

    /// The serving clusters with their protos and versions.
    pub fn entries(&self) -> Vec<Arc<ClusterEntry>> {
        self.inner.state.load().active.clone()
    }

    /// The clusters still warming.
    pub fn warming(&self) -> Vec<Arc<ClusterEntry>> {
        self.inner.state.load().warming.values().cloned().collect()
    }

    /// Starts DNS resolution for STRICT_DNS and LOGICAL_DNS clusters (needs a tokio runtime); clusters
    /// that CDS adds later start theirs when they are built.
    pub fn start(&self) {
        self.inner
            .started
            .store(true, std::sync::atomic::Ordering::Release);
        let state = self.inner.state.load();
        for e in state.active.iter().chain(state.warming.values()) {
            dns::spawn(&e.cluster);
        }
    }

    /// Resolves once every cluster, serving or warming, has finished its first resolution or
    /// assignment (Envoy's cluster warming): await it before opening listeners.
    pub async fn initialized(&self) {
        loop {
            let state = self.inner.state.load_full();
            for e in state.active.iter().chain(state.warming.values()) {
                e.cluster.initialized().await;
            }
            // Warming clusters move to `active` once initialized; wait for that step too.
            if self.inner.state.load().warming.is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    fn sorted(&self) -> Vec<Arc<Cluster>> {
        let mut v: Vec<Arc<Cluster>> = self.iter().collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    /// `/clusters` as Envoy prints it.
    pub fn admin_text(&self) -> String {
        let mut out = String::new();
        for c in self.sorted() {
            admin::text(&c, &mut out);
        }
        out
    }

    /// `/clusters?format=json`.
    pub fn admin_json(&self) -> serde_json::Value {
        let statuses: Vec<serde_json::Value> =
            self.sorted().iter().map(|c| admin::json(c)).collect();
        serde_json::json!({ "cluster_statuses": statuses })
    }
}
