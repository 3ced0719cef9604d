//! Route actions: forward to a cluster (with its rewrites, timeouts and retries), redirect, or answer
//! directly.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::{
    route_action::{
        ClusterNotFoundResponseCode, ClusterSpecifier as ClusterSpecifierProto, HashPolicy,
        HostRewriteSpecifier, RequestMirrorPolicy,
    },
    RouteAction,
};
use http::header::{HeaderName, HeaderValue};
use http::request::Parts;
use http::StatusCode;
use rand::Rng;

use super::build::Build;
use super::cluster::{ClusterSpecifier, Picked, Target, WeightedClusters};
use super::direct::Direct;
use super::formatter::{Formatter, HeaderVars};
use super::redirect::Redirect;
use super::request::{self, set_authority, set_path};
use super::retry::RetryPolicy;
use super::rewrite::{append_forwarded_host, HostRewrite, MatchedPath, PathRewrite};
use super::string_match::RegexRewrite;
use super::to_duration;
use crate::config::Path;

/// What a matched route does.
#[derive(Debug, Clone)]
pub enum Action {
    Forward(Box<Forward>),
    Redirect(Redirect),
    DirectResponse(Direct),
}

/// `max_stream_duration` of a route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaxStreamDuration {
    pub max_stream_duration: Option<Duration>,
    pub grpc_timeout_header_max: Option<Duration>,
    pub grpc_timeout_header_offset: Option<Duration>,
}

/// A `request_mirror_policies` entry: copies of requests go to this cluster, responses are dropped.
#[derive(Debug, Clone)]
pub struct MirrorPolicy {
    target: Target,
    /// (numerator, denominator) of requests mirrored; `None` means all.
    fraction: Option<(u64, u64)>,
    pub disable_shadow_host_suffix_append: bool,
    pub host_rewrite_literal: Option<HeaderValue>,
}

impl MirrorPolicy {
    /// The shadow cluster for this request, or `None` when it is not sampled / has no cluster.
    pub fn cluster_for<R: Rng + ?Sized>(
        &self,
        headers: &http::HeaderMap,
        rng: &mut R,
    ) -> Option<String> {
        if let Some((num, den)) = self.fraction {
            if rng.random::<u64>() % den >= num {
                return None;
            }
        }
        match &self.target {
            Target::Name(n) => Some(n.clone()),
            Target::Header(h) => headers
                .get(h)
                .map(|v| request::value_str(v).into_owned())
                .filter(|s| !s.is_empty()),
        }
    }
}

/// Forwarding to an upstream cluster.
#[derive(Debug, Clone)]
pub struct Forward {
    cluster: ClusterSpecifier,
    not_found_status: StatusCode,
    matched: MatchedPath,
    path_rewrite: Option<PathRewrite>,
    host_rewrite: Option<HostRewrite>,
    auto_host_rewrite: bool,
    append_x_forwarded_host: bool,
    timeout: Duration,
    idle_timeout: Option<Duration>,
    retry_policy: Option<Arc<RetryPolicy>>,
    upgrades: Vec<(String, bool)>,
    connect: Option<ConnectConfig>,
    max_stream_duration: MaxStreamDuration,
    mirrors: Vec<MirrorPolicy>,
    hash_policy: Vec<HashPolicy>,
}

/// `upgrade_configs[].connect_config` of a CONNECT upgrade: terminate the CONNECT here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectConfig {
    /// POST requests are terminated too (their body is the TCP stream).
    pub allow_post: bool,
}

