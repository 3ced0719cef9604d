//! RDS: route configurations by name, each an atomically swapped cell that the connection managers
//! naming it (`rds.route_config_name`) read once per request.
//!
//! A request loads the table when it starts and keeps that `Arc<RouteTable>` to the end, so an
//! update never changes the routing of a request in flight.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use remora_xds_client::ResourceError;
use tokio::sync::watch;

use super::Path;
use crate::http::route::{RouteContext, RouteTable};
use crate::upstream::ClusterManager;
use crate::xds::Decoded;

/// Where a connection manager's routes come from.
#[derive(Debug, Clone)]
pub enum Routes {
    /// An inline `route_config`.
    Static(Arc<RouteTable>),
    /// `rds`: whatever RDS delivered last for the name.
    Rds(Arc<RdsRoute>),
}

impl Routes {
    /// The table a request starts with.
    pub fn current(&self) -> Arc<RouteTable> {
        match self {
            Routes::Static(t) => t.clone(),
            Routes::Rds(r) => r.table.load_full(),
        }
    }
}

/// What RDS delivered for one name.
#[derive(Debug, Clone)]
pub struct RdsVersion {
    pub proto: RouteConfiguration,
    pub version: String,
    pub last_updated: SystemTime,
}

/// One RDS route configuration name.
#[derive(Debug)]
pub struct RdsRoute {
    pub name: String,
    table: ArcSwap<RouteTable>,
    applied: ArcSwap<Option<RdsVersion>>,
    ready: watch::Sender<bool>,
}

impl RdsRoute {
    /// The last accepted version, if any arrived.
    pub fn applied(&self) -> Option<RdsVersion> {
        (**self.applied.load()).clone()
    }

    /// Resolves once the first version has arrived (the connection manager's listener is warm).
    pub async fn ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }
}

type Stamp = Option<(u64, u64, Option<SystemTime>, u64)>;

/// Every RDS name some connection manager refers to. A cheap handle.
#[derive(Debug, Clone)]
pub struct RouteRegistry {
    routes: Arc<Mutex<BTreeMap<String, Arc<RdsRoute>>>>,
    /// File-based RDS (`rds.config_source.path_config_source`): each file and its last stamp.
    files: Arc<Mutex<BTreeMap<std::path::PathBuf, Stamp>>>,
    clusters: ClusterManager,
}

impl RouteRegistry {
    /// A registry whose route configurations that set `validate_clusters` are checked against
    /// `clusters`.
    pub fn new(clusters: ClusterManager) -> Self {
        Self {
            routes: Arc::default(),
            files: Arc::default(),
            clusters,
        }
    }

    /// Serves `name` from the file at `path` (a `DiscoveryResponse` of route configurations): read
    /// now, then whenever [`RouteRegistry::poll_files`] sees it change.
    pub fn watch_file(&self, name: &str, path: std::path::PathBuf) -> Arc<RdsRoute> {
        let cell = self.subscribe(name);
        let mut files = self
            .files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !files.contains_key(&path) {
            let mut stamp = None;
            crate::xds::file::changed(&path, &mut stamp);
            files.insert(path.clone(), stamp);
            drop(files);
            self.load_file(&path);
        }
        cell
    }

    fn load_file(&self, path: &std::path::Path) {
        let result = crate::xds::file::read_update(path, |r: &RouteConfiguration| r.name.clone())
            .and_then(|u| self.apply_routes(u));
        if let Err(errors) = result {
            for e in errors {
                tracing::warn!(path = %path.display(), resource = %e.name, error = %e.message, "file-based RDS update rejected");
            }
        }
    }

    /// Reloads the RDS files that changed (atomic rename or rewrite).
    pub fn poll_files(&self) {
        let changed: Vec<std::path::PathBuf> = self
            .files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter_mut()
            .filter_map(|(p, stamp)| crate::xds::file::changed(p, stamp).then(|| p.clone()))
            .collect();
        for p in changed {
            self.load_file(&p);
        }
    }

