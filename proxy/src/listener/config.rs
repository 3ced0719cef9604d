//! Accept, configuration: an Envoy v3 `Listener` validated into the model the accept loop reads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::TcpKeepalive as TcpKeepaliveProto;
use envoy_types::pb::envoy::config::listener::v3::{
    listener::{connection_balance_config::BalanceType, DrainType as DrainTypeProto},
    FilterChain, Listener,
};

use super::address::{listen_address, ListenAddress};
use super::chains::FilterChains;
use super::listener_filter::{self, ListenerFilter, ListenerFilterKind};
use crate::config::{ConfigErrors, Path};

/// Envoy's default `per_connection_buffer_limit_bytes`.
pub const DEFAULT_BUFFER_LIMIT: u32 = 1024 * 1024;
/// Envoy's default `listener_filters_timeout`.
pub const DEFAULT_LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);

/// A validated listener. `C` is the per-chain payload (the network filter stack).
#[derive(Debug)]
pub struct ListenerConfig<C> {
    pub name: String,
    /// `internal_listener`: no socket; reached by name through an `envoy_internal_address`
    /// endpoint (`address` is then `listener::internal::INTERNAL_ADDRESS` and `addresses()` empty).
    pub internal: bool,
    pub address: SocketAddr,
    /// `address.socket_address.ipv4_compat`: a `::` listener that also accepts IPv4.
    pub ipv4_compat: bool,
    pub additional_addresses: Vec<ListenAddress>,
    /// The stats scope without its trailing dot (`listener.127.0.0.1_8080`).
    pub stat_prefix: String,
    pub chains: FilterChains<C>,
    pub per_connection_buffer_limit: u32,
    pub listener_filters: Vec<ListenerFilter>,
    /// Zero disables the timeout, as in Envoy.
    pub listener_filters_timeout: Duration,
    pub continue_on_listener_filters_timeout: bool,
    /// Envoy's runtime key `envoy.resource_limits.listener.<name>.connection_limit`; set it with
    /// `with_runtime_connection_limit`. `None` is unlimited.
    pub max_connections: Option<u64>,
    pub max_connections_to_accept_per_socket_event: Option<u32>,
    pub bind_to_port: bool,
    pub transparent: bool,
    pub freebind: bool,
    /// `enable_reuse_port` (or the deprecated `reuse_port`); Envoy's default is true.
    pub reuse_port: bool,
    /// `None`: the kernel's `net.core.somaxconn`, as Envoy does on Linux.
    pub tcp_backlog_size: Option<u32>,
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub use_original_dst: bool,
    pub connection_balance: ConnectionBalance,
    pub drain_type: DrainType,
    pub ignore_global_conn_limit: bool,
    pub per_connection_buffer_high_watermark_timeout: Option<Duration>,
}

/// `tcp_keepalive`: unset fields keep the kernel's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionBalance {
    /// The kernel spreads connections over the per-worker `SO_REUSEPORT` sockets.
    Kernel,
    /// `exact_balance`: one accept socket whose connections the runtime spreads over the workers.
    Exact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainType {
    Default,
    ModifyOnly,
}

