//! Balance and connect for one cluster: admit the request (circuit breakers), pick a host, take a
//! pooled connection, send.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Version};
use tokio::sync::{watch, Notify};

use super::body::ResponseBody;
use super::circuit::{CircuitBreakers, RetryGuard};
use super::config::{ClusterSpec, Protocol, Target};
use super::endpoint::{Host, HostSet};
use super::original_dst::{self, OriginalDestination, OriginalDstHosts};
use super::pool::connect::{self, ConnectionGuard};
use super::pool::{http1, http2, ConnFacts};
use super::stats::{bump, ClusterStats};
use super::UpstreamError;
use crate::config::istio::{AlpnOverrides, UpstreamHttp};
use crate::filter_state::FilterState;
use crate::http::body::BoxBody;
use crate::listener::internal::{InternalListeners, INTERNAL_ADDRESS};
use crate::stats::Scope;
use crate::tls::{Alpn, ClientStream};

/// What the connection pools and guards of a cluster share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub spec: ClusterSpec,
    pub stats: ClusterStats,
    pub breakers: CircuitBreakers,
    /// Woken when a connection closes, giving back a `max_connections` slot.
    pub slot_freed: Notify,
    /// Where `envoy_internal_address` endpoints connect.
    pub internal: InternalListeners,
    /// `internal_upstream.no_metadata`, for clusters with that transport socket.
    pub internal_no_metadata: Option<crate::stats::Counter>,
}

/// Per-request inputs of the balance and connect stages.
#[derive(Debug, Clone, Default)]
pub struct SendContext {
    /// The downstream protocol for `use_downstream_protocol_config` (default: the request's version).
    pub downstream_version: Option<Version>,
    /// `auto_host_rewrite`: set Host to the picked endpoint's hostname, when it has one. The old
    /// host goes to `x-envoy-original-host`, as Envoy's router does.
    pub auto_host_rewrite: bool,
    /// With `auto_host_rewrite`: also append the old host to `x-forwarded-host`.
    pub append_x_forwarded_host: bool,
    /// `istio.alpn`: over TLS, offer the list for the upstream HTTP version instead of the
    /// cluster's ALPN (connections are pooled apart by what they offered).
    pub alpn: Option<Arc<AlpnOverrides>>,
    /// The request's filter state: to an internal listener over `internal_upstream`, the objects
    /// shared with the upstream go along.
    pub filter_state: FilterState,
}

/// Per-connection inputs of `connect_tcp`.
#[derive(Debug, Clone, Default)]
pub struct ConnectContext {
    /// The downstream connection's (restored) destination, the host of ORIGINAL_DST clusters.
    pub original_dst: Option<SocketAddr>,
    /// The downstream connection's filter state: what it shares with the upstream goes, over an
    /// `internal_upstream` transport socket, to the internal listener the connection reaches.
    pub filter_state: FilterState,
    /// The ALPN fallback over TLS when the context configures none (a tunnel's HTTP version).
    pub alpn: Alpn,
}

/// A response from an upstream host.
#[derive(Debug)]
pub struct Sent {
    pub response: Response<ResponseBody>,
    /// `%UPSTREAM_HOST%`.
    pub upstream: SocketAddr,
    /// The endpoint's hostname (`auto_host_rewrite`), if it has one.
    pub hostname: Option<String>,
    pub host: Arc<Host>,
    /// The connection that carried the request: its TLS and local address.
    pub facts: ConnFacts,
}

/// A TCP connection for tcp_proxy (TLS when the cluster has a TLS context). Keep `guard` for as
/// long as the connection is open.
#[derive(Debug)]
pub struct TcpConnection {
    pub stream: ClientStream,
    pub upstream: SocketAddr,
    pub hostname: Option<String>,
    pub guard: ConnectionGuard,
    /// To an internal listener: the host's `envoy://` name.
    pub internal: Option<String>,
    /// The connection's TLS and local address.
    pub facts: ConnFacts,
}

/// A validated cluster with its hosts, pools and circuit breakers.
#[derive(Debug)]
pub struct Cluster {
    pub(crate) shared: Arc<Shared>,
    pub(crate) hosts: ArcSwap<HostSet>,
    /// True once the first resolution has finished (immediately for STATIC).
    pub(crate) ready: watch::Sender<bool>,
    pub(crate) started: AtomicBool,
    /// ORIGINAL_DST: the hosts made from destinations so far.
    pub(crate) original_dst: Option<OriginalDstHosts>,
}

