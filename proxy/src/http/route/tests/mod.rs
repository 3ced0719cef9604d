//! Route tests: tables built from Envoy YAML, requests built by hand.

mod direct;
mod errors;
mod forward;
mod headers;
mod matcher;
mod redirect;
mod retry;
mod vhost;

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use http::request::Parts;

use super::{Action, Direct, Forward, Redirect, RouteContext, RouteTable, Selected};
use crate::config::parse::{from_yaml, ParseOptions};
use crate::config::{ConfigErrors, Path};

/// Clusters whose name starts with `missing` do not exist.
fn cluster_exists(name: &str) -> bool {
    !name.starts_with("missing")
}

/// The tests pretend remora has no Lua filter.
fn filter_known(type_name: &str) -> bool {
    !type_name.contains(".lua.")
}

pub(super) fn build(yaml: &str) -> Result<RouteTable, ConfigErrors> {
    let rc: RouteConfiguration =
        from_yaml(yaml, ParseOptions::default()).expect("valid RouteConfiguration YAML");
    let ctx = RouteContext {
        cluster_exists: &cluster_exists,
        validate_clusters: true,
        filter_config_known: &filter_known,
    };
    RouteTable::from_proto(&rc, &Path::root("route_config"), &ctx)
}

pub(super) fn table(yaml: &str) -> RouteTable {
    match build(yaml) {
        Ok(t) => t,
        Err(e) => panic!("route table rejected:\n{e}"),
    }
}

/// The errors of a rejected table as `path: message` lines.
pub(super) fn errors(yaml: &str) -> Vec<String> {
    match build(yaml) {
        Ok(_) => panic!("route table accepted"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that some error is at `path` and mentions `needle`.
pub(super) fn assert_error(yaml: &str, path: &str, needle: &str) {
    let errs = errors(yaml);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(needle)),
        "no error at {path} mentioning {needle:?}; got {errs:#?}"
    );
}

/// A request to `uri` with a `Host` header (unless `host` is empty) and extra headers.
pub(super) fn req(method: &str, uri: &str, host: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    if !host.is_empty() {
        b = b.header("host", host);
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("valid request").into_parts().0
}

pub(super) fn get(uri: &str, host: &str) -> Parts {
    req("GET", uri, host, &[])
}

/// The name of the route selected for the request (`None` when nothing matches).
pub(super) fn route_name(t: &RouteTable, r: &Parts) -> Option<String> {
    t.select(r).map(|s| s.route.name().to_string())
}

pub(super) fn forward<'a>(s: &Selected<'a>) -> &'a Forward {
    match s.route.action() {
        Action::Forward(f) => f,
        other => panic!("expected a forward action, got {other:?}"),
    }
}

pub(super) fn redirect<'a>(s: &Selected<'a>) -> &'a Redirect {
    match s.route.action() {
        Action::Redirect(r) => r,
        other => panic!("expected a redirect action, got {other:?}"),
    }
}

pub(super) fn direct<'a>(s: &Selected<'a>) -> &'a Direct {
    match s.route.action() {
        Action::DirectResponse(d) => d,
        other => panic!("expected a direct response, got {other:?}"),
    }
}

/// A one-vhost table (domains `*`) with the given routes YAML (a list, indented for `routes:`).
pub(super) fn routes(routes_yaml: &str) -> RouteTable {
    table(&one_vhost(routes_yaml))
}

pub(super) fn one_vhost(routes_yaml: &str) -> String {
    format!("name: rc\nvirtual_hosts:\n- name: vh\n  domains: ['*']\n  routes:\n{routes_yaml}")
}

#[test]
fn table_is_send_sync() {
    fn assert<T: Send + Sync>() {}
    assert::<RouteTable>();
}
