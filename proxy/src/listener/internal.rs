//! Internal listeners: listeners without a socket (`internal_listener: {}`), registered by name and
//! reached in-process by clusters whose endpoints are `envoy_internal_address`
//! (`envoy.bootstrap.internal_listener`).
//!
//! A connection to one is a pair of in-memory pipes (`buffer_size_kb` each way, 1 MiB by default, as
//! Envoy's user-space sockets): the cluster keeps one end, the internal listener serves the other
//! exactly as an accepted socket — connection limit, `listener.envoy_internal_<name>.*` stats, chain
//! selection, network filters, drain. Such a connection has no IP addresses; where remora needs one
//! (chain matching, `%DOWNSTREAM_*_ADDRESS%`) it is `0.0.0.0:0`, unless the listener has the
//! `original_dst` listener filter and the filter state carries
//! `envoy.filters.listener.original_dst.local_ip` / `remote_ip` (Istio's inbound HBONE pattern).
//! The filter state the originating connection shared with its upstream (through
//! `envoy.transport_sockets.internal_upstream`) is the new connection's starting state.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::io::DuplexStream;
use tracing::{debug, info_span, Instrument};

use super::accept::{Serving, Tracked, Tracker, ACTIVE, NEXT_CONNECTION_ID};
use super::active::ActiveListener;
use super::chain_match::MatchInput;
use super::chains::ChainId;
use crate::drain;
use crate::filter_state::FilterState;
use crate::upstream::config::internal_upstream::TunnelMetadata;

/// Envoy's default `buffer_size_kb`.
pub const DEFAULT_BUFFER_BYTES: usize = 1024 * 1024;

/// The address remora reports for either end of an internal connection.
pub const INTERNAL_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// A connection on its way to an internal listener.
#[derive(Debug)]
pub struct InternalConnection {
    pub stream: DuplexStream,
    /// The objects the originating connection shared with its upstream.
    pub filter_state: FilterState,
    /// The endpoint's `tunnel` metadata, when `internal_upstream` passes it through.
    pub tunnel: Option<TunnelMetadata>,
}

/// A connection an internal listener took, with its chain chosen.
#[derive(Debug)]
pub struct InternalAccepted<C> {
    pub stream: DuplexStream,
    /// The connection's addresses: `INTERNAL_ADDRESS` unless the listener's `original_dst` filter
    /// restored them from the filter state.
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub id: u64,
    pub listener: Arc<ActiveListener<C>>,
    pub chain: ChainId,
    pub drain: drain::Watch,
    pub filter_state: FilterState,
}

impl<C> InternalAccepted<C> {
    pub fn chain(&self) -> Option<&C> {
        self.listener.config.chains.get(self.chain)
    }
}

type Acceptor = Arc<dyn Fn(InternalConnection) + Send + Sync>;

#[derive(Default)]
struct Registry {
    /// Whether the bootstrap has `envoy.bootstrap.internal_listener`.
    enabled: bool,
    buffer: usize,
    by_name: HashMap<String, Acceptor>,
}

/// The internal listeners by name. A cheap handle shared by the listener manager (which registers
/// them) and the clusters (which connect to them).
#[derive(Clone, Default)]
pub struct InternalListeners {
    inner: Arc<ArcSwap<Registry>>,
}

impl std::fmt::Debug for InternalListeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.inner.load();
        f.debug_struct("InternalListeners")
            .field("enabled", &r.enabled)
            .field("listeners", &r.by_name.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl InternalListeners {
    /// Turns internal listeners on (the bootstrap extension), with `buffer` bytes per direction.
    pub fn enable(&self, buffer: usize) {
        self.update(|r| {
            r.enabled = true;
            r.buffer = buffer;
        });
    }

    pub fn enabled(&self) -> bool {
        self.inner.load().enabled
    }

    fn update(&self, f: impl Fn(&mut Registry)) {
        self.inner.rcu(|old| {
            let mut r = Registry {
                enabled: old.enabled,
                buffer: old.buffer,
                by_name: old.by_name.clone(),
            };
            f(&mut r);
            r
        });
    }

    /// Registers (or replaces) the listener `name`: `accept` serves its connections.
    pub fn register(
        &self,
        name: &str,
        accept: impl Fn(InternalConnection) + Send + Sync + 'static,
    ) {
        let accept: Acceptor = Arc::new(accept);
        self.update(|r| {
            r.by_name.insert(name.to_string(), accept.clone());
        });
    }

    pub fn remove(&self, name: &str) {
        self.update(|r| {
            r.by_name.remove(name);
        });
    }

    /// Connects to the internal listener `name`: the caller's end of the connection. Fails as a
    /// refused connection when no such listener is registered.
    pub fn connect(&self, name: &str, filter_state: FilterState) -> io::Result<DuplexStream> {
        self.connect_with(name, filter_state, None)
    }

    /// [`InternalListeners::connect`] with the endpoint's `tunnel` metadata passed through.
    pub fn connect_with(
        &self,
        name: &str,
        filter_state: FilterState,
        tunnel: Option<TunnelMetadata>,
    ) -> io::Result<DuplexStream> {
        let r = self.inner.load();
        let Some(accept) = r.by_name.get(name) else {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("no internal listener {name:?}"),
            ));
        };
        let buffer = if r.buffer == 0 {
            DEFAULT_BUFFER_BYTES
        } else {
            r.buffer
        };
        let (client, server) = tokio::io::duplex(buffer);
        accept(InternalConnection {
            stream: server,
            filter_state,
            tunnel,
        });
        Ok(client)
    }
}