/// Translates one `Listener` (`path` names it, e.g. `static_resources.listeners[0]`). Every problem
/// is reported with its path; `build_chain` builds each filter chain's payload.
pub fn from_proto<C>(
    l: &Listener,
    path: &Path,
    build_chain: &mut dyn FnMut(&FilterChain, &Path) -> Result<C, ConfigErrors>,
) -> Result<ListenerConfig<C>, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    unsupported(l, path, &mut errors);

    let internal = l.listener_specifier.is_some();
    let address = match &l.address {
        Some(_) if internal => {
            errors.push(
                path.field("address"),
                "an internal listener (internal_listener) has no address",
            );
            None
        }
        None if internal => Some(ListenAddress {
            address: super::internal::INTERNAL_ADDRESS,
            ipv4_compat: false,
        }),
        Some(a) => listen_address(a, &path.field("address"))
            .map_err(|e| errors.0.push(e))
            .ok(),
        None => {
            errors.push(path.field("address"), "a listener needs an address");
            None
        }
    };
    let mut additional_addresses = Vec::with_capacity(l.additional_addresses.len());
    for (i, extra) in l.additional_addresses.iter().enumerate() {
        let p = path.field("additional_addresses").index(i);
        if extra.socket_options.is_some() {
            errors.push(
                p.field("socket_options"),
                "raw socket options are not supported",
            );
        }
        match &extra.address {
            Some(a) => match listen_address(a, &p.field("address")) {
                Ok(a) => additional_addresses.push(a),
                Err(e) => errors.0.push(e),
            },
            None => errors.push(p.field("address"), "an address is required"),
        }
    }

    if internal {
        for (field, set) in [
            ("additional_addresses", !l.additional_addresses.is_empty()),
            (
                "use_original_dst",
                l.use_original_dst.as_ref().is_some_and(|v| v.value),
            ),
        ] {
            if set {
                errors.push(
                    path.field(field),
                    "not supported on an internal listener (internal_listener)",
                );
            }
        }
    }
    let mut listener_filters = Vec::with_capacity(l.listener_filters.len());
    for (i, f) in l.listener_filters.iter().enumerate() {
        let fpath = path.field("listener_filters").index(i);
        match listener_filter::from_proto(f, &fpath) {
            // An internal connection has no bytes to peek at before its chain: only the filters
            // that read the filter state apply.
            Ok(f) if internal && !f.kind.reads_filter_state() => errors.push(
                fpath,
                "only envoy.filters.listener.original_dst and istio.set_internal_dst_address are supported on an internal listener",
            ),
            // Outside an internal listener nothing it reads is there at accept time.
            Ok(f) if !internal && f.kind == ListenerFilterKind::SetInternalDstAddress => errors
                .push(
                    fpath,
                    "istio.set_internal_dst_address is supported on internal listeners only",
                ),
            Ok(f) => listener_filters.push(f),
            Err(e) => errors.extend(e),
        }
    }

    let connection_balance = match l
        .connection_balance_config
        .as_ref()
        .and_then(|c| c.balance_type.as_ref())
    {
        None => ConnectionBalance::Kernel,
        Some(BalanceType::ExactBalance(_)) => ConnectionBalance::Exact,
        // Envoy falls back to the kernel's reuse-port hashing whenever CPU steering is unavailable.
        Some(BalanceType::CpuLocalityBalance(_)) => ConnectionBalance::Kernel,
        Some(BalanceType::ExtendBalance(ext)) => {
            errors.push(
                path.field("connection_balance_config")
                    .field("extend_balance"),
                format!(
                    "no connection balancer extension \"{}\" is available",
                    ext.name
                ),
            );
            ConnectionBalance::Kernel
        }
    };

    let chains = FilterChains::from_proto(l, path, build_chain).map_err(|e| errors.extend(e));

    // Unset `enable_reuse_port` is true whatever the deprecated `reuse_port` says.
    let reuse_port = l.enable_reuse_port.as_ref().is_none_or(|v| v.value);
    let drain_type = match DrainTypeProto::try_from(l.drain_type) {
        Ok(DrainTypeProto::ModifyOnly) => DrainType::ModifyOnly,
        _ => DrainType::Default,
    };

    let (Some(address), Ok(chains)) = (address, chains) else {
        return Err(errors);
    };
    let cfg = ListenerConfig {
        name: l.name.clone(),
        internal,
        stat_prefix: if internal && l.stat_prefix.is_empty() {
            // Envoy names an internal listener's scope after its address, `envoy://<name>/`.
            format!("listener.envoy_internal_{}", l.name)
        } else {
            stat_prefix(&l.stat_prefix, &address)
        },
        address: address.address,
        ipv4_compat: address.ipv4_compat,
        additional_addresses,
        chains,
        per_connection_buffer_limit: l
            .per_connection_buffer_limit_bytes
            .as_ref()
            .map_or(DEFAULT_BUFFER_LIMIT, |v| v.value),
        listener_filters,
        listener_filters_timeout: l
            .listener_filters_timeout
            .as_ref()
            .map_or(DEFAULT_LISTENER_FILTERS_TIMEOUT, duration),
        continue_on_listener_filters_timeout: l.continue_on_listener_filters_timeout,
        max_connections: None,
        max_connections_to_accept_per_socket_event: l
            .max_connections_to_accept_per_socket_event
            .as_ref()
            .map(|v| v.value),
        bind_to_port: l.bind_to_port.as_ref().is_none_or(|v| v.value),
        transparent: l.transparent.as_ref().is_some_and(|v| v.value),
        freebind: l.freebind.as_ref().is_some_and(|v| v.value),
        reuse_port,
        tcp_backlog_size: l.tcp_backlog_size.as_ref().map(|v| v.value),
        tcp_keepalive: l.tcp_keepalive.as_ref().map(tcp_keepalive),
        use_original_dst: l.use_original_dst.as_ref().is_some_and(|v| v.value),
        connection_balance,
        drain_type,
        ignore_global_conn_limit: l.ignore_global_conn_limit,
        per_connection_buffer_high_watermark_timeout: l
            .per_connection_buffer_high_watermark_timeout
            .as_ref()
            .map(duration)
            .filter(|d| !d.is_zero()),
    };
    errors.finish(cfg)
}

