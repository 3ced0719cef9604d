//! Connect stage: per-endpoint connection pools (HTTP/1.1 keep-alive stacks, one shared HTTP/2
//! connection; one of each per offered ALPN list) and the pending-request accounting that Envoy's `max_pending_requests` limits.

pub mod connect;
pub mod http1;
pub mod http2;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use std::net::SocketAddr;

use crate::config::istio::AlpnList;
use crate::filter_state::FilterState;

/// Pools per endpoint besides the default one before unused ones are forgotten.
const MAX_KEYED_POOLS: usize = 64;
use crate::http::body::BoxBody;
use crate::tls::TlsInfo;
use crate::upstream::body::ActiveRequest;
use crate::upstream::circuit::ResourceGuard;
use crate::upstream::cluster::Shared;
use crate::upstream::endpoint::Host;
use crate::upstream::stats::{down, up};
use crate::upstream::UpstreamError;

/// The connections of one endpoint: one [`ConnPool`] per ALPN list its TLS handshakes offer
/// (the cluster's own, and each `istio.alpn` override), since the peer may serve them differently.
#[derive(Debug, Default)]
pub struct HostPool {
    /// Open connections of any pool (an empty pool may exceed `max_connections`).
    pub(crate) open: AtomicUsize,
    /// The connections that offer the cluster's ALPN.
    pub(crate) default: Arc<ConnPool>,
    overridden: Mutex<Vec<Arc<ConnPool>>>,
    drained: AtomicBool,
}

/// The connections of one endpoint that offer the same ALPN.
#[derive(Debug, Default)]
pub struct ConnPool {
    pub(crate) h1: http1::Idle,
    pub(crate) h2: http2::Shared2,
    /// An `auto_config` cluster's TLS handshake with this endpoint chose h2 over ALPN.
    pub(crate) alpn_h2: AtomicBool,
    /// What the handshakes offer instead of the cluster's ALPN (`None`: the cluster's).
    pub(crate) alpn: Option<AlpnList>,
    /// To an internal listener over `internal_upstream`: the request objects shared with the
    /// upstream that this pool's connections carry (requests with other objects use other pools).
    pub(crate) state: FilterState,
}

impl ConnPool {
    fn drain(&self) {
        self.h1.drain();
        self.h2.drain();
    }

    fn idle(&self) -> usize {
        self.h1.len() + usize::from(self.h2.is_open())
    }
}

impl HostPool {
    /// The pool whose connections offer `alpn` and carry `state` (the objects a request shares
    /// with an internal upstream); the cluster's own pool when neither is set.
    pub(crate) fn for_key(&self, alpn: Option<&AlpnList>, state: &FilterState) -> Arc<ConnPool> {
        if alpn.is_none() && state.is_empty() {
            return self.default.clone();
        }
        let mut pools = self.lock();
        if let Some(p) = pools
            .iter()
            .find(|p| p.alpn.as_ref() == alpn && p.state == *state)
        {
            return p.clone();
        }
        // Keys may come from requests (filter state): forget pools nobody holds and no connection
        // is left in, so their number stays bounded by what is in use.
        if pools.len() >= MAX_KEYED_POOLS {
            pools.retain(|p| Arc::strong_count(p) > 1 || p.idle() > 0);
        }
        let pool = Arc::new(ConnPool {
            alpn: alpn.cloned(),
            state: state.clone(),
            ..ConnPool::default()
        });
        if self.drained.load(Ordering::Acquire) {
            pool.drain();
        }
        pools.push(pool.clone());
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<ConnPool>>> {
        // Nothing panics while the lock is held; a poisoned list is still a valid list.
        self.overridden.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes idle connections (the endpoint left the cluster).
    pub(crate) fn drain(&self) {
        self.drained.store(true, Ordering::Release);
        self.default.drain();
        for p in self.lock().iter() {
            p.drain();
        }
    }

    /// Idle HTTP/1.1 connections and open HTTP/2 ones, over every pool.
    pub(crate) fn idle(&self) -> usize {
        self.default.idle() + self.lock().iter().map(|p| p.idle()).sum::<usize>()
    }
}

/// What the access log reads of the connection that carried a request: read once when the
/// connection is made, copied (an address and an `Arc`) to every request it carries.
#[derive(Debug, Clone, Default)]
pub struct ConnFacts {
    /// The connection's local address (`%UPSTREAM_LOCAL_ADDRESS%`); `INTERNAL_ADDRESS` for a
    /// connection to an internal listener.
    pub local: Option<SocketAddr>,
    /// The handshake's facts, over TLS.
    pub tls: Option<Arc<TlsInfo>>,
}

/// What one connection has carried (for `max_requests_per_connection`), and its facts.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    requests: AtomicU32,
    /// For the access log of every request the connection carries.
    pub(crate) facts: ConnFacts,
    /// Told when an idle HTTP/1.1 connection leaves the stack (taken, or the pool drained), so its
    /// idle timer ends with its idle period instead of running out the whole `idle_timeout`.
    pub(crate) left_idle: tokio::sync::Notify,
}

impl ConnState {
    pub(crate) fn new(facts: ConnFacts) -> Self {
        Self {
            requests: AtomicU32::new(0),
            facts,
            left_idle: tokio::sync::Notify::new(),
        }
    }

