//! Forward: send the request to the picked cluster with the route's timeout and retry policy, and turn
//! upstream failures into Envoy's local replies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::body::{self, BoxBody};
use super::headers::{
    X_ENVOY_ATTEMPT_COUNT, X_ENVOY_EXPECTED_RQ_TIMEOUT_MS, X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS,
    X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS, X_ENVOY_UPSTREAM_SERVICE_TIME,
};
use super::local_reply::LocalReason;
use super::proxy::{HttpRuntime, Outcome};
use super::route::{Forward, RetryPolicy};
use crate::upstream::{Cluster, SendContext, UpstreamError};

/// Requests larger than this are streamed once and never retried (Envoy's default buffer limit).
const RETRY_BUFFER_LIMIT: u64 = 1024 * 1024;

/// The result of forwarding: an upstream response, or the reason for a local reply.
pub enum Forwarded {
    Response {
        response: Response<BoxBody>,
        upstream: SocketAddr,
    },
    Local(LocalReason),
    /// The last attempt failed before a response; `retried` when it was not the first.
    Failed {
        error: UpstreamError,
        retried: bool,
    },
}

enum Attempt {
    Sent(crate::upstream::Sent),
    Failed(UpstreamError),
    PerTryTimeout,
    GlobalTimeout,
}

fn rebuild(parts: &http::request::Parts, body: BoxBody) -> Request<BoxBody> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    if let Some(d) = parts
        .extensions
        .get::<crate::upstream::original_dst::OriginalDestination>()
    {
        req.extensions_mut().insert(*d);
    }
    req
}

/// The virtual host's `x-envoy-attempt-count` options.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptCount {
    pub request: bool,
    pub response: bool,
}

/// A timeout in milliseconds from a request header the router consumes.
fn header_ms(headers: &mut http::HeaderMap, name: &HeaderName) -> Option<Duration> {
    let v = headers.remove(name)?;
    v.to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_millis)
}

