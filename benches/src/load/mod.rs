//! The load generator: closed-loop and open-loop HTTP clients (hyper, HTTP/1.1 and h2), TCP bulk
//! senders, mTLS handshakes and idle keep-alive connections, all recording into HDR histograms.

pub mod http;
pub mod open;
pub mod tcp;
pub mod tls;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::stats::latency_histogram;

/// Longest a request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// When a load runs: warm-up until `start`, measured until `end`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn after(warmup: Duration, duration: Duration) -> Window {
        let start = Instant::now() + warmup;
        Window {
            start,
            end: start + duration,
        }
    }

    /// A request that began at `origin` and ended at `done` counts for throughput and CPU when it
    /// lies entirely inside the window.
    fn counts(&self, origin: Instant, done: Instant) -> bool {
        origin >= self.start && done <= self.end
    }
}

/// What one load produced.
#[derive(Debug)]
pub struct Outcome {
    /// Requests (or handshakes) completed inside the window.
    pub requests: u64,
    /// Failures at any time, warm-up included: a benchmark with errors is not comparable.
    pub errors: u64,
    /// Latency in nanoseconds of requests that began inside the window.
    pub latency: Histogram<u64>,
    /// A sample of the failures, for the report.
    pub first_error: Option<String>,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            requests: 0,
            errors: 0,
            latency: latency_histogram(),
            first_error: None,
        }
    }
}

impl Outcome {
    /// Records a success; `origin` is when it was sent (closed loop) or scheduled (open loop).
    pub fn record(&mut self, w: &Window, origin: Instant, done: Instant) {
        if origin >= w.start {
            let ns = done.saturating_duration_since(origin).as_nanos();
            let _ = self
                .latency
                .record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
        }
        if w.counts(origin, done) {
            self.requests += 1;
        }
    }

    pub fn fail(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    pub fn merge(&mut self, other: Outcome) {
        self.requests += other.requests;
        self.errors += other.errors;
        let _ = self.latency.add(&other.latency);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Joins load tasks, merging their outcomes (a panicked task counts as an error).
pub async fn join(tasks: Vec<tokio::task::JoinHandle<Outcome>>) -> Outcome {
    let mut out = Outcome::default();
    for t in tasks {
        match t.await {
            Ok(o) => out.merge(o),
            Err(e) => out.fail(format!("load task: {e}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_inside_the_window_count() {
        let now = Instant::now();
        let w = Window {
            start: now + Duration::from_millis(100),
            end: now + Duration::from_millis(200),
        };
        let ms = |n| now + Duration::from_millis(n);
        let mut o = Outcome::default();
        o.record(&w, ms(50), ms(120)); // warm-up
        o.record(&w, ms(110), ms(130)); // inside
        o.record(&w, ms(190), ms(260)); // began inside, ended late: latency only
        assert_eq!(o.requests, 1);
        assert_eq!(o.latency.len(), 2);
        assert_eq!(o.latency.max() / 1_000_000, 70);
    }

    #[test]
    fn merging_keeps_the_first_error() {
        let mut a = Outcome::default();
        let mut b = Outcome::default();
        b.fail("refused");
        b.fail("reset");
        a.merge(b);
        assert_eq!(a.errors, 2);
        assert_eq!(a.first_error.as_deref(), Some("refused"));
    }
}
