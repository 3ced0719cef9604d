//! Route table construction state: the caller's context, the errors collected so far, and the checks
//! shared by every level (cluster names, header names, fields remora rejects or ignores).

use envoy_types::pb::envoy::config::route::v3::RouteAction;
use http::header::HeaderName;

use super::filter_config::FilterContext;
use super::RouteContext;
use crate::config::{ConfigErrors, Path};

pub(crate) struct Build<'a> {
    pub(crate) ctx: &'a RouteContext<'a>,
    pub(crate) validate_clusters: bool,
    pub(crate) max_direct_body: usize,
    pub(crate) errs: ConfigErrors,
}

impl<'a> Build<'a> {
    pub(crate) fn filter_context(&self) -> FilterContext<'a> {
        FilterContext {
            known: self.ctx.filter_config_known,
        }
    }

    pub(crate) fn check_cluster(&mut self, name: &str, path: &Path) {
        if self.validate_clusters && !(self.ctx.cluster_exists)(name) {
            self.errs.push(path, format!("unknown cluster '{name}'"));
        }
    }

    pub(crate) fn header_name(&mut self, name: &str, path: &Path) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
            Ok(h) if !name.is_empty() => Some(h),
            _ => {
                self.errs
                    .push(path, format!("invalid header name '{name}'"));
                None
            }
        }
    }

    /// Fields whose behaviour remora does not implement: rejected when ignoring them would change
    /// what happens to the request, logged when they only tune something remora lacks.
    #[allow(deprecated)]
    pub(crate) fn unsupported_route_action(&mut self, ra: &RouteAction, path: &Path) {
        if ra.metadata_match.is_some() {
            self.errs.push(
                path.field("metadata_match"),
                "subset load balancing (metadata_match) is not supported",
            );
        }
        if ra.retry_policy_typed_config.is_some() {
            self.errs.push(
                path.field("retry_policy_typed_config"),
                "typed retry policies are not supported",
            );
        }
        if ra.internal_redirect_policy.is_some() {
            self.errs.push(
                path.field("internal_redirect_policy"),
                "internal redirects are not supported",
            );
        }
        // HANDLE_INTERNAL_REDIRECT = 1 (deprecated field).
        if ra.internal_redirect_action == 1 {
            self.errs.push(
                path.field("internal_redirect_action"),
                "internal redirects are not supported",
            );
        }
        if ra.early_data_policy.is_some() {
            self.errs.push(
                path.field("early_data_policy"),
                "early data policies are not supported",
            );
        }
        // Harmless to ignore: they only feed filters or features remora does not have, and ignoring
        // them leaves the request's path through the proxy unchanged.
        let ignored = [
            (!ra.rate_limits.is_empty(), "rate_limits"),
            (ra.hedge_policy.is_some(), "hedge_policy"),
            (ra.cors.is_some(), "cors"),
            (ra.flush_timeout.is_some(), "flush_timeout"),
            (ra.max_grpc_timeout.is_some(), "max_grpc_timeout"),
            (ra.grpc_timeout_offset.is_some(), "grpc_timeout_offset"),
            (ra.priority != 0, "priority"),
        ];
        for (set, field) in ignored {
            if set {
                tracing::warn!(path = %path.field(field), "not implemented; ignored");
            }
        }
    }
}
