//! `envoy.filters.http.ext_authz`: ask an external service whether a request may go on (Istio's
//! AuthorizationPolicy `CUSTOM` action), before the router.
//!
//! The check goes to a gRPC service (`envoy.service.auth.v3.Authorization/Check`) or an HTTP
//! service through the cluster manager, so the service cluster's endpoints, protocol and TLS apply.
//! An allowed request goes on with the service's header changes; a denied one gets the service's
//! reply (403 by default); a failed check gets `status_on_error` (403) unless
//! `failure_mode_allow`. A route's `ExtAuthzPerRoute` disables the check or adds context
//! extensions; `filter_enabled_metadata` skips requests by the dynamic metadata earlier filters
//! left (the RBAC shadow verdict, for Istio's CUSTOM action). Stats: `http.<stat_prefix>.ext_authz.[<filter stat_prefix>.]ok|denied|error|
//! disabled|failure_mode_allowed`.

pub mod attributes;
pub mod buffer;
pub mod config;
pub mod decision;
pub mod enabled;
pub mod grpc;
pub mod http_service;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::Body as _;

use crate::http::body::BoxBody;
use crate::http::filter::{DynamicMetadata, Request};
use crate::http::local_reply;
use crate::http::stats::ClusterHttpStats;
use crate::stats::{Counter, Store};
use crate::upstream::ClusterManager;
pub use config::{ExtAuthzConfig, RouteSettings, Service};
use decision::{apply_all, Decision, Reply};

pub const TYPE: &str = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
pub const PER_ROUTE_TYPE: &str = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";
const FAILURE_MODE_ALLOWED_HEADER: &str = "x-envoy-auth-failure-mode-allowed";
pub const DENIED_DETAILS: &str = "ext_authz_denied";
pub const ERROR_DETAILS: &str = "ext_authz_error";
/// The headers Envoy's internal HTTP client puts on the check: the request comes from the proxy
/// itself, and the time it has.
pub(crate) fn envoy_headers(h: &mut HeaderMap, timeout: std::time::Duration) {
    h.insert("x-envoy-internal", HeaderValue::from_static("true"));
    h.insert(
        "x-envoy-expected-rq-timeout-ms",
        HeaderValue::from(timeout.as_millis() as u64),
    );
}

/// Envoy's response flag for a request the filter stopped.
pub const FLAG: &str = "UAEX";

/// What the filter reaches beyond its config: the clusters it calls and the route clusters'
/// stats it charges.
#[derive(Debug, Clone)]
pub struct Shared {
    pub clusters: Arc<ClusterManager>,
    pub cluster_stats: Arc<ClusterHttpStats>,
}

/// Envoy 1.40's counters of the filter, registered up front as Envoy does; remora bumps the first
/// five.
const COUNTERS: [&str; 13] = [
    "ok",
    "denied",
    "error",
    "disabled",
    "failure_mode_allowed",
    "filter_state_name_collision",
    "ignored_dynamic_metadata",
    "invalid",
    "omitted_response_headers",
    "request_header_limits_reached",
    "response_header_limits_reached",
    "shadow_denied",
    "shadow_error",
];

/// The filter as one connection manager runs it.
#[derive(Debug)]
pub struct ExtAuthzFilter {
    cfg: Arc<ExtAuthzConfig>,
    shared: Shared,
    /// `ext_authz.[<stat_prefix>.]`, under the filter's and the route cluster's scopes.
    cluster_scope: String,
    ok: Counter,
    denied: Counter,
    error: Counter,
    failure_mode_allowed: Counter,
    disabled: Counter,
}

/// How a check ended, for the route cluster's `ext_authz.*` counters.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    Ok,
    Denied(u16),
    Error,
    FailureModeAllowed,
}

/// What the filter knows of the request besides its parts and body.
pub struct Context<'a> {
    /// The route's settings, most specific first.
    pub routes: &'a [&'a RouteSettings],
    pub conn: &'a Request<'a>,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The route's cluster, whose stats count the verdict.
    pub cluster: Option<&'a str>,
    pub meta: &'a DynamicMetadata,
}