/// Sends the request, retrying as the route's policy allows.
pub async fn forward(
    rt: &HttpRuntime,
    cluster: &Arc<Cluster>,
    fwd: &Forward,
    attempt_count: AttemptCount,
    mut parts: http::request::Parts,
    body: BoxBody,
    outcome: &mut Outcome,
) -> Forwarded {
    let cstats = rt.cluster_stats.get(cluster.name());
    let policy = RetryPolicy::with_request_headers(fwd.retry_policy(), &parts.headers);
    let policy = policy.as_deref();
    // The connection manager already stripped these from edge requests; what is left is trusted.
    let timeout = match header_ms(&mut parts.headers, &X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS) {
        Some(t) => Some(t).filter(|t| !t.is_zero()),
        None => fwd.timeout(),
    };
    let per_try = header_ms(&mut parts.headers, &X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS)
        .filter(|t| !t.is_zero())
        .or_else(|| policy.and_then(|p| p.per_try_timeout()));

    // A retry needs the body again: keep small bodies; stream large or unknown ones once.
    let mut once = Some(body);
    let replay: Option<Bytes> = match (&policy, once.as_ref()) {
        (Some(_), Some(b)) if b.is_end_stream() => Some(Bytes::new()),
        (Some(_), Some(b))
            if b.size_hint()
                .upper()
                .is_some_and(|u| u <= RETRY_BUFFER_LIMIT) =>
        {
            match once.take().map(|b| b.collect()) {
                Some(collect) => match collect.await {
                    Ok(c) => Some(c.to_bytes()),
                    Err(_) => return Forwarded::Local(LocalReason::BadRequest),
                },
                None => None,
            }
        }
        _ => None,
    };
    if let Some(b) = &replay {
        if !b.is_empty() {
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(b.len()));
        }
    }

    let started = Instant::now();
    let deadline = timeout.map(|t| started + t);
    let ctx = SendContext {
        downstream_version: Some(parts.version),
        auto_host_rewrite: fwd.auto_host_rewrite(),
        append_x_forwarded_host: fwd.append_x_forwarded_host(),
        alpn: rt.cfg.istio.alpn.clone(),
        // Only what may go upstream (nothing, and no allocation, for most requests).
        filter_state: outcome.filter_state.shared_with_upstream(),
    };
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        outcome.attempts = attempt;
        let remaining = if attempt == 1 {
            timeout
        } else {
            deadline.map(|d| d.saturating_duration_since(Instant::now()))
        };
        let expected = match (per_try, remaining) {
            (Some(p), Some(r)) => Some(p.min(r)),
            (p, r) => p.or(r),
        };
        if let Some(t) = expected {
            parts.headers.insert(
                &X_ENVOY_EXPECTED_RQ_TIMEOUT_MS,
                HeaderValue::from(t.as_millis() as u64),
            );
        }
        if attempt_count.request {
            parts
                .headers
                .insert(&X_ENVOY_ATTEMPT_COUNT, HeaderValue::from(attempt));
        }
        let req_body = match &replay {
            Some(b) if b.is_empty() => body::empty(),
            Some(b) => body::full(b.clone()),
            None => once.take().unwrap_or_else(body::empty),
        };
        let req = rebuild(&parts, req_body);
        let limit = match (per_try, remaining) {
            (Some(p), Some(r)) => Some((p.min(r), p < r)),
            (Some(p), None) => Some((p, true)),
            (None, Some(r)) => Some((r, false)),
            (None, None) => None,
        };
        let result = match limit {
            Some((d, is_per_try)) => match tokio::time::timeout(d, cluster.send(req, &ctx)).await {
                Ok(Ok(sent)) => Attempt::Sent(sent),
                Ok(Err(e)) => Attempt::Failed(e),
                Err(_) if is_per_try => Attempt::PerTryTimeout,
                Err(_) => Attempt::GlobalTimeout,
            },
            None => match cluster.send(req, &ctx).await {
                Ok(sent) => Attempt::Sent(sent),
                Err(e) => Attempt::Failed(e),
            },
        };
        let retries_left = policy.is_some_and(|p| attempt <= p.num_retries()) && (replay.is_some());
        let retriable = match (&result, policy) {
            (Attempt::Sent(s), Some(p)) => {
                p.should_retry_response(s.response.status().as_u16(), s.response.headers())
            }
            (Attempt::Failed(e), Some(p)) => {
                if e.is_retryable_connect_failure() {
                    p.should_retry_connect_failure()
                } else if e.is_reset() {
                    p.should_retry_reset()
                } else {
                    false
                }
            }
            (Attempt::PerTryTimeout, Some(p)) => p.should_retry_timeout(),
            _ => false,
        };
        if retriable && retries_left {
            if let (Some(p), Some(guard)) = (policy, cluster.try_retry()) {
                let backoff = p.backoff(attempt, &mut rand::rng());
                let fits = deadline.is_none_or(|d| Instant::now() + backoff < d);
                if fits {
                    if let Attempt::PerTryTimeout = result {
                        cstats.rq_per_try_timeout.inc();
                    }
                    cstats.rq_retry.inc();
                    rt.stats.rq_retry.inc();
                    drop(result);
                    tokio::time::sleep(backoff).await;
                    drop(guard);
                    continue;
                }
            }
        } else if retriable && policy.is_some() {
            cstats.rq_retry_limit_exceeded.inc();
            outcome.flags = "URX";
        }
        return match result {
            Attempt::Sent(sent) => {
                if attempt > 1 {
                    cstats.rq_retry_success.inc();
                }
                let status = sent.response.status().as_u16();
                cstats.response(status);
                outcome.upstream_host = Some(sent.upstream);
                outcome.upstream_local = sent.facts.local;
                outcome.upstream_internal = sent.host.internal.as_ref().map(|t| t.uri.clone());
                outcome.upstream_tls = sent.facts.tls.clone();
                outcome.upstream_transport_failure_reason = None;
                let mut response = sent.response.map(|b| b.map_err(Into::into).boxed());
                let ms = started.elapsed().as_millis() as u64;
                response
                    .headers_mut()
                    .insert(&X_ENVOY_UPSTREAM_SERVICE_TIME, HeaderValue::from(ms));
                if attempt_count.response {
                    response
                        .headers_mut()
                        .insert(&X_ENVOY_ATTEMPT_COUNT, HeaderValue::from(attempt));
                }
                Forwarded::Response {
                    response,
                    upstream: sent.upstream,
                }
            }
            Attempt::Failed(e) => {
                tracing::debug!(cluster = cluster.name(), error = %e, "upstream request failed");
                if outcome.flags.is_empty() {
                    outcome.flags = e.response_flag();
                }
                outcome.upstream_host = e.endpoint();
                outcome.upstream_local = None;
                outcome.upstream_transport_failure_reason = e.transport_failure_reason();
                outcome.details = "upstream_reset_before_response_started";
                cstats.response(e.status().as_u16());
                Forwarded::Failed {
                    error: e,
                    retried: attempt > 1,
                }
            }
            Attempt::PerTryTimeout | Attempt::GlobalTimeout => {
                cstats.rq_timeout.inc();
                if matches!(result, Attempt::PerTryTimeout) {
                    cstats.rq_per_try_timeout.inc();
                }
                rt.stats.rq_timeout.inc();
                outcome.flags = "UT";
                outcome.details = "upstream_response_timeout";
                cstats.response(504);
                Forwarded::Local(LocalReason::Timeout)
            }
        };
    }
}