impl Cluster {
    pub(crate) fn new(spec: ClusterSpec, scope: Scope, internal: InternalListeners) -> Self {
        let stats = ClusterStats::new(scope.clone());
        for tls in spec.tls_contexts() {
            tls.bind_stats(&scope);
        }
        let breakers = CircuitBreakers::new(spec.default_limits, spec.high_limits, &scope);
        let internal_no_metadata = spec
            .internal_upstream
            .as_ref()
            .map(|_| scope.counter("internal_upstream.no_metadata"));
        let hosts: Vec<Arc<Host>> = spec
            .endpoints
            .iter()
            .filter_map(|e| match e.target {
                Target::Ip(addr) => Some(Arc::new(Host::new(e, addr))),
                Target::Internal { .. } => Some(Arc::new(Host::new(e, INTERNAL_ADDRESS))),
                Target::Dns { .. } | Target::Pipe(_) => None,
            })
            .collect();
        if spec
            .endpoints
            .iter()
            .any(|e| matches!(e.target, Target::Pipe(_)))
        {
            tracing::info!(cluster = %spec.name, "cluster endpoints are Unix sockets: usable as a gRPC config source; requests routed to it get no healthy upstream");
        }
        // DNS clusters are ready after their first resolution, EDS ones with their first assignment.
        let is_static =
            !spec.discovery.uses_dns() && spec.discovery != super::config::Discovery::Eds;
        let original_dst = spec.original_dst.is_some().then(OriginalDstHosts::default);
        let set = HostSet::new(hosts, &spec);
        set.publish(&stats);
        if !set.hosts.is_empty() {
            stats.membership_change.inc();
        }
        let (ready, _) = watch::channel(is_static);
        Self {
            shared: Arc::new(Shared {
                spec,
                stats,
                breakers,
                slot_freed: Notify::new(),
                internal,
                internal_no_metadata,
            }),
            hosts: ArcSwap::from_pointee(set),
            ready,
            started: AtomicBool::new(false),
            original_dst,
        }
    }

    pub fn name(&self) -> &str {
        &self.shared.spec.name
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.shared.spec
    }

    /// The cluster's stats, for the router's own counters (`upstream_rq_2xx`, retries, timeouts).
    pub fn stats(&self) -> &ClusterStats {
        &self.shared.stats
    }

    pub fn breakers(&self) -> &CircuitBreakers {
        &self.shared.breakers
    }

    /// The current hosts.
    pub fn host_set(&self) -> Arc<HostSet> {
        self.hosts.load_full()
    }

    pub(crate) fn install(&self, set: HostSet) {
        set.publish(&self.shared.stats);
        let old = self.hosts.swap(Arc::new(set));
        let new = self.hosts.load();
        for h in &old.hosts {
            if !new.hosts.iter().any(|n| Arc::ptr_eq(n, h)) {
                h.pool.drain();
            }
        }
    }