/// Fields whose behaviour remora does not have: rejected rather than silently ignored.
fn unsupported(l: &Listener, path: &Path, errors: &mut ConfigErrors) {
    let mut reject = |set: bool, field: &str, what: &str| {
        if set {
            errors.push(path.field(field), format!("{what} is not supported yet"));
        }
    };
    reject(l.api_listener.is_some(), "api_listener", "an API listener");
    reject(
        l.udp_listener_config.is_some(),
        "udp_listener_config",
        "a UDP listener",
    );
    reject(
        !l.socket_options.is_empty(),
        "socket_options",
        "raw socket options",
    );
    reject(l.enable_mptcp, "enable_mptcp", "MPTCP");
}

/// Envoy roots listener stats at `listener.<stat_prefix>.`, or at the address with `:` made `_`
/// (`listener.127.0.0.1_8080.`, `listener.[__1]_8080.`).
fn stat_prefix(configured: &str, address: &ListenAddress) -> String {
    if configured.is_empty() {
        format!("listener.{}", address.envoy_string().replace(':', "_"))
    } else {
        format!("listener.{configured}")
    }
}

use crate::config::to_std as duration;

fn tcp_keepalive(k: &TcpKeepaliveProto) -> TcpKeepalive {
    TcpKeepalive {
        probes: k.keepalive_probes.as_ref().map(|v| v.value),
        time: k
            .keepalive_time
            .as_ref()
            .map(|v| Duration::from_secs(u64::from(v.value))),
        interval: k
            .keepalive_interval
            .as_ref()
            .map(|v| Duration::from_secs(u64::from(v.value))),
    }
}

