//! Accept, loop: take connections off a listening socket, one task each, until the drain starts.
//!
//! Per connection, in order: the listener's connection limit (over it: close at once and count
//! `downstream_cx_overflow`), `TCP_NODELAY`, a connection id and a `conn` span, then — when the
//! listener has no listener filters — the filter chain (none: close and count
//! `no_filter_chain_match`). Listeners with listener filters leave the choice to the detect stage,
//! which calls `Accepted::select` once it has seen the first bytes.
//!
//! On a `use_original_dst` listener a redirected connection is handed, before any of that, to the
//! listener owning its original destination (`handoff`); from then on it is that listener's
//! connection: its limit slot, stats, chains, listener filters and drain.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info_span, warn, Instrument};

use tokio::sync::OwnedSemaphorePermit;

use super::active::{ActiveListener, ListenerStats};
use super::chain_match::MatchInput;
use super::chains::ChainId;
use crate::drain;

/// Process-wide connection ids, as Envoy's `[C123]`.
pub(super) static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(0);

const PENDING: u8 = 0;
pub(super) const ACTIVE: u8 = 1;

/// A freshly accepted connection.
#[derive(Debug)]
pub struct Accepted<C> {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub id: u64,
    pub listener: Arc<ActiveListener<C>>,
    /// The chain, once chosen: at accept for listeners without listener filters, else by `select`.
    pub chain: Option<ChainId>,
    /// Observes the drain, so long-lived connections can close gracefully.
    pub drain: drain::Watch,
    state: Arc<AtomicU8>,
}

impl<C> Accepted<C> {
    /// The selected chain's payload.
    pub fn chain(&self) -> Option<&C> {
        self.chain
            .and_then(|id| self.listener.config.chains.get(id))
    }

    /// What the accept stage alone knows for chain matching.
    pub fn raw_match_input(&self) -> MatchInput<'static> {
        MatchInput::raw(self.local, self.peer)
    }

    /// Chooses the chain from what listener filters found. `None`: no chain matches and there is no
    /// default chain; `no_filter_chain_match` is counted and the caller should close the connection.
    pub fn select(&mut self, input: &MatchInput<'_>) -> Option<ChainId> {
        let id = self.listener.config.chains.select_id(input);
        match id {
            Some(_) => {
                if self
                    .state
                    .compare_exchange(PENDING, ACTIVE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    let s = &self.listener.stats;
                    s.downstream_pre_cx_active.dec();
                    s.downstream_cx_total.inc();
                    s.downstream_cx_active.inc();
                }
            }
            None => self.listener.stats.no_filter_chain_match.inc(),
        }
        self.chain = id;
        id
    }
}

/// Accepts connections from `listener` until `drain` is signaled, running `handler` in a task of its
/// own for each. A connection lasts as long as its handler future: the drain guard, the connection
/// limit slot and `downstream_cx_active` are released when it completes.
pub async fn serve<C, H, F>(
    listener: TcpListener,
    active: Arc<ActiveListener<C>>,
    handler: H,
    drain: drain::Watch,
) where
    C: Send + Sync + 'static,
    H: Fn(Accepted<C>) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let current = Arc::new(ArcSwap::from_pointee(Serving {
        active,
        with: (),
        drain: drain.clone(),
    }));
    serve_current(listener, current, None, move |acc, _| handler(acc), drain).await
}

/// A listener's current version, swapped when its configuration changes.
pub type Current<C, X> = Arc<ArcSwap<Serving<C, X>>>;

/// Where a listener's accept loop finds the listener owning a connection's original destination.
pub type Owners<C, X> = Arc<super::handoff::Owners<Current<C, X>>>;

/// What an accept loop hands new connections to: one version of a listener. The listener manager
/// swaps it when the listener's configuration changes, keeping the bound socket.
pub struct Serving<C, X> {
    pub active: Arc<ActiveListener<C>>,
    /// What the handler needs besides the connection (e.g. the listener filters).
    pub with: X,
    /// Drains the connections of this version.
    pub drain: drain::Watch,
}