/// A stopped request: the reply and its response-code details.
pub type Stopped = (Response<BoxBody>, &'static str);

impl ExtAuthzFilter {
    pub fn new(
        cfg: &Arc<ExtAuthzConfig>,
        shared: Shared,
        store: &Store,
        stat_prefix: &str,
    ) -> Self {
        let cluster_scope = match cfg.stat_prefix.as_str() {
            "" => "ext_authz.".to_string(),
            p => format!("ext_authz.{p}."),
        };
        let s = store.scope(format!("http.{stat_prefix}.{cluster_scope}"));
        // Registered so /stats lists them as Envoy does; remora never bumps these.
        for name in &COUNTERS[5..] {
            let _ = s.counter(name);
        }
        ExtAuthzFilter {
            cfg: cfg.clone(),
            shared,
            cluster_scope,
            ok: s.counter("ok"),
            denied: s.counter("denied"),
            error: s.counter("error"),
            disabled: s.counter("disabled"),
            failure_mode_allowed: s.counter("failure_mode_allowed"),
        }
    }

    /// Envoy counts each verdict on the route's cluster too (`cluster.<name>.ext_authz.ok`, with
    /// the filter's stat_prefix after `ext_authz.` as for its own counters),
    /// and a denial as that cluster's response (`charge_cluster_response_stats`).
    fn charge_cluster(&self, cluster: Option<&str>, v: Verdict) {
        let Some(name) = cluster else { return };
        let stats = self.shared.cluster_stats.get(name);
        let counter = match v {
            Verdict::Ok => "ok",
            Verdict::Denied(status) => {
                if self.cfg.charge_cluster_response_stats {
                    stats.charge(status);
                }
                "denied"
            }
            Verdict::Error => "error",
            Verdict::FailureModeAllowed => "failure_mode_allowed",
        };
        stats
            .filter_counter(&format!("{}{counter}", self.cluster_scope))
            .inc();
    }

    /// Checks the request. `Some` ends the request with a local reply; `flags` gets `UAEX`
    /// then. `respond` gets headers for the client's response; `route_changed` is set when the
    /// route must be picked again (`clear_route_cache`).
    pub async fn decode(
        &self,
        cx: Context<'_>,
        parts: &mut Parts,
        body: &mut BoxBody,
        flags: &mut &'static str,
        respond: &mut Option<HeaderMap>,
        route_changed: &mut bool,
    ) -> Option<Stopped> {
        let Context {
            routes,
            conn: req,
            scheme,
            cluster,
            meta,
        } = cx;
        if routes.first().is_some_and(|r| r.disabled) {
            return None;
        }
        if !self.cfg.enabled.enabled(meta) {
            self.disabled.inc();
            if self.cfg.enabled.deny_at_disable {
                *flags = FLAG;
                let resp = self.reply(Reply::default(), self.cfg.status_on_error);
                return Some((resp, ERROR_DETAILS));
            }
            return None;
        }
        let mut context = BTreeMap::new();
        for r in routes.iter().rev() {
            context.extend(
                r.context_extensions
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        let skip_body = routes.iter().any(|r| r.disable_request_body_buffering);
        let with_body = routes
            .iter()
            .find_map(|r| r.with_request_body)
            .or(self.cfg.with_request_body);
        let buffered = match with_body {
            Some(b) if !skip_body && !body.is_end_stream() => {
                match buffer::buffer(body, b.max_request_bytes, b.allow_partial_message).await {
                    buffer::Buffered::Body(bytes) => Some(bytes),
                    buffer::Buffered::TooLarge => {
                        let resp = local_reply::text_response(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "Payload Too Large".into(),
                        );
                        return Some((resp, "request_payload_too_large"));
                    }
                    buffer::Buffered::Failed => {
                        let resp = local_reply::text_response(
                            StatusCode::BAD_REQUEST,
                            "Bad Request".into(),
                        );
                        return Some((resp, "bad_request"));
                    }
                }
            }
            Some(_) if !skip_body => Some(Bytes::new()),
            _ => None,
        };
        let service = routes
            .iter()
            .find_map(|r| r.service.as_ref())
            .unwrap_or(&self.cfg.service);
        let decision = match service {
            Service::Grpc(svc) => {
                let body = buffered.as_ref().map(|bytes| attributes::Body {
                    bytes,
                    pack_as_bytes: with_body.is_some_and(|b| b.pack_as_bytes),
                });
                let about = attributes::About {
                    conn: req,
                    scheme,
                    context_extensions: &context,
                    meta,
                };
                let check = attributes::check_request(&self.cfg, &about, parts, body);
                grpc::check(
                    &self.shared.clusters,
                    svc,
                    &check,
                    self.cfg.validate_mutations,
                )
                .await
            }
            Service::Http(svc) => {
                http_service::check(&self.shared.clusters, &self.cfg, svc, parts, buffered).await
            }
        };
        let before =
            (self.cfg.clear_route_cache).then(|| (parts.headers.clone(), parts.uri.clone()));
        let stopped = self.conclude(decision, parts, cluster, flags, respond);
        // clear_route_cache: the route is picked again when the check changed the request.
        if let Some((headers, uri)) = before {
            if stopped.is_none() && (headers != parts.headers || uri != parts.uri) {
                *route_changed = true;
            }
        }
        stopped
    }

    /// Counts the decision and applies it.
    fn conclude(
        &self,
        decision: Decision,
        parts: &mut Parts,
        cluster: Option<&str>,
        flags: &mut &'static str,
        respond: &mut Option<HeaderMap>,
    ) -> Option<Stopped> {
        match decision {
            Decision::Allow(allowed) => {
                self.ok.inc();
                self.charge_cluster(cluster, Verdict::Ok);
                allowed.apply(parts);
                if !allowed.response.is_empty() {
                    apply_all(
                        &allowed.response,
                        respond.get_or_insert_with(HeaderMap::new),
                    );
                }
                None
            }
            Decision::Deny(reply) => {
                self.denied.inc();
                *flags = FLAG;
                let resp = self.reply(reply, StatusCode::FORBIDDEN);
                self.charge_cluster(cluster, Verdict::Denied(resp.status().as_u16()));
                Some((resp, DENIED_DETAILS))
            }
            Decision::Error { why, reply } => {
                tracing::debug!(error = %why, "ext_authz check failed");
                self.error.inc();
                self.charge_cluster(cluster, Verdict::Error);
                if self.cfg.failure_mode_allow {
                    self.failure_mode_allowed.inc();
                    self.charge_cluster(cluster, Verdict::FailureModeAllowed);
                    if self.cfg.failure_mode_allow_header_add {
                        parts.headers.insert(
                            FAILURE_MODE_ALLOWED_HEADER,
                            HeaderValue::from_static("true"),
                        );
                    }
                    return None;
                }
                *flags = FLAG;
                let status = self.cfg.status_on_error;
                let reply = reply.unwrap_or_default();
                Some((self.reply(reply, status), ERROR_DETAILS))
            }
        }
    }

    fn reply(&self, reply: Reply, default: StatusCode) -> Response<BoxBody> {
        let mut body = reply.body;
        let max = self.cfg.max_denied_response_body_bytes;
        if max > 0 && body.len() > max {
            body.truncate(max);
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let mut resp = local_reply::text_response(reply.status.unwrap_or(default), text);
        // As Envoy's local reply: the service's headers first, `text/plain` only when they set no
        // content type; the framing stays the proxy's.
        let mut added = HeaderMap::new();
        apply_all(&reply.headers, &mut added);
        let headers = resp.headers_mut();
        if added.contains_key(CONTENT_TYPE) {
            headers.remove(CONTENT_TYPE);
        }
        for (k, v) in &added {
            if k != CONTENT_LENGTH && k != TRANSFER_ENCODING {
                headers.append(k, v.clone());
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests;