    /// Installs the endpoints of an EDS `ClusterLoadAssignment`: hosts that did not change are kept
    /// (with their pools), the others replaced; the cluster counts as initialized from now on.
    pub(crate) fn assign(&self, endpoints: &[super::config::EndpointSpec], overprovisioning: f64) {
        let old = self.hosts.load_full();
        let hosts: Vec<Arc<Host>> = endpoints
            .iter()
            .filter_map(|e| {
                let addr = match e.target {
                    Target::Ip(addr) => addr,
                    Target::Internal { .. } => INTERNAL_ADDRESS,
                    Target::Dns { .. } | Target::Pipe(_) => return None,
                };
                Some(
                    old.hosts
                        .iter()
                        .find(|h| h.is(e, addr))
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Host::new(e, addr))),
                )
            })
            .collect();
        let changed = hosts.len() != old.hosts.len()
            || hosts
                .iter()
                .zip(old.hosts.iter())
                .any(|(a, b)| !Arc::ptr_eq(a, b));
        let set = if (overprovisioning - self.shared.spec.overprovisioning).abs() > f64::EPSILON {
            let mut spec = self.shared.spec.clone();
            spec.overprovisioning = overprovisioning;
            HostSet::new(hosts, &spec)
        } else {
            HostSet::new(hosts, &self.shared.spec)
        };
        self.install(set);
        if changed {
            self.shared.stats.membership_change.inc();
        }
        self.ready.send_replace(true);
    }

    /// Whether the cluster has finished its first resolution or assignment.
    pub fn is_initialized(&self) -> bool {
        *self.ready.borrow()
    }

    /// Stops pooling: idle connections close now, busy ones once their exchange ends. Called when the
    /// cluster leaves the configuration.
    pub(crate) fn drain_pools(&self) {
        for h in &self.hosts.load().hosts {
            h.pool.drain();
        }
    }

    /// Resolves once the cluster has hosts to offer (DNS clusters: after the first resolution).
    pub async fn initialized(&self) {
        let mut rx = self.ready.subscribe();
        // An error means the sender is gone with the cluster; nothing left to wait for.
        let _ = rx.wait_for(|r| *r).await;
    }

    /// The host for a request or connection: its destination for ORIGINAL_DST clusters, else the
    /// load balancer's pick.
    fn choose_for(&self, destination: Option<SocketAddr>) -> Result<Arc<Host>, UpstreamError> {
        match (&self.original_dst, &self.shared.spec.original_dst) {
            (Some(hosts), Some(spec)) => match destination {
                Some(addr) => Ok(hosts.host(spec, addr)),
                None => {
                    self.shared.stats.upstream_cx_none_healthy.inc();
                    Err(UpstreamError::NoHealthyUpstream {
                        cluster: self.shared.spec.name.clone(),
                    })
                }
            },
            _ => self.choose(),
        }
    }

    fn choose(&self) -> Result<Arc<Host>, UpstreamError> {
        self.hosts
            .load()
            .choose(&self.shared.spec.lb)
            .ok_or_else(|| {
                self.shared.stats.upstream_cx_none_healthy.inc();
                UpstreamError::NoHealthyUpstream {
                    cluster: self.shared.spec.name.clone(),
                }
            })
    }

    /// Sends one request to a host of this cluster. The caller has prepared the URI and headers; for
    /// HTTP/2 upstreams the Host header becomes `:authority`.
    pub async fn send(
        &self,
        mut req: Request<BoxBody>,
        ctx: &SendContext,
    ) -> Result<Sent, UpstreamError> {
        let shared = &self.shared;
        let requests = &shared.breakers.requests;
        if requests.in_use() >= requests.max() {
            // Envoy 1.40 counts a max_requests overflow as an active-request overflow.
            shared.stats.upstream_rq_active_overflow.inc();
            return Err(UpstreamError::Overflow {
                cluster: shared.spec.name.clone(),
                limit: "max_requests",
            });
        }
        let host = match &shared.spec.original_dst {
            Some(spec) => self.choose_for(original_dst::destination(
                spec,
                req.headers(),
                req.extensions().get::<OriginalDestination>().copied(),
            ))?,
            None => self.choose()?,
        };
        let hostname = (!host.hostname.is_empty()).then(|| host.hostname.clone());
        if ctx.auto_host_rewrite {
            if let Some(v) = hostname
                .as_deref()
                .and_then(|h| HeaderValue::from_str(h).ok())
            {
                rewrite_host(req.headers_mut(), v, ctx.append_x_forwarded_host);
            }
        }
        let auto = shared.spec.protocol.auto;
        let wants_h2 = match shared.spec.protocol.protocol {
            Protocol::Http1 => false,
            Protocol::Http2 => true,
            Protocol::Downstream => {
                ctx.downstream_version.unwrap_or(req.version()) == Version::HTTP_2
            }
        };
        // Over internal_upstream a request's shared objects go to the internal listener; its
        // connections are pooled apart by them.
        let carried = match (&shared.spec.internal_upstream, &host.internal) {
            (Some(_), Some(_)) => ctx.filter_state.shared_with_upstream(),
            _ => FilterState::default(),
        };
        let pool = host.pool.for_key(
            alpn_override(ctx, shared, &host, wants_h2 || auto),
            &carried,
        );
        // auto_config: HTTP/1.1 until ALPN with this endpoint has chosen h2.
        let h2 = wants_h2 || (auto && pool.alpn_h2.load(Ordering::Acquire));
        let result = if h2 {
            http2::send(shared, &host, &pool, req).await
        } else {
            http1::send(shared, &host, &pool, req).await
        };
        match result {
            Ok((resp, upstream, active, facts)) => {
                if resp.status().is_server_error() {
                    bump(&host.stats.rq_error);
                } else {
                    bump(&host.stats.rq_success);
                }
                Ok(Sent {
                    response: resp.map(|b| ResponseBody::new(b, active)),
                    upstream,
                    hostname,
                    host,
                    facts,
                })
            }
            Err(e) => {
                bump(&host.stats.rq_error);
                Err(e)
            }
        }
    }

    /// A TCP connection to a host of this cluster (tcp_proxy), within the `max_connections` breaker.
    pub async fn connect_tcp(&self, ctx: &ConnectContext) -> Result<TcpConnection, UpstreamError> {
        let shared = &self.shared;
        let host = self.choose_for(ctx.original_dst)?;
        let Some(slot) = shared.breakers.connections.try_acquire() else {
            shared.stats.upstream_cx_overflow.inc();
            return Err(UpstreamError::Overflow {
                cluster: shared.spec.name.clone(),
                limit: "max_connections",
            });
        };
        let (stream, upstream, guard, facts) =
            connect::transport(shared, &host, slot, ctx.alpn, None, &ctx.filter_state).await?;
        Ok(TcpConnection {
            stream,
            upstream,
            hostname: (!host.hostname.is_empty()).then(|| host.hostname.clone()),
            guard,
            internal: host.internal.as_ref().map(|t| t.uri.clone()),
            facts,
        })
    }

    /// A `max_retries` slot for one retry, or None (counting `upstream_rq_retry_overflow`).
    pub fn try_retry(&self) -> Option<RetryGuard> {
        let g = self.shared.breakers.try_retry();
        if g.is_none() {
            self.shared.stats.upstream_rq_retry_overflow.inc();
        }
        g
    }

    /// The host the next request would go to, by the cluster's `lb_policy` (what `send` and
    /// `connect_tcp` do first); for benchmarks and diagnostics, as it counts nothing.
    pub fn pick_host(&self) -> Option<Arc<Host>> {
        self.hosts.load().choose(&self.shared.spec.lb)
    }

    /// A hostname of the cluster's endpoints, for callers that rewrite Host before sending (prefer
    /// `SendContext::auto_host_rewrite`, which uses the host actually picked).
    pub fn pick_hostname(&self) -> Option<String> {
        let set = self.hosts.load();
        set.hosts
            .iter()
            .find(|h| !h.hostname.is_empty())
            .map(|h| h.hostname.clone())
    }

    pub(crate) fn mark_started(&self) -> bool {
        !self.started.swap(true, Ordering::AcqRel)
    }
}

