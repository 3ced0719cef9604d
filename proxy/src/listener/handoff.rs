//! Accept, hand-off (`use_original_dst`): a connection that iptables redirected to a virtual
//! listener (Istio's `virtualOutbound` on 15001) moves to the listener that owns its original
//! destination, as Envoy's connection handler does.
//!
//! The owner is the listener on exactly that `ip:port`, else the wildcard listener on the port of
//! the destination's family (`0.0.0.0:port` or `[::]:port`); such listeners usually have
//! `bind_to_port: false`. A dual-stack `[::]:port` (`ipv4_compat`) also owns `0.0.0.0:port` unless
//! a listener is there, and an IPv4-mapped `[::ffff:a.b.c.d]:port` owns `a.b.c.d:port`. With no
//! owner the connection stays on the virtual listener and its own filter chains (the passthrough).
//!
//! The hand-off happens at accept, right after `original_dst`: the virtual listener's other listener
//! filters (Envoy runs them before it hands off; Istio's `virtualOutbound` has none) do not run for
//! a connection that moves, the owner's do.
//!
//! The listener manager publishes the whole set after every change, so a lookup sees one version
//! of it: the listeners of the last applied LDS update and the static ones.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::address::ListenAddress;

/// Every listener by the addresses it owns; `T` is what a connection is handed to.
#[derive(Debug)]
pub struct Owners<T> {
    by_address: ArcSwap<HashMap<SocketAddr, T>>,
}

impl<T> Default for Owners<T> {
    fn default() -> Self {
        Self {
            by_address: ArcSwap::from_pointee(HashMap::new()),
        }
    }
}

impl<T: Clone> Owners<T> {
    /// Replaces the set with `listeners`: each address a listener has, with what serves it.
    /// Addresses with port 0 own nothing (the kernel picked their port).
    pub fn publish(&self, listeners: impl IntoIterator<Item = (ListenAddress, T)>) {
        let mut map = HashMap::new();
        let mut aliases = Vec::new();
        for (addr, owner) in listeners {
            if addr.address.port() == 0 {
                continue;
            }
            if let Some(v4) = ipv4_alias(addr) {
                aliases.push((v4, owner.clone()));
            }
            map.insert(addr.address, owner);
        }
        // A listener of the IPv4 address itself comes first.
        for (v4, owner) in aliases {
            map.entry(v4).or_insert(owner);
        }
        self.by_address.store(Arc::new(map));
    }

    /// The listener that owns `destination`: the exact address, else the wildcard on its port.
    pub fn find(&self, destination: SocketAddr) -> Option<T> {
        let map = self.by_address.load();
        let destination = SocketAddr::new(destination.ip().to_canonical(), destination.port());
        if let Some(owner) = map.get(&destination) {
            return Some(owner.clone());
        }
        let any = match destination.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        map.get(&SocketAddr::new(any, destination.port())).cloned()
    }
}

/// The IPv4 address a dual-stack listen address also receives connections for.
fn ipv4_alias(addr: ListenAddress) -> Option<SocketAddr> {
    let IpAddr::V6(ip) = addr.address.ip() else {
        return None;
    };
    if !addr.ipv4_compat {
        return None;
    }
    let v4 = if ip.is_unspecified() {
        Ipv4Addr::UNSPECIFIED
    } else {
        ip.to_ipv4_mapped()?
    };
    Some(SocketAddr::new(IpAddr::V4(v4), addr.address.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> ListenAddress {
        ListenAddress {
            address: s.parse().expect("address"),
            ipv4_compat: false,
        }
    }

    fn dual(s: &str) -> ListenAddress {
        ListenAddress {
            ipv4_compat: true,
            ..at(s)
        }
    }

    fn owners(listeners: &[(ListenAddress, &'static str)]) -> Owners<&'static str> {
        let o = Owners::default();
        o.publish(listeners.iter().copied());
        o
    }

    fn find(o: &Owners<&'static str>, dest: &str) -> Option<&'static str> {
        o.find(dest.parse().expect("destination"))
    }

    #[test]
    fn the_exact_address_beats_the_wildcard_on_its_port() {
        let o = owners(&[
            (at("0.0.0.0:15001"), "virtualOutbound"),
            (at("0.0.0.0:8080"), "0.0.0.0_8080"),
            (at("10.0.0.7:8080"), "10.0.0.7_8080"),
        ]);
        assert_eq!(find(&o, "10.0.0.7:8080"), Some("10.0.0.7_8080"));
        assert_eq!(find(&o, "10.0.0.8:8080"), Some("0.0.0.0_8080"));
        assert_eq!(find(&o, "127.0.0.1:15001"), Some("virtualOutbound"));
    }

    #[test]
    fn a_port_without_a_listener_has_no_owner() {
        let o = owners(&[
            (at("0.0.0.0:15001"), "virtualOutbound"),
            (at("10.0.0.7:8080"), "10.0.0.7_8080"),
        ]);
        // The virtual listener keeps these and serves them with its own chains.
        assert_eq!(find(&o, "10.0.0.7:9090"), None);
        assert_eq!(find(&o, "10.0.0.8:8080"), None);
    }

    #[test]
    fn ipv6_destinations_match_ipv6_listeners() {
        let o = owners(&[
            (at("[::]:8080"), "[::]_8080"),
            (at("[2001:db8::7]:8080"), "[2001:db8::7]_8080"),
            (at("0.0.0.0:9090"), "0.0.0.0_9090"),
        ]);
        assert_eq!(find(&o, "[2001:db8::7]:8080"), Some("[2001:db8::7]_8080"));
        assert_eq!(find(&o, "[2001:db8::8]:8080"), Some("[::]_8080"));
        // A v6-only wildcard does not take IPv4 and the IPv4 wildcard does not take IPv6.
        assert_eq!(find(&o, "10.0.0.7:8080"), None);
        assert_eq!(find(&o, "[2001:db8::7]:9090"), None);
        // An IPv4-mapped destination is the IPv4 address.
        assert_eq!(find(&o, "[::ffff:10.0.0.7]:9090"), Some("0.0.0.0_9090"));
    }

    #[test]
    fn a_dual_stack_wildcard_takes_ipv4_unless_an_ipv4_listener_is_there() {
        let o = owners(&[
            (dual("[::]:8080"), "dual"),
            (dual("[::ffff:10.0.0.7]:9090"), "mapped"),
        ]);
        assert_eq!(find(&o, "10.0.0.8:8080"), Some("dual"));
        assert_eq!(find(&o, "10.0.0.7:9090"), Some("mapped"));
        let o = owners(&[(dual("[::]:8080"), "dual"), (at("0.0.0.0:8080"), "v4")]);
        assert_eq!(find(&o, "10.0.0.8:8080"), Some("v4"));
        assert_eq!(find(&o, "[2001:db8::1]:8080"), Some("dual"));
    }

    #[test]
    fn a_publish_replaces_the_whole_set() {
        let o = owners(&[(at("0.0.0.0:8080"), "old")]);
        o.publish([(at("0.0.0.0:9090"), "new")]);
        assert_eq!(find(&o, "10.0.0.7:8080"), None);
        assert_eq!(find(&o, "10.0.0.7:9090"), Some("new"));
        // Port 0 means the kernel chose; the configured address owns nothing.
        o.publish([(at("127.0.0.1:0"), "ephemeral")]);
        assert_eq!(find(&o, "127.0.0.1:0"), None);
    }
}
