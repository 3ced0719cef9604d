//! Route: pick the virtual host and route for a request and describe what to do with it.
//!
//! [`RouteTable::from_proto`] validates an Envoy `RouteConfiguration` once, reporting every error
//! with its path; the resulting table is immutable and shared across connections. Per request:
//! [`RouteTable::select`] → match the [`Route::action`]; for [`Action::Forward`],
//! [`Forward::pick_cluster`], then [`Selected::apply_request_headers`] and [`Forward::rewrite`]
//! (Envoy's order), and [`Selected::apply_response_headers`] on whatever response goes back —
//! including redirects and direct responses.
//!
//! Not implemented (rejected at config time where ignoring them would change what happens to a
//! request): VHDS, cluster specifier plugins, matcher trees, filter actions, subset
//! `metadata_match`, internal redirects, TLS-context / metadata / filter-state route matching,
//! uri-template path matching and rewriting. Rate limits, CORS policies, hedging, virtual clusters,
//! decorators and tracing only feed features remora lacks and are ignored.

mod action;
mod build;
mod cluster;
mod direct;
mod domains;
mod entry;
mod filter_config;
mod formatter;
mod headers;
mod matcher;
mod redirect;
mod request;
mod retry;
mod rewrite;
pub(crate) mod string_match;
mod vhost;

#[cfg(test)]
mod tests;

use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use http::header::{HeaderMap, HeaderName};
use http::request::Parts;

pub use action::{Action, ConnectConfig, Forward, MaxStreamDuration, MirrorPolicy};
pub use cluster::{ClusterWeight, Picked};
pub use direct::Direct;
pub use entry::Route;
pub use filter_config::FilterOverride;
pub use formatter::HeaderVars;
pub(crate) use formatter::{FormatContext, Formatter};
pub(crate) use headers::HeaderMutations;
pub(crate) use matcher::{runtime_fraction, HeaderMatcher};
pub use redirect::Redirect;
pub(crate) use request::HeaderSource;
pub use retry::{RetryOn, RetryPolicy};
pub(crate) use string_match::StringMatch;
pub use vhost::{TlsRequirement, VirtualHost};

use build::Build;
use domains::{ascii_lowercase, DomainError, DomainIndex, DomainIndexBuilder};
use filter_config::FilterConfigs;
use request::{port_start, value_str};

use crate::config::{ConfigErrors, Path};

/// What the route table needs to know about the rest of the configuration.
pub struct RouteContext<'a> {
    pub cluster_exists: &'a dyn Fn(&str) -> bool,
    /// Whether unknown clusters are errors when the route configuration does not say
    /// (`validate_clusters`): Envoy defaults to true for inline route configs, false for RDS.
    pub validate_clusters: bool,
    /// Whether remora implements the filter a per-route config type belongs to; unknown non-optional
    /// `typed_per_filter_config` entries are errors, as Envoy's are.
    pub filter_config_known: &'a dyn Fn(&str) -> bool,
}

/// A validated, immutable route table. The default one is empty: every request is 404 NR.
#[derive(Debug, Default)]
pub struct RouteTable {
    name: String,
    vhosts: Vec<VirtualHost>,
    domains: DomainIndex,
    request_headers: HeaderMutations,
    response_headers: HeaderMutations,
    most_specific_header_mutations_wins: bool,
    ignore_port_in_host_matching: bool,
    ignore_path_parameters: bool,
    vhost_header: Option<HeaderName>,
    internal_only_headers: Vec<HeaderName>,
    filter_configs: FilterConfigs,
}

/// The virtual host and route a request matched.
#[derive(Debug, Clone, Copy)]
pub struct Selected<'a> {
    table: &'a RouteTable,
    pub vhost: &'a VirtualHost,
    pub route: &'a Route,
}

const DEFAULT_MAX_DIRECT_BODY: usize = 4096;

