//! Accept, configuration: listener socket addresses and CIDR ranges from their protos.

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, CidrRange, SocketAddress,
};

use crate::config::{ConfigError, Path};

/// One address a listener binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddress {
    pub address: SocketAddr,
    /// For `::` (or a v4-mapped IPv6 address): accept IPv4 too (`IPV6_V6ONLY` off).
    pub ipv4_compat: bool,
}

impl ListenAddress {
    /// The address as Envoy prints it, which is also the listener's default stat scope before
    /// sanitising (`127.0.0.1:8080`, `[::1]:8080`).
    pub fn envoy_string(&self) -> String {
        self.address.to_string()
    }
}

/// Parses a listener `Address` (`path` names the `address` field).
pub fn listen_address(addr: &Address, path: &Path) -> Result<ListenAddress, ConfigError> {
    match &addr.address {
        Some(address::Address::SocketAddress(sa)) => {
            socket_address(sa, &path.field("socket_address"))
        }
        Some(address::Address::Pipe(_)) => Err(ConfigError::new(
            path.field("pipe"),
            "unix domain socket (pipe) listeners are not supported yet",
        )),
        Some(address::Address::EnvoyInternalAddress(_)) => Err(ConfigError::new(
            path.field("envoy_internal_address"),
            "internal listener addresses are not supported yet",
        )),
        None => Err(ConfigError::new(path, "an address is required")),
    }
}

fn socket_address(sa: &SocketAddress, path: &Path) -> Result<ListenAddress, ConfigError> {
    if sa.protocol != socket_address::Protocol::Tcp as i32 {
        return Err(ConfigError::new(
            path.field("protocol"),
            "only TCP listeners are supported (UDP and QUIC listeners come later)",
        ));
    }
    if !sa.resolver_name.is_empty() {
        return Err(ConfigError::new(
            path.field("resolver_name"),
            format!("custom resolver \"{}\" is not supported", sa.resolver_name),
        ));
    }
    if !sa.network_namespace_filepath.is_empty() {
        return Err(ConfigError::new(
            path.field("network_namespace_filepath"),
            "network namespaces are not supported",
        ));
    }
    let port = match &sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => port(*p, &path.field("port_value"))?,
        Some(socket_address::PortSpecifier::NamedPort(name)) => {
            return Err(ConfigError::new(
                path.field("named_port"),
                format!("named port \"{name}\" is not supported; use port_value"),
            ))
        }
        // Envoy's default for an unset oneof is port 0: the kernel picks one.
        None => 0,
    };
    // Listener addresses are never resolved: Envoy's default resolver only accepts IP literals.
    let ip: IpAddr = sa.address.parse().map_err(|_| {
        ConfigError::new(
            path.field("address"),
            format!("malformed IP address: \"{}\"", sa.address),
        )
    })?;
    if sa.ipv4_compat {
        let ok = match ip {
            IpAddr::V4(_) => false,
            IpAddr::V6(v6) => v6.is_unspecified() || v6.to_ipv4_mapped().is_some(),
        };
        if !ok {
            return Err(ConfigError::new(
                path.field("ipv4_compat"),
                format!(
                    "only the IPv6 address \"::\" or an IPv4-mapped IPv6 address can set ipv4_compat, not \"{}\"",
                    sa.address
                ),
            ));
        }
    }
    Ok(ListenAddress {
        address: SocketAddr::new(ip, port),
        ipv4_compat: sa.ipv4_compat,
    })
}

/// A port field, which protos carry as `uint32`.
pub fn port(value: u32, path: &Path) -> Result<u16, ConfigError> {
    u16::try_from(value).map_err(|_| {
        ConfigError::new(
            path,
            format!("port {value} is out of range (must be at most 65535)"),
        )
    })
}

/// An IP prefix: the network address (host bits cleared) and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    len: u8,
}

impl Cidr {
    pub const ANY_V4: Cidr = Cidr {
        network: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        len: 0,
    };
    pub const ANY_V6: Cidr = Cidr {
        network: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        len: 0,
    };

    pub fn new(ip: IpAddr, len: u8) -> Option<Self> {
        let max = match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        (len <= max).then(|| Self {
            network: mask(ip, len),
            len,
        })
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.network, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.len) == self.network
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

/// A `CidrRange` proto. An unset `prefix_len` is 0, as in Envoy.
pub fn cidr(range: &CidrRange, path: &Path) -> Result<Cidr, ConfigError> {
    let ip: IpAddr = range.address_prefix.parse().map_err(|_| {
        ConfigError::new(
            path.field("address_prefix"),
            format!("malformed IP address: \"{}\"", range.address_prefix),
        )
    })?;
    let len = range.prefix_len.as_ref().map_or(0, |v| v.value);
    u8::try_from(len)
        .ok()
        .and_then(|len| Cidr::new(ip, len))
        .ok_or_else(|| {
            ConfigError::new(
                path.field("prefix_len"),
                format!("prefix length {len} is too long for {ip}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn cidr_contains_clears_host_bits() {
        let c = Cidr::new(ip("10.1.2.3"), 8).expect("cidr");
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(ip("10.200.0.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::1")));
        // A v4-mapped address is the IPv4 address it carries.
        assert!(c.contains(ip("::ffff:10.9.9.9")));
        let all = Cidr::new(ip("0.0.0.0"), 0).expect("cidr");
        assert!(all.contains(ip("1.2.3.4")));
        let v6 = Cidr::new(ip("2001:db8::"), 32).expect("cidr");
        assert!(v6.contains(ip("2001:db8:1::1")));
        assert!(Cidr::new(ip("1.2.3.4"), 33).is_none());
    }
}
