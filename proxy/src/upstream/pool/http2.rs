//! Connect stage, HTTP/2: one multiplexed connection per endpoint, shared by every request and
//! replaced when it closes or has carried `max_requests_per_connection` streams.

use std::sync::{Arc, Mutex};

use http::Request;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::debug;

use super::connect::{self, Counted};
use super::{
    attach, exchange_error, to_absolute_form, ConnFacts, ConnPool, ConnState, Exchanged, Pending,
};
use crate::http::body::BoxBody;
use crate::tls::{Alpn, ClientStream};
use crate::upstream::cluster::Shared;
use crate::upstream::endpoint::Host;
use crate::upstream::ConnectionGuard;
use crate::upstream::UpstreamError;

#[derive(Clone)]
struct Conn {
    sender: SendRequest<BoxBody>,
    state: Arc<ConnState>,
}

/// The current connection of one endpoint, and a lock that lets one request connect while the others
/// wait for it.
#[derive(Default)]
pub struct Shared2 {
    current: Mutex<Option<Conn>>,
    /// Set once the endpoint left its cluster: a connection made afterwards serves only the
    /// request that made it.
    closed: std::sync::atomic::AtomicBool,
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Shared2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared2").finish_non_exhaustive()
    }
}

impl Shared2 {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Conn>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open connection and its facts, if it may take another stream (counting that stream).
    fn take(&self, max: Option<u32>) -> Option<Taken> {
        let mut cur = self.lock();
        let conn = cur.as_ref()?;
        if conn.sender.is_closed() || !conn.state.take_request(max) {
            // Dropping our handle lets an exhausted connection finish its streams and close.
            *cur = None;
            return None;
        }
        Some((conn.sender.clone(), conn.state.facts.clone()))
    }

    /// Lets the connection close once its streams end (their handles are the last ones).
    pub(crate) fn drain(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        *self.lock() = None;
    }

    pub(crate) fn is_open(&self) -> bool {
        self.lock().as_ref().is_some_and(|c| !c.sender.is_closed())
    }
}

/// A stream handle on the shared connection, and that connection's facts.
type Taken = (SendRequest<BoxBody>, ConnFacts);

async fn acquire(
    shared: &Arc<Shared>,
    host: &Arc<Host>,
    pool: &Arc<ConnPool>,
) -> Result<Taken, UpstreamError> {
    let max = shared.spec.protocol.max_requests_per_connection;
    if let Some(s) = pool.h2.take(max) {
        return Ok(s);
    }
    // Boxed, as HTTP/1.1's: connecting needs far more state than taking the shared connection.
    Box::pin(wait_or_connect(shared, host, pool)).await
}

/// `acquire` when the endpoint has no usable connection: wait for the one being opened, or open it.
async fn wait_or_connect(
    shared: &Arc<Shared>,
    host: &Arc<Host>,
    pool: &Arc<ConnPool>,
) -> Result<Taken, UpstreamError> {
    let max = shared.spec.protocol.max_requests_per_connection;
    let mut pending = Pending::begin(shared, host)?;
    let _connecting = pool.h2.connecting.lock().await;
    loop {
        let freed = shared.slot_freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if let Some(s) = pool.h2.take(max) {
            return Ok(s);
        }
        if let Some(slot) = pending.connection_slot() {
            let (stream, addr, guard, facts) = connect::transport(
                shared,
                host,
                slot,
                Alpn::Http2,
                pool.alpn.as_ref(),
                &pool.state,
            )
            .await?;
            let sender = adopt(shared, pool, stream, addr, guard, facts, true).await;
            drop(pending);
            return sender;
        }
        freed.await;
    }
}

/// Runs the HTTP/2 handshake on a fresh connection and makes it the endpoint's shared one
/// (also for an `auto_config` connection whose ALPN chose h2 while the HTTP/1.1 pool dialled).
pub(crate) async fn adopt(
    shared: &Arc<Shared>,
    pool: &ConnPool,
    stream: ClientStream,
    addr: std::net::SocketAddr,
    guard: ConnectionGuard,
    facts: ConnFacts,
    count_first: bool,
) -> Result<Taken, UpstreamError> {
    let max = shared.spec.protocol.max_requests_per_connection;
    let io = TokioIo::new(Counted::new(stream, shared));
    let settings = &shared.spec.protocol.http2;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    match settings.initial_stream_window_size {
        Some(w) => builder.initial_stream_window_size(w),
        None => builder.adaptive_window(true),
    };
    if let Some(w) = settings.initial_connection_window_size {
        builder.initial_connection_window_size(w);
    }
    if let Some(i) = settings.keepalive_interval {
        builder.keep_alive_interval(i);
        if let Some(t) = settings.keepalive_timeout {
            builder.keep_alive_timeout(t);
        }
    }
    let (sender, conn) =
        builder
            .handshake(io)
            .await
            .map_err(|source| UpstreamError::Handshake {
                cluster: shared.spec.name.clone(),
                endpoint: addr,
                source,
            })?;
    shared.stats.upstream_cx_http2_total.inc();
    tokio::spawn(async move {
        let _guard = guard;
        if let Err(e) = conn.await {
            debug!(endpoint = %addr, error = %e, "upstream HTTP/2 connection closed");
        }
    });
    let state = Arc::new(ConnState::new(facts.clone()));
    if count_first {
        state.take_request(max);
    }
    let mut current = pool.h2.lock();
    if !pool.h2.closed.load(std::sync::atomic::Ordering::Acquire) {
        *current = Some(Conn {
            sender: sender.clone(),
            state,
        });
    }
    drop(current);
    Ok((sender, facts))
}

/// Sends `req` as a stream on the HTTP/2 connection of `pool`, one of the endpoint's.
pub(crate) async fn send(
    shared: &Arc<Shared>,
    host: &Arc<Host>,
    pool: &Arc<ConnPool>,
    mut req: Request<BoxBody>,
) -> Result<Exchanged, UpstreamError> {
    let addr = host.address();
    to_absolute_form(&mut req, &addr.to_string());
    let (mut sender, facts) = acquire(shared, host, pool).await?;
    let active = attach(shared, host);
    match sender.send_request(req).await {
        Ok(resp) => Ok((resp, addr, active, facts)),
        Err(e) => Err(exchange_error(shared, addr, e, true)),
    }
}
