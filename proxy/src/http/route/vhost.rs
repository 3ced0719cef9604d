//! Route virtual hosts: a set of domains, their ordered routes and the host-wide policies (TLS
//! requirement, retry policy, header mutations).

use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{
    virtual_host::TlsRequirementType, VirtualHost as VirtualHostProto,
};
use http::request::Parts;

use super::action::{mirror_policies, MirrorPolicy};
use super::build::Build;
use super::entry::{buffer_limit, Inherited, Route};
use super::filter_config::FilterConfigs;
use super::headers::HeaderMutations;
use super::request::{forwarded_proto, scheme};
use super::retry::RetryPolicy;
use crate::config::Path;

/// `require_tls` of a virtual host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRequirement {
    None,
    /// Only requests not marked `x-envoy-internal: true` must use TLS.
    ExternalOnly,
    All,
}

/// A validated virtual host.
#[derive(Debug, Clone)]
pub struct VirtualHost {
    name: String,
    routes: Vec<Route>,
    tls: TlsRequirement,
    tls_redirect: Option<Route>,
    pub(crate) request_headers: HeaderMutations,
    pub(crate) response_headers: HeaderMutations,
    pub(crate) filter_configs: FilterConfigs,
    pub(crate) buffer_limit: Option<u64>,
    include_request_attempt_count: bool,
    include_attempt_count_in_response: bool,
}

impl VirtualHost {
    #[allow(deprecated)]
    pub(crate) fn from_proto(v: &VirtualHostProto, path: &Path, b: &mut Build<'_>) -> VirtualHost {
        if v.name.is_empty() {
            b.errs.push(path.field("name"), "must not be empty");
        }
        if v.domains.is_empty() {
            b.errs
                .push(path.field("domains"), "must name at least one domain");
        }
        if v.matcher.is_some() {
            b.errs.push(
                path.field("matcher"),
                "matcher trees are not supported; use routes",
            );
        }
        if v.retry_policy_typed_config.is_some() {
            b.errs.push(
                path.field("retry_policy_typed_config"),
                "typed retry policies are not supported",
            );
        }
        if !v.route_specifiers.is_empty() {
            b.errs.push(
                path.field("route_specifiers"),
                "route specifiers are not supported",
            );
        }
        for (set, field) in [
            (!v.rate_limits.is_empty(), "rate_limits"),
            (v.cors.is_some(), "cors"),
            (v.hedge_policy.is_some(), "hedge_policy"),
        ] {
            if set {
                tracing::warn!(path = %path.field(field), "not implemented; ignored");
            }
        }
        let retry = v
            .retry_policy
            .as_ref()
            .and_then(|r| RetryPolicy::from_proto(r, &path.field("retry_policy"), &mut b.errs))
            .map(Arc::new);
        let mirrors: Vec<MirrorPolicy> = mirror_policies(
            &v.request_mirror_policies,
            &path.field("request_mirror_policies"),
            b,
        );
        let inherited = Inherited {
            retry: retry.as_ref(),
            mirrors: &mirrors,
        };
        let rpath = path.field("routes");
        let routes = v
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Route::from_proto(r, &inherited, &rpath.index(i), b))
            .collect();
        let tls = match TlsRequirementType::try_from(v.require_tls) {
            Ok(TlsRequirementType::ExternalOnly) => TlsRequirement::ExternalOnly,
            Ok(TlsRequirementType::All) => TlsRequirement::All,
            _ => TlsRequirement::None,
        };
        VirtualHost {
            name: v.name.clone(),
            routes,
            tls,
            tls_redirect: (tls != TlsRequirement::None).then(Route::tls_redirect),
            request_headers: HeaderMutations::from_proto(
                &v.request_headers_to_add,
                &v.request_headers_to_remove,
                &path.field("request_headers_to_add"),
                &path.field("request_headers_to_remove"),
                &mut b.errs,
            ),
            response_headers: HeaderMutations::from_proto(
                &v.response_headers_to_add,
                &v.response_headers_to_remove,
                &path.field("response_headers_to_add"),
                &path.field("response_headers_to_remove"),
                &mut b.errs,
            ),
            filter_configs: FilterConfigs::from_proto(
                &v.typed_per_filter_config,
                &path.field("typed_per_filter_config"),
                &b.filter_context(),
                &mut b.errs,
            ),
            buffer_limit: buffer_limit(
                v.request_body_buffer_limit,
                v.per_request_buffer_limit_bytes,
            ),
            include_request_attempt_count: v.include_request_attempt_count,
            include_attempt_count_in_response: v.include_attempt_count_in_response,
        }
    }

    /// The first route that matches, after the `require_tls` check (which, as Envoy, trusts
    /// `x-forwarded-proto` as the connection manager set it).
    pub(crate) fn route_for(&self, req: &Parts, path: &str) -> Option<&Route> {
        if let Some(r) = &self.tls_redirect {
            let proto = forwarded_proto(&req.headers).unwrap_or_else(|| scheme(req));
            let internal = req
                .headers
                .get("x-envoy-internal")
                .is_some_and(|v| v.as_bytes() == b"true");
            let plain = !proto.eq_ignore_ascii_case("https");
            if plain && (self.tls == TlsRequirement::All || !internal) {
                return Some(r);
            }
        }
        self.routes.iter().find(|r| r.matcher.matches(req, path))
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
    pub fn tls_requirement(&self) -> TlsRequirement {
        self.tls
    }
    /// `include_request_attempt_count`: send `x-envoy-attempt-count` upstream.
    pub fn include_request_attempt_count(&self) -> bool {
        self.include_request_attempt_count
    }
    /// `include_attempt_count_in_response`: send `x-envoy-attempt-count` downstream.
    pub fn include_attempt_count_in_response(&self) -> bool {
        self.include_attempt_count_in_response
    }
}
