//! Connect stage admission: a cluster's circuit breakers (`circuit_breakers.thresholds`).
//!
//! Each breaker is a counter with a ceiling. Taking a slot yields a guard that gives it back on drop,
//! so every early return and cancelled future releases what it held. The `*_open` gauges read 1 while
//! the breaker is at its ceiling, as Envoy's do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::stats::{Gauge, Scope};

/// The four limits of one routing priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: u64,
    pub max_pending_requests: u64,
    pub max_requests: u64,
    pub max_retries: u64,
    pub track_remaining: bool,
}

impl Default for Limits {
    /// Envoy's defaults: 1024 connections, pending and active requests; 3 concurrent retries.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            track_remaining: false,
        }
    }
}

/// One breaker.
#[derive(Debug)]
pub struct Resource {
    max: u64,
    count: AtomicU64,
    open: Gauge,
    remaining: Option<Gauge>,
}

impl Resource {
    fn new(max: u64, scope: &Scope, open: &str, remaining: Option<&str>) -> Arc<Self> {
        let r = Arc::new(Self {
            max,
            count: AtomicU64::new(0),
            open: scope.gauge(open),
            remaining: remaining.map(|n| scope.gauge(n)),
        });
        r.publish(0);
        r
    }

    /// A slot, unless the breaker is at its ceiling.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ResourceGuard> {
        let mut cur = self.count.load(Ordering::Relaxed);
        loop {
            if cur >= self.max {
                return None;
            }
            match self.count.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.publish(cur + 1);
        Some(ResourceGuard(self.clone()))
    }

    /// A slot even beyond the ceiling: Envoy still opens the first connection of an empty pool so that
    /// its queued requests are not stranded when other pools hold every connection.
    pub fn force_acquire(self: &Arc<Self>) -> ResourceGuard {
        let now = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        self.publish(now);
        ResourceGuard(self.clone())
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn in_use(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn release(&self) {
        let now = self.count.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        self.publish(now);
    }

    fn publish(&self, now: u64) {
        self.open.set(i64::from(now >= self.max));
        if let Some(r) = &self.remaining {
            r.set(i64::try_from(self.max.saturating_sub(now)).unwrap_or(i64::MAX));
        }
    }
}

/// A held slot of one breaker.
#[derive(Debug)]
pub struct ResourceGuard(Arc<Resource>);

impl Drop for ResourceGuard {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A held `max_retries` slot: keep it for as long as the retry is in flight.
#[derive(Debug)]
pub struct RetryGuard(#[allow(dead_code)] ResourceGuard);

/// The breakers of a cluster's DEFAULT priority (routes select HIGH rarely; its limits are kept for
/// `/clusters` and applied the same way once routes can ask for it).
#[derive(Debug)]
pub struct CircuitBreakers {
    pub connections: Arc<Resource>,
    pub pending_requests: Arc<Resource>,
    pub requests: Arc<Resource>,
    pub retries: Arc<Resource>,
    pub default_limits: Limits,
    pub high_limits: Limits,
}

impl CircuitBreakers {
    pub fn new(default_limits: Limits, high_limits: Limits, cluster_scope: &Scope) -> Self {
        let d = cluster_scope.scope("circuit_breakers.default.");
        let h = cluster_scope.scope("circuit_breakers.high.");
        for name in [
            "cx_open",
            "cx_pool_open",
            "rq_open",
            "rq_pending_open",
            "rq_retry_open",
        ] {
            d.gauge(name).set(0);
            h.gauge(name).set(0);
        }
        let track = |n: &'static str| default_limits.track_remaining.then_some(n);
        Self {
            connections: Resource::new(
                default_limits.max_connections,
                &d,
                "cx_open",
                track("remaining_cx"),
            ),
            pending_requests: Resource::new(
                default_limits.max_pending_requests,
                &d,
                "rq_pending_open",
                track("remaining_pending"),
            ),
            requests: Resource::new(
                default_limits.max_requests,
                &d,
                "rq_open",
                track("remaining_rq"),
            ),
            retries: Resource::new(
                default_limits.max_retries,
                &d,
                "rq_retry_open",
                track("remaining_retries"),
            ),
            default_limits,
            high_limits,
        }
    }

    pub fn try_retry(&self) -> Option<RetryGuard> {
        self.retries.try_acquire().map(RetryGuard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Store;

    #[test]
    fn slots_come_back_on_drop_and_open_gauge_follows() {
        let store = Store::new();
        let limits = Limits {
            max_requests: 1,
            ..Limits::default()
        };
        let cb = CircuitBreakers::new(limits, Limits::default(), &store.scope("cluster.c."));
        let open = store.gauge("cluster.c.circuit_breakers.default.rq_open");
        let first = cb.requests.try_acquire().expect("first slot");
        assert_eq!(open.get(), 1);
        assert!(cb.requests.try_acquire().is_none());
        drop(first);
        assert_eq!(open.get(), 0);
        assert!(cb.requests.try_acquire().is_some());
    }
}
