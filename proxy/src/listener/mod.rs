//! Accept: bind listeners, accept connections, and pick the filter chain for each.
//!
//! `config::from_proto` validates an Envoy v3 `Listener` into a `ListenerConfig<C>` (`C` being the
//! network filter stack the caller builds per chain); `bind::bind` opens its sockets;
//! `accept::serve` runs one accept loop per socket over a shared `ActiveListener`, handing each
//! connection to the caller as an `Accepted` with its chain chosen by `FilterChains::select`.
//!
//! Wiring, per listener:
//! ```text
//! let cfg = listener::from_proto(&proto, &path, &mut build_stack)?      // every error, with its path
//!     .with_runtime_connection_limit(&runtime);                          // flatten_runtime(layer, ..)
//! listener::validate_listener_set(&all_configs, &path)?;
//! let sockets = listener::bind(&cfg, workers)?;                          // Vec<Bound>
//! let active = ActiveListener::new(cfg, &store);                         // stats, limit, gauge
//! for b in sockets { spawn(serve(TcpListener::from_std(b.listener)?, active.clone(), handler, watch.clone())) }
//! ```
//!
//! Per-listener connection limits follow Envoy: there is no `Listener` field for it, users set the
//! runtime key `envoy.resource_limits.listener.<name>.connection_limit` (in the bootstrap's
//! `layered_runtime`), which `ListenerConfig::with_runtime_connection_limit` applies. The
//! `envoy.filters.network.connection_limit` network filter is per chain and belongs to the filter
//! stack, not here.

pub mod accept;
pub mod active;
pub mod address;
pub mod bind;
pub mod chain_match;
pub mod chains;
pub mod config;
pub mod error;
pub mod handoff;
pub mod internal;
pub mod listener_filter;
pub mod matcher;
pub mod original_dst;

#[cfg(test)]
mod tests;

pub use accept::{serve, serve_current, Accepted, Owners, Serving};
pub use active::{ActiveListener, ListenerStats};
pub use address::{Cidr, ListenAddress};
pub use bind::{bind, Bound};
pub use chain_match::{ChainMatch, MatchInput, SourceType};
pub use chains::{Chain, ChainId, FilterChains};
pub use config::{
    flatten_runtime, from_proto, validate_listener_set, ConnectionBalance, DrainType,
    ListenerConfig, TcpKeepalive,
};
pub use error::BindError;
pub use internal::{InternalAccepted, InternalConnection, InternalListeners};
pub use listener_filter::{ListenerFilter, ListenerFilterKind, Predicate, TlsInspector};
