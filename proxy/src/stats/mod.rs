//! Stats: Envoy's flat, dot-separated stat namespace (`cluster.web.upstream_rq_total`).
//!
//! Components create their stats once, at configuration time, and keep the handles; the data path only
//! touches atomics. `/stats` renders the namespace as Envoy's text form and `/stats/prometheus` through
//! tag extraction (`envoy_cluster_upstream_rq_total{envoy_cluster_name="web"}`).

pub mod matcher;
pub mod prometheus;
pub mod render;

use std::collections::{HashMap, HashSet};
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
///
/// A hash map, not a sorted one: a push of a thousand clusters registers a hundred thousand names,
/// and only the admin endpoints want them in order (they sort what they select).
#[derive(Debug, Clone, Default)]
pub struct Store {
    stats: Arc<Mutex<HashMap<String, Stat>>>,
    /// Families of stats that are listed but never move (Envoy's cluster stats remora does not
    /// drive), one entry per prefix instead of one per name: they cost a cluster nothing per name.
    idle: Arc<Mutex<HashMap<String, IdleSet>>>,
    /// Stats created together under one prefix (a cluster's), registered as one entry.
    families: Arc<Mutex<HashMap<String, Family>>>,
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
        if let Some(Stat::Counter(c)) = self.family_member(&name) {
            return c;
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
        if let Some(Stat::Gauge(g)) = self.family_member(&name) {
            return g;
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

    /// The stats `members` names under `prefix`, registered as one entry (a cluster's hundred
    /// names cost one map insert). As for single stats, the same prefix yields the same stats.
    pub fn family(
        &self,
        prefix: impl Into<String>,
        members: &'static [(&'static str, Kind)],
    ) -> FamilyCursor {
        let prefix = prefix.into();
        let mut families = self.lock_families();
        if let Some(stats) = families.get(&prefix) {
            return FamilyCursor {
                stats: stats.clone(),
                next: 0,
            };
        }
        // A member already created by its single name (a route's counters for a cluster that
        // was not there yet) moves into the family, so both keep one counter.
        let mut singles = self.lock();
        let mut name = prefix.clone();
        let stats: Family = members
            .iter()
            .map(|&(n, kind)| {
                name.truncate(prefix.len());
                name.push_str(n);
                let stat = match (kind, singles.remove(&name)) {
                    (Kind::Counter, Some(Stat::Counter(c))) => Stat::Counter(c),
                    (Kind::Gauge, Some(Stat::Gauge(g))) => Stat::Gauge(g),
                    (Kind::Counter, _) => Stat::Counter(Counter::default()),
                    (Kind::Gauge, _) => Stat::Gauge(Gauge::default()),
                };
                (n, stat)
            })
            .collect();
        drop(singles);
        families.insert(prefix, stats.clone());
        FamilyCursor { stats, next: 0 }
    }

    /// The member of a family that `name` is, if it is one.
    fn family_member(&self, name: &str) -> Option<Stat> {
        let families = self.lock_families();
        if families.is_empty() {
            return None;
        }
        name.match_indices('.').find_map(|(i, _)| {
            let family = families.get(&name[..=i])?;
            let rest = &name[i + 1..];
            family
                .iter()
                .find(|(n, _)| *n == rest)
                .map(|(_, s)| s.clone())
        })
    }

