//! The proxy's dynamic configuration: where every xDS update, from a gRPC stream or a file, lands.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use remora_xds_client::{ResourceError, TypeUrl};

use super::listeners::ListenerManager;
use crate::config::rds::RouteRegistry;
use crate::http::stats::ClusterHttpStats;
use crate::secrets::SecretStore;
use crate::upstream::ClusterManager;
use crate::xds::{ConfigSink, Decoded};

/// Every part of the running configuration that xDS updates. Each `apply` validates first and
/// leaves the current configuration serving when it rejects.
#[derive(Clone)]
pub struct DynamicConfig {
    pub clusters: Arc<ClusterManager>,
    pub routes: RouteRegistry,
    pub listeners: ListenerManager,
    pub secrets: SecretStore,
    /// The router's per-cluster counters, forgotten with their cluster.
    pub cluster_stats: Arc<ClusterHttpStats>,
    /// How long a listener waits for its RDS route configurations (Envoy's `initial_fetch_timeout`).
    pub warm_timeout: Duration,
}

impl ConfigSink for DynamicConfig {
    fn clusters(&self, update: Decoded<Cluster>) -> Result<(), Vec<ResourceError>> {
        let applied = self.clusters.apply_clusters(&update)?;
        for name in &applied.removed {
            self.cluster_stats.forget(name);
        }
        tracing::info!(
            version = %update.version,
            added = applied.added.len(),
            updated = applied.updated.len(),
            removed = applied.removed.len(),
            unchanged = applied.unchanged,
            "CDS update applied"
        );
        Ok(())
    }

    fn endpoints(&self, update: Decoded<ClusterLoadAssignment>) -> Result<(), Vec<ResourceError>> {
        self.clusters.apply_endpoints(&update)
    }

    fn listeners(&self, update: Decoded<Listener>) -> Result<(), Vec<ResourceError>> {
        self.listeners.apply_listeners(&update, self.warm_timeout)
    }

    fn routes(&self, update: Decoded<RouteConfiguration>) -> Result<(), Vec<ResourceError>> {
        self.routes.apply_routes(update)
    }

    fn secrets(&self, update: Decoded<Secret>) -> Result<(), Vec<ResourceError>> {
        self.secrets.apply_secrets(&update)
    }

    fn wanted(&self, type_url: &str) -> Vec<String> {
        match type_url {
            TypeUrl::ENDPOINT => self.clusters.eds_service_names(),
            TypeUrl::ROUTE => self.routes.names(),
            TypeUrl::SECRET => self.secrets.ads_names(),
            _ => Vec::new(),
        }
    }
}