impl<C> ListenerConfig<C> {
    /// Every address the listener binds: `address`, then `additional_addresses`.
    pub fn addresses(&self) -> impl Iterator<Item = ListenAddress> + '_ {
        (!self.internal)
            .then_some(ListenAddress {
                address: self.address,
                ipv4_compat: self.ipv4_compat,
            })
            .into_iter()
            .chain(self.additional_addresses.iter().copied())
    }

    /// The runtime key Envoy users set to cap this listener's active connections.
    /// Whether `original_dst` runs for connections to `port` (it may be disabled by port).
    pub fn restores_original_dst(&self, port: u16) -> bool {
        self.listener_filters.iter().any(|f| {
            f.kind == ListenerFilterKind::OriginalDst
                && !f.disabled.as_ref().is_some_and(|d| d.matches(port))
        })
    }

    /// Whether some listener filter reads the connection's first bytes before the chain is chosen.
    /// Whether an internal listener's connections take their addresses from the filter state
    /// (`envoy.filters.listener.original_dst.local_ip` / `remote_ip`), as its `original_dst`
    /// listener filter does.
    pub fn restores_internal_addresses(&self) -> bool {
        self.internal
            && self
                .listener_filters
                .iter()
                .any(|f| f.kind == ListenerFilterKind::OriginalDst)
    }

    pub fn inspects(&self) -> bool {
        self.listener_filters
            .iter()
            .any(|f| !f.kind.reads_filter_state())
    }

    /// Whether an internal listener's connections take their local address and ORIGINAL_DST target
    /// from `connect_authority`'s object, as `istio.set_internal_dst_address` does.
    pub fn sets_internal_dst_address(&self) -> bool {
        self.internal
            && self
                .listener_filters
                .iter()
                .any(|f| f.kind == ListenerFilterKind::SetInternalDstAddress)
    }

    pub fn connection_limit_key(&self) -> String {
        format!(
            "envoy.resource_limits.listener.{}.connection_limit",
            self.name
        )
    }

    /// Applies `envoy.resource_limits.listener.<name>.connection_limit` from a flattened runtime
    /// (the bootstrap's `layered_runtime` static layers, see `flatten_runtime`). A non-numeric or
    /// missing value leaves the listener unlimited, as in Envoy.
    pub fn with_runtime_connection_limit(mut self, runtime: &HashMap<String, String>) -> Self {
        self.max_connections = runtime
            .get(&self.connection_limit_key())
            .and_then(|v| v.trim().parse::<u64>().ok());
        self
    }
}

/// Flattens a runtime static layer (a `google.protobuf.Struct` as JSON) into Envoy's dotted keys:
/// `{envoy: {resource_limits: {listener: {l0: {connection_limit: 2}}}}}` and
/// `{"envoy.resource_limits.listener.l0.connection_limit": 2}` both give the same key.
pub fn flatten_runtime(layer: &serde_json::Value, out: &mut HashMap<String, String>) {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut HashMap<String, String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            serde_json::Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            serde_json::Value::Number(n) => {
                out.insert(prefix.to_string(), n.to_string());
            }
            serde_json::Value::Bool(b) => {
                out.insert(prefix.to_string(), b.to_string());
            }
            serde_json::Value::Null | serde_json::Value::Array(_) => {}
        }
    }
    walk("", layer, out);
}

/// Checks a whole listener set (`path` names the list, e.g. `static_resources.listeners`): names are
/// unique and no two listeners bind the same address (port 0 excepted, as the kernel picks distinct
/// ports).
pub fn validate_listener_set<L: std::borrow::Borrow<ListenerConfig<C>>, C>(
    listeners: &[L],
    path: &Path,
) -> Result<(), ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addresses: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, l) in listeners.iter().enumerate() {
        let l = l.borrow();
        if let Some(j) = names
            .insert(l.name.as_str(), i)
            .filter(|_| !l.name.is_empty())
        {
            errors.push(
                path.index(i).field("name"),
                format!("duplicate listener name \"{}\" (also {path}[{j}])", l.name),
            );
        }
        if !l.bind_to_port {
            continue;
        }
        for a in l.addresses() {
            if a.address.port() == 0 {
                continue;
            }
            if let Some(j) = addresses.insert(a.address, i).filter(|&j| j != i) {
                errors.push(
                    path.index(i).field("address"),
                    format!(
                        "listener \"{}\" has duplicate address {} as listener \"{}\" ({path}[{j}])",
                        l.name,
                        a.address,
                        listeners[j].borrow().name
                    ),
                );
            }
        }
    }
    errors.finish(())
}
