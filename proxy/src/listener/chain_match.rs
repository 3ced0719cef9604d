//! Accept, filter-chain match: the validated `filter_chain_match` of one chain, how specifically it
//! matches a connection at each of Envoy's stages, and whether two chains could ever tie.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::listener::v3::{filter_chain_match, FilterChainMatch};

use super::address::{self, Cidr};
use crate::config::{ConfigErrors, Path};

/// Whether the connection comes from this host, for `source_type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SourceType {
    #[default]
    Any,
    SameIpOrLoopback,
    External,
}

/// The properties of a connection that filter chains match on. The accept stage knows the addresses;
/// listener filters (`tls_inspector`) add the server name and protocols.
#[derive(Debug, Clone, Copy)]
pub struct MatchInput<'a> {
    /// The local address of the accepted socket (or the original destination once restored).
    pub destination: SocketAddr,
    /// The peer, possibly rewritten by a listener filter such as PROXY protocol.
    pub source: SocketAddr,
    /// The directly connected peer (differs from `source` only when a listener filter rewrote it).
    pub direct_source: SocketAddr,
    pub server_name: Option<&'a str>,
    /// `"raw_buffer"` unless a listener filter detected otherwise (`"tls"`).
    pub transport_protocol: &'a str,
    pub application_protocols: &'a [&'a str],
}

impl MatchInput<'static> {
    /// A plain TCP connection that no listener filter has looked at.
    pub fn raw(destination: SocketAddr, source: SocketAddr) -> Self {
        Self {
            destination,
            source,
            direct_source: source,
            server_name: None,
            transport_protocol: "raw_buffer",
            application_protocols: &[],
        }
    }
}

/// One chain's `filter_chain_match`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainMatch {
    destination_port: Option<u16>,
    prefix_ranges: Vec<Cidr>,
    /// Lowercased; wildcards keep their `*.` prefix.
    server_names: Vec<String>,
    transport_protocol: Option<String>,
    application_protocols: Vec<String>,
    direct_source_prefix_ranges: Vec<Cidr>,
    source_type: SourceType,
    source_prefix_ranges: Vec<Cidr>,
    source_ports: Vec<u16>,
}

/// Envoy's stage order. Each stage keeps only the chains that match the connection most specifically.
const STAGES: usize = 9;

/// Per-connection facts computed once for all chains.
pub(super) struct Facts<'a> {
    input: &'a MatchInput<'a>,
    destination: IpAddr,
    source: IpAddr,
    direct_source: IpAddr,
    local: bool,
}

impl<'a> Facts<'a> {
    pub(super) fn new(input: &'a MatchInput<'a>) -> Self {
        let destination = input.destination.ip().to_canonical();
        let source = input.source.ip().to_canonical();
        Self {
            input,
            destination,
            source,
            direct_source: input.direct_source.ip().to_canonical(),
            // Envoy's isSameIpOrLoopback: a loopback peer, or one whose IP is the local IP.
            local: source.is_loopback() || source == destination,
        }
    }
}

