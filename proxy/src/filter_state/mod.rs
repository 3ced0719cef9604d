//! Filter state: typed objects that filters set on a connection (or a request) for the stages after
//! them, as Envoy's `StreamInfo::FilterState`.
//!
//! remora knows the well-known keys it can act on — `envoy.tcp_proxy.cluster` (tcp_proxy's
//! cluster), `envoy.network.transport_socket.original_dst_address` (the host of an ORIGINAL_DST
//! cluster), `envoy.filters.listener.original_dst.local_ip` / `remote_ip` (what an internal
//! listener's `original_dst` filter restores), `envoy.network.upstream_server_name` and
//! `envoy.network.application_protocols` (the SNI and ALPN of tcp_proxy's upstream TLS), Istio's
//! `istio.set_internal_dst_address` (a CONNECT authority) and `wasm.downstream_peer` (a peer from
//! `baggage`) — and Envoy's generic string objects (`envoy.string`,
//! `envoy.hashable_string`), which only feed `%FILTER_STATE%` and travel to internal listeners. Objects marked shared with the
//! upstream go with an `internal_upstream` connection to the internal listener it reaches.
//!
//! A connection without filter state holds an empty [`FilterState`]: no allocation.

mod setter;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

pub use setter::{Setter, Setters};

/// `envoy.tcp_proxy.cluster`: the cluster tcp_proxy connects to.
pub const TCP_PROXY_CLUSTER: &str = "envoy.tcp_proxy.cluster";
/// `envoy.network.transport_socket.original_dst_address`: where an ORIGINAL_DST cluster connects.
pub const ORIGINAL_DST_ADDRESS: &str = "envoy.network.transport_socket.original_dst_address";
/// `envoy.filters.listener.original_dst.local_ip` / `remote_ip`: the addresses an internal
/// listener's `original_dst` listener filter gives its connection.
pub const ORIGINAL_DST_LOCAL: &str = "envoy.filters.listener.original_dst.local_ip";
pub const ORIGINAL_DST_REMOTE: &str = "envoy.filters.listener.original_dst.remote_ip";
/// `envoy.network.upstream_server_name`: the SNI of the upstream TLS connection.
pub const UPSTREAM_SERVER_NAME: &str = "envoy.network.upstream_server_name";
/// `envoy.network.application_protocols`: the ALPN list the upstream TLS connection offers
/// (comma separated).
pub const APPLICATION_PROTOCOLS: &str = "envoy.network.application_protocols";

/// `istio.set_internal_dst_address`: the CONNECT authority Istio's `connect_authority` HTTP filter
/// captured, for an internal listener's `istio.set_internal_dst_address` listener filter.
pub const ISTIO_INTERNAL_DST: &str = "istio.set_internal_dst_address";

/// `wasm.downstream_peer` / `wasm.downstream_peer_id`: the downstream workload Istio's
/// `connect_baggage` HTTP filter read from the CONNECT's `baggage`, for the TCP stats behind it.
pub const DOWNSTREAM_PEER: &str = "wasm.downstream_peer";
pub const DOWNSTREAM_PEER_ID: &str = "wasm.downstream_peer_id";

/// The factories that make filter state objects from a string (`factory_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factory {
    TcpProxyCluster,
    OriginalDstAddress,
    UpstreamServerName,
    ApplicationProtocols,
    /// `envoy.string` and `envoy.hashable_string`: a plain string, read by nothing but formatters.
    String,
}

impl Factory {
    /// The factory registered under `key`, as Envoy names them.
    pub fn by_key(key: &str) -> Option<Factory> {
        match key {
            TCP_PROXY_CLUSTER => Some(Factory::TcpProxyCluster),
            ORIGINAL_DST_ADDRESS | ORIGINAL_DST_LOCAL | ORIGINAL_DST_REMOTE => {
                Some(Factory::OriginalDstAddress)
            }
            UPSTREAM_SERVER_NAME => Some(Factory::UpstreamServerName),
            APPLICATION_PROTOCOLS => Some(Factory::ApplicationProtocols),
            "envoy.string" | "envoy.hashable_string" => Some(Factory::String),
            _ => None,
        }
    }

    /// The object made from `value`; `None` when the value does not parse (Envoy then sets nothing).
    pub fn make(self, value: &str) -> Option<Value> {
        match self {
            Factory::TcpProxyCluster => Some(Value::Cluster(value.to_string())),
            Factory::OriginalDstAddress => value.parse().ok().map(Value::Address),
            Factory::UpstreamServerName => Some(Value::ServerName(value.to_string())),
            Factory::ApplicationProtocols => Some(Value::Protocols(
                value
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| p.as_bytes().to_vec())
                    .collect(),
            )),
            Factory::String => Some(Value::String(value.to_string())),
        }
    }
}

