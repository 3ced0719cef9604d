//! Connect stage, HTTP/1.1: a stack of idle keep-alive connections per endpoint. A connection carries
//! one request at a time and goes back on the stack once its response has been read to the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use http::Request;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;
use tracing::debug;

use super::connect::{self, Counted};
use super::{attach, exchange_error, to_origin_form, ConnPool, ConnState, Exchanged, Pending};
use crate::http::body::BoxBody;
use crate::tls::Alpn;
use crate::upstream::cluster::Shared;
use crate::upstream::endpoint::Host;
use crate::upstream::UpstreamError;

struct IdleConn {
    id: u64,
    sender: SendRequest<BoxBody>,
    state: Arc<ConnState>,
    since: Instant,
}

/// The idle HTTP/1.1 connections of one endpoint, most recently used on top.
#[derive(Default)]
pub struct Idle {
    stack: Mutex<Vec<IdleConn>>,
    returned: Notify,
    next_id: AtomicU64,
    /// Set once the endpoint left its cluster: a connection whose exchange ends now closes
    /// instead of going back on the stack.
    closed: AtomicBool,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle")
            .field("idle", &self.lock().len())
            .finish()
    }
}

impl Idle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<IdleConn>> {
        // Nothing panics while the lock is held; a poisoned stack is still a valid stack.
        self.stack.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used connection that can take a request now; closed or expired ones are
    /// dropped on the way.
    fn pop(&self, shared: &Shared) -> Option<(SendRequest<BoxBody>, Arc<ConnState>)> {
        let idle_timeout = shared.spec.protocol.idle_timeout;
        let mut stack = self.lock();
        while let Some(c) = stack.pop() {
            if idle_timeout.is_some_and(|t| c.since.elapsed() >= t) {
                shared.stats.upstream_cx_idle_timeout.inc();
                continue;
            }
            c.state.left_idle.notify_one();
            if c.sender.is_ready() {
                return Some((c.sender, c.state));
            }
        }
        None
    }