impl RouteTable {
    /// A table without virtual hosts, named `name` (an RDS name before its first update).
    pub fn empty(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..Self::default()
        }
    }

    /// Validates `rc`; `path` is where it sits in the configuration (for error messages).
    pub fn from_proto(
        rc: &RouteConfiguration,
        path: &Path,
        ctx: &RouteContext<'_>,
    ) -> Result<RouteTable, ConfigErrors> {
        let mut b = Build {
            ctx,
            validate_clusters: rc
                .validate_clusters
                .map(|v| v.value)
                .unwrap_or(ctx.validate_clusters),
            max_direct_body: rc
                .max_direct_response_body_size_bytes
                .map(|v| v.value as usize)
                .unwrap_or(DEFAULT_MAX_DIRECT_BODY),
            errs: ConfigErrors::default(),
        };
        if rc.vhds.is_some() {
            b.errs.push(path.field("vhds"), "VHDS is not supported");
        }
        if !rc.cluster_specifier_plugins.is_empty() {
            b.errs.push(
                path.field("cluster_specifier_plugins"),
                "cluster specifier plugins are not supported",
            );
        }
        if !rc.request_mirror_policies.is_empty() {
            b.errs.push(
                path.field("request_mirror_policies"),
                "route-configuration-wide mirror policies are not supported; set them on virtual hosts or routes",
            );
        }
        if !rc.route_specifiers.is_empty() {
            b.errs.push(
                path.field("route_specifiers"),
                "route specifiers are not supported",
            );
        }
        let vpath = path.field("virtual_hosts");
        let mut domains = DomainIndexBuilder::default();
        let mut vhosts = Vec::with_capacity(rc.virtual_hosts.len());
        for (i, v) in rc.virtual_hosts.iter().enumerate() {
            let p = vpath.index(i);
            for (j, d) in v.domains.iter().enumerate() {
                let lower = d.to_ascii_lowercase();
                match domains.insert(&lower, i) {
                    Ok(()) => {}
                    Err(DomainError::Duplicate) => b.errs.push(
                        p.field("domains").index(j),
                        format!("only unique values for domains are permitted: duplicate entry of domain '{lower}'"),
                    ),
                    Err(DomainError::SecondCatchAll) => {
                        b.errs.push(p.field("domains").index(j), "only a single wildcard ('*') domain is permitted")
                    }
                }
            }
            vhosts.push(VirtualHost::from_proto(v, &p, &mut b));
        }
        let request_headers = HeaderMutations::from_proto(
            &rc.request_headers_to_add,
            &rc.request_headers_to_remove,
            &path.field("request_headers_to_add"),
            &path.field("request_headers_to_remove"),
            &mut b.errs,
        );
        let response_headers = HeaderMutations::from_proto(
            &rc.response_headers_to_add,
            &rc.response_headers_to_remove,
            &path.field("response_headers_to_add"),
            &path.field("response_headers_to_remove"),
            &mut b.errs,
        );
        let vhost_header = if rc.vhost_header.is_empty() {
            None
        } else {
            b.header_name(&rc.vhost_header, &path.field("vhost_header"))
        };
        let mut internal_only_headers = Vec::new();
        for (i, h) in rc.internal_only_headers.iter().enumerate() {
            if let Some(n) = b.header_name(h, &path.field("internal_only_headers").index(i)) {
                internal_only_headers.push(n);
            }
        }
        let filter_configs = FilterConfigs::from_proto(
            &rc.typed_per_filter_config,
            &path.field("typed_per_filter_config"),
            &b.filter_context(),
            &mut b.errs,
        );
        let table = RouteTable {
            name: rc.name.clone(),
            vhosts,
            domains: domains.build(),
            request_headers,
            response_headers,
            most_specific_header_mutations_wins: rc.most_specific_header_mutations_wins,
            ignore_port_in_host_matching: rc.ignore_port_in_host_matching,
            ignore_path_parameters: rc.ignore_path_parameters_in_path_matching,
            vhost_header,
            internal_only_headers,
            filter_configs,
        };
        b.errs.finish(table)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn virtual_hosts(&self) -> &[VirtualHost] {
        &self.vhosts
    }

    /// Headers the connection manager strips from external requests.
    pub fn internal_only_headers(&self) -> &[HeaderName] {
        &self.internal_only_headers
    }

    /// The virtual host for the request's `:authority` (or `vhost_header`), matched as Envoy does:
    /// lowercased, port included unless `ignore_port_in_host_matching` (Envoy only strips the port
    /// earlier, in the connection manager, with `strip_matching_host_port` / `strip_any_host_port`).
    pub fn virtual_host(&self, req: &Parts) -> Option<&VirtualHost> {
        let host = match &self.vhost_header {
            Some(h) => value_str(req.headers.get(h)?),
            None => request::authority(req)?.into(),
        };
        let mut host: &str = &host;
        if self.ignore_port_in_host_matching {
            if let Some(p) = port_start(host) {
                host = &host[..p];
            }
        }
        let mut buf = [0u8; 256];
        let lower = ascii_lowercase(host, &mut buf);
        self.domains.find(&lower).map(|i| &self.vhosts[i])
    }

    /// The virtual host, then its first matching route.
    pub fn select(&self, req: &Parts) -> Option<Selected<'_>> {
        let vhost = self.virtual_host(req)?;
        let mut path = request::path_and_query(req);
        if self.ignore_path_parameters {
            // As Envoy: everything from the first ';' on is ignored, query included.
            if let Some(i) = path.find(';') {
                path = &path[..i];
            }
        }
        let route = vhost.route_for(req, path)?;
        Some(Selected {
            table: self,
            vhost,
            route,
        })
    }
}

