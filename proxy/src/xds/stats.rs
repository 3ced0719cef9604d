//! Envoy's subscription and control-plane statistics for gRPC config sources:
//! `listener_manager.lds.*`, `cluster_manager.cds.*`, `control_plane.connected_state`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use remora_xds_client::XdsStats;

use crate::stats::{Counter, Gauge, Store, TextReadout};

/// One subscription's counters (`<prefix>update_attempt`, `update_success`, `update_rejected`,
/// `update_failure`, `version`) and its last accepted version text.
#[derive(Debug, Clone)]
pub struct UpdateStats {
    attempt: Counter,
    success: Counter,
    rejected: Counter,
    failure: Counter,
    version: Gauge,
    version_text: Arc<ArcSwap<String>>,
    /// `<prefix>version_text`, Envoy's text readout of the last accepted version.
    version_readout: TextReadout,
}

impl UpdateStats {
    /// Counters under `prefix`, e.g. `cluster_manager.cds.`.
    pub fn new(store: &Store, prefix: &str) -> Self {
        Self {
            attempt: store.counter(format!("{prefix}update_attempt")),
            success: store.counter(format!("{prefix}update_success")),
            rejected: store.counter(format!("{prefix}update_rejected")),
            failure: store.counter(format!("{prefix}update_failure")),
            version: store.gauge(format!("{prefix}version")),
            version_text: Arc::default(),
            version_readout: store.text(format!("{prefix}version_text")),
        }
    }

    /// Responses received so far (accepted or rejected).
    pub fn attempts(&self) -> u64 {
        self.attempt.get()
    }

    pub fn attempt(&self) {
        self.attempt.inc();
    }

    pub fn rejected(&self) {
        self.rejected.inc();
    }

    /// A stream failure while subscribed.
    pub fn failed(&self, n: u64) {
        self.failure.add(n);
    }

    /// An accepted update: `version` is Envoy's hash of the version text as a gauge.
    pub fn success(&self, version: &str) {
        self.success.inc();
        self.version.set(version_hash(version));
        self.version_text.store(Arc::new(version.to_string()));
        self.version_readout.set(version);
    }

    /// The last accepted `version_info`.
    pub fn version_text(&self) -> Arc<String> {
        self.version_text.load_full()
    }
}

/// A stable 63-bit hash of a version string (Envoy reports a 64-bit hash; the gauge is signed here).
fn version_hash(v: &str) -> i64 {
    if v.is_empty() {
        return 0;
    }
    // FNV-1a: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) as i64
}

/// Mirrors the client's connection state into `control_plane.connected_state` and its stream failures
/// into each subscription's `update_failure`, until the client's stats are dropped.
pub fn mirror(
    store: &Store,
    client: Arc<XdsStats>,
    subscriptions: Vec<(String, UpdateStats)>,
) -> tokio::task::JoinHandle<()> {
    let connected = store.gauge("control_plane.connected_state");
    tokio::spawn(async move {
        let mut seen = vec![0u64; subscriptions.len()];
        loop {
            connected.set(i64::from(client.connected()));
            for (i, (url, stats)) in subscriptions.iter().enumerate() {
                let Some(t) = client.type_stats(url) else {
                    continue;
                };
                let now = t.update_failure.load(std::sync::atomic::Ordering::Relaxed);
                if now > seen[i] {
                    stats.failed(now - seen[i]);
                    seen[i] = now;
                }
            }
            if Arc::strong_count(&client) == 1 {
                connected.set(0);
                return;
            }
            // Woken by every change; the timeout notices the client going away.
            let _ = tokio::time::timeout(Duration::from_secs(1), client.changed()).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_records_the_version() {
        let store = Store::new();
        let s = UpdateStats::new(&store, "listener_manager.lds.");
        s.attempt();
        s.success("2024-01-01T00:00:00Z/7");
        assert_eq!(*s.version_text(), "2024-01-01T00:00:00Z/7");
        assert_ne!(store.gauge("listener_manager.lds.version").get(), 0);
        assert_eq!(
            store.counter("listener_manager.lds.update_success").get(),
            1
        );
        assert_eq!(version_hash("a"), version_hash("a"));
        assert_ne!(version_hash("a"), version_hash("b"));
    }
}
