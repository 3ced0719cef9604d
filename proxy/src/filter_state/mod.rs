//! Filter state: typed objects that filters set on a connection (or a request) for the stages after
//! them, as Envoy's `StreamInfo::FilterState`.
//!
//! remora knows the well-known keys it can act on — `envoy.tcp_proxy.cluster` (tcp_proxy's
//! cluster) and `envoy.network.transport_socket.original_dst_address` (the host of an ORIGINAL_DST
//! cluster) — and Envoy's generic string objects (`envoy.string`, `envoy.hashable_string`), which
//! only feed `%FILTER_STATE%` and travel to internal listeners. Objects marked shared with the
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

/// The factories that make filter state objects from a string (`factory_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factory {
    TcpProxyCluster,
    OriginalDstAddress,
    /// `envoy.string` and `envoy.hashable_string`: a plain string, read by nothing but formatters.
    String,
}

impl Factory {
    /// The factory registered under `key`, as Envoy names them.
    pub fn by_key(key: &str) -> Option<Factory> {
        match key {
            TCP_PROXY_CLUSTER => Some(Factory::TcpProxyCluster),
            ORIGINAL_DST_ADDRESS => Some(Factory::OriginalDstAddress),
            "envoy.string" | "envoy.hashable_string" => Some(Factory::String),
            _ => None,
        }
    }

    /// The object made from `value`; `None` when the value does not parse (Envoy then sets nothing).
    pub fn make(self, value: &str) -> Option<Value> {
        match self {
            Factory::TcpProxyCluster => Some(Value::Cluster(value.to_string())),
            Factory::OriginalDstAddress => value.parse().ok().map(Value::Address),
            Factory::String => Some(Value::String(value.to_string())),
        }
    }
}

/// One object's value, typed by the factory that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Cluster(String),
    Address(SocketAddr),
    String(String),
}

impl Value {
    /// The value as `%FILTER_STATE(KEY:PLAIN)%` prints it.
    pub fn plain(&self) -> String {
        match self {
            Value::Cluster(s) | Value::String(s) => s.clone(),
            Value::Address(a) => a.to_string(),
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
    objects: Option<Box<Vec<Object>>>,
}

impl FilterState {
    pub fn is_empty(&self) -> bool {
        self.objects.as_ref().is_none_or(|o| o.is_empty())
    }

    pub fn get(&self, key: &str) -> Option<&Object> {
        self.objects.as_ref()?.iter().find(|o| o.key == key)
    }

    /// Sets `object`, replacing one of the same key unless that one is read-only (then the new one
    /// is dropped and false returned, as Envoy refuses to overwrite it).
    pub fn set(&mut self, object: Object) -> bool {
        let objects = self.objects.get_or_insert_with(Box::default);
        match objects.iter_mut().find(|o| o.key == object.key) {
            Some(old) if old.read_only => false,
            Some(old) => {
                *old = object;
                true
            }
            None => {
                objects.push(object);
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

    /// The ORIGINAL_DST target, when a filter set one.
    pub fn original_dst_address(&self) -> Option<SocketAddr> {
        match self.get(ORIGINAL_DST_ADDRESS)?.value {
            Value::Address(a) => Some(a),
            _ => None,
        }
    }

    /// What an upstream (internal) connection starts with: the objects shared with the upstream;
    /// those shared once are not shared any further.
    pub fn for_upstream(&self) -> FilterState {
        let mut out = FilterState::default();
        for o in self.objects.iter().flat_map(|o| o.iter()) {
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