fn connect_config(ra: &RouteAction, path: &Path, b: &mut Build<'_>) -> Option<ConnectConfig> {
    let mut out = None;
    for (i, u) in ra.upgrade_configs.iter().enumerate() {
        let Some(c) = &u.connect_config else { continue };
        let p = path
            .field("upgrade_configs")
            .index(i)
            .field("connect_config");
        if !u.upgrade_type.eq_ignore_ascii_case("connect") {
            b.errs.push(
                p,
                "connect_config is only valid for the CONNECT upgrade type",
            );
            continue;
        }
        if c.proxy_protocol_config.is_some() {
            b.errs
                .push(p.field("proxy_protocol_config"), "not supported yet");
        }
        if u.enabled.map(|e| e.value).unwrap_or(true) {
            out = Some(ConnectConfig {
                allow_post: c.allow_post,
            });
        }
    }
    out
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

impl Forward {
    pub(crate) fn from_proto(
        ra: &RouteAction,
        matched: MatchedPath,
        vhost_retry: Option<&Arc<RetryPolicy>>,
        vhost_mirrors: &[MirrorPolicy],
        path: &Path,
        b: &mut Build<'_>,
    ) -> Option<Forward> {
        let cluster = match &ra.cluster_specifier {
            Some(ClusterSpecifierProto::Cluster(c)) if !c.is_empty() => {
                b.check_cluster(c, &path.field("cluster"));
                Some(ClusterSpecifier::Name(c.clone()))
            }
            Some(ClusterSpecifierProto::ClusterHeader(h)) if !h.is_empty() => b
                .header_name(h, &path.field("cluster_header"))
                .map(ClusterSpecifier::Header),
            Some(ClusterSpecifierProto::WeightedClusters(w)) => {
                let wpath = path.field("weighted_clusters");
                for (i, c) in w.clusters.iter().enumerate() {
                    if !c.name.is_empty() {
                        b.check_cluster(&c.name, &wpath.field("clusters").index(i).field("name"));
                    }
                }
                WeightedClusters::from_proto(w, &wpath, &b.filter_context(), &mut b.errs)
                    .map(ClusterSpecifier::Weighted)
            }
            Some(ClusterSpecifierProto::ClusterSpecifierPlugin(_)) => {
                b.errs.push(
                    path.field("cluster_specifier_plugin"),
                    "cluster specifier plugins are not supported",
                );
                None
            }
            Some(ClusterSpecifierProto::InlineClusterSpecifierPlugin(_)) => {
                b.errs.push(
                    path.field("inline_cluster_specifier_plugin"),
                    "cluster specifier plugins are not supported",
                );
                None
            }
            _ => {
                b.errs.push(
                    path,
                    "one of cluster, cluster_header or weighted_clusters is required",
                );
                None
            }
        };
        let not_found_status =
            match ClusterNotFoundResponseCode::try_from(ra.cluster_not_found_response_code) {
                Ok(ClusterNotFoundResponseCode::NotFound) => StatusCode::NOT_FOUND,
                Ok(ClusterNotFoundResponseCode::InternalServerError) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
        let path_rewrite = path_rewrite(ra, path, b);
        let (host_rewrite, auto_host_rewrite) = host_rewrite(ra, path, b);
        b.unsupported_route_action(ra, path);
        let timeout = to_duration(ra.timeout.as_ref(), &path.field("timeout"), &mut b.errs)
            .unwrap_or(DEFAULT_TIMEOUT);
        let idle_timeout = to_duration(
            ra.idle_timeout.as_ref(),
            &path.field("idle_timeout"),
            &mut b.errs,
        );
        let retry_policy = match &ra.retry_policy {
            Some(rp) => {
                RetryPolicy::from_proto(rp, &path.field("retry_policy"), &mut b.errs).map(Arc::new)
            }
            None => vhost_retry.cloned(),
        };
        let upgrades = ra
            .upgrade_configs
            .iter()
            .map(|u| {
                (
                    u.upgrade_type.to_ascii_lowercase(),
                    u.enabled.map(|e| e.value).unwrap_or(true),
                )
            })
            .collect();
        let connect = connect_config(ra, path, b);
        let msd = ra.max_stream_duration.as_ref().map(|m| {
            let p = path.field("max_stream_duration");
            MaxStreamDuration {
                max_stream_duration: to_duration(
                    m.max_stream_duration.as_ref(),
                    &p.field("max_stream_duration"),
                    &mut b.errs,
                ),
                grpc_timeout_header_max: to_duration(
                    m.grpc_timeout_header_max.as_ref(),
                    &p.field("grpc_timeout_header_max"),
                    &mut b.errs,
                ),
                grpc_timeout_header_offset: to_duration(
                    m.grpc_timeout_header_offset.as_ref(),
                    &p.field("grpc_timeout_header_offset"),
                    &mut b.errs,
                ),
            }
        });
        let mirrors = if ra.request_mirror_policies.is_empty() {
            vhost_mirrors.to_vec()
        } else {
            mirror_policies(
                &ra.request_mirror_policies,
                &path.field("request_mirror_policies"),
                b,
            )
        };
        Some(Forward {
            cluster: cluster?,
            not_found_status,
            matched,
            path_rewrite,
            host_rewrite,
            auto_host_rewrite,
            append_x_forwarded_host: ra.append_x_forwarded_host,
            timeout,
            idle_timeout,
            retry_policy,
            upgrades,
            connect,
            max_stream_duration: msd.unwrap_or_default(),
            mirrors,
            hash_policy: ra.hash_policy.clone(),
        })
    }

    /// Picks the upstream cluster: fixed, from a request header, or by weight. `None` when the
    /// header naming it is absent or empty: answer [`Forward::cluster_not_found_status`].
    pub fn pick_cluster<'a, R: Rng + ?Sized>(
        &'a self,
        headers: &http::HeaderMap,
        rng: &mut R,
    ) -> Option<Picked<'a>> {
        self.cluster.pick(headers, rng)
    }

    /// The status for a missing or unknown cluster (`cluster_not_found_response_code`, 503 by default).
    pub fn cluster_not_found_status(&self) -> StatusCode {
        self.not_found_status
    }

    /// Applies the host and path rewrites, in Envoy's order. With `envoy_headers` (Envoy's default,
    /// off when the router has `suppress_envoy_headers`) a rewritten request carries
    /// `x-envoy-original-host` / `x-envoy-original-path`. Header mutations are separate
    /// (`Selected::apply_request_headers`, which Envoy runs first).
    pub fn rewrite(
        &self,
        parts: &mut Parts,
        picked: Option<&Picked<'_>>,
        vars: &HeaderVars<'_>,
        envoy_headers: bool,
    ) {
        let original_host = request::authority(parts).map(str::to_string);
        let mut new_host = picked
            .and_then(|p| p.weighted)
            .and_then(|w| w.host_rewrite_literal.clone());
        if let Some(h) = self
            .host_rewrite
            .as_ref()
            .and_then(|h| h.new_host(parts, vars))
        {
            new_host = Some(h);
        }
        if let Some(h) = new_host {
            if let Some(orig) = original_host.as_deref() {
                if self.append_x_forwarded_host {
                    append_forwarded_host(&mut parts.headers, orig);
                }
                if envoy_headers {
                    if let Ok(v) = HeaderValue::try_from(orig) {
                        parts
                            .headers
                            .insert(HeaderName::from_static("x-envoy-original-host"), v);
                    }
                }
            }
            set_authority(parts, &h);
        }
        if let Some(rw) = &self.path_rewrite {
            let current = request::path_and_query(parts).to_string();
            // As Envoy: a rewrite that yields nothing leaves the path and adds no header.
            let Some(new) = rw.apply(&self.matched, &current, &parts.headers, vars) else {
                return;
            };
            if set_path(parts, &new) {
                if envoy_headers {
                    if let Ok(v) = HeaderValue::try_from(current.as_str()) {
                        parts
                            .headers
                            .insert(HeaderName::from_static("x-envoy-original-path"), v);
                    }
                }
            } else {
                tracing::debug!(path = %new, "rewritten path is not a valid URI path; kept the original");
            }
        }
    }

    /// Sets `:authority` to the upstream endpoint's hostname when `auto_host_rewrite` is on.
    pub fn apply_auto_host_rewrite(&self, parts: &mut Parts, endpoint_hostname: &str) {
        if !self.auto_host_rewrite || endpoint_hostname.is_empty() {
            return;
        }
        let Ok(v) = HeaderValue::try_from(endpoint_hostname) else {
            return;
        };
        if self.append_x_forwarded_host {
            if let Some(orig) = request::authority(parts).map(str::to_string) {
                append_forwarded_host(&mut parts.headers, &orig);
            }
        }
        set_authority(parts, &v);
    }

    pub fn auto_host_rewrite(&self) -> bool {
        self.auto_host_rewrite
    }
    pub fn append_x_forwarded_host(&self) -> bool {
        self.append_x_forwarded_host
    }
    /// The whole-request timeout; `None` when configured as 0 (disabled). Defaults to 15 s.
    pub fn timeout(&self) -> Option<Duration> {
        (!self.timeout.is_zero()).then_some(self.timeout)
    }
    /// The route's stream idle timeout override: `Some(ZERO)` disables it, `None` keeps the
    /// connection manager's.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }
    /// The route's retry policy, or the virtual host's when the route has none.
    pub fn retry_policy(&self) -> Option<&RetryPolicy> {
        self.retry_policy.as_deref()
    }
    /// Per-route upgrade override (`websocket`, `CONNECT`, ...): `Some(enabled)` when configured;
    /// `None` leaves the connection manager's setting. Case-insensitive.
    pub fn upgrade_override(&self, upgrade_type: &str) -> Option<bool> {
        self.upgrades
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(upgrade_type))
            .map(|(_, e)| *e)
    }
    /// The route's `connect_config`: CONNECT (and with `allow_post`, POST) requests end here and
    /// their stream becomes a TCP connection to the cluster.
    pub fn connect_config(&self) -> Option<ConnectConfig> {
        self.connect
    }
    pub fn max_stream_duration(&self) -> MaxStreamDuration {
        self.max_stream_duration
    }
    pub fn mirror_policies(&self) -> &[MirrorPolicy] {
        &self.mirrors
    }
    /// The raw `hash_policy` list, for a hashing load balancer.
    pub fn hash_policy(&self) -> &[HashPolicy] {
        &self.hash_policy
    }
}

