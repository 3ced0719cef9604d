//! Balance, ORIGINAL_DST clusters: the host is where the downstream connection was going before an
//! iptables redirect (the connection's restored local address), or, with `use_http_header`, the
//! `x-envoy-original-dst-host` request header. Hosts are made on first use, keep their connection
//! pool while used, and are forgotten after `cleanup_interval` without use, as in Envoy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderName;

use super::config::{EndpointSpec, Health, Locality, Target};
use super::endpoint::Host;

/// Envoy's default header for `use_http_header`.
pub const DEFAULT_HEADER: HeaderName = HeaderName::from_static("x-envoy-original-dst-host");

/// `original_dst_lb_config` and `cleanup_interval`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginalDstSpec {
    pub use_http_header: bool,
    pub header: HeaderName,
    pub port_override: Option<u16>,
    pub cleanup_interval: Duration,
}

/// Where a request or connection wants to go, attached by the connection manager (request
/// extension) or the TCP proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginalDestination(pub SocketAddr);

/// The hosts an ORIGINAL_DST cluster has made so far.
#[derive(Debug, Default)]
pub struct OriginalDstHosts {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    hosts: HashMap<SocketAddr, (Arc<Host>, Instant)>,
    last_cleanup: Option<Instant>,
}

impl OriginalDstHosts {
    /// The host for `addr`, made if new; forgets hosts idle for `spec.cleanup_interval`.
    pub fn host(&self, spec: &OriginalDstSpec, addr: SocketAddr) -> Arc<Host> {
        let addr = match spec.port_override {
            Some(p) => SocketAddr::new(addr.ip(), p),
            None => addr,
        };
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let due = inner
            .last_cleanup
            .is_none_or(|t| now.duration_since(t) >= spec.cleanup_interval);
        if due {
            inner.last_cleanup = Some(now);
            inner.hosts.retain(|_, (h, used)| {
                // A host still referenced (in-flight request, open tcp_proxy connection) stays.
                let keep =
                    Arc::strong_count(h) > 1 || now.duration_since(*used) < spec.cleanup_interval;
                if !keep {
                    h.pool.drain();
                }
                keep
            });
        }
        let entry = inner
            .hosts
            .entry(addr)
            .or_insert_with(|| (Arc::new(Host::new(&endpoint(addr), addr)), now));
        entry.1 = now;
        entry.0.clone()
    }

    /// Every host currently known (for `/clusters`).
    pub fn hosts(&self) -> Vec<Arc<Host>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.hosts.values().map(|(h, _)| h.clone()).collect()
    }
}

fn endpoint(addr: SocketAddr) -> EndpointSpec {
    EndpointSpec {
        target: Target::Ip(addr),
        hostname: String::new(),
        weight: 1,
        priority: 0,
        locality: Locality::default(),
        locality_index: 0,
        locality_weight: None,
        health: Health::Healthy,
        socket_labels: Default::default(),
        metadata_namespaces: Vec::new(),
        tunnel: None,
    }
}

/// The destination of a request: the header when allowed and valid, else the connection's.
pub fn destination(
    spec: &OriginalDstSpec,
    headers: &http::HeaderMap,
    connection: Option<OriginalDestination>,
) -> Option<SocketAddr> {
    if spec.use_http_header {
        if let Some(a) = headers
            .get(&spec.header)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<SocketAddr>().ok())
        {
            return Some(a);
        }
    }
    connection.map(|c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> OriginalDstSpec {
        OriginalDstSpec {
            use_http_header: true,
            header: DEFAULT_HEADER,
            port_override: None,
            cleanup_interval: Duration::from_secs(5),
        }
    }

    #[test]
    fn one_host_per_destination_with_port_override() {
        let hosts = OriginalDstHosts::default();
        let a: SocketAddr = "10.0.0.1:80".parse().expect("addr");
        let h1 = hosts.host(&spec(), a);
        let h2 = hosts.host(&spec(), a);
        assert!(Arc::ptr_eq(&h1, &h2));
        let over = OriginalDstSpec {
            port_override: Some(8080),
            ..spec()
        };
        assert_eq!(hosts.host(&over, a).address().port(), 8080);
        assert_eq!(hosts.hosts().len(), 2);
    }

    #[test]
    fn header_overrides_the_connection_only_when_valid() {
        let conn = Some(OriginalDestination("10.0.0.1:80".parse().expect("addr")));
        let mut h = http::HeaderMap::new();
        assert_eq!(destination(&spec(), &h, conn), conn.map(|c| c.0));
        h.insert(DEFAULT_HEADER, "10.9.9.9:443".parse().expect("value"));
        assert_eq!(
            destination(&spec(), &h, conn),
            Some("10.9.9.9:443".parse().expect("addr"))
        );
        let no_header = OriginalDstSpec {
            use_http_header: false,
            ..spec()
        };
        assert_eq!(destination(&no_header, &h, conn), conn.map(|c| c.0));
        h.insert(DEFAULT_HEADER, "not an address".parse().expect("value"));
        assert_eq!(destination(&spec(), &h, conn), conn.map(|c| c.0));
    }
}
