//! Stats: Envoy's flat, dot-separated stat namespace (`cluster.web.upstream_rq_total`).
//!
//! Components create their stats once, at configuration time, and keep the handles; the data path only
//! touches atomics. `/stats` renders the namespace as Envoy's text form and `/stats/prometheus` through
//! tag extraction (`envoy_cluster_upstream_rq_total{envoy_cluster_name="web"}`).

pub mod matcher;
pub mod prometheus;
pub mod render;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct GaugeCell {
    value: AtomicI64,
    used: AtomicBool,
}

/// A value that goes up and down (`upstream_cx_active`).
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<GaugeCell>);

impl Gauge {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn dec(&self) {
        self.add(-1);
    }
    pub fn add(&self, n: i64) {
        self.0.used.store(true, Ordering::Relaxed);
        self.0.value.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set(&self, n: i64) {
        self.0.used.store(true, Ordering::Relaxed);
        self.0.value.store(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.value.load(Ordering::Relaxed)
    }
    fn used(&self) -> bool {
        self.0.used.load(Ordering::Relaxed)
    }
}

/// A string value (Envoy's text readout, `cluster_manager.cds.version_text`).
#[derive(Debug, Clone, Default)]
pub struct TextReadout(Arc<arc_swap::ArcSwapOption<String>>);

impl TextReadout {
    pub fn set(&self, v: impl Into<String>) {
        self.0.store(Some(Arc::new(v.into())));
    }
    pub fn get(&self) -> String {
        self.0.load().as_deref().cloned().unwrap_or_default()
    }
    fn used(&self) -> bool {
        self.0.load().is_some()
    }
}

/// One stat of the namespace.
#[derive(Debug, Clone)]
pub enum Stat {
    Counter(Counter),
    Gauge(Gauge),
    Text(TextReadout),
}

impl Stat {
    /// Envoy's `usedonly`: a counter that was ever incremented, a gauge that was ever set.
    pub fn used(&self) -> bool {
        match self {
            Stat::Counter(c) => c.get() > 0,
            Stat::Gauge(g) => g.used(),
            Stat::Text(t) => t.used(),
        }
    }
}

/// The process's stat namespace. Cloning shares it. Registration takes a lock; reading a handle does not.
#[derive(Debug, Clone, Default)]
pub struct Store {
    stats: Arc<Mutex<BTreeMap<String, Stat>>>,
    /// `stats_config.stats_matcher`, set once from the bootstrap.
    matcher: Arc<std::sync::OnceLock<matcher::StatsMatcher>>,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the bootstrap's stats matcher to every stat created from now on (once; later calls
    /// are ignored). Stats it rejects are handed out detached and never listed.
    pub fn set_matcher(&self, m: matcher::StatsMatcher) {
        let _ = self.matcher.set(m);
    }

    fn rejects(&self, name: &str) -> bool {
        self.matcher.get().is_some_and(|m| !m.accepts(name))
    }

    /// The counter named `name`, created at zero if new. The same name always yields the same counter,
    /// so a reloaded component keeps counting where its predecessor stopped, as in Envoy.
    pub fn counter(&self, name: impl Into<String>) -> Counter {
        let name = name.into();
        if self.rejects(&name) {
            return Counter::default();
        }
        let mut stats = self.lock();
        match stats
            .entry(name)
            .or_insert_with(|| Stat::Counter(Counter::default()))
        {
            Stat::Counter(c) => c.clone(),
            // A name used as two kinds is a programming error; keep serving with a detached stat.
            _ => Counter::default(),
        }
    }

    /// The gauge named `name`, created at zero if new.
    pub fn gauge(&self, name: impl Into<String>) -> Gauge {
        let name = name.into();
        if self.rejects(&name) {
            return Gauge::default();
        }
        let mut stats = self.lock();
        match stats
            .entry(name)
            .or_insert_with(|| Stat::Gauge(Gauge::default()))
        {
            Stat::Gauge(g) => g.clone(),
            _ => Gauge::default(),
        }
    }

    /// The text readout named `name`, empty if new.
    pub fn text(&self, name: impl Into<String>) -> TextReadout {
        let name = name.into();
        if self.rejects(&name) {
            return TextReadout::default();
        }
        let mut stats = self.lock();
        match stats
            .entry(name)
            .or_insert_with(|| Stat::Text(TextReadout::default()))
        {
            Stat::Text(t) => t.clone(),
            _ => TextReadout::default(),
        }
    }

    /// A scope that prefixes every name it creates (`store.scope("cluster.web.")`).
    pub fn scope(&self, prefix: impl Into<String>) -> Scope {
        Scope {
            store: self.clone(),
            prefix: prefix.into(),
        }
    }

    /// Removes the stats under `prefix` (a removed cluster's `cluster.<name>.`), except those
    /// `keep` claims (a live cluster whose name extends the removed one's). Handles already given
    /// out keep working, detached, so in-flight work on the removed component is harmless.
    pub fn remove_prefix(&self, prefix: &str, keep: impl Fn(&str) -> bool) -> usize {
        let mut stats = self.lock();
        let doomed: Vec<String> = stats
            .range(prefix.to_string()..)
            .take_while(|(n, _)| n.starts_with(prefix))
            .filter(|(n, _)| !keep(n))
            .map(|(n, _)| n.clone())
            .collect();
        for n in &doomed {
            stats.remove(n);
        }
        doomed.len()
    }

    /// A sorted copy of every stat with its name.
    pub fn snapshot(&self) -> Vec<(String, Stat)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Stat>> {
        // Registration never panics while holding the lock, so a poisoned lock still holds a valid map.
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A prefix within the store.
#[derive(Debug, Clone)]
pub struct Scope {
    store: Store,
    prefix: String,
}

impl Scope {
    pub fn counter(&self, name: &str) -> Counter {
        self.store.counter(format!("{}{}", self.prefix, name))
    }
    pub fn gauge(&self, name: &str) -> Gauge {
        self.store.gauge(format!("{}{}", self.prefix, name))
    }
    pub fn scope(&self, prefix: &str) -> Scope {
        self.store.scope(format!("{}{}", self.prefix, prefix))
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_a_prefix_spares_what_keep_claims_and_detaches_handles() {
        let s = Store::new();
        let held = s.counter("cluster.b.upstream_rq_total");
        s.counter("cluster.b.x.upstream_rq_total").inc();
        s.counter("cluster.c.upstream_rq_total");
        let n = s.remove_prefix("cluster.b.", |n| n.starts_with("cluster.b.x."));
        assert_eq!(n, 1);
        let names: Vec<String> = s.snapshot().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "cluster.b.x.upstream_rq_total",
                "cluster.c.upstream_rq_total"
            ]
        );
        held.inc();
        assert_eq!(
            s.counter("cluster.b.upstream_rq_total").get(),
            0,
            "a fresh counter"
        );
    }

    #[test]
    fn same_name_same_counter() {
        let s = Store::new();
        s.counter("a.b").inc();
        s.scope("a.").counter("b").inc();
        assert_eq!(s.counter("a.b").get(), 2);
        let g = s.gauge("g");
        assert!(!Stat::Gauge(g.clone()).used());
        g.set(0);
        assert!(Stat::Gauge(g).used());
    }
}
