//! Observable state of the client: connection and per-type update counters, as plain atomics that a
//! proxy exports under Envoy's names (`control_plane.connected_state`, `<type>.update_success`, ...).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// Counters of one type URL, named after Envoy's subscription statistics.
#[derive(Debug, Default)]
pub struct TypeStats {
    /// Responses received (`update_attempt`).
    pub update_attempt: AtomicU64,
    /// Responses accepted and ACKed (`update_success`).
    pub update_success: AtomicU64,
    /// Responses rejected and NACKed (`update_rejected`).
    pub update_rejected: AtomicU64,
    /// Streams that failed while this type was subscribed (`update_failure`).
    pub update_failure: AtomicU64,
    version_text: ArcSwap<String>,
}

impl TypeStats {
    /// The version of the last accepted response (`version_text`).
    pub fn version_text(&self) -> Arc<String> {
        self.version_text.load_full()
    }

    pub(crate) fn accepted(&self, version: &str) {
        self.update_success.fetch_add(1, Ordering::Relaxed);
        self.version_text.store(Arc::new(version.to_string()));
    }
}

/// Counters of a client and of each of its type URLs.
#[derive(Debug, Default)]
pub struct XdsStats {
    /// Streams currently established (ADS: 0 or 1); Envoy's `control_plane.connected_state` is
    /// `connected_streams > 0`.
    pub connected_streams: AtomicU64,
    /// Streams opened, counting reconnects.
    pub stream_attempts: AtomicU64,
    /// Streams that ended, with an error or closed by the server.
    pub stream_failures: AtomicU64,
    types: BTreeMap<String, Arc<TypeStats>>,
    changed: tokio::sync::Notify,
}

impl XdsStats {
    pub(crate) fn new<'a>(type_urls: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            types: type_urls
                .into_iter()
                .map(|t| (t.to_string(), Arc::default()))
                .collect(),
            ..Default::default()
        }
    }

    /// Whether a stream to the control plane is established.
    pub fn connected(&self) -> bool {
        self.connected_streams.load(Ordering::Relaxed) > 0
    }

    /// Resolves after the connection state or a stream-failure count changes (one waiter; a
    /// change that happens while nobody waits is kept for the next call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    pub(crate) fn notify(&self) {
        self.changed.notify_one();
    }

    /// The counters of one type URL (every type with a handler has them).
    pub fn type_stats(&self, type_url: &str) -> Option<&Arc<TypeStats>> {
        self.types.get(type_url)
    }

    /// Every type URL's counters.
    pub fn types(&self) -> impl Iterator<Item = (&str, &Arc<TypeStats>)> {
        self.types.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// Counts a stream as connected while alive; dropping it (stream end or shutdown) undoes that.
pub(crate) struct ConnectedGuard(Arc<XdsStats>);

impl ConnectedGuard {
    pub(crate) fn new(stats: Arc<XdsStats>) -> Self {
        stats.connected_streams.fetch_add(1, Ordering::Relaxed);
        stats.notify();
        Self(stats)
    }
}

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        self.0.connected_streams.fetch_sub(1, Ordering::Relaxed);
        self.0.notify();
    }
}
