//! Accept, listener state: what every worker's accept loop of one listener shares — its validated
//! configuration, its stats and its connection limit.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::ListenerConfig;
use crate::stats::{Counter, Gauge, Store};

/// Envoy's listener stats (`listener.<address>.…`), created once per listener.
#[derive(Debug, Clone)]
pub struct ListenerStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_destroy: Counter,
    pub downstream_cx_overflow: Counter,
    pub downstream_pre_cx_active: Gauge,
    pub no_filter_chain_match: Counter,
}

impl ListenerStats {
    /// The stats under `prefix` (`listener.127.0.0.1_8080`).
    pub fn new(store: &Store, prefix: &str) -> Self {
        let scope = store.scope(format!("{prefix}."));
        Self {
            downstream_cx_total: scope.counter("downstream_cx_total"),
            downstream_cx_active: scope.gauge("downstream_cx_active"),
            downstream_cx_destroy: scope.counter("downstream_cx_destroy"),
            downstream_cx_overflow: scope.counter("downstream_cx_overflow"),
            downstream_pre_cx_active: scope.gauge("downstream_pre_cx_active"),
            no_filter_chain_match: scope.counter("no_filter_chain_match"),
        }
    }
}

/// A listener in service. While one exists it counts in `listener_manager.total_listeners_active`.
#[derive(Debug)]
pub struct ActiveListener<C> {
    pub config: ListenerConfig<C>,
    pub stats: ListenerStats,
    limit: Option<Arc<Semaphore>>,
    total_listeners_active: Option<Gauge>,
}

impl<C> ActiveListener<C> {
    pub fn new(config: ListenerConfig<C>, store: &Store) -> Arc<Self> {
        let total = store.gauge("listener_manager.total_listeners_active");
        total.inc();
        Self::build(config, store, Some(total))
    }

    /// One version of a listener whose manager counts `total_listeners_active` itself (a replaced
    /// version still draining is not an active listener).
    pub fn uncounted(config: ListenerConfig<C>, store: &Store) -> Arc<Self> {
        Self::build(config, store, None)
    }

    fn build(
        config: ListenerConfig<C>,
        store: &Store,
        total_listeners_active: Option<Gauge>,
    ) -> Arc<Self> {
        let stats = ListenerStats::new(store, &config.stat_prefix);
        // tokio caps a semaphore's permits; a limit beyond that is no limit in practice.
        let limit = config.max_connections.map(|n| {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)))
        });
        Arc::new(Self {
            config,
            stats,
            limit,
            total_listeners_active,
        })
    }

    /// A slot under the listener's connection limit, or `None` when it is full. `Some(None)` means
    /// the listener has no limit.
    pub(super) fn admit(&self) -> Option<Option<OwnedSemaphorePermit>> {
        match &self.limit {
            None => Some(None),
            Some(s) => s.clone().try_acquire_owned().ok().map(Some),
        }
    }
}

impl<C> Drop for ActiveListener<C> {
    fn drop(&mut self) {
        if let Some(g) = &self.total_listeners_active {
            g.dec();
        }
    }
}
