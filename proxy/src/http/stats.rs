//! The connection manager's stats, in Envoy's names under `http.<stat_prefix>.`.

use std::sync::Arc;

use crate::stats::{Counter, Gauge, Scope, Store};

/// Handles for one connection manager (shared by every connection of its chains).
#[derive(Debug, Clone)]
pub struct HttpStats {
    pub cx_total: Counter,
    pub cx_active: Gauge,
    pub cx_http1_total: Counter,
    pub cx_http2_total: Counter,
    pub cx_destroy: Counter,
    pub cx_idle_timeout: Counter,
    pub rq_total: Counter,
    pub rq_active: Gauge,
    pub rq_http1_total: Counter,
    pub rq_http2_total: Counter,
    pub rq_completed: Counter,
    pub rq_by_class: [Counter; 5],
    pub rq_timeout: Counter,
    pub rq_ws_on_non_ws_route: Counter,
    pub cx_upgrades_total: Counter,
    pub cx_upgrades_active: Gauge,
    pub no_route: Counter,
    pub no_cluster: Counter,
    pub rq_direct_response: Counter,
    pub rq_redirect: Counter,
    pub rq_retry: Counter,
    pub rs_too_large: Counter,
}

impl HttpStats {
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let s = store.scope(format!("http.{stat_prefix}."));
        let class = |c: u8| s.counter(&format!("downstream_rq_{c}xx"));
        Self {
            cx_total: s.counter("downstream_cx_total"),
            cx_active: s.gauge("downstream_cx_active"),
            cx_http1_total: s.counter("downstream_cx_http1_total"),
            cx_http2_total: s.counter("downstream_cx_http2_total"),
            cx_destroy: s.counter("downstream_cx_destroy"),
            cx_idle_timeout: s.counter("downstream_cx_idle_timeout"),
            rq_total: s.counter("downstream_rq_total"),
            rq_active: s.gauge("downstream_rq_active"),
            rq_http1_total: s.counter("downstream_rq_http1_total"),
            rq_http2_total: s.counter("downstream_rq_http2_total"),
            rq_completed: s.counter("downstream_rq_completed"),
            rq_by_class: [class(1), class(2), class(3), class(4), class(5)],
            rq_timeout: s.counter("downstream_rq_timeout"),
            rq_ws_on_non_ws_route: s.counter("downstream_rq_ws_on_non_ws_route"),
            cx_upgrades_total: s.counter("downstream_cx_upgrades_total"),
            cx_upgrades_active: s.gauge("downstream_cx_upgrades_active"),
            no_route: s.counter("no_route"),
            no_cluster: s.counter("no_cluster"),
            rq_direct_response: s.counter("rq_direct_response"),
            rq_redirect: s.counter("rq_redirect"),
            rq_retry: s.counter("rq_retry"),
            rs_too_large: s.counter("rs_too_large"),
        }
    }

    /// Counts a response sent downstream.
    pub fn response(&self, status: u16) {
        self.rq_completed.inc();
        count_class(&self.rq_by_class, status);
    }
}

/// The router's per-cluster stats (`cluster.<name>.upstream_rq_200`, `upstream_rq_retry`, ...), created
/// once per configuration for every cluster so the data path never registers a name.
///
/// Clusters added later (CDS) get theirs on first use; the map is copied then, never on the request
/// path of a known cluster.
#[derive(Debug, Default)]
pub struct ClusterHttpStats {
    clusters: arc_swap::ArcSwap<std::collections::HashMap<String, Arc<RouterClusterStats>>>,
    store: Option<Store>,
    detached: Arc<RouterClusterStats>,
}

/// Counters the router keeps for one cluster.
#[derive(Debug, Default)]
pub struct RouterClusterStats {
    pub rq_completed: Counter,
    pub rq_by_class: [Counter; 5],
    /// `upstream_rq_<code>` for 100..=599, created on first use of a code.
    by_code: Vec<std::sync::OnceLock<Counter>>,
    scope: Option<Scope>,
    pub rq_timeout: Counter,
    pub rq_per_try_timeout: Counter,
    pub rq_retry: Counter,
    pub rq_retry_success: Counter,
    pub rq_retry_limit_exceeded: Counter,
}

impl RouterClusterStats {
    fn new(store: &Store, cluster: &str) -> Self {
        let s = store.scope(format!("cluster.{cluster}."));
        let class = |c: u8| s.counter(&format!("upstream_rq_{c}xx"));
        Self {
            rq_completed: s.counter("upstream_rq_completed"),
            rq_by_class: [class(1), class(2), class(3), class(4), class(5)],
            by_code: (100..600).map(|_| std::sync::OnceLock::new()).collect(),
            rq_timeout: s.counter("upstream_rq_timeout"),
            rq_per_try_timeout: s.counter("upstream_rq_per_try_timeout"),
            rq_retry: s.counter("upstream_rq_retry"),
            rq_retry_success: s.counter("upstream_rq_retry_success"),
            rq_retry_limit_exceeded: s.counter("upstream_rq_retry_limit_exceeded"),
            scope: Some(s),
        }
    }

    /// Counts a response (from upstream, or a local reply on the cluster's behalf).
    pub fn response(&self, status: u16) {
        self.rq_completed.inc();
        self.charge(status);
    }

    /// `upstream_rq_<code>` and its class only: an HTTP filter's reply on the cluster's behalf
    /// (ext_authz's denials).
    pub fn charge(&self, status: u16) {
        count_class(&self.rq_by_class, status);
        if let (Some(cell), Some(scope)) = (
            self.by_code.get(usize::from(status).wrapping_sub(100)),
            &self.scope,
        ) {
            cell.get_or_init(|| scope.counter(&format!("upstream_rq_{status}")))
                .inc();
        }
    }

    /// A counter in the cluster's scope that an HTTP filter bumps (`ext_authz.ok`), made on first
    /// use.
    pub fn filter_counter(&self, name: &str) -> Counter {
        self.scope
            .as_ref()
            .map(|s| s.counter(name))
            .unwrap_or_default()
    }
}

impl ClusterHttpStats {
    pub fn new<'a>(store: &Store, clusters: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            clusters: arc_swap::ArcSwap::from_pointee(
                clusters
                    .into_iter()
                    .map(|c| (c.to_string(), Arc::new(RouterClusterStats::new(store, c))))
                    .collect(),
            ),
            store: Some(store.clone()),
            detached: Arc::default(),
        }
    }

    /// Drops a removed cluster's counters, so that a cluster added later under the same name
    /// registers fresh ones.
    pub fn forget(&self, cluster: &str) {
        if self.clusters.load().contains_key(cluster) {
            self.clusters.rcu(|m| {
                let mut m = (**m).clone();
                m.remove(cluster);
                m
            });
        }
    }

    pub fn get(&self, cluster: &str) -> Arc<RouterClusterStats> {
        if let Some(s) = self.clusters.load().get(cluster) {
            return s.clone();
        }
        let Some(store) = &self.store else {
            return self.detached.clone();
        };
        let made = Arc::new(RouterClusterStats::new(store, cluster));
        self.clusters.rcu(|m| {
            let mut m = (**m).clone();
            m.entry(cluster.to_string()).or_insert_with(|| made.clone());
            m
        });
        self.clusters.load().get(cluster).cloned().unwrap_or(made)
    }
}

/// Increments the `1xx`..`5xx` counter for `status` (codes outside 100..=599 count nowhere).
fn count_class(classes: &[Counter; 5], status: u16) {
    if let Some(c) = classes.get(usize::from(status / 100).wrapping_sub(1)) {
        c.inc();
    }
}