    /// Stacks the connection; `None` (dropping, so closing, it) once the pool is closed.
    fn push(&self, sender: SendRequest<BoxBody>, state: Arc<ConnState>) -> Option<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut stack = self.lock();
        // Checked under the lock that `drain` clears the stack with: a push either sees the flag
        // or lands before the clear.
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        stack.push(IdleConn {
            id,
            sender,
            state,
            since: Instant::now(),
        });
        drop(stack);
        self.returned.notify_one();
        Some(id)
    }

    /// Removes the connection `id` if it is still idle; true when it was.
    fn expire(&self, id: u64) -> bool {
        let mut stack = self.lock();
        let before = stack.len();
        stack.retain(|c| c.id != id);
        stack.len() != before
    }

    /// Closes the idle connections now and every busy one when its exchange ends.
    pub(crate) fn drain(&self) {
        self.closed.store(true, Ordering::Release);
        for c in self.lock().drain(..) {
            c.state.left_idle.notify_one();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

struct Lease {
    sender: SendRequest<BoxBody>,
    state: Arc<ConnState>,
    reused: bool,
}

/// An idle connection, or a new one (waiting as a pending request while connecting or while the
/// `max_connections` breaker is open).
enum Acquired {
    Lease(Lease),
    /// ALPN picked HTTP/2 on the new connection, which now serves the endpoint's HTTP/2 pool.
    UseH2,
}

async fn acquire(
    shared: &Arc<Shared>,
    host: &Arc<Host>,
    pool: &Arc<ConnPool>,
) -> Result<Acquired, UpstreamError> {
    let max = shared.spec.protocol.max_requests_per_connection;
    if let Some((sender, state)) = pool.h1.pop(shared) {
        state.take_request(max);
        return Ok(Acquired::Lease(Lease {
            sender,
            state,
            reused: true,
        }));
    }
    // Boxed: waiting and connecting need far more state than taking an idle connection, and
    // every request's future would otherwise carry it.
    Box::pin(wait_or_connect(shared, host, pool)).await
}

/// `acquire` when no idle connection can take the request: wait for one, or open one.
async fn wait_or_connect(
    shared: &Arc<Shared>,
    host: &Arc<Host>,
    pool: &Arc<ConnPool>,
) -> Result<Acquired, UpstreamError> {
    let max = shared.spec.protocol.max_requests_per_connection;
    let mut pending = Pending::begin(shared, host)?;
    loop {
        let returned = pool.h1.returned.notified();
        let freed = shared.slot_freed.notified();
        tokio::pin!(returned, freed);
        returned.as_mut().enable();
        freed.as_mut().enable();
        if let Some((sender, state)) = pool.h1.pop(shared) {
            state.take_request(max);
            return Ok(Acquired::Lease(Lease {
                sender,
                state,
                reused: true,
            }));
        }
        if let Some(slot) = pending.connection_slot() {
            let (stream, addr, guard, facts) = connect::transport(
                shared,
                host,
                slot,
                Alpn::Http1,
                pool.alpn.as_ref(),
                &pool.state,
            )
            .await?;
            if stream.alpn() == Some(b"h2") {
                // Only an auto_config cluster offers h2 here; the server chose it.
                pool.alpn_h2.store(true, Ordering::Release);
                let adopted =
                    super::http2::adopt(shared, pool, stream, addr, guard, facts, false).await;
                drop(pending);
                return adopted.map(|_| Acquired::UseH2);
            }
            let io = TokioIo::new(Counted::new(stream, shared));
            let (sender, conn) =
                http1::handshake(io)
                    .await
                    .map_err(|source| UpstreamError::Handshake {
                        cluster: shared.spec.name.clone(),
                        endpoint: addr,
                        source,
                    })?;
            shared.stats.upstream_cx_http1_total.inc();
            tokio::spawn(async move {
                let _guard = guard;
                if let Err(e) = conn.with_upgrades().await {
                    debug!(endpoint = %addr, error = %e, "upstream HTTP/1.1 connection closed");
                }
            });
            let state = Arc::new(ConnState::new(facts));
            state.take_request(max);
            drop(pending);
            return Ok(Acquired::Lease(Lease {
                sender,
                state,
                reused: false,
            }));
        }
        tokio::select! {
            _ = &mut returned => {}
            _ = &mut freed => {}
        }
    }
}

/// Sends `req` on an HTTP/1.1 connection of `pool`, one of `host`'s.
pub(crate) async fn send(
    shared: &Arc<Shared>,
    host: &Arc<Host>,
    pool: &Arc<ConnPool>,
    mut req: Request<BoxBody>,
) -> Result<Exchanged, UpstreamError> {
    to_origin_form(&mut req);
    loop {
        let mut lease = match acquire(shared, host, pool).await? {
            Acquired::Lease(l) => l,
            Acquired::UseH2 => return Box::pin(super::http2::send(shared, host, pool, req)).await,
        };
        let active = attach(shared, host);
        let addr = host.address();
        match lease.sender.try_send_request(req).await {
            Ok(resp) => {
                let facts = lease.state.facts.clone();
                recycle(
                    shared.clone(),
                    Arc::downgrade(pool),
                    lease.sender,
                    lease.state,
                );
                return Ok((resp, addr, active, facts));
            }
            Err(mut e) => match e.take_message() {
                // A kept-alive connection the server closed before the request went out: the
                // request is intact, so it goes out on another connection.
                Some(back) if lease.reused => req = back,
                _ => return Err(exchange_error(shared, addr, e.into_error(), false)),
            },
        }
    }
}

/// Puts the connection back on the stack once its response has been read, unless it is closed or
/// has carried `max_requests_per_connection`; then closes it if it stays idle for `idle_timeout`.
fn recycle(
    shared: Arc<Shared>,
    pool: Weak<ConnPool>,
    mut sender: SendRequest<BoxBody>,
    state: Arc<ConnState>,
) {
    if state.exhausted(shared.spec.protocol.max_requests_per_connection) {
        shared.stats.upstream_cx_max_requests.inc();
        return;
    }
    tokio::spawn(async move {
        if sender.ready().await.is_err() {
            return;
        }
        let Some(id) = pool
            .upgrade()
            .and_then(|p| p.h1.push(sender, state.clone()))
        else {
            return;
        };
        if let Some(t) = shared.spec.protocol.idle_timeout {
            // Ends when the connection is taken again: one timer per idle period, not one per
            // request left running for the whole timeout.
            tokio::select! {
                () = tokio::time::sleep(t) => {
                    if pool.upgrade().is_some_and(|p| p.h1.expire(id)) {
                        shared.stats.upstream_cx_idle_timeout.inc();
                    }
                }
                () = state.left_idle.notified() => {}
            }
        }
    });
}
