//! Balance stage: pick one host among a set, by the cluster's `lb_policy`.
//!
//! Pickers are built with each host set snapshot and never lock: weighted round robin walks a
//! precomputed smooth weighted round-robin order with an atomic cursor (Envoy uses an EDF scheduler;
//! both give each host its weight's share, interleaved).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::Rng;

use super::config::LbPolicy;
use super::endpoint::Host;

/// Longest precomputed weighted order; larger weight sums are scaled down to it.
const MAX_SCHEDULE: u64 = 4096;

/// A repeating order over items with weights.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    order: Vec<u32>,
    next: AtomicUsize,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Schedule {
    /// Items with weight 0 never come up.
    pub(crate) fn new(weights: &[u64]) -> Self {
        let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
        if g == 0 {
            return Self::default();
        }
        let mut w: Vec<u64> = weights.iter().map(|x| x / g).collect();
        let sum: u64 = w.iter().sum();
        if sum > MAX_SCHEDULE {
            for x in w.iter_mut().filter(|x| **x > 0) {
                *x = (*x * MAX_SCHEDULE / sum).max(1);
            }
        }
        let total: i64 = w.iter().map(|x| *x as i64).sum();
        let mut current = vec![0i64; w.len()];
        let mut order = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            let mut best = 0;
            for i in 0..w.len() {
                current[i] += w[i] as i64;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            order.push(best as u32);
        }
        Self {
            order,
            next: AtomicUsize::new(0),
        }
    }

    pub(crate) fn next(&self) -> Option<usize> {
        if self.order.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.order.len();
        Some(self.order[i] as usize)
    }
}

/// The hosts one pick chooses among, with the policy's state.
#[derive(Debug, Default)]
pub(crate) struct Picker {
    hosts: Vec<Arc<Host>>,
    equal_weights: bool,
    weighted: Schedule,
    next: AtomicUsize,
}

impl Picker {
    pub(crate) fn new(hosts: Vec<Arc<Host>>) -> Self {
        let equal_weights = hosts.windows(2).all(|w| w[0].weight == w[1].weight);
        let weighted = if equal_weights {
            Schedule::default()
        } else {
            Schedule::new(
                &hosts
                    .iter()
                    .map(|h| u64::from(h.weight))
                    .collect::<Vec<_>>(),
            )
        };
        Self {
            hosts,
            equal_weights,
            weighted,
            next: AtomicUsize::new(0),
        }
    }

    pub(crate) fn pick(&self, policy: &LbPolicy) -> Option<Arc<Host>> {
        let n = self.hosts.len();
        if n == 0 {
            return None;
        }
        if n == 1 {
            return Some(self.hosts[0].clone());
        }
        let i = match policy {
            LbPolicy::RoundRobin if self.equal_weights => {
                self.next.fetch_add(1, Ordering::Relaxed) % n
            }
            LbPolicy::RoundRobin => self.weighted.next()?,
            // Envoy's random policy ignores weights.
            LbPolicy::Random => rand::rng().random_range(0..n),
            LbPolicy::LeastRequest {
                choice_count,
                active_request_bias,
            } => {
                if self.equal_weights {
                    self.fewest_of_choices(*choice_count)
                } else {
                    self.weighted_by_load(*active_request_bias)
                }
            }
        };
        self.hosts.get(i).cloned()
    }

    /// Power of N choices: N random hosts (with replacement), the one with fewest active requests.
    fn fewest_of_choices(&self, choices: u32) -> usize {
        let mut rng = rand::rng();
        let n = self.hosts.len();
        let mut best = rng.random_range(0..n);
        for _ in 1..choices.max(2) {
            let c = rng.random_range(0..n);
            if self.hosts[c].active_requests() < self.hosts[best].active_requests() {
                best = c;
            }
        }
        best
    }

    /// Unequal weights: a pick in proportion to `weight / (active_requests + 1)^bias`.
    fn weighted_by_load(&self, bias: f64) -> usize {
        let dynamic: Vec<f64> = self
            .hosts
            .iter()
            .map(|h| {
                let active = h.active_requests().max(0) as f64;
                f64::from(h.weight) / (active + 1.0).powf(bias)
            })
            .collect();
        let total: f64 = dynamic.iter().sum();
        let mut r = rand::rng().random::<f64>() * total;
        for (i, w) in dynamic.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        self.hosts.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_weighted_order_interleaves() {
        let s = Schedule::new(&[5, 1, 1]);
        let got: Vec<usize> = (0..7).filter_map(|_| s.next()).collect();
        assert_eq!(got, vec![0, 0, 1, 0, 2, 0, 0]);
        let s = Schedule::new(&[2, 0, 4]);
        let got: Vec<usize> = (0..3).filter_map(|_| s.next()).collect();
        assert_eq!(got, vec![2, 0, 2]);
        assert!(Schedule::new(&[0, 0]).next().is_none());
    }

    #[test]
    fn huge_weights_are_scaled_not_expanded() {
        let s = Schedule::new(&[1_000_000, 3_000_001]);
        assert!(s.order.len() <= MAX_SCHEDULE as usize + 2);
        let ones = s.order.iter().filter(|i| **i == 1).count() as f64;
        assert!((ones / s.order.len() as f64 - 0.75).abs() < 0.01);
    }
}