/// Admits an internal connection to `serving` as the accept stage admits a socket: the connection
/// limit, the chain (matched with the internal address), the stats and a task for `handler`.
pub fn admit<C, X, H, F>(conn: InternalConnection, serving: &Arc<Serving<C, X>>, handler: &H)
where
    C: Send + Sync + 'static,
    H: Fn(InternalAccepted<C>, &X) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let active = &serving.active;
    let Some(permit) = active.admit() else {
        active.stats.downstream_cx_overflow.inc();
        debug!(listener = %active.config.name, "internal listener connection limit reached; closing");
        return;
    };
    let stats = &active.stats;
    let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("conn", id, listener = %active.config.name, internal = true);
    let mut conn = conn;
    let (mut local, peer) = if active.config.restores_internal_addresses() {
        let (l, r) = conn.filter_state.original_dst_local_remote();
        (l.unwrap_or(INTERNAL_ADDRESS), r.unwrap_or(INTERNAL_ADDRESS))
    } else {
        (INTERNAL_ADDRESS, INTERNAL_ADDRESS)
    };
    if active.config.sets_internal_dst_address() {
        let restored = match conn.tunnel.take() {
            Some(t) => tunnel_dst_address(&t, &mut conn.filter_state),
            None => set_internal_dst_address(&mut conn.filter_state),
        };
        if let Some(restored) = restored {
            local = restored;
        }
    }
    let input = MatchInput::raw(local, peer);
    let Some(chain) = active.config.chains.select_id(&input) else {
        stats.no_filter_chain_match.inc();
        span.in_scope(|| debug!("no matching filter chain; closing"));
        return;
    };
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    let accepted = InternalAccepted {
        stream: conn.stream,
        local,
        peer,
        id,
        listener: active.clone(),
        chain,
        drain: serving.drain.clone(),
        filter_state: conn.filter_state,
    };
    let tracker = Tracker {
        stats: active.stats.clone(),
        state: Arc::new(AtomicU8::new(ACTIVE)),
        _permit: permit,
        _drain: serving.drain.guard(),
    };
    let connection = handler(accepted, &serving.with);
    tokio::spawn(
        Tracked {
            connection,
            _tracker: tracker,
        }
        .instrument(span),
    );
}

/// `istio.set_internal_dst_address` with the endpoint's `tunnel` metadata: `destination` becomes the
/// local address, `address` the ORIGINAL_DST target (each when it parses as an address).
fn tunnel_dst_address(tunnel: &TunnelMetadata, state: &mut FilterState) -> Option<SocketAddr> {
    use crate::filter_state::{Object, Sharing, Value, ORIGINAL_DST_ADDRESS};
    let parse = |field: &Option<String>, name: &str| {
        let value = field.as_deref()?;
        let parsed = value.parse::<SocketAddr>().ok();
        if parsed.is_none() {
            debug!(
                field = name,
                value, "tunnel metadata is not an address; ignored"
            );
        }
        parsed
    };
    if let Some(target) = parse(&tunnel.address, "address") {
        state.set(Object {
            key: ORIGINAL_DST_ADDRESS.to_string(),
            value: Value::Address(target),
            read_only: true,
            sharing: Sharing::None,
        });
    }
    parse(&tunnel.destination, "destination")
}

/// `istio.set_internal_dst_address`: the authority `connect_authority` captured (an `ip:port`)
/// becomes the connection's local address, and that IP on the captured tunnel port the ORIGINAL_DST
/// target (read-only, as istio/proxy sets it). An authority that is not an address changes nothing.
fn set_internal_dst_address(state: &mut FilterState) -> Option<SocketAddr> {
    use crate::filter_state::{Object, Sharing, Value, ORIGINAL_DST_ADDRESS};
    let (authority, port) = state.internal_dst_authority()?;
    let Ok(local) = authority.parse::<SocketAddr>() else {
        debug!(
            authority,
            "connect authority is not an address; local address unchanged"
        );
        return None;
    };
    let tunnel = SocketAddr::new(local.ip(), u16::try_from(port).unwrap_or(0));
    state.set(Object {
        key: ORIGINAL_DST_ADDRESS.to_string(),
        value: Value::Address(tunnel),
        read_only: true,
        sharing: Sharing::None,
    });
    Some(local)
}