/// One object's value, typed by the factory that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Cluster(String),
    Address(SocketAddr),
    ServerName(String),
    Protocols(Vec<Vec<u8>>),
    String(String),
    /// A CONNECT authority (`host:port`) and the tunnel port to reach that host on.
    Authority {
        authority: String,
        port: u32,
    },
    /// A peer workload's metadata.
    Peer(Box<crate::istio::WorkloadMetadata>),
}

impl Value {
    /// The value as `%FILTER_STATE(KEY:PLAIN)%` prints it.
    pub fn plain(&self) -> String {
        match self {
            Value::Cluster(s) | Value::ServerName(s) | Value::String(s) => s.clone(),
            Value::Authority { authority, .. } => authority.clone(),
            Value::Peer(m) => m.workload.clone(),
            Value::Address(a) => a.to_string(),
            Value::Protocols(list) => list
                .iter()
                .map(|p| String::from_utf8_lossy(p))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// How far an object travels with upstream connections (`shared_with_upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    #[default]
    None,
    /// To the next (internal) connection only.
    Once,
    /// To the next connection, and on from there.
    Transitive,
}

/// One filter state object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub value: Value,
    pub read_only: bool,
    pub sharing: Sharing,
}

/// The objects of one connection or request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterState {
    /// Empty (no allocation) until a filter sets something.
    objects: Vec<Object>,
}

impl FilterState {
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Object> {
        self.objects.iter().find(|o| o.key == key)
    }

    /// Sets `object`, replacing one of the same key unless that one is read-only (then the new one
    /// is dropped and false returned, as Envoy refuses to overwrite it).
    pub fn set(&mut self, object: Object) -> bool {
        match self.objects.iter_mut().find(|o| o.key == object.key) {
            Some(old) if old.read_only => false,
            Some(old) => {
                *old = object;
                true
            }
            None => {
                self.objects.push(object);
                true
            }
        }
    }

    /// tcp_proxy's cluster, when a filter chose one.
    pub fn tcp_proxy_cluster(&self) -> Option<&str> {
        match &self.get(TCP_PROXY_CLUSTER)?.value {
            Value::Cluster(c) => Some(c),
            _ => None,
        }
    }

    fn address(&self, key: &str) -> Option<SocketAddr> {
        match self.get(key)?.value {
            Value::Address(a) => Some(a),
            _ => None,
        }
    }

    /// The ORIGINAL_DST target, when a filter set one.
    pub fn original_dst_address(&self) -> Option<SocketAddr> {
        self.address(ORIGINAL_DST_ADDRESS)
    }

    /// The local and remote addresses an internal listener's `original_dst` filter restores.
    pub fn original_dst_local_remote(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (
            self.address(ORIGINAL_DST_LOCAL),
            self.address(ORIGINAL_DST_REMOTE),
        )
    }

    /// What `connect_authority` captured: the CONNECT authority and the tunnel port.
    pub fn internal_dst_authority(&self) -> Option<(&str, u32)> {
        match &self.get(ISTIO_INTERNAL_DST)?.value {
            Value::Authority { authority, port } => Some((authority, *port)),
            _ => None,
        }
    }

    /// The downstream peer `connect_baggage` read, when it ran.
    pub fn downstream_peer(&self) -> Option<&crate::istio::WorkloadMetadata> {
        match &self.get(DOWNSTREAM_PEER)?.value {
            Value::Peer(m) => Some(m),
            _ => None,
        }
    }

    /// The SNI for tcp_proxy's upstream TLS, when a filter set one.
    pub fn upstream_server_name(&self) -> Option<&str> {
        match &self.get(UPSTREAM_SERVER_NAME)?.value {
            Value::ServerName(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    /// The ALPN list for tcp_proxy's upstream TLS, when a filter set one.
    pub fn application_protocols(&self) -> Option<&[Vec<u8>]> {
        match &self.get(APPLICATION_PROTOCOLS)?.value {
            Value::Protocols(p) if !p.is_empty() => Some(p),
            _ => None,
        }
    }

    /// The objects shared with the upstream, as they are (what keys an HTTP connection pool).
    pub fn shared_with_upstream(&self) -> FilterState {
        FilterState {
            objects: self
                .objects
                .iter()
                .filter(|o| o.sharing != Sharing::None)
                .cloned()
                .collect(),
        }
    }

    /// What an upstream (internal) connection starts with: the objects shared with the upstream;
    /// those shared once are not shared any further.
    pub fn for_upstream(&self) -> FilterState {
        let mut out = FilterState::default();
        for o in &self.objects {
            let sharing = match o.sharing {
                Sharing::None => continue,
                Sharing::Once => Sharing::None,
                Sharing::Transitive => Sharing::Transitive,
            };
            out.set(Object {
                sharing,
                ..o.clone()
            });
        }
        out
    }
}
