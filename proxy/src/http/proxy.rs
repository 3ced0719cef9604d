//! Proxy one request: prepare headers → route → (direct response | redirect | forward to a cluster),
//! then the response path and the access log.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::header::HOST;
use http::{Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::BoxBody;
use super::completion::{IdleTimeout, Observed, OnEnd, Progress};
use super::connect;
use super::forward::{self, AttemptCount, Forwarded};
use super::headers;
use super::local_reply::{self, LocalReason};
use super::route::{Action, HeaderVars, Picked, Selected};
use super::server::ConnInfo;
use super::stats::{ClusterHttpStats, HttpStats};
use crate::access_log::LogContext;
use crate::config::hcm::HcmConfig;
use crate::istio::http::Finished;
use crate::upstream::ClusterManager;

/// Everything a connection manager's requests share: its config, the clusters, its stats.
pub struct HttpRuntime {
    pub cfg: Arc<HcmConfig>,
    pub clusters: Arc<ClusterManager>,
    pub cluster_stats: Arc<ClusterHttpStats>,
    pub stats: HttpStats,
    /// Istio's stats and metadata exchange filters, when configured.
    pub istio: Option<crate::istio::HttpTelemetry>,
    /// The HTTP filters that run before the router.
    pub filters: super::filter::HttpFilters,
}

/// Per-connection state shared by its requests.
pub struct Downstream {
    pub info: ConnInfo,
    /// Requests in flight on this connection (for the idle timeout).
    pub active: Arc<AtomicUsize>,
    pub activity: Arc<tokio::sync::Notify>,
    pub counted_protocol: AtomicBool,
    /// A gentle drain (the listener changed): a response may close the connection (`Connection:
    /// close`, or a GOAWAY for HTTP/2), so the client moves to the new listener configuration.
    pub closing: crate::drain::Ramp,
    /// Whether the connection carries HTTP/2 (known from its first request).
    pub http2: AtomicBool,
    /// What the connection's HTTP/1 driver shares with its requests (upgrade hand-over).
    pub conn: Arc<super::keepalive::Shared>,
}

/// What the access log and stats learn about a request as it proceeds.
#[derive(Debug, Default)]
pub struct Outcome {
    pub flags: &'static str,
    pub cluster: Option<String>,
    pub upstream_host: Option<std::net::SocketAddr>,
    /// The local address of the upstream connection that carried the request; `None` when no
    /// connection was made.
    pub upstream_local: Option<std::net::SocketAddr>,
    /// The upstream host's `envoy://` name, when it is an internal listener.
    pub upstream_internal: Option<String>,
    pub route_name: Option<String>,
    pub attempts: u32,
    pub details: &'static str,
    /// The request headers as the connection manager and route left them (for `%REQ()%`), kept only
    /// when an access log is configured.
    pub log_headers: Option<http::HeaderMap>,
    pub log_wanted: bool,
    /// The response came from upstream (not a local reply).
    pub from_upstream: bool,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%` when x-forwarded-for decides it (port 0, as Envoy).
    pub remote_from_xff: Option<std::net::SocketAddr>,
    /// The TLS of the upstream connection that answered (`%UPSTREAM_TLS_VERSION%`, ...).
    pub upstream_tls: Option<Arc<crate::tls::TlsInfo>>,
    /// Why the last upstream connection failed (`%UPSTREAM_TRANSPORT_FAILURE_REASON%`).
    pub upstream_transport_failure_reason: Option<String>,
    /// Headers an HTTP filter puts on the response, whatever produces it (CORS).
    pub respond_headers: Option<http::HeaderMap>,
    /// The request's filter state: the connection's, plus what `set_filter_state` set.
    pub filter_state: crate::filter_state::FilterState,
}

struct ActiveGuard {
    down: Arc<Downstream>,
    stats: HttpStats,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.stats.rq_active.dec();
        if self.down.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.down.activity.notify_waiters();
        }
    }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Serves one request; never fails (errors become local replies).
pub async fn handle(
    req: Request<Incoming>,
    rt: Arc<HttpRuntime>,
    down: Arc<Downstream>,
) -> Response<BoxBody> {
    let start = Instant::now();
    let start_time = SystemTime::now();
    let stats = rt.stats.clone();
    stats.rq_total.inc();
    stats.rq_active.inc();
    down.active.fetch_add(1, Ordering::AcqRel);
    down.activity.notify_waiters();
    let guard = ActiveGuard {
        down: down.clone(),
        stats: stats.clone(),
    };
    let version = req.version();
    if version == Version::HTTP_2 {
        stats.rq_http2_total.inc();
        down.http2.store(true, Ordering::Relaxed);
    } else {
        stats.rq_http1_total.inc();
    }
    if !down.counted_protocol.swap(true, Ordering::Relaxed) {
        if version == Version::HTTP_2 {
            stats.cx_http2_total.inc();
        } else {
            stats.cx_http1_total.inc();
        }
    }

    let mut req = req;
    let on_upgrade = (headers::is_websocket_upgrade(req.headers())
        || req.method() == http::Method::CONNECT)
        .then(|| super::upgrade::Pending::of(&mut req));
    let (mut parts, body) = req.into_parts();
    normalize_authority(&mut parts);
    let istio_req = rt.istio.as_ref().map(|t| t.request(&mut parts.headers));
    let log_wanted = !rt.cfg.access_logs.is_empty();
    let method = parts.method.clone();
    let original_path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    headers::strip_host_port(&mut parts.headers, down.info.local.port(), &rt.cfg);

    let progress = Arc::new(Progress::new(start, body.is_end_stream()));
    let body = Observed::new(body, progress.clone()).boxed();

    let mut outcome = Outcome {
        log_wanted,
        filter_state: down.info.filter_state.clone(),
        ..Outcome::default()
    };
    let timed = {
        let routed = route_and_forward(
            &rt,
            &down,
            parts,
            body,
            on_upgrade,
            start_time,
            &mut outcome,
        );
        tokio::pin!(routed);
        stream_timers(&rt, &progress, routed).await
    };
    let mut resp = match timed {
        Ok(resp) => resp,
        Err(reason) => {
            outcome.details = reason.details();
            rt.stats.rq_timeout.inc();
            local_reply::response(reason)
        }
    };
    if let Some(add) = outcome.respond_headers.take() {
        resp.headers_mut().extend(add);
    }
    let istio_resp = rt.istio.as_ref().map(|t| t.response(resp.headers_mut()));
    headers::prepare_response(resp.headers_mut(), &rt.cfg);
    if down.closing.close_now() {
        if version == Version::HTTP_2 {
            down.closing.go_away();
        } else {
            resp.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
    }
    if !outcome.from_upstream {
        local_reply_framing(&mut resp, version, progress.done());
    }
    let status = resp.status().as_u16();
    stats.response(status);

    // The access log and the end of the request wait for the response body to finish.
    let logs_rt = rt.clone();
    let info = down.info.clone();
    let resp_headers = log_wanted.then(|| resp.headers().clone());
    let (parts, body) = resp.into_parts();
    let body = Observed::new(
        body,
        OnEnd::new(move |ended| {
            drop(guard);
            let sent = ended.bytes;
            if let (Some(t), Some(req), Some(resp)) = (&logs_rt.istio, &istio_req, &istio_resp) {
                t.record(
                    req,
                    resp,
                    &Finished {
                        status,
                        grpc_status: ended.grpc_status,
                        flags: outcome.flags,
                        cluster: outcome.cluster.as_deref(),
                        route_name: outcome.route_name.as_deref(),
                        downstream_tls: info.tls.as_deref(),
                        upstream_tls: outcome.upstream_tls.as_deref(),
                        duration: start.elapsed(),
                        request_body_bytes: progress.bytes(),
                        response_body_bytes: sent,
                    },
                );
            }
            if let Some(req_headers) = outcome.log_headers.take() {
                let resp_headers = resp_headers.unwrap_or_default();
                let authority = req_headers.get(HOST).and_then(|v| v.to_str().ok());
                let tls = info.tls.as_deref();
                let ctx = LogContext {
                    duration: Some(start.elapsed()),
                    method: Some(method.as_str()),
                    // A CONNECT has no `:path` (`-` in the log).
                    path: (!original_path.is_empty()).then_some(original_path.as_str()),
                    authority,
                    scheme: Some(info.scheme),
                    protocol: Some(protocol(version)),
                    request_headers: Some(&req_headers),
                    response_headers: Some(&resp_headers),
                    response_code: Some(status),
                    response_code_details: Some(outcome.details),
                    response_flags: outcome.flags,
                    bytes_received: progress.bytes(),
                    bytes_sent: sent,
                    upstream_host: outcome.upstream_host,
                    upstream_local_address: outcome.upstream_local,
                    upstream_cluster: outcome.cluster.as_deref(),
                    route_name: outcome.route_name.as_deref(),
                    downstream_remote_address: outcome.remote_from_xff.or(Some(info.peer)),
                    downstream_local_address: Some(info.local),
                    downstream_direct_remote_address: Some(info.peer),
                    connection_id: Some(info.id),
                    upstream_request_attempt_count: (outcome.attempts > 0)
                        .then_some(outcome.attempts),
                    requested_server_name: info.requested_server_name.as_deref(),
                    downstream_internal: info.internal_listener.as_deref(),
                    upstream_internal: outcome.upstream_internal.as_deref(),
                    filter_state: Some(&outcome.filter_state),
                    downstream_tls: tls,
                    upstream_tls: outcome.upstream_tls.as_deref(),
                    upstream_transport_failure_reason: outcome
                        .upstream_transport_failure_reason
                        .as_deref(),
                    ..LogContext::new(start_time)
                };
                logs_rt.cfg.access_logs.log(&ctx);
            }
        }),
    );
    match rt.cfg.stream_idle_timeout {
        Some(idle) => Response::from_parts(parts, IdleTimeout::new(body, idle).boxed()),
        None => Response::from_parts(parts, body.boxed()),
    }
}

/// Runs the stream until its response headers, under the connection manager's `request_timeout`
/// (the whole request must arrive in time) and `stream_idle_timeout` (no request bytes and no
/// response for that long). Response bodies are not covered by these timers yet.
async fn stream_timers<F>(
    rt: &HttpRuntime,
    progress: &Progress,
    // Pinned by the caller: taken by value, the future would be stored twice in this one's state.
    mut routed: std::pin::Pin<&mut F>,
) -> Result<Response<BoxBody>, LocalReason>
where
    F: std::future::Future<Output = Response<BoxBody>>,
{
    let (request_timeout, idle) = (rt.cfg.request_timeout, rt.cfg.stream_idle_timeout);
    if request_timeout.is_none() && idle.is_none() {
        return Ok(routed.await);
    }
    let request_deadline =
        request_timeout.map(|t| tokio::time::Instant::from_std(progress.last_activity()) + t);
    loop {
        let idle_deadline =
            idle.map(|t| tokio::time::Instant::from_std(progress.last_activity()) + t);
        let next = match (request_deadline.filter(|_| !progress.done()), idle_deadline) {
            (Some(r), Some(i)) => Some(r.min(i)),
            (r, i) => r.or(i),
        };
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            resp = &mut routed => return Ok(resp),
            _ = progress.changed() => continue,
            _ = sleep => {
                let now = tokio::time::Instant::now();
                if !progress.done() && request_deadline.is_some_and(|d| now >= d) {
                    return Err(LocalReason::RequestTimeout);
                }
                if idle_deadline.is_some_and(|d| now >= d) {
                    return Err(if progress.done() { LocalReason::StreamIdleComplete } else { LocalReason::StreamIdle });
                }
            }
        }
    }
}

/// Envoy closes an HTTP/1 connection when it answers before reading the whole request (the unread
/// body would be taken for the next request), and sends no `content-length: 0` on HTTP/2.
fn local_reply_framing(resp: &mut Response<BoxBody>, version: Version, request_read: bool) {
    use http::header::{CONNECTION, CONTENT_LENGTH};
    if version == Version::HTTP_2 {
        if resp.headers().get(CONTENT_LENGTH).is_some_and(|v| v == "0") {
            resp.headers_mut().remove(CONTENT_LENGTH);
        }
    } else if !request_read {
        resp.headers_mut()
            .insert(CONNECTION, http::HeaderValue::from_static("close"));
    }
}

/// HTTP/2 requests carry the host in `:authority`; HTTP/1.1 upstreams need it in `Host` and an
/// origin-form target.
fn normalize_authority(parts: &mut http::request::Parts) {
    if let Some(auth) = parts.uri.authority() {
        if !parts.headers.contains_key(HOST) {
            if let Ok(v) = http::HeaderValue::from_str(auth.as_str()) {
                parts.headers.insert(HOST, v);
            }
        }
    }
    // A CONNECT's target is its authority: it has no path to route or forward.
    if parts.method == http::Method::CONNECT && parts.uri.path_and_query().is_none() {
        return;
    }
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        if let Ok(u) = pq.parse::<Uri>() {
            parts.uri = u;
        }
    }
}

/// The cluster of a forwarding route (a weighted one picked now).
fn pick_cluster<'a>(s: Option<&Selected<'a>>, headers: &http::HeaderMap) -> Option<Picked<'a>> {
    match s.map(|s| s.route.action()) {
        Some(Action::Forward(fwd)) => fwd.pick_cluster(headers, &mut rand::rng()),
        _ => None,
    }
}

async fn route_and_forward(
    rt: &HttpRuntime,
    down: &Downstream,
    mut parts: http::request::Parts,
    mut body: BoxBody,
    mut on_upgrade: Option<super::upgrade::Pending>,
    start_time: SystemTime,
    outcome: &mut Outcome,
) -> Response<BoxBody> {
    let connect = parts.method == http::Method::CONNECT;
    let websocket = on_upgrade.is_some() && !connect;
    // The route table reads `:scheme` from the URI or a sanitised x-forwarded-proto, so the connection
    // manager's header policy runs first, as in Envoy.
    if rt.cfg.normalize_path || rt.cfg.merge_slashes {
        if let Some(path) = super::normalize::normalize(
            parts.uri.path(),
            rt.cfg.normalize_path,
            rt.cfg.merge_slashes,
        ) {
            let target = match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            match target.parse::<Uri>() {
                Ok(u) => parts.uri = u,
                Err(_) => return local_reply::response(LocalReason::BadRequest),
            }
        }
    }
    // The table this request routes with, to its end, whatever RDS delivers meanwhile.
    let routes = rt.cfg.routes.current();
    let internal_only = routes.internal_only_headers();
    outcome.remote_from_xff = headers::prepare_request(
        &mut parts.headers,
        down.info.peer.ip(),
        down.info.scheme,
        &rt.cfg,
        internal_only,
    )
    .map(|ip| std::net::SocketAddr::new(ip, 0));
    headers::forward_client_cert(
        &mut parts.headers,
        down.info.tls.as_deref(),
        rt.cfg.forward_client_cert,
        rt.cfg.client_cert_details,
    );
    if outcome.log_wanted {
        outcome.log_headers = Some(parts.headers.clone());
    }
    let mut selected = routes.select(&parts);
    // Envoy resolves a weighted cluster with the route, so filters see its per-filter config.
    let mut picked = pick_cluster(selected.as_ref(), &parts.headers);
    if !rt.filters.is_empty() {
        let mut route_changed = false;
        let conn = super::filter::Request {
            parts: None,
            peer: down.info.peer,
            remote: outcome
                .remote_from_xff
                .map_or(down.info.peer.ip(), |a| a.ip()),
            local: down.info.local,
            tls: down.info.tls.as_deref(),
            requested_server_name: down.info.requested_server_name.as_deref(),
            filter_state: Some(&down.info.filter_state),
        };
        let stopped = rt
            .filters
            .decode(
                selected.as_ref(),
                picked.as_ref(),
                &conn,
                super::filter::Stream {
                    parts: &mut parts,
                    body: &mut body,
                    scheme: down.info.scheme,
                    route_changed: &mut route_changed,
                    filter_state: &mut outcome.filter_state,
                },
                &mut outcome.flags,
                &mut outcome.respond_headers,
            )
            .await;
        if let Some((resp, details)) = stopped {
            outcome.details = details;
            return resp;
        }
        if route_changed {
            selected = routes.select(&parts);
            picked = pick_cluster(selected.as_ref(), &parts.headers);
        }
    }
    let Some(selected) = selected else {
        if connect && !rt.cfg.connect {
            // Envoy refuses the upgrade before it looks for a route.
            rt.stats.rq_ws_on_non_ws_route.inc();
            outcome.details = "upgrade_failed";
            return local_reply::response(LocalReason::WebSocketNotAllowed);
        }
        rt.stats.no_route.inc();
        outcome.flags = LocalReason::NoRoute.flag();
        outcome.details = "route_not_found";
        return local_reply::response(LocalReason::NoRoute);
    };
    outcome.route_name = Some(selected.route.name().to_string()).filter(|n| !n.is_empty());
    let vars = HeaderVars {
        downstream_remote: Some(down.info.peer),
        downstream_local: Some(down.info.local),
        upstream_remote: None,
        protocol: Some(parts.version),
        start_time: Some(start_time),
        request_headers: None,
    };
    match selected.route.action() {
        // Local answers: the request headers are unchanged, so `%REQ()%` reads them in place.
        Action::DirectResponse(direct) => {
            let vars = HeaderVars {
                request_headers: Some(&parts.headers),
                ..vars
            };
            rt.stats.rq_direct_response.inc();
            outcome.details = "direct_response";
            let mut resp = direct.response(&parts);
            selected.apply_response_headers(None, resp.headers_mut(), &vars);
            resp
        }
        Action::Redirect(redirect) => {
            let vars = HeaderVars {
                request_headers: Some(&parts.headers),
                ..vars
            };
            rt.stats.rq_redirect.inc();
            outcome.details = "direct_response";
            let mut resp = redirect.response(&parts);
            selected.apply_response_headers(None, resp.headers_mut(), &vars);
            resp
        }
        Action::Forward(fwd) => {
            let upgrade_allowed =
                fwd.upgrade_override("websocket").unwrap_or(true) && rt.cfg.websocket;
            let connect_allowed = fwd.upgrade_override("connect").unwrap_or(rt.cfg.connect);
            if (websocket && !upgrade_allowed) || (connect && !connect_allowed) {
                rt.stats.rq_ws_on_non_ws_route.inc();
                outcome.details = "upgrade_failed";
                return local_reply::response(LocalReason::WebSocketNotAllowed);
            }
            let cluster = picked.as_ref().and_then(|p| {
                outcome.cluster = Some(p.cluster.to_string());
                rt.clusters.get(&p.cluster)
            });
            let Some(cluster) = cluster else {
                rt.stats.no_cluster.inc();
                outcome.flags = LocalReason::NoCluster.flag();
                outcome.details = "cluster_not_found";
                let vars = HeaderVars {
                    request_headers: Some(&parts.headers),
                    ..vars
                };
                let mut resp =
                    local_reply::text_response(fwd.cluster_not_found_status(), String::new());
                selected.apply_response_headers(picked.as_ref(), resp.headers_mut(), &vars);
                return resp;
            };
            let terminate = match fwd.connect_config() {
                Some(_) if connect => on_upgrade.take().map(connect::Tunnel::Upgrade),
                Some(c) if c.allow_post && parts.method == http::Method::POST => Some(
                    connect::Tunnel::Body(std::mem::replace(&mut body, super::body::empty())),
                ),
                _ => None,
            };
            if let Some(tunnel) = terminate {
                let original_dst = outcome
                    .filter_state
                    .original_dst_address()
                    .unwrap_or(down.info.local);
                let mut resp = connect::terminate(
                    rt,
                    down,
                    &cluster,
                    original_dst,
                    outcome.filter_state.clone(),
                    tunnel,
                    outcome,
                )
                .await;
                selected.apply_response_headers(picked.as_ref(), resp.headers_mut(), &vars);
                return resp;
            }
            // grpc_stats sees the path before the route rewrites it, as Envoy's filter does.
            let grpc = rt
                .filters
                .grpc_stats(Some(&selected), picked.as_ref())
                .and_then(|g| g.start(&parts.headers, parts.uri.path(), &cluster.stats().scope));
            let body = match &grpc {
                Some(call) => call.request_body(body),
                None => body,
            };
            // `%REQ()%` in response headers reads the request as it arrived; keep a copy only when a
            // response mutation asks for it, not on every request.
            let original = selected
                .response_reads_request_headers(picked.as_ref())
                .then(|| parts.headers.clone());
            let mut vars = HeaderVars {
                request_headers: original.as_ref(),
                ..vars
            };
            selected.apply_request_headers(picked.as_ref(), &mut parts.headers, &vars);
            fwd.rewrite(&mut parts, picked.as_ref(), &vars, true);
            if outcome.log_wanted {
                outcome.log_headers = Some(parts.headers.clone());
            }
            headers::strip_hop_by_hop(&mut parts.headers, websocket);
            if cluster.spec().original_dst.is_some() {
                // ORIGINAL_DST: the host is where the downstream connection was going.
                parts
                    .extensions
                    .insert(crate::upstream::original_dst::OriginalDestination(
                        outcome
                            .filter_state
                            .original_dst_address()
                            .unwrap_or(down.info.local),
                    ));
            }
            let attempts = AttemptCount {
                request: selected.vhost.include_request_attempt_count(),
                response: selected.vhost.include_attempt_count_in_response(),
            };
            let forwarded =
                forward::forward(rt, &cluster, fwd, attempts, parts, body, outcome).await;
            let mut resp = match forwarded {
                Forwarded::Response {
                    mut response,
                    upstream,
                } => {
                    outcome.from_upstream = true;
                    outcome.details = "via_upstream";
                    vars.upstream_remote = Some(upstream);
                    let upgraded = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
                    headers::strip_hop_by_hop(response.headers_mut(), upgraded);
                    response
                }
                Forwarded::Local(reason) => local_reply::response(reason),
                Forwarded::Failed { error, retried } => {
                    let mut text = error.local_reply_body();
                    if retried {
                        text = text.replacen(
                            "reset reason:",
                            "retried and the latest reset reason:",
                            1,
                        );
                    }
                    let mut resp = local_reply::text_response(error.status(), text);
                    if error.is_overflow() {
                        resp.headers_mut().insert(
                            headers::X_ENVOY_OVERLOADED.clone(),
                            http::HeaderValue::from_static("true"),
                        );
                    }
                    resp
                }
            };
            selected.apply_response_headers(picked.as_ref(), resp.headers_mut(), &vars);
            if let Some(call) = &grpc {
                resp = call.response(resp);
            }
            if let Some(downstream) = on_upgrade {
                let upgraded = if connect {
                    resp.status().is_success()
                } else {
                    resp.status() == http::StatusCode::SWITCHING_PROTOCOLS
                };
                if upgraded {
                    super::upgrade::bridge(
                        downstream,
                        down,
                        hyper::upgrade::on(&mut resp),
                        rt.stats.clone(),
                    );
                }
            }
            resp
        }
    }
}