fn path_rewrite(ra: &RouteAction, path: &Path, b: &mut Build<'_>) -> Option<PathRewrite> {
    let set = [
        !ra.prefix_rewrite.is_empty(),
        ra.regex_rewrite.is_some(),
        !ra.path_rewrite.is_empty(),
        ra.path_rewrite_policy.is_some(),
    ];
    if set.iter().filter(|s| **s).count() > 1 {
        b.errs.push(path, "only one of prefix_rewrite, regex_rewrite, path_rewrite or path_rewrite_policy may be set");
        return None;
    }
    if !ra.path_rewrite.is_empty() {
        return match Formatter::parse(&ra.path_rewrite) {
            Ok(f) => Some(PathRewrite::Template(f)),
            Err(e) => {
                b.errs.push(path.field("path_rewrite"), e);
                None
            }
        };
    }
    if ra.path_rewrite_policy.is_some() {
        b.errs.push(
            path.field("path_rewrite_policy"),
            "path rewrite policies are not supported",
        );
    }
    if !ra.prefix_rewrite.is_empty() {
        return Some(PathRewrite::Prefix(ra.prefix_rewrite.clone()));
    }
    let r = ra.regex_rewrite.as_ref()?;
    RegexRewrite::from_proto(r, &path.field("regex_rewrite"), &mut b.errs).map(PathRewrite::Regex)
}