    /// Whether any RDS file is watched.
    pub fn has_files(&self) -> bool {
        !self
            .files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<RdsRoute>>> {
        self.routes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cell for `name`: the current table, or an empty one (every request 404 NR) until RDS
    /// delivers it.
    pub fn subscribe(&self, name: &str) -> Arc<RdsRoute> {
        let mut routes = self.lock();
        routes
            .entry(name.to_string())
            .or_insert_with(|| {
                let table = RouteTable::empty(name);
                Arc::new(RdsRoute {
                    name: name.to_string(),
                    table: ArcSwap::from_pointee(table),
                    applied: ArcSwap::from_pointee(None),
                    ready: watch::channel(false).0,
                })
            })
            .clone()
    }

    /// The names some connection manager still uses (what to subscribe over RDS).
    pub fn names(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, r)| Arc::strong_count(r) > 1)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Every route configuration in use, with what RDS delivered for it.
    pub fn entries(&self) -> Vec<Arc<RdsRoute>> {
        self.lock()
            .values()
            .filter(|r| Arc::strong_count(r) > 1)
            .cloned()
            .collect()
    }

    /// Applies an RDS update: every route configuration is validated (`validate_clusters` defaults to
    /// false for RDS, as in Envoy: a route to a missing cluster answers 503 NC at request time), then
    /// all tables swap. One invalid resource rejects the whole update. Names nobody refers to yet are
    /// kept for the connection managers that will.
    pub fn apply_routes(
        &self,
        update: Decoded<RouteConfiguration>,
    ) -> Result<(), Vec<ResourceError>> {
        let mut errors = Vec::new();
        let mut built = Vec::with_capacity(update.resources.len());
        for r in &update.resources {
            let rc = &r.resource;
            let name = if rc.name.is_empty() {
                &r.name
            } else {
                &rc.name
            };
            let ctx = RouteContext {
                cluster_exists: &|c: &str| self.clusters.contains(c),
                validate_clusters: rc.validate_clusters.map(|v| v.value).unwrap_or(false),
                filter_config_known: &crate::http::filter::per_route_known,
            };
            match RouteTable::from_proto(rc, &Path::default(), &ctx) {
                Ok(t) => built.push((name.clone(), t)),
                Err(e) => errors.extend(e.0.into_iter().map(|e| ResourceError::new(name, e))),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let now = SystemTime::now();
        // The protos move into the dump record: a 10k-route table is not copied per push.
        for ((name, table), r) in built.into_iter().zip(update.resources) {
            let cell = self.subscribe(&name);
            cell.table.store(Arc::new(table));
            let old = cell.applied.swap(Arc::new(Some(RdsVersion {
                proto: r.resource,
                version: update.version.clone(),
                last_updated: now,
            })));
            cell.ready.send_replace(true);
            drop(old);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse::{from_yaml, ParseOptions};
    use crate::xds::Named;

    fn update(version: &str, yaml: &str) -> Decoded<RouteConfiguration> {
        let rc: RouteConfiguration =
            from_yaml(yaml, ParseOptions::default()).expect("route config");
        Decoded {
            version: version.into(),
            resources: vec![Named {
                name: rc.name.clone(),
                version: version.into(),
                resource: rc,
            }],
            removed: Vec::new(),
            full_state: false,
        }
    }

    const TO_MISSING: &str = "name: r\nvirtual_hosts:\n- name: all\n  domains: ['*']\n  routes: [{ match: { prefix: / }, route: { cluster: missing } }]\n";

    #[test]
    fn rds_swaps_the_table_and_requests_in_flight_keep_theirs() {
        let registry = RouteRegistry::new(ClusterManager::default());
        let routes = Routes::Rds(registry.subscribe("r"));
        let Routes::Rds(cell) = &routes else {
            unreachable!("built as Rds")
        };
        assert!(!cell.is_ready());
        assert_eq!(registry.names(), ["r"]);
        let before = routes.current();
        assert!(before.virtual_hosts().is_empty());

        // RDS does not validate clusters unless asked: a missing one answers 503 NC at request time.
        registry
            .apply_routes(update("1", TO_MISSING))
            .expect("accepted");
        assert!(cell.is_ready());
        let after = routes.current();
        assert_eq!(after.virtual_hosts().len(), 1);
        assert!(
            before.virtual_hosts().is_empty(),
            "the old table is unchanged"
        );
        assert_eq!(cell.applied().expect("applied").version, "1");
    }

    #[test]
    fn validate_clusters_rejects_the_update_and_keeps_the_table() {
        let registry = RouteRegistry::new(ClusterManager::default());
        let routes = Routes::Rds(registry.subscribe("r"));
        registry
            .apply_routes(update("1", TO_MISSING))
            .expect("accepted");
        let strict = format!("{TO_MISSING}validate_clusters: true\n");
        let errors = registry
            .apply_routes(update("2", &strict))
            .expect_err("rejected");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].name, "r");
        assert!(errors[0].message.contains("missing"), "{errors:?}");
        assert_eq!(routes.current().virtual_hosts().len(), 1);
        let Routes::Rds(cell) = &routes else {
            unreachable!("built as Rds")
        };
        assert_eq!(cell.applied().expect("applied").version, "1");
    }
}