/// The `istio.alpn` list for a request to `host`, when its connections are TLS: the HTTP/2 list
/// for an HTTP/2 (or `auto_config`, which prefers h2) upstream, else HTTP/1.1's; as in Envoy, an
/// HTTP/1.0 request goes upstream as HTTP/1.1, so HTTP10's list is never offered.
fn alpn_override<'a>(
    ctx: &'a SendContext,
    shared: &Shared,
    host: &Host,
    h2: bool,
) -> Option<&'a crate::config::istio::AlpnList> {
    let overrides = ctx.alpn.as_deref()?;
    shared.spec.tls_for(&host.socket_labels)?;
    overrides.for_upstream(if h2 {
        UpstreamHttp::Http2
    } else {
        UpstreamHttp::Http11
    })
}

/// Replaces Host, keeping the old one in `x-envoy-original-host` (and `x-forwarded-host` if asked).
fn rewrite_host(headers: &mut http::HeaderMap, host: HeaderValue, append_forwarded: bool) {
    static ORIGINAL_HOST: http::HeaderName = http::HeaderName::from_static("x-envoy-original-host");
    static FORWARDED_HOST: http::HeaderName = http::HeaderName::from_static("x-forwarded-host");
    if let Some(old) = headers.insert(HOST, host) {
        if append_forwarded {
            let joined = match headers.get(&FORWARDED_HOST).and_then(|v| v.to_str().ok()) {
                Some(prev) if !prev.is_empty() => {
                    HeaderValue::from_str(&format!("{prev},{}", old.to_str().unwrap_or(""))).ok()
                }
                _ => Some(old.clone()),
            };
            if let Some(v) = joined {
                headers.insert(&FORWARDED_HOST, v);
            }
        }
        headers.insert(&ORIGINAL_HOST, old);
    }
}
