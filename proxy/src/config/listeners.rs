//! `Listener` protos → validated listener configurations with their filter-chain stacks, for the
//! bootstrap's static listeners and for every LDS update alike.

use std::sync::Arc;

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};

use super::network::{build_chain, ChainStack};
use super::rds::RouteRegistry;
use super::{BuildContext, ConfigErrors, ParseOptions, Path};
use crate::access_log::Writers;
use crate::http::stats::ClusterHttpStats;
use crate::istio::LocalNode;
use crate::listener::{self, ListenerConfig};
use crate::secrets::SecretStore;
use crate::stats::Store;
use crate::upstream::ClusterManager;

/// What translating a listener needs from the rest of the configuration; owned, so the listener
/// manager can translate LDS resources at any time.
#[derive(Clone)]
pub struct ListenerBuilder {
    pub clusters: Arc<ClusterManager>,
    pub cluster_stats: Arc<ClusterHttpStats>,
    pub stats: Store,
    pub opts: ParseOptions,
    pub writers: Writers,
    pub secrets: SecretStore,
    pub routes: RouteRegistry,
    /// The local workload and the Istio metrics its filters record into.
    pub istio: Arc<LocalNode>,
}

impl ListenerBuilder {
    /// Translates one listener found at `path`, reporting every error with its path.
    pub fn build(
        &self,
        l: &Listener,
        path: &Path,
    ) -> Result<ListenerConfig<ChainStack>, ConfigErrors> {
        let ctx = BuildContext {
            clusters: &self.clusters,
            cluster_stats: &self.cluster_stats,
            stats: &self.stats,
            opts: self.opts,
            log_writers: &self.writers,
            secrets: &self.secrets,
            routes: &self.routes,
            direction: l.traffic_direction,
            istio: &self.istio,
        };
        let mut chain = |fc: &FilterChain, path: &Path| build_chain(fc, path, &ctx);
        if l.listener_specifier.is_some() && !self.clusters.internal().enabled() {
            return Err(ConfigErrors::from(super::ConfigError::new(
                path.field("internal_listener"),
                "an internal listener needs the bootstrap extension envoy.bootstrap.internal_listener",
            )));
        }
        let cfg = listener::from_proto(l, path, &mut chain)?;
        // TLS stats live under the listener's prefix, known only now.
        for (_, c) in cfg.chains.iter() {
            if let Some(tls) = &c.payload.tls {
                tls.bind_stats(&self.stats, &cfg.stat_prefix);
            }
        }
        Ok(cfg)
    }
}