fn host_rewrite(ra: &RouteAction, path: &Path, b: &mut Build<'_>) -> (Option<HostRewrite>, bool) {
    match &ra.host_rewrite_specifier {
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => {
            let p = path.field("host_rewrite_literal");
            match HeaderValue::try_from(h.as_str()) {
                Ok(v) if !h.is_empty() => (Some(HostRewrite::Literal(v)), false),
                _ => {
                    b.errs.push(&p, format!("invalid host '{h}'"));
                    (None, false)
                }
            }
        }
        Some(HostRewriteSpecifier::AutoHostRewrite(v)) => (None, v.value),
        Some(HostRewriteSpecifier::HostRewriteHeader(h)) => (
            b.header_name(h, &path.field("host_rewrite_header"))
                .map(HostRewrite::Header),
            false,
        ),
        Some(HostRewriteSpecifier::HostRewritePathRegex(r)) => (
            RegexRewrite::from_proto(r, &path.field("host_rewrite_path_regex"), &mut b.errs)
                .map(HostRewrite::PathRegex),
            false,
        ),
        Some(HostRewriteSpecifier::HostRewrite(t)) => match Formatter::parse(t) {
            Ok(f) => (Some(HostRewrite::Template(f)), false),
            Err(e) => {
                b.errs.push(path.field("host_rewrite"), e);
                (None, false)
            }
        },
        None => (None, false),
    }
}

pub(crate) fn mirror_policies(
    list: &[RequestMirrorPolicy],
    path: &Path,
    b: &mut Build<'_>,
) -> Vec<MirrorPolicy> {
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let p = path.index(i);
        let target = match (m.cluster.is_empty(), m.cluster_header.is_empty()) {
            (false, true) => {
                b.check_cluster(&m.cluster, &p.field("cluster"));
                Target::Name(m.cluster.clone())
            }
            (true, false) => match b.header_name(&m.cluster_header, &p.field("cluster_header")) {
                Some(h) => Target::Header(h),
                None => continue,
            },
            _ => {
                b.errs
                    .push(&p, "exactly one of cluster or cluster_header is required");
                continue;
            }
        };
        if !m.request_headers_mutations.is_empty() {
            b.errs.push(
                p.field("request_headers_mutations"),
                "mirror header mutations are not supported",
            );
        }
        let host_rewrite_literal = if m.host_rewrite_literal.is_empty() {
            None
        } else {
            match HeaderValue::try_from(m.host_rewrite_literal.as_str()) {
                Ok(v) => Some(v),
                Err(_) => {
                    b.errs.push(p.field("host_rewrite_literal"), "invalid host");
                    None
                }
            }
        };
        out.push(MirrorPolicy {
            target,
            fraction: m
                .runtime_fraction
                .as_ref()
                .and_then(super::matcher::runtime_fraction),
            disable_shadow_host_suffix_append: m.disable_shadow_host_suffix_append,
            host_rewrite_literal,
        });
    }
    out
}
