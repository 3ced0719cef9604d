//! Balance stage inputs: hosts (an endpoint at one address, with its pool and counters) and the host
//! set snapshot of a cluster, which decides the priority level and locality a pick comes from.
//!
//! Priority levels follow Envoy's load calculation: each level's availability is its healthy share
//! times the overprovisioning factor (1.4), capped at 100%; levels take traffic in order until 100%
//! is covered, healthy hosts before degraded ones. While the total availability stays below 100%, a
//! level whose healthy share is below `healthy_panic_threshold` is in panic and routes to all of its
//! hosts.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rand::Rng;

use super::balance::{Picker, Schedule};
use super::config::{ClusterSpec, EndpointSpec, Health, LbPolicy, Locality};
use super::pool::HostPool;
use super::stats::{ClusterStats, HostStats};

/// One upstream host.
#[derive(Debug)]
pub struct Host {
    address: ArcSwap<SocketAddr>,
    pub hostname: String,
    pub weight: u32,
    pub priority: u32,
    pub locality: Locality,
    pub(crate) locality_index: usize,
    pub(crate) locality_weight: Option<u32>,
    pub health: Health,
    pub(crate) socket_labels: super::config::socket_match::SocketLabels,
    /// The namespaces of the endpoint's metadata.
    pub(crate) metadata_namespaces: Box<[String]>,
    /// The endpoint's `tunnel` metadata, for `internal_upstream`'s `passthrough_metadata`.
    pub(crate) tunnel: Option<super::config::internal_upstream::TunnelMetadata>,
    pub stats: HostStats,
    pub(crate) pool: HostPool,
    /// `envoy_internal_address` endpoints: the internal listener connections go to (`address`
    /// is then `listener::internal::INTERNAL_ADDRESS`).
    pub internal: Option<InternalTarget>,
}

/// An internal listener endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalTarget {
    pub listener: String,
    /// `envoy://<listener>/<endpoint_id>`, as Envoy names the host.
    pub uri: String,
}

fn internal_of(spec: &EndpointSpec) -> Option<InternalTarget> {
    match &spec.target {
        super::config::Target::Internal { listener, .. } => Some(InternalTarget {
            listener: listener.clone(),
            uri: spec.target.internal_uri().unwrap_or_default(),
        }),
        _ => None,
    }
}

impl Host {
    pub(crate) fn new(spec: &EndpointSpec, address: SocketAddr) -> Self {
        Self {
            address: ArcSwap::from_pointee(address),
            hostname: spec.hostname.clone(),
            weight: spec.weight,
            priority: spec.priority,
            locality: spec.locality.clone(),
            locality_index: spec.locality_index,
            locality_weight: spec.locality_weight,
            health: spec.health,
            socket_labels: spec.socket_labels.clone(),
            metadata_namespaces: spec.metadata_namespaces.clone().into_boxed_slice(),
            tunnel: spec.tunnel.clone(),
            stats: HostStats::default(),
            pool: HostPool::default(),
            internal: internal_of(spec),
        }
    }

    /// Whether this host is what `spec` at `address` describes (an EDS update keeps such hosts, with
    /// their pools and counters).
    pub(crate) fn is(&self, spec: &EndpointSpec, address: SocketAddr) -> bool {
        self.address() == address
            && self.hostname == spec.hostname
            && self.weight == spec.weight
            && self.priority == spec.priority
            && self.locality == spec.locality
            && self.locality_index == spec.locality_index
            && self.locality_weight == spec.locality_weight
            && self.health == spec.health
            && self.socket_labels == spec.socket_labels
            && *self.metadata_namespaces == *spec.metadata_namespaces
            && self.tunnel == spec.tunnel
            && self.internal == internal_of(spec)
    }

    /// Where new connections go (a LOGICAL_DNS host moves with each resolution).
    pub fn address(&self) -> SocketAddr {
        **self.address.load()
    }

    pub(crate) fn set_address(&self, addr: SocketAddr) {
        self.address.store(Arc::new(addr));
    }

    pub fn active_requests(&self) -> i64 {
        self.stats.rq_active.load(Ordering::Relaxed)
    }

    /// Open connections (idle or busy) to this host.
    pub fn open_connections(&self) -> usize {
        self.pool.open.load(Ordering::Relaxed)
    }

    /// Idle HTTP/1.1 connections kept alive to this host.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Healthy,
    Degraded,
}

/// The hosts of one priority level.
#[derive(Debug, Default)]
struct Level {
    panic: bool,
    healthy: Picker,
    degraded: Picker,
    all: Picker,
    /// `locality_weighted_lb_config`: localities by effective weight, each with its healthy hosts.
    localities: Option<(Schedule, Vec<Picker>)>,
}

/// An immutable view of a cluster's hosts, replaced whole when membership changes.
#[derive(Debug, Default)]
pub struct HostSet {
    pub hosts: Vec<Arc<Host>>,
    levels: Vec<Level>,
    /// `(level, source, cumulative load in percent)`.
    loads: Vec<(usize, Source, f64)>,
}

fn share(part: usize, total: usize, overprovisioning: f64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (overprovisioning * 100.0 * part as f64 / total as f64).min(100.0)
    }
}

