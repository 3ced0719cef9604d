//! Unit tests: config errors name their field (here), the check request a request makes
//! (`check`), the decisions of both services and how they change the request (`decisions`).

mod check;
mod decisions;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue as HeaderProto, HeaderValueOption,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    ExtAuthz, ExtAuthzPerRoute,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;

use super::config::{ExtAuthzConfig, RouteSettings, Service};
use super::decision::{Action, Allowed, Decision, Mutation, Reply};
use super::*;
use crate::config::parse::{from_yaml, ParseOptions};
use crate::config::{ConfigErrors, Path};
use crate::http::filter::DynamicMetadata;

fn parse(yaml: &str) -> Result<Arc<ExtAuthzConfig>, String> {
    let proto: ExtAuthz = from_yaml(yaml, ParseOptions::default()).map_err(|e| e.to_string())?;
    let mut errs = ConfigErrors::default();
    let cfg = ExtAuthzConfig::from_proto(&proto, &Path::root("f"), &mut errs);
    match cfg {
        Some(c) if errs.is_empty() => Ok(c),
        _ => Err(errs.to_string()),
    }
}

const GRPC: &str = "grpc_service: { envoy_grpc: { cluster_name: authz } }\n";
const HTTP: &str = "http_service:\n  server_uri: { uri: http://authz, cluster: authz, timeout: 1s }\n  path_prefix: /check\n  authorization_request: { allowed_headers: { patterns: [{ exact: x-allow }] } }\n  authorization_response:\n    allowed_upstream_headers: { patterns: [{ exact: x-up }] }\n    allowed_upstream_headers_to_append: { patterns: [{ exact: x-more }] }\n    allowed_client_headers: { patterns: [{ prefix: x-deny }] }\n    allowed_client_headers_on_success: { patterns: [{ exact: x-ok }] }\n";

fn per_route(yaml: &str) -> Result<RouteSettings, String> {
    let proto: ExtAuthzPerRoute =
        from_yaml(yaml, ParseOptions::default()).map_err(|e| e.to_string())?;
    let mut errs = ConfigErrors::default();
    RouteSettings::from_proto(&proto, &Path::root("r"), &mut errs)
        .filter(|_| errs.is_empty())
        .ok_or_else(|| errs.to_string())
}

#[test]
fn a_grpc_service_takes_envoys_defaults() {
    let cfg = parse(GRPC).expect("valid");
    let Service::Grpc(g) = &cfg.service else {
        panic!("grpc")
    };
    assert_eq!(g.cluster, "authz");
    assert_eq!(g.authority, "authz");
    assert_eq!(g.timeout, std::time::Duration::from_millis(200));
    assert_eq!(cfg.status_on_error, StatusCode::FORBIDDEN);
    assert!(!cfg.failure_mode_allow);
    assert!(cfg.charge_cluster_response_stats);
}

#[test]
fn what_remora_cannot_do_is_an_error_naming_the_field() {
    let cases = [
        (
            "grpc_service: { google_grpc: { target_uri: x, stat_prefix: s } }",
            "f.grpc_service.google_grpc",
        ),
        (
            "filter_enabled_metadata: { filter: a, path: [{ key: b }, { key: c }], value: { present_match: true } }",
            "f.filter_enabled_metadata.path",
        ),
        (
            "filter_enabled_metadata: { filter: a, path: [{ key: b }], value: { double_match: { exact: 1 } } }",
            "f.filter_enabled_metadata.value",
        ),
        ("transport_api_version: V2", "f.transport_api_version"),
        ("status_on_error: { code: 42 }", "f.status_on_error.code"),
        (
            "with_request_body: { max_request_bytes: 0 }",
            "f.with_request_body.max_request_bytes",
        ),
        (
            "route_metadata_context_namespaces: [a]",
            "f.route_metadata_context_namespaces",
        ),
    ];
    for (extra, field) in cases {
        let yaml = if extra.starts_with("grpc_service") {
            extra.to_string()
        } else {
            format!("{GRPC}{extra}\n")
        };
        let e = parse(&yaml).expect_err(extra);
        assert!(e.contains(field), "{extra}: {e}");
    }
    let e = parse("failure_mode_allow: true").expect_err("no service");
    assert!(e.contains("grpc_service or http_service"), "{e}");
    let e = parse("http_service: { server_uri: { uri: x, cluster: c } }").expect_err("timeout");
    assert!(e.contains("f.http_service.server_uri.timeout"), "{e}");
    let e = parse(
        "http_service: { server_uri: { uri: x, cluster: c, timeout: 1s }, retry_policy: {} }",
    )
    .expect_err("retry");
    assert!(e.contains("f.http_service.retry_policy"), "{e}");
}

#[test]
fn per_route_settings_disable_or_add_context() {
    assert!(per_route("disabled: true").expect("valid").disabled);
    let r = per_route(
        "check_settings: { context_extensions: { a: b }, disable_request_body_buffering: true }",
    )
    .expect("valid");
    assert!(!r.disabled && r.disable_request_body_buffering);
    assert_eq!(r.context_extensions.get("a").map(String::as_str), Some("b"));
    let e = per_route("disabled: false").expect_err("false");
    assert!(e.contains("r.disabled"), "{e}");
    let r = per_route(
        "check_settings: { grpc_service: { envoy_grpc: { cluster_name: other } }, with_request_body: { max_request_bytes: 9 } }",
    )
    .expect("override");
    assert!(matches!(&r.service, Some(Service::Grpc(g)) if g.cluster == "other"));
    assert_eq!(r.with_request_body.map(|b| b.max_request_bytes), Some(9));
    let e = per_route("check_settings: { http_service: { server_uri: { uri: x, cluster: c } } }")
        .expect_err("no timeout");
    assert!(
        e.contains("r.check_settings.http_service.server_uri.timeout"),
        "{e}"
    );
}

fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("request").into_parts().0
}

fn conn() -> Request<'static> {
    let peer: SocketAddr = "10.0.0.1:5555".parse().expect("addr");
    Request {
        parts: None,
        peer,
        remote: peer.ip(),
        local: "10.0.0.2:8080".parse().expect("addr"),
        tls: None,
        requested_server_name: None,
        filter_state: None,
    }
}

#[test]
fn filter_enabled_metadata_reads_the_rbac_shadow_verdict() {
    let cfg = parse(&format!(
        "{GRPC}filter_enabled_metadata: {{ filter: envoy.filters.http.rbac, path: [{{ key: p_shadow_effective_policy_id }}], value: {{ string_match: {{ prefix: istio-ext-authz }} }} }}\n"
    ))
    .expect("valid");
    let mut meta = DynamicMetadata::default();
    assert!(!cfg.enabled.enabled(&meta), "no shadow verdict");
    meta.set(
        "envoy.filters.http.rbac",
        "p_shadow_effective_policy_id".into(),
        "istio-ext-authz-ns[a]".into(),
    );
    assert!(cfg.enabled.enabled(&meta));
    let never = parse(&format!(
        "{GRPC}filter_enabled: {{ default_value: {{ numerator: 0 }} }}\ndeny_at_disable: {{ default_value: true, runtime_key: k }}\n"
    ))
    .expect("valid");
    assert!(!never.enabled.enabled(&meta));
    assert!(never.enabled.deny_at_disable);
    assert!(parse(GRPC).expect("valid").enabled.enabled(&meta));
}
