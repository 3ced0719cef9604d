//! Configuration: Envoy v3 protos in, a validated immutable model out.
//!
//! Translation happens once per configuration, in one pass that reports every error with its path; the
//! data path only ever sees the resulting [`Snapshot`].

pub mod bootstrap;
pub mod error;
pub mod extra_descriptors;
pub mod hcm;
pub mod http_filters;
pub mod istio;
pub mod listeners;
pub mod network;
pub mod parse;
pub mod rds;
pub mod tcp_proxy;
pub mod yaml_stream;

#[cfg(test)]
mod connect_tests;
#[cfg(test)]
mod internal_tests;
#[cfg(test)]
mod yaml_stream_tests;

use std::sync::Arc;
use std::time::Duration;

pub use bootstrap::Snapshot;
pub use error::{ConfigError, ConfigErrors, Path};
pub use parse::ParseOptions;

use crate::access_log::Writers;
use crate::http::stats::ClusterHttpStats;
use crate::secrets::SecretStore;
use crate::stats::Store;
use crate::upstream::ClusterManager;

/// What the translation of listeners needs from the rest of the configuration.
pub struct BuildContext<'a> {
    pub clusters: &'a Arc<ClusterManager>,
    pub cluster_stats: &'a Arc<ClusterHttpStats>,
    pub stats: &'a Store,
    pub opts: ParseOptions,
    pub log_writers: &'a Writers,
    pub secrets: &'a SecretStore,
    /// Where `rds` connection managers find their route configurations.
    pub routes: &'a rds::RouteRegistry,
    /// The listener's `traffic_direction` (which side Istio's stats filter reports from).
    pub direction: i32,
    /// This proxy's own workload and the process's Istio metrics.
    pub istio: &'a Arc<crate::istio::LocalNode>,
}

impl BuildContext<'_> {
    pub fn cluster_exists(&self, name: &str) -> bool {
        self.clusters.contains(name)
    }
}

/// A protobuf duration as a std one (negative durations are clamped to zero).
pub fn to_std(d: &envoy_types::pb::google::protobuf::Duration) -> Duration {
    let secs = u64::try_from(d.seconds).unwrap_or(0);
    let nanos = u32::try_from(d.nanos).unwrap_or(0);
    Duration::new(secs, nanos)
}

/// An optional protobuf duration as a std one.
pub fn duration(d: &Option<envoy_types::pb::google::protobuf::Duration>) -> Option<Duration> {
    d.as_ref().map(to_std)
}