impl HostSet {
    pub(crate) fn new(hosts: Vec<Arc<Host>>, spec: &ClusterSpec) -> Self {
        let op = spec.overprovisioning;
        let max_priority = hosts.iter().map(|h| h.priority as usize).max();
        let n_levels = max_priority.map_or(0, |m| m + 1);
        let mut healthy_share = vec![0.0; n_levels];
        let mut degraded_share = vec![0.0; n_levels];
        let mut healthy_pct = vec![0.0; n_levels];
        let mut levels: Vec<Level> = Vec::with_capacity(n_levels);
        for p in 0..n_levels {
            let usable: Vec<Arc<Host>> = hosts
                .iter()
                .filter(|h| h.priority as usize == p && h.health != Health::Draining)
                .cloned()
                .collect();
            let of = |want: Health| -> Vec<Arc<Host>> {
                usable
                    .iter()
                    .filter(|h| h.health == want)
                    .cloned()
                    .collect()
            };
            let healthy = of(Health::Healthy);
            let degraded = of(Health::Degraded);
            healthy_share[p] = share(healthy.len(), usable.len(), op);
            degraded_share[p] = share(degraded.len(), usable.len(), op);
            healthy_pct[p] = share(healthy.len() + degraded.len(), usable.len(), 1.0);
            let localities = spec
                .locality_weighted
                .then(|| locality_pickers(&usable, &healthy, op));
            levels.push(Level {
                panic: false,
                healthy: Picker::new(healthy),
                degraded: Picker::new(degraded),
                all: Picker::new(usable),
                localities,
            });
        }

        let total: f64 = healthy_share
            .iter()
            .chain(&degraded_share)
            .sum::<f64>()
            .min(100.0);
        let mut loads = Vec::new();
        if total <= 0.0 {
            // Nothing available anywhere: everything goes to the first level, in panic if allowed.
            if let Some(l) = levels.first_mut() {
                l.panic = spec.panic_threshold > 0.0;
                loads.push((0, Source::Healthy, 100.0));
            }
        } else {
            let mut remaining = 100.0;
            let mut acc = 0.0;
            for (source, shares) in [
                (Source::Healthy, &healthy_share),
                (Source::Degraded, &degraded_share),
            ] {
                for (p, s) in shares.iter().enumerate() {
                    let load = (s * 100.0 / total).min(remaining);
                    if load > 0.0 {
                        remaining -= load;
                        acc += load;
                        loads.push((p, source, acc));
                    }
                }
            }
            if total < 100.0 {
                for (p, l) in levels.iter_mut().enumerate() {
                    l.panic = healthy_pct[p] < spec.panic_threshold;
                }
            }
        }
        Self {
            hosts,
            levels,
            loads,
        }
    }

    /// The host for the next request, or None when there is none to pick.
    pub(crate) fn choose(&self, policy: &LbPolicy) -> Option<Arc<Host>> {
        let (p, source) = match self.loads.as_slice() {
            [] => return None,
            [(p, s, _)] => (*p, *s),
            loads => {
                let r = rand::rng().random::<f64>() * 100.0;
                let (p, s, _) = loads.iter().find(|(_, _, acc)| r < *acc).or(loads.last())?;
                (*p, *s)
            }
        };
        let level = self.levels.get(p)?;
        match source {
            Source::Degraded => level.degraded.pick(policy),
            Source::Healthy if level.panic => level.all.pick(policy),
            Source::Healthy => match &level.localities {
                Some((schedule, pickers)) => match schedule.next() {
                    Some(l) => pickers.get(l)?.pick(policy),
                    None => level.healthy.pick(policy),
                },
                None => level.healthy.pick(policy),
            },
        }
    }

    /// Envoy's `membership_*` gauges.
    pub(crate) fn publish(&self, stats: &ClusterStats) {
        let count = |h: Health| self.hosts.iter().filter(|x| x.health == h).count() as i64;
        stats.membership_total.set(self.hosts.len() as i64);
        stats.membership_healthy.set(count(Health::Healthy));
        stats.membership_degraded.set(count(Health::Degraded));
        stats.membership_excluded.set(count(Health::Draining));
    }
}

/// Localities of one level by `load_balancing_weight` × availability (Envoy's effective locality
/// weight); a locality without a weight gets no traffic.
fn locality_pickers(
    usable: &[Arc<Host>],
    healthy: &[Arc<Host>],
    op: f64,
) -> (Schedule, Vec<Picker>) {
    let mut indices: Vec<usize> = usable.iter().map(|h| h.locality_index).collect();
    indices.sort_unstable();
    indices.dedup();
    let mut weights = Vec::with_capacity(indices.len());
    let mut pickers = Vec::with_capacity(indices.len());
    for li in indices {
        let total = usable.iter().filter(|h| h.locality_index == li).count();
        let hs: Vec<Arc<Host>> = healthy
            .iter()
            .filter(|h| h.locality_index == li)
            .cloned()
            .collect();
        let weight = usable
            .iter()
            .find(|h| h.locality_index == li)
            .and_then(|h| h.locality_weight)
            .unwrap_or(0);
        let availability = share(hs.len(), total, op) / 100.0;
        weights.push((f64::from(weight) * availability * 1000.0).round() as u64);
        pickers.push(Picker::new(hs));
    }
    (Schedule::new(&weights), pickers)
}
