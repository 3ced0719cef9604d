//! Route entries: one `routes[]` element, its match, its action and its own header mutations.

use std::sync::Arc;

use envoy_types::pb::envoy::config::route::v3::{
    route::Action as ActionProto, Route as RouteProto,
};
use envoy_types::pb::google::protobuf::{UInt32Value, UInt64Value};

use super::action::{Action, Forward, MirrorPolicy};
use super::build::Build;
use super::direct::Direct;
use super::filter_config::FilterConfigs;
use super::headers::HeaderMutations;
use super::matcher::RouteMatcher;
use super::redirect::Redirect;
use super::retry::RetryPolicy;
use super::rewrite::MatchedPath;
use crate::config::Path;

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    name: String,
    pub(crate) matcher: RouteMatcher,
    action: Action,
    pub(crate) request_headers: HeaderMutations,
    pub(crate) response_headers: HeaderMutations,
    pub(crate) filter_configs: FilterConfigs,
    pub(crate) buffer_limit: Option<u64>,
}

/// `request_body_buffer_limit`, else the deprecated `per_request_buffer_limit_bytes`.
pub(crate) fn buffer_limit(new: Option<UInt64Value>, old: Option<UInt32Value>) -> Option<u64> {
    new.map(|v| v.value).or(old.map(|v| u64::from(v.value)))
}

/// What a route inherits from its virtual host.
pub(crate) struct Inherited<'a> {
    pub(crate) retry: Option<&'a Arc<RetryPolicy>>,
    pub(crate) mirrors: &'a [MirrorPolicy],
}

impl Route {
    #[allow(deprecated)]
    pub(crate) fn from_proto(
        r: &RouteProto,
        inherited: &Inherited<'_>,
        path: &Path,
        b: &mut Build<'_>,
    ) -> Option<Route> {
        let matcher = match &r.r#match {
            Some(m) => RouteMatcher::from_proto(m, &path.field("match"), &mut b.errs),
            None => {
                b.errs.push(path.field("match"), "is required");
                None
            }
        };
        let matched = matcher.as_ref().map(|m| MatchedPath {
            path: m.path.clone(),
            case_sensitive: m.case_sensitive,
        });
        let action = match (&r.action, matched) {
            (Some(ActionProto::Route(ra)), Some(mp)) => Forward::from_proto(
                ra,
                mp,
                inherited.retry,
                inherited.mirrors,
                &path.field("route"),
                b,
            )
            .map(|f| Action::Forward(Box::new(f))),
            (Some(ActionProto::Redirect(ra)), Some(mp)) => {
                Redirect::from_proto(ra, mp, &path.field("redirect"), b).map(Action::Redirect)
            }
            (Some(ActionProto::DirectResponse(d)), _) => {
                Direct::from_proto(d, &path.field("direct_response"), b).map(Action::DirectResponse)
            }
            (Some(ActionProto::FilterAction(_)), _) => {
                b.errs.push(
                    path.field("filter_action"),
                    "filter actions are not supported",
                );
                None
            }
            (Some(ActionProto::NonForwardingAction(_)), _) => {
                b.errs.push(
                    path.field("non_forwarding_action"),
                    "non-forwarding actions are not supported",
                );
                None
            }
            (None, _) => {
                b.errs.push(
                    path,
                    "one of route, redirect or direct_response is required",
                );
                None
            }
            // The match was invalid and is already reported.
            (Some(_), None) => None,
        };
        if !r.route_specifiers.is_empty() {
            b.errs.push(
                path.field("route_specifiers"),
                "route specifiers are not supported",
            );
        }
        let request_headers = HeaderMutations::from_proto(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &path.field("request_headers_to_add"),
            &path.field("request_headers_to_remove"),
            &mut b.errs,
        );
        let response_headers = HeaderMutations::from_proto(
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
            &path.field("response_headers_to_add"),
            &path.field("response_headers_to_remove"),
            &mut b.errs,
        );
        let filter_configs = FilterConfigs::from_proto(
            &r.typed_per_filter_config,
            &path.field("typed_per_filter_config"),
            &b.filter_context(),
            &mut b.errs,
        );
        Some(Route {
            name: r.name.clone(),
            matcher: matcher?,
            action: action?,
            request_headers,
            response_headers,
            filter_configs,
            buffer_limit: buffer_limit(
                r.request_body_buffer_limit,
                r.per_request_buffer_limit_bytes,
            ),
        })
    }

    /// The synthetic route of a `require_tls` virtual host.
    pub(crate) fn tls_redirect() -> Route {
        let matcher = RouteMatcher::any();
        let matched = MatchedPath {
            path: matcher.path.clone(),
            case_sensitive: true,
        };
        Route {
            name: String::new(),
            matcher,
            action: Action::Redirect(Redirect::tls_required(matched)),
            request_headers: HeaderMutations::default(),
            response_headers: HeaderMutations::default(),
            filter_configs: FilterConfigs::default(),
            buffer_limit: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn action(&self) -> &Action {
        &self.action
    }
}