/// [`serve`] over a swappable [`Serving`]: each accepted connection belongs to the version current
/// when it was accepted (or, handed off through `owners`, to the current version of the listener
/// owning its original destination). Stops accepting when `stop` is signaled.
pub async fn serve_current<C, X, H, F>(
    listener: TcpListener,
    current: Current<C, X>,
    owners: Option<Owners<C, X>>,
    handler: H,
    stop: drain::Watch,
) where
    C: Send + Sync + 'static,
    X: Send + Sync + 'static,
    H: Fn(Accepted<C>, &X) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let name = current.load().active.config.name.clone();
    let mut backoff = Backoff::default();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.signaled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff.reset();
                admit(
                    stream,
                    peer,
                    &current.load_full(),
                    owners.as_deref(),
                    &handler,
                );
            }
            Err(e) if per_connection(&e) => {
                debug!(listener = %name, error = %e, "accept failed for one connection");
            }
            Err(e) => {
                let wait = backoff.next();
                warn!(listener = %name, error = %e, ?wait, "accept failed; backing off");
                tokio::select! {
                    biased;
                    () = stop.signaled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    debug!(listener = %name, "no longer accepting");
}

fn admit<C, X, H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    serving: &Arc<Serving<C, X>>,
    owners: Option<&super::handoff::Owners<Current<C, X>>>,
    handler: &H,
) where
    C: Send + Sync + 'static,
    H: Fn(Accepted<C>, &X) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let active = &serving.active;
    let Some(permit) = active.admit() else {
        active.stats.downstream_cx_overflow.inc();
        debug!(listener = %active.config.name, %peer, "listener connection limit reached; closing");
        return;
    };
    let local = match stream.local_addr() {
        Ok(a) => canonical(a),
        Err(e) => {
            debug!(listener = %active.config.name, %peer, error = %e, "no local address; closing");
            return;
        }
    };
    // original_dst runs first, at accept: chain matching and everything after see the destination
    // the connection had before the redirect.
    let restored = active
        .config
        .restores_original_dst(local.port())
        .then(|| super::original_dst::original(&stream, local))
        .flatten();
    let local = restored.unwrap_or(local);
    let handed_off = restored
        .filter(|_| active.config.use_original_dst)
        .and_then(|dest| owners?.find(dest))
        .map(|owner| owner.load_full())
        .filter(|owner| !Arc::ptr_eq(&owner.active, active));
    let (serving, permit) = match &handed_off {
        // Envoy moves the connection's slot to the owner without checking the owner's limit: take
        // one of its slots when it has one to spare.
        Some(owner) => {
            drop(permit);
            (owner, owner.active.admit().unwrap_or(None))
        }
        None => (serving, permit),
    };
    if handed_off.is_some() {
        debug!(from = %active.config.name, to = %serving.active.config.name, %local, "handing the connection to the listener of its original destination");
    }
    let (active, drain) = (&serving.active, &serving.drain);
    let config = &active.config;
    let stats = &active.stats;
    let peer = canonical(peer);
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%peer, error = %e, "TCP_NODELAY");
    }
    let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
    let span = info_span!("conn", id, %peer, listener = %config.name);

    let (chain, state) = if !config.inspects() {
        match config.chains.select_id(&MatchInput::raw(local, peer)) {
            Some(chain) => {
                stats.downstream_cx_total.inc();
                stats.downstream_cx_active.inc();
                (Some(chain), ACTIVE)
            }
            None => {
                stats.no_filter_chain_match.inc();
                span.in_scope(|| debug!("no matching filter chain; closing"));
                return;
            }
        }
    } else {
        stats.downstream_pre_cx_active.inc();
        (None, PENDING)
    };
    let state = Arc::new(AtomicU8::new(state));
    let accepted = Accepted {
        stream,
        peer,
        local,
        id,
        listener: active.clone(),
        chain,
        drain: drain.clone(),
        state: state.clone(),
    };
    let tracker = Tracker {
        stats: active.stats.clone(),
        state,
        _permit: permit,
        _drain: drain.guard(),
    };
    let connection = handler(accepted, &serving.with);
    // A struct rather than an `async` block: awaiting a captured future inside one stores it twice.
    tokio::spawn(
        Tracked {
            connection,
            _tracker: tracker,
        }
        .instrument(span),
    );
}

pin_project_lite::pin_project! {
    /// A connection's future with its tracker, which is dropped with it.
    pub(super) struct Tracked<F> {
        #[pin]
        pub(super) connection: F,
        pub(super) _tracker: Tracker,
    }
}

impl<F: Future<Output = ()>> Future for Tracked<F> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.project().connection.poll(cx)
    }
}

/// Releases a connection's share of the listener when its task ends, panicking handler included.
pub(super) struct Tracker {
    pub(super) stats: ListenerStats,
    pub(super) state: Arc<AtomicU8>,
    pub(super) _permit: Option<OwnedSemaphorePermit>,
    pub(super) _drain: drain::Guard,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if self.state.load(Ordering::Acquire) == ACTIVE {
            self.stats.downstream_cx_active.dec();
            self.stats.downstream_cx_destroy.inc();
        } else {
            self.stats.downstream_pre_cx_active.dec();
        }
    }
}

/// A dual-stack socket reports IPv4 peers as `::ffff:a.b.c.d`; Envoy reports them as IPv4.
pub(crate) fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Errors about one pending connection (it went away before we took it), not about the listener.
fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// 10 ms doubling to 1 s while accept keeps failing (EMFILE, ENFILE, ENOBUFS, ENOMEM …).
#[derive(Debug, Default)]
struct Backoff {
    current: Option<Duration>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn next(&mut self) -> Duration {
        let d = self.current.map_or(Self::FIRST, |d| (d * 2).min(Self::MAX));
        self.current = Some(d);
        d
    }

    fn reset(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_one_second_and_resets() {
        let mut b = Backoff::default();
        let seq: Vec<u128> = (0..9).map(|_| b.next().as_millis()).collect();
        assert_eq!(seq, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(10));
    }
}