impl ChainMatch {
    /// Validates a `filter_chain_match` (`path` names that field).
    pub fn from_proto(m: &FilterChainMatch, path: &Path) -> Result<Self, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        if !m.address_suffix.is_empty() {
            errors.push(
                path.field("address_suffix"),
                "not implemented (as in Envoy)",
            );
        }
        if m.suffix_len.is_some() {
            errors.push(path.field("suffix_len"), "not implemented (as in Envoy)");
        }
        let destination_port = match &m.destination_port {
            Some(p) => address::port(p.value, &path.field("destination_port"))
                .map_err(|e| errors.0.push(e))
                .ok(),
            None => None,
        };
        let cidrs = |ranges: &[envoy_types::pb::envoy::config::core::v3::CidrRange],
                     field: &str,
                     errors: &mut ConfigErrors| {
            let p = path.field(field);
            ranges
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    address::cidr(r, &p.index(i))
                        .map_err(|e| errors.0.push(e))
                        .ok()
                })
                .collect::<Vec<_>>()
        };
        let prefix_ranges = cidrs(&m.prefix_ranges, "prefix_ranges", &mut errors);
        let direct_source_prefix_ranges = cidrs(
            &m.direct_source_prefix_ranges,
            "direct_source_prefix_ranges",
            &mut errors,
        );
        let source_prefix_ranges =
            cidrs(&m.source_prefix_ranges, "source_prefix_ranges", &mut errors);
        let mut server_names = Vec::with_capacity(m.server_names.len());
        for (i, name) in m.server_names.iter().enumerate() {
            if name.contains('*') && !name.starts_with("*.") {
                errors.push(
                    path.field("server_names").index(i),
                    format!("partial wildcards are not supported in \"server_names\": \"{name}\""),
                );
            } else {
                server_names.push(name.to_ascii_lowercase());
            }
        }
        let source_type = match filter_chain_match::ConnectionSourceType::try_from(m.source_type) {
            Ok(filter_chain_match::ConnectionSourceType::Any) => SourceType::Any,
            Ok(filter_chain_match::ConnectionSourceType::SameIpOrLoopback) => {
                SourceType::SameIpOrLoopback
            }
            Ok(filter_chain_match::ConnectionSourceType::External) => SourceType::External,
            Err(_) => {
                errors.push(
                    path.field("source_type"),
                    format!("unknown source type {}", m.source_type),
                );
                SourceType::Any
            }
        };
        let source_ports = m
            .source_ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                address::port(*p, &path.field("source_ports").index(i))
                    .map_err(|e| errors.0.push(e))
                    .ok()
            })
            .collect();
        let parsed = Self {
            destination_port,
            prefix_ranges,
            server_names,
            transport_protocol: (!m.transport_protocol.is_empty())
                .then(|| m.transport_protocol.clone()),
            application_protocols: m.application_protocols.clone(),
            direct_source_prefix_ranges,
            source_type,
            source_prefix_ranges,
            source_ports,
        };
        errors.finish(parsed)
    }

    /// Whether the chain can only match after a listener filter looked into the connection's bytes.
    pub fn needs_inspection(&self) -> bool {
        !self.server_names.is_empty()
            || self.transport_protocol.is_some()
            || !self.application_protocols.is_empty()
    }

    /// How specifically this chain matches the connection at `stage`: `None` when it cannot match,
    /// higher is more specific, `Some(0)` for a criterion left empty.
    pub(super) fn score(&self, stage: usize, f: &Facts<'_>) -> Option<u32> {
        match stage {
            0 => match self.destination_port {
                None => Some(0),
                Some(p) => (p == f.input.destination.port()).then_some(1),
            },
            1 => longest_prefix(&self.prefix_ranges, f.destination),
            2 => server_name_score(&self.server_names, f.input.server_name),
            3 => match &self.transport_protocol {
                None => Some(0),
                Some(t) => (t == f.input.transport_protocol).then_some(1),
            },
            4 => alpn_score(&self.application_protocols, f.input.application_protocols),
            5 => longest_prefix(&self.direct_source_prefix_ranges, f.direct_source),
            6 => match self.source_type {
                SourceType::Any => Some(0),
                SourceType::SameIpOrLoopback => f.local.then_some(1),
                SourceType::External => (!f.local).then_some(1),
            },
            7 => longest_prefix(&self.source_prefix_ranges, f.source),
            8 => {
                if self.source_ports.is_empty() {
                    Some(0)
                } else {
                    self.source_ports
                        .contains(&f.input.source.port())
                        .then_some(1)
                }
            }
            _ => None,
        }
    }

    /// Whether some connection could match both chains equally at every stage, which Envoy rejects
    /// ("multiple filter chains with overlapping matching rules are defined"): every criterion shares
    /// a value, an empty criterion being its own catch-all value.
    pub fn overlaps(&self, other: &ChainMatch) -> bool {
        fn share<T: Eq + std::hash::Hash + Clone>(a: &[T], b: &[T], empty: &[T]) -> bool {
            let a = if a.is_empty() { empty } else { a };
            let b = if b.is_empty() { empty } else { b };
            let set: HashSet<&T> = a.iter().collect();
            b.iter().any(|x| set.contains(x))
        }
        // Envoy stands `0.0.0.0/0` and `::/0` in for an empty range list.
        let any_ip = [Cidr::ANY_V4, Cidr::ANY_V6];
        self.destination_port == other.destination_port
            && share(&self.prefix_ranges, &other.prefix_ranges, &any_ip)
            && share(&self.server_names, &other.server_names, &[String::new()])
            && self.transport_protocol == other.transport_protocol
            && share(
                &self.application_protocols,
                &other.application_protocols,
                &[String::new()],
            )
            && share(
                &self.direct_source_prefix_ranges,
                &other.direct_source_prefix_ranges,
                &any_ip,
            )
            && self.source_type == other.source_type
            && share(
                &self.source_prefix_ranges,
                &other.source_prefix_ranges,
                &any_ip,
            )
            && share(&self.source_ports, &other.source_ports, &[0])
    }
}

fn longest_prefix(ranges: &[Cidr], ip: IpAddr) -> Option<u32> {
    if ranges.is_empty() {
        return Some(0);
    }
    ranges
        .iter()
        .filter(|c| c.contains(ip))
        .map(|c| u32::from(c.prefix_len()))
        .max()
}

fn server_name_score(names: &[String], sni: Option<&str>) -> Option<u32> {
    if names.is_empty() {
        return Some(0);
    }
    let sni = sni.filter(|s| !s.is_empty())?;
    let mut best = None;
    for name in names {
        if let Some(suffix) = name.strip_prefix('*') {
            // `*.example.com` covers `www.example.com` and `a.b.example.com`, never `example.com`;
            // the longer the suffix, the more specific.
            let hit = sni.len() > suffix.len()
                && sni.is_char_boundary(sni.len() - suffix.len())
                && sni[sni.len() - suffix.len()..].eq_ignore_ascii_case(suffix);
            if hit {
                // Kept below the exact-match score.
                let len = u32::try_from(suffix.len()).unwrap_or(0).min(u32::MAX - 1);
                best = best.max(Some(len));
            }
        } else if name.eq_ignore_ascii_case(sni) {
            return Some(u32::MAX);
        }
    }
    best
}

fn alpn_score(wanted: &[String], offered: &[&str]) -> Option<u32> {
    if wanted.is_empty() {
        return Some(0);
    }
    // Envoy walks the client's list in order and takes the first protocol any chain names.
    offered
        .iter()
        .position(|p| wanted.iter().any(|w| w == p))
        .map(|i| u32::MAX - u32::try_from(i).unwrap_or(u32::MAX - 1))
}

/// Narrows `items` stage by stage to the chain that matches most specifically; returns its index.
pub(super) fn narrow<T>(
    items: &[T],
    criteria: impl Fn(&T) -> &ChainMatch,
    input: &MatchInput<'_>,
) -> Option<usize> {
    let facts = Facts::new(input);
    let mut alive: Vec<usize> = (0..items.len()).collect();
    for stage in 0..STAGES {
        // Scoring is a few comparisons, cheaper to repeat than to store.
        let best = alive
            .iter()
            .map(|&i| criteria(&items[i]).score(stage, &facts))
            .max()
            .flatten()?;
        alive.retain(|&i| criteria(&items[i]).score(stage, &facts) == Some(best));
    }
    // Overlap validation guarantees at most one survivor.
    alive.first().copied()
}
