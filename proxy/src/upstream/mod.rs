//! Balance and connect: clusters, endpoints, load balancing, connection pools and circuit breakers.
//!
//! A request reaches this stage with its cluster chosen by the route. `Cluster::send` then runs, in
//! order: the `max_requests` breaker → host selection (priority level, locality, `lb_policy`) → the
//! endpoint's pool (an idle connection, or a new one within `max_connections`, waiting as a pending
//! request within `max_pending_requests`) → the exchange. Its response body keeps the request
//! counted as active until it has been read.

mod admin;
pub mod balance;
pub mod body;
pub mod circuit;
pub mod cluster;
pub mod config;
pub mod dns;
pub mod endpoint;
pub mod error;
pub mod original_dst;
pub mod pool;
pub mod stats;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster as ClusterProto;

use crate::config::{ConfigErrors, Path};
use crate::secrets::SecretStore;
use crate::stats::Store;

pub use body::ResponseBody;
pub use circuit::RetryGuard;
pub use cluster::{Cluster, ConnectContext, SendContext, Sent, TcpConnection};
pub use config::ClusterSpec;
pub use endpoint::{Host, HostSet};
pub use error::UpstreamError;
pub use pool::connect::ConnectionGuard;
pub use stats::ClusterStats;

/// Every configured cluster, by name. Cloning shares the clusters.
#[derive(Debug, Clone, Default)]
pub struct ClusterManager {
    clusters: Vec<Arc<Cluster>>,
    by_name: HashMap<String, usize>,
}

impl ClusterManager {
    /// Validates `clusters` (found at `path`, e.g. `static_resources.clusters`), reporting every
    /// problem with its path, and registers their stats in `stats`.
    pub fn from_protos(
        clusters: &[ClusterProto],
        path: &Path,
        stats: &Store,
    ) -> Result<ClusterManager, ConfigErrors> {
        Self::from_protos_with_secrets(clusters, path, stats, &SecretStore::new(stats))
    }

    /// [`ClusterManager::from_protos`], resolving the TLS contexts' secrets in `secrets`.
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
                Ok(s) => specs.push(s),
                Err(e) => errs.extend(e),
            }
        }
        errs.finish(())?;
        let mut mgr = ClusterManager::default();
        for spec in specs {
            let scope = stats.scope(format!("cluster.{}.", spec.stat_name));
            mgr.by_name.insert(spec.name.clone(), mgr.clusters.len());
            mgr.clusters.push(Arc::new(Cluster::new(spec, scope)));
        }
        Ok(mgr)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Cluster>> {
        self.by_name.get(name).map(|i| self.clusters[*i].clone())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Clusters in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.iter()
    }

    /// Starts DNS resolution for STRICT_DNS and LOGICAL_DNS clusters (needs a tokio runtime).
    pub fn start(&self) {
        for c in &self.clusters {
            dns::spawn(c);
        }
    }

    /// Resolves once every cluster has finished its first resolution (Envoy's cluster warming):
    /// await it before opening listeners.
    pub async fn initialized(&self) {
        for c in &self.clusters {
            c.initialized().await;
        }
    }

    fn sorted(&self) -> Vec<&Arc<Cluster>> {
        let mut v: Vec<&Arc<Cluster>> = self.clusters.iter().collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    /// `/clusters` as Envoy prints it.
    pub fn admin_text(&self) -> String {
        let mut out = String::new();
        for c in self.sorted() {
            admin::text(c, &mut out);
        }
        out
    }

    /// `/clusters?format=json`.
    pub fn admin_json(&self) -> serde_json::Value {
        let statuses: Vec<serde_json::Value> =
            self.sorted().into_iter().map(|c| admin::json(c)).collect();
        serde_json::json!({ "cluster_statuses": statuses })
    }
}