impl<'a> Selected<'a> {
    /// The mutation levels in application order. The weighted cluster's come first; then, by
    /// default, route, virtual host, route configuration, so the route configuration wins
    /// (`most_specific_header_mutations_wins` reverses the last three).
    fn levels(
        &self,
        picked: Option<&Picked<'a>>,
        response: bool,
    ) -> [Option<&'a HeaderMutations>; 4] {
        let pick = |r: &'a HeaderMutations, q: &'a HeaderMutations| if response { q } else { r };
        let w = picked
            .and_then(|p| p.weighted)
            .map(|w| pick(&w.request_headers, &w.response_headers));
        let route = pick(&self.route.request_headers, &self.route.response_headers);
        let vhost = pick(&self.vhost.request_headers, &self.vhost.response_headers);
        let table = pick(&self.table.request_headers, &self.table.response_headers);
        if self.table.most_specific_header_mutations_wins {
            [w, Some(table), Some(vhost), Some(route)]
        } else {
            [w, Some(route), Some(vhost), Some(table)]
        }
    }

    /// Request header mutations of every level, in Envoy's order.
    pub fn apply_request_headers(
        &self,
        picked: Option<&Picked<'a>>,
        headers: &mut HeaderMap,
        vars: &HeaderVars<'_>,
    ) {
        for m in self.levels(picked, false).into_iter().flatten() {
            m.apply(headers, vars, false);
        }
    }

    /// Response header mutations of every level, in Envoy's order; also for redirects and direct
    /// responses. `vars.request_headers` feeds `%REQ()%`.
    pub fn apply_response_headers(
        &self,
        picked: Option<&Picked<'a>>,
        headers: &mut HeaderMap,
        vars: &HeaderVars<'_>,
    ) {
        for m in self.levels(picked, true).into_iter().flatten() {
            m.apply(headers, vars, true);
        }
    }

    /// Whether the response header mutations read request headers, so the caller must keep a copy of
    /// them for [`HeaderVars::request_headers`] (only then: it costs a header-map clone per request).
    pub fn response_reads_request_headers(&self, picked: Option<&Picked<'a>>) -> bool {
        self.levels(picked, true)
            .into_iter()
            .flatten()
            .any(HeaderMutations::reads_request_headers)
    }

    /// The most specific `typed_per_filter_config` for `filter`: weighted cluster, route, virtual
    /// host, route configuration.
    pub fn per_filter_config(
        &self,
        filter: &str,
        picked: Option<&Picked<'a>>,
    ) -> Option<&'a FilterOverride> {
        self.filter_levels(filter, picked)
            .into_iter()
            .flatten()
            .next()
    }

    /// `filter`'s entry at each level, most specific first.
    pub(crate) fn filter_levels(
        &self,
        filter: &str,
        picked: Option<&Picked<'a>>,
    ) -> [Option<&'a FilterOverride>; 4] {
        [
            picked
                .and_then(|p| p.weighted)
                .and_then(|w| w.filter_configs.get(filter)),
            self.route.filter_configs.get(filter),
            self.vhost.filter_configs.get(filter),
            self.table.filter_configs.get(filter),
        ]
    }

    /// For the filter stage: whether the most specific level that names `filter` disables it, and
    /// the most specific validated config for it (a level that only enables or disables the filter
    /// leaves the config to the less specific ones, as Envoy's lookup does).
    pub fn filter_override(
        &self,
        filter: &str,
        picked: Option<&Picked<'a>>,
    ) -> (Option<bool>, Option<&'a crate::http::filter::PerRoute>) {
        let levels = self.filter_levels(filter, picked);
        let disabled = levels.iter().flatten().next().map(|o| o.disabled);
        let config = levels.iter().flatten().find_map(|o| o.parsed.as_ref());
        (disabled, config)
    }

    /// `request_body_buffer_limit` (or the older `per_request_buffer_limit_bytes`) of the route, else
    /// of the virtual host.
    pub fn request_body_buffer_limit(&self) -> Option<u64> {
        self.route.buffer_limit.or(self.vhost.buffer_limit)
    }
}

/// A proto duration as a `Duration`; negative values are reported.
pub(crate) fn to_duration(
    d: Option<&ProtoDuration>,
    path: &Path,
    errs: &mut ConfigErrors,
) -> Option<Duration> {
    let d = d?;
    if d.seconds < 0 || d.nanos < 0 {
        errs.push(path, "must not be negative");
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}
