//! Balance stage inputs for STRICT_DNS and LOGICAL_DNS clusters: resolve endpoint names with the
//! system resolver, refresh every `dns_refresh_rate`, keep the last good addresses on failure.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rand::Rng;
use tracing::{debug, warn};

use super::cluster::Cluster;
use super::config::{Discovery, DnsSettings, LookupFamily, Target};
use super::endpoint::{Host, HostSet};

/// The addresses of `name` that `family` admits, in resolver order without repeats.
pub async fn resolve(name: &str, port: u16, family: LookupFamily) -> io::Result<Vec<SocketAddr>> {
    let all: Vec<SocketAddr> = tokio::net::lookup_host((name, port)).await?.collect();
    let (v4, v6): (Vec<SocketAddr>, Vec<SocketAddr>) = all.iter().partition(|a| a.is_ipv4());
    let mut picked = match family {
        LookupFamily::V4Only => v4,
        LookupFamily::V6Only => v6,
        LookupFamily::Auto if !v6.is_empty() => v6,
        LookupFamily::Auto => v4,
        LookupFamily::V4Preferred if !v4.is_empty() => v4,
        LookupFamily::V4Preferred => v6,
        LookupFamily::All => all,
    };
    let mut seen = std::collections::HashSet::new();
    picked.retain(|a| seen.insert(*a));
    if picked.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name}: no addresses of the configured dns_lookup_family"),
        ));
    }
    Ok(picked)
}

/// Spawns the refresh task of a DNS cluster; it ends when the cluster is dropped.
pub(crate) fn spawn(cluster: &Arc<Cluster>) {
    if !cluster.spec().discovery.uses_dns() || !cluster.mark_started() {
        return;
    }
    let weak = Arc::downgrade(cluster);
    tokio::spawn(refresh_loop(weak));
}

async fn refresh_loop(weak: Weak<Cluster>) {
    // Hosts by (endpoint index, address), so that pools and counters survive refreshes.
    let mut known: HashMap<(usize, SocketAddr), Arc<Host>> = HashMap::new();
    let mut logical: Option<Arc<Host>> = None;
    let mut failures: u32 = 0;
    loop {
        let Some(cluster) = weak.upgrade() else {
            return;
        };
        let ok = match cluster.spec().discovery {
            Discovery::LogicalDns => refresh_logical(&cluster, &mut logical).await,
            _ => refresh_strict(&cluster, &mut known).await,
        };
        let stats = cluster.stats();
        stats.update_attempt.inc();
        if ok {
            stats.update_success.inc();
            failures = 0;
        } else {
            stats.update_failure.inc();
            failures = failures.saturating_add(1);
        }
        cluster.ready.send_replace(true);
        let wait = next_wait(&cluster.spec().dns, failures);
        drop(cluster);
        tokio::time::sleep(wait).await;
    }
}

fn next_wait(dns: &DnsSettings, failures: u32) -> Duration {
    let base = match (failures, dns.failure_base) {
        (0, _) | (_, None) => dns.refresh_rate,
        (n, Some(b)) => {
            let max = dns.failure_max.unwrap_or(b * 10).max(b);
            b.saturating_mul(1u32 << (n - 1).min(16)).min(max)
        }
    };
    match dns.jitter {
        Some(j) if !j.is_zero() => base + j.mul_f64(rand::rng().random::<f64>()),
        _ => base,
    }
}

/// Every address of every endpoint; an endpoint whose lookup fails keeps its previous hosts.
async fn refresh_strict(
    cluster: &Arc<Cluster>,
    known: &mut HashMap<(usize, SocketAddr), Arc<Host>>,
) -> bool {
    let spec = cluster.spec();
    let mut all_ok = true;
    let mut next: HashMap<(usize, SocketAddr), Arc<Host>> = HashMap::new();
    let mut hosts = Vec::new();
    for (i, e) in spec.endpoints.iter().enumerate() {
        let addrs = match &e.target {
            Target::Ip(a) => vec![*a],
            // Only STATIC clusters have pipes, and they do not resolve.
            Target::Pipe(_) | Target::Internal { .. } => Vec::new(),
            Target::Dns { name, port } => match resolve(name, *port, spec.dns.family).await {
                Ok(a) => a,
                Err(err) => {
                    warn!(cluster = %spec.name, name = %name, error = %err, "DNS resolution failed; keeping the last addresses");
                    all_ok = false;
                    let mut prev: Vec<SocketAddr> = known
                        .keys()
                        .filter(|(idx, _)| *idx == i)
                        .map(|(_, a)| *a)
                        .collect();
                    prev.sort();
                    prev
                }
            },
        };
        for a in addrs {
            let host = known
                .get(&(i, a))
                .cloned()
                .unwrap_or_else(|| Arc::new(Host::new(e, a)));
            if next.insert((i, a), host.clone()).is_none() {
                hosts.push(host);
            }
        }
    }
    let changed = next.len() != known.len() || next.keys().any(|k| !known.contains_key(k));
    if changed {
        debug!(cluster = %spec.name, hosts = hosts.len(), "DNS membership changed");
        cluster.stats().membership_change.inc();
        cluster.install(HostSet::new(hosts, spec));
    }
    *known = next;
    all_ok
}

/// The one logical host connects to the first address of the latest resolution.
async fn refresh_logical(cluster: &Arc<Cluster>, logical: &mut Option<Arc<Host>>) -> bool {
    let spec = cluster.spec();
    let Some(e) = spec.endpoints.first() else {
        return true;
    };
    let first = match &e.target {
        Target::Ip(a) => Ok(*a),
        Target::Pipe(_) | Target::Internal { .. } => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "pipe endpoints do not resolve",
        )),
        Target::Dns { name, port } => resolve(name, *port, spec.dns.family).await.and_then(|a| {
            a.first()
                .copied()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
        }),
    };
    match first {
        Ok(addr) => {
            match logical {
                Some(h) => h.set_address(addr),
                None => {
                    let h = Arc::new(Host::new(e, addr));
                    *logical = Some(h.clone());
                    cluster.stats().membership_change.inc();
                    cluster.install(HostSet::new(vec![h], spec));
                }
            }
            true
        }
        Err(err) => {
            warn!(cluster = %spec.name, error = %err, "DNS resolution failed; keeping the last address");
            false
        }
    }
}