    /// Lists `counters` and `gauges` under `prefix` at zero, for stats nothing will ever move. A
    /// name also created as a real stat is listed once, as the real one.
    pub fn idle(
        &self,
        prefix: impl Into<String>,
        counters: &'static [&'static str],
        gauges: &'static [&'static str],
    ) {
        self.lock_idle()
            .insert(prefix.into(), IdleSet { counters, gauges });
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
        self.remove_prefixes(&[prefix.to_string()], keep)
    }

    /// [`Store::remove_prefix`] for many prefixes in one pass over the namespace. Prefixes end at a
    /// dot, so a name is doomed when one of its dot-terminated heads is among them.
    pub fn remove_prefixes(&self, prefixes: &[String], keep: impl Fn(&str) -> bool) -> usize {
        if prefixes.is_empty() {
            return 0;
        }
        let doomed: HashSet<&str> = prefixes.iter().map(String::as_str).collect();
        let spared = |name: &str| {
            let under = name
                .match_indices('.')
                .any(|(i, _)| doomed.contains(&name[..=i]));
            !under || keep(name)
        };
        self.lock_idle().retain(|prefix, _| spared(prefix));
        self.lock_families().retain(|prefix, _| spared(prefix));
        let mut stats = self.lock();
        let before = stats.len();
        stats.retain(|name, _| spared(name));
        before - stats.len()
    }

    /// A copy of every stat with its name, sorted by name (byte order, as Envoy's std::string compare).
    pub fn snapshot(&self) -> Vec<(String, Stat)> {
        self.snapshot_where(|_, _| true)
    }

    /// The stats `pick` selects, sorted by name; the selection runs before anything is copied.
    pub fn snapshot_where(&self, pick: impl Fn(&str, &Stat) -> bool) -> Vec<(String, Stat)> {
        let idle: Vec<(String, IdleSet)> = self
            .lock_idle()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let families: Vec<(String, Family)> = self
            .lock_families()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out: Vec<(String, Stat)> = self
            .lock()
            .iter()
            .filter(|(k, v)| pick(k, v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut name = String::new();
        let mut offer = |prefix: &str, n: &str, stat: Stat, out: &mut Vec<(String, Stat)>| {
            name.clear();
            name.push_str(prefix);
            name.push_str(n);
            if !self.rejects(&name) && pick(&name, &stat) {
                out.push((name.clone(), stat));
            }
        };
        for (prefix, members) in &families {
            for (n, stat) in members.iter() {
                offer(prefix, n, stat.clone(), &mut out);
            }
        }
        // Idle names come last so that, among equal names, the stable sort keeps the real stat.
        for (prefix, set) in &idle {
            for n in set.counters {
                offer(prefix, n, Stat::Counter(Counter::default()), &mut out);
            }
            for n in set.gauges {
                offer(prefix, n, Stat::Gauge(Gauge::default()), &mut out);
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|later, first| later.0 == first.0);
        out
    }

    fn lock_families(&self) -> std::sync::MutexGuard<'_, HashMap<String, Family>> {
        self.families.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, HashMap<String, IdleSet>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stat>> {
        // Registration never panics while holding the lock, so a poisoned lock still holds a valid map.
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Names under one prefix that `/stats` lists at zero without anything behind them.
#[derive(Debug, Clone, Copy)]
struct IdleSet {
    counters: &'static [&'static str],
    gauges: &'static [&'static str],
}

/// The stats of one family, in the order of its declaration.
type Family = Arc<[(&'static str, Stat)]>;

/// Whether a family member is a counter or a gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Hands out a family's stats in declaration order ([`Scope::family`]).
#[derive(Debug)]
pub struct FamilyCursor {
    stats: Family,
    next: usize,
}

impl FamilyCursor {
    fn take(&mut self, name: &str) -> Option<&Stat> {
        let (n, stat) = self.stats.get(self.next)?;
        self.next += 1;
        debug_assert_eq!(*n, name, "family stats are taken in declaration order");
        (*n == name).then_some(stat)
    }
    /// The next member, a counter named `name`.
    pub fn counter(&mut self, name: &str) -> Counter {
        match self.take(name) {
            Some(Stat::Counter(c)) => c.clone(),
            _ => Counter::default(),
        }
    }
    /// The next member, a gauge named `name`.
    pub fn gauge(&mut self, name: &str) -> Gauge {
        match self.take(name) {
            Some(Stat::Gauge(g)) => g.clone(),
            _ => Gauge::default(),
        }
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
    /// [`Store::family`] under this scope's prefix.
    pub fn family(&self, members: &'static [(&'static str, Kind)]) -> FamilyCursor {
        self.store.family(self.prefix.clone(), members)
    }
    /// [`Store::idle`] under this scope's prefix.
    pub fn idle(&self, counters: &'static [&'static str], gauges: &'static [&'static str]) {
        self.store.idle(self.prefix.clone(), counters, gauges);
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
    fn removing_many_prefixes_at_once_handles_dotted_cluster_names() {
        let s = Store::new();
        let fqdn = "cluster.outbound|9080||reviews.default.svc.cluster.local.";
        for c in [fqdn, "cluster.a.", "cluster.a.b.", "cluster.keep."] {
            s.counter(format!("{c}upstream_rq_total"));
            s.gauge(format!("{c}upstream_cx_active"));
        }
        let doomed = [fqdn.to_string(), "cluster.a.".to_string()];
        let n = s.remove_prefixes(&doomed, |n| n.starts_with("cluster.a.b."));
        assert_eq!(n, 4);
        let names: Vec<String> = s.snapshot().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "cluster.a.b.upstream_cx_active",
                "cluster.a.b.upstream_rq_total",
                "cluster.keep.upstream_cx_active",
                "cluster.keep.upstream_rq_total",
            ],
            "sorted, the nested live cluster and the others untouched"
        );
    }

    #[test]
    fn idle_families_are_listed_once_and_leave_with_their_prefix() {
        let s = Store::new();
        s.scope("cluster.a.").idle(&["x_total", "y_total"], &["z"]);
        s.counter("cluster.a.y_total").inc();
        let listed = |s: &Store| -> Vec<(String, String)> {
            s.snapshot()
                .into_iter()
                .map(|(n, st)| {
                    let v = match st {
                        Stat::Counter(c) => format!("c{}", c.get()),
                        Stat::Gauge(g) => format!("g{}", g.get()),
                        Stat::Text(t) => t.get(),
                    };
                    (n, v)
                })
                .collect()
        };
        assert_eq!(
            listed(&s),
            [
                ("cluster.a.x_total".to_string(), "c0".to_string()),
                ("cluster.a.y_total".to_string(), "c1".to_string()),
                ("cluster.a.z".to_string(), "g0".to_string()),
            ]
        );
        let used = s.snapshot_where(|_, st| st.used());
        assert_eq!(used.len(), 1, "idle stats are never used");
        s.remove_prefix("cluster.a.", |_| false);
        assert!(listed(&s).is_empty());
    }

    #[test]
    fn a_family_is_one_entry_that_single_names_find() {
        const MEMBERS: &[(&str, Kind)] = &[("rq_total", Kind::Counter), ("cx_active", Kind::Gauge)];
        let s = Store::new();
        let early = s.counter("cluster.a.rq_total");
        let mut f = s.scope("cluster.a.").family(MEMBERS);
        let rq = f.counter("rq_total");
        let cx = f.gauge("cx_active");
        early.inc();
        rq.inc();
        cx.set(3);
        s.counter("cluster.a.rq_total").inc();
        assert_eq!(
            rq.get(),
            3,
            "the single name, before and after, is the family's counter"
        );
        let mut again = s.scope("cluster.a.").family(MEMBERS);
        assert_eq!(
            again.counter("rq_total").get(),
            3,
            "a rebuilt cluster keeps counting"
        );
        let names: Vec<(String, bool)> = s
            .snapshot()
            .into_iter()
            .map(|(n, st)| (n, st.used()))
            .collect();
        assert_eq!(
            names,
            [
                ("cluster.a.cx_active".to_string(), true),
                ("cluster.a.rq_total".to_string(), true)
            ]
        );
        s.remove_prefix("cluster.a.", |_| false);
        assert!(s.snapshot().is_empty());
        assert_eq!(
            s.counter("cluster.a.rq_total").get(),
            0,
            "gone with its prefix"
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