    /// Counts one more request; false once the connection has carried `max`.
    fn take_request(&self, max: Option<u32>) -> bool {
        let n = self.requests.fetch_add(1, Ordering::AcqRel) + 1;
        max.is_none_or(|m| n <= m)
    }

    fn exhausted(&self, max: Option<u32>) -> bool {
        max.is_some_and(|m| self.requests.load(Ordering::Acquire) >= m)
    }
}

/// A request waiting for a connection: holds a `max_pending_requests` slot and the pending gauges.
#[derive(Debug)]
pub(crate) struct Pending {
    shared: Arc<Shared>,
    host: Arc<Host>,
    _slot: ResourceGuard,
    overflow_counted: bool,
}

impl Pending {
    pub(crate) fn begin(shared: &Arc<Shared>, host: &Arc<Host>) -> Result<Pending, UpstreamError> {
        let Some(slot) = shared.breakers.pending_requests.try_acquire() else {
            shared.stats.upstream_rq_pending_overflow.inc();
            return Err(UpstreamError::Overflow {
                cluster: shared.spec.name.clone(),
                limit: "max_pending_requests",
            });
        };
        shared.stats.upstream_rq_pending_total.inc();
        shared.stats.upstream_rq_pending_active.inc();
        up(&host.stats.rq_pending_active);
        Ok(Pending {
            shared: shared.clone(),
            host: host.clone(),
            _slot: slot,
            overflow_counted: false,
        })
    }

    /// A `max_connections` slot for a new connection, if the breaker allows one. Envoy still opens
    /// the first connection of an empty pool, counting the overflow.
    pub(crate) fn connection_slot(&mut self) -> Option<ResourceGuard> {
        if let Some(slot) = self.shared.breakers.connections.try_acquire() {
            return Some(slot);
        }
        if !self.overflow_counted {
            self.overflow_counted = true;
            self.shared.stats.upstream_cx_overflow.inc();
        }
        (self.host.pool.open.load(Ordering::Acquire) == 0)
            .then(|| self.shared.breakers.connections.force_acquire())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.shared.stats.upstream_rq_pending_active.dec();
        down(&self.host.stats.rq_pending_active);
    }
}

/// HTTP/1.1 wants origin-form with a Host header; keep the caller's Host, else take the URI's.
pub(crate) fn to_origin_form(req: &mut Request<BoxBody>) {
    *req.version_mut() = Version::HTTP_11;
    let uri = req.uri().clone();
    if uri.authority().is_none() && uri.scheme().is_none() {
        return;
    }
    if !req.headers().contains_key(HOST) {
        if let Some(a) = uri.authority() {
            if let Ok(v) = a.as_str().parse() {
                req.headers_mut().insert(HOST, v);
            }
        }
    }
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(pq);
}

/// HTTP/2 wants an absolute URI; `:authority` is the Host header (falling back to the URI's
/// authority, then the endpoint), as Envoy sends it, and the Host header itself is folded into it.
pub(crate) fn to_absolute_form(req: &mut Request<BoxBody>, fallback: &str) {
    *req.version_mut() = Version::HTTP_2;
    let host = req
        .headers_mut()
        .remove(HOST)
        .and_then(|h| h.to_str().ok().and_then(|s| s.parse::<Authority>().ok()));
    let uri = req.uri().clone();
    let authority = host
        .or_else(|| uri.authority().cloned())
        .or_else(|| fallback.parse().ok());
    let mut parts = uri.into_parts();
    if parts.scheme.is_none() {
        parts.scheme = Some(Scheme::HTTP);
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    parts.authority = authority;
    if let Ok(u) = Uri::from_parts(parts) {
        *req.uri_mut() = u;
    }
}

/// Counts the request as active once it has a connection (Envoy attaches it to `upstream_rq_total`,
/// `upstream_rq_active` and the `max_requests` breaker at that point, not while pending).
pub(crate) fn attach(shared: &Arc<Shared>, host: &Arc<Host>) -> ActiveRequest {
    let slot = shared.breakers.requests.force_acquire();
    ActiveRequest::new(shared.clone(), host.clone(), slot)
}

/// The response, the endpoint, the request's accounting, and the connection's facts.
pub(crate) type Exchanged = (Response<Incoming>, SocketAddr, ActiveRequest, ConnFacts);

/// Sorts a hyper error from an exchange into the connect stage's failure kinds.
pub(crate) fn exchange_error(
    shared: &Shared,
    endpoint: std::net::SocketAddr,
    e: hyper::Error,
    h2: bool,
) -> UpstreamError {
    let cluster = shared.spec.name.clone();
    if e.is_parse() {
        shared.stats.upstream_cx_protocol_error.inc();
        return UpstreamError::Protocol {
            cluster,
            endpoint,
            source: e,
        };
    }
    if e.is_user() {
        shared.stats.upstream_rq_tx_reset.inc();
        return UpstreamError::RequestBody {
            cluster,
            endpoint,
            source: e,
        };
    }
    shared.stats.upstream_rq_rx_reset.inc();
    if h2 && !(e.is_closed() || e.is_canceled() || e.is_incomplete_message()) {
        UpstreamError::Reset {
            cluster,
            endpoint,
            source: e,
        }
    } else {
        UpstreamError::ConnectionTermination {
            cluster,
            endpoint,
            source: e,
        }
    }
}
