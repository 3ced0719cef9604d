//! `ExtAuthz` and `ExtAuthzPerRoute` → the validated model the filter runs with. Fields that
//! would change traffic and that remora does not implement are errors naming the field.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    grpc_service::TargetSpecifier, http_uri::HttpUpstreamType, ApiVersion,
    GrpcService as GrpcProto, HeaderValue as HeaderValueProto,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    check_settings::ServiceOverride, ext_authz::Services, ext_authz_per_route::Override,
    BufferSettings as BufferProto, ExtAuthz, ExtAuthzPerRoute, HttpService as HttpProto,
};
use envoy_types::pb::envoy::r#type::matcher::v3::ListStringMatcher;
use http::{HeaderName, HeaderValue, StatusCode};

use super::enabled::Enabled;
use crate::config::{duration, ConfigErrors, Path};
use crate::http::route::string_match::StringMatch;

/// Envoy's default check timeout for a gRPC service.
const DEFAULT_GRPC_TIMEOUT: Duration = Duration::from_millis(200);

/// Header names matched by a `ListStringMatcher` (any pattern).
#[derive(Debug, Clone, Default)]
pub struct KeyMatcher(Vec<StringMatch>);

impl KeyMatcher {
    fn from_proto(m: &ListStringMatcher, path: &Path, errs: &mut ConfigErrors) -> Self {
        let p = path.field("patterns");
        KeyMatcher(
            m.patterns
                .iter()
                .enumerate()
                .filter_map(|(i, s)| StringMatch::from_proto(s, &p.index(i), errs))
                .collect(),
        )
    }

    fn optional(
        m: Option<&ListStringMatcher>,
        path: &Path,
        errs: &mut ConfigErrors,
    ) -> Option<Self> {
        m.map(|m| Self::from_proto(m, path, errs))
    }

    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|m| m.matches(name))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `with_request_body`.
#[derive(Debug, Clone, Copy)]
pub struct BufferSettings {
    pub max_request_bytes: usize,
    pub allow_partial_message: bool,
    pub pack_as_bytes: bool,
}

impl From<&BufferProto> for BufferSettings {
    fn from(b: &BufferProto) -> Self {
        BufferSettings {
            max_request_bytes: b.max_request_bytes as usize,
            allow_partial_message: b.allow_partial_message,
            pack_as_bytes: b.pack_as_bytes,
        }
    }
}

/// `grpc_service` with `envoy_grpc`.
#[derive(Debug)]
pub struct GrpcService {
    pub cluster: String,
    /// `:authority` of the call: `envoy_grpc.authority`, else the cluster name.
    pub authority: String,
    pub timeout: Duration,
    pub initial_metadata: Vec<(HeaderName, HeaderValue)>,
    /// Leave out `x-envoy-internal` and `x-envoy-expected-rq-timeout-ms`.
    pub skip_envoy_headers: bool,
}

/// `http_service`.
#[derive(Debug)]
pub struct HttpService {
    pub cluster: String,
    pub timeout: Duration,
    pub path_prefix: String,
    /// `authorization_request.allowed_headers` (`authorization`, `:method`, `:path` and the host
    /// always go).
    pub allowed_headers: KeyMatcher,
    pub headers_to_add: Vec<(HeaderName, HeaderValue)>,
    pub allowed_upstream_headers: KeyMatcher,
    pub allowed_upstream_headers_to_append: KeyMatcher,
    /// `None`: every header of a denial but the host goes to the client.
    pub allowed_client_headers: Option<KeyMatcher>,
    pub allowed_client_headers_on_success: KeyMatcher,
}

#[derive(Debug)]
pub enum Service {
    Grpc(GrpcService),
    Http(HttpService),
}

/// The validated filter config.
#[derive(Debug)]
pub struct ExtAuthzConfig {
    pub service: Service,
    pub failure_mode_allow: bool,
    pub failure_mode_allow_header_add: bool,
    pub with_request_body: Option<BufferSettings>,
    pub status_on_error: StatusCode,
    pub validate_mutations: bool,
    pub include_peer_certificate: bool,
    pub include_tls_session: bool,
    pub stat_prefix: String,
    /// Request headers sent in a gRPC check (all when `None`) and those never sent.
    pub allowed_headers: Option<KeyMatcher>,
    pub disallowed_headers: Option<KeyMatcher>,
    /// 0: no limit.
    pub max_denied_response_body_bytes: usize,
    /// A denial counts as the route cluster's response (`upstream_rq_403`, ...).
    pub charge_cluster_response_stats: bool,
    pub enabled: Enabled,
    /// Send the headers as `header_map` with raw values instead of `headers`.
    pub encode_raw_headers: bool,
    /// Pick the route again after the check changed the request.
    pub clear_route_cache: bool,
    /// Dynamic metadata namespaces sent as the check's `metadata_context`.
    pub metadata_context_namespaces: Vec<String>,
}

/// A route's `ExtAuthzPerRoute`.
#[derive(Debug, Default)]
pub struct RouteSettings {
    pub disabled: bool,
    pub context_extensions: BTreeMap<String, String>,
    pub disable_request_body_buffering: bool,
    /// `check_settings.with_request_body`, instead of the filter's.
    pub with_request_body: Option<BufferSettings>,
    /// `check_settings.grpc_service` / `http_service`: this route's own authorization service.
    pub service: Option<Service>,
}

fn unsupported(errs: &mut ConfigErrors, path: &Path, field: &str, why: &str) {
    errs.push(path.field(field), format!("{field} is not supported{why}"));
}

pub(super) fn header_pairs(
    list: &[HeaderValueProto],
    path: &Path,
    errs: &mut ConfigErrors,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (i, h) in list.iter().enumerate() {
        let p = path.index(i);
        let raw: &[u8] = if h.raw_value.is_empty() {
            h.value.as_bytes()
        } else {
            &h.raw_value
        };
        match (
            HeaderName::from_bytes(h.key.as_bytes()),
            HeaderValue::from_bytes(raw),
        ) {
            (Ok(n), Ok(v)) => out.push((n, v)),
            (Err(_), _) => errs.push(p.field("key"), format!("invalid header name '{}'", h.key)),
            (_, Err(_)) => errs.push(p.field("value"), "invalid header value"),
        }
    }
    out
}

impl ExtAuthzConfig {
    pub fn from_proto(c: &ExtAuthz, path: &Path, errs: &mut ConfigErrors) -> Option<Arc<Self>> {
        let before = errs.0.len();
        match ApiVersion::try_from(c.transport_api_version) {
            Ok(ApiVersion::Auto) | Ok(ApiVersion::V3) => {}
            _ => errs.push(
                path.field("transport_api_version"),
                "only the V3 transport API is supported",
            ),
        }
        let service = match &c.services {
            Some(Services::GrpcService(g)) => {
                grpc_service(g, &path.field("grpc_service"), errs).map(Service::Grpc)
            }
            Some(Services::HttpService(h)) => {
                http_service(h, &path.field("http_service"), errs).map(Service::Http)
            }
            None => {
                errs.push(path, "one of grpc_service or http_service is required");
                None
            }
        };
        for (set, field) in [
            (
                !c.route_metadata_context_namespaces.is_empty(),
                "route_metadata_context_namespaces",
            ),
            (
                !c.route_typed_metadata_context_namespaces.is_empty(),
                "route_typed_metadata_context_namespaces",
            ),
            (
                !c.bootstrap_metadata_labels_key.is_empty(),
                "bootstrap_metadata_labels_key",
            ),
            (
                c.decoder_header_mutation_rules.is_some(),
                "decoder_header_mutation_rules",
            ),
            (
                c.enforce_response_header_limits,
                "enforce_response_header_limits",
            ),
            (c.shadow_mode, "shadow_mode"),
        ] {
            if set {
                unsupported(errs, path, field, "");
            }
        }
        let status_on_error = match &c.status_on_error {
            Some(s) => match StatusCode::from_u16(s.code as u16) {
                Ok(code) if (200..600).contains(&s.code) => code,
                _ => {
                    errs.push(
                        path.field("status_on_error").field("code"),
                        format!("invalid HTTP status {}", s.code),
                    );
                    StatusCode::FORBIDDEN
                }
            },
            None => StatusCode::FORBIDDEN,
        };
        let cfg = ExtAuthzConfig {
            service: service?,
            failure_mode_allow: c.failure_mode_allow,
            failure_mode_allow_header_add: c.failure_mode_allow_header_add,
            with_request_body: c
                .with_request_body
                .as_ref()
                .map(|b| buffer_settings(b, &path.field("with_request_body"), errs)),
            status_on_error,
            validate_mutations: c.validate_mutations,
            include_peer_certificate: c.include_peer_certificate,
            include_tls_session: c.include_tls_session,
            stat_prefix: c.stat_prefix.clone(),
            allowed_headers: KeyMatcher::optional(
                c.allowed_headers.as_ref(),
                &path.field("allowed_headers"),
                errs,
            ),
            disallowed_headers: KeyMatcher::optional(
                c.disallowed_headers.as_ref(),
                &path.field("disallowed_headers"),
                errs,
            ),
            max_denied_response_body_bytes: c.max_denied_response_body_bytes as usize,
            enabled: Enabled::from_proto(c, path, errs),
            clear_route_cache: c.clear_route_cache,
            encode_raw_headers: c.encode_raw_headers,
            metadata_context_namespaces: c.metadata_context_namespaces.clone(),
            charge_cluster_response_stats: c
                .charge_cluster_response_stats
                .as_ref()
                .is_none_or(|b| b.value),
        };
        (errs.0.len() == before).then(|| Arc::new(cfg))
    }
}

fn buffer_settings(b: &BufferProto, path: &Path, errs: &mut ConfigErrors) -> BufferSettings {
    if b.max_request_bytes == 0 {
        errs.push(path.field("max_request_bytes"), "must be greater than 0");
    }
    BufferSettings::from(b)
}

fn grpc_service(g: &GrpcProto, path: &Path, errs: &mut ConfigErrors) -> Option<GrpcService> {
    if g.retry_policy.is_some() {
        unsupported(errs, path, "retry_policy", "");
    }
    let envoy = match &g.target_specifier {
        Some(TargetSpecifier::EnvoyGrpc(e)) => e,
        Some(TargetSpecifier::GoogleGrpc(_)) => {
            unsupported(errs, path, "google_grpc", "; use envoy_grpc");
            return None;
        }
        None => {
            errs.push(path.field("envoy_grpc"), "is required");
            return None;
        }
    };
    let epath = path.field("envoy_grpc");
    if envoy.cluster_name.is_empty() {
        errs.push(epath.field("cluster_name"), "must not be empty");
    }
    if envoy.retry_policy.is_some() {
        unsupported(errs, &epath, "retry_policy", "");
    }
    let initial_metadata = header_pairs(&g.initial_metadata, &path.field("initial_metadata"), errs);
    Some(GrpcService {
        cluster: envoy.cluster_name.clone(),
        authority: if envoy.authority.is_empty() {
            envoy.cluster_name.clone()
        } else {
            envoy.authority.clone()
        },
        timeout: duration(&g.timeout).unwrap_or(DEFAULT_GRPC_TIMEOUT),
        initial_metadata,
        skip_envoy_headers: envoy.skip_envoy_headers,
    })
}

fn http_service(h: &HttpProto, path: &Path, errs: &mut ConfigErrors) -> Option<HttpService> {
    if h.retry_policy.is_some() {
        unsupported(errs, path, "retry_policy", "");
    }
    if !h.path_override.is_empty() {
        unsupported(errs, path, "path_override", "");
    }
    let upath = path.field("server_uri");
    let Some(uri) = &h.server_uri else {
        errs.push(upath, "is required");
        return None;
    };
    let cluster = match &uri.http_upstream_type {
        Some(HttpUpstreamType::Cluster(c)) if !c.is_empty() => c.clone(),
        _ => {
            errs.push(upath.field("cluster"), "is required");
            return None;
        }
    };
    let Some(timeout) = duration(&uri.timeout) else {
        errs.push(upath.field("timeout"), "is required");
        return None;
    };
    let req = h.authorization_request.clone().unwrap_or_default();
    let rpath = path.field("authorization_request");
    let resp = h.authorization_response.clone().unwrap_or_default();
    let spath = path.field("authorization_response");
    if resp.dynamic_metadata_from_headers.is_some() {
        unsupported(errs, &spath, "dynamic_metadata_from_headers", "");
    }
    let list = |m: &Option<ListStringMatcher>, field: &str, errs: &mut ConfigErrors| {
        KeyMatcher::optional(m.as_ref(), &spath.field(field), errs).unwrap_or_default()
    };
    #[allow(deprecated)]
    let allowed_headers = KeyMatcher::optional(
        req.allowed_headers.as_ref(),
        &rpath.field("allowed_headers"),
        errs,
    )
    .unwrap_or_default();
    Some(HttpService {
        cluster,
        timeout,
        path_prefix: h.path_prefix.clone(),
        allowed_headers,
        headers_to_add: header_pairs(&req.headers_to_add, &rpath.field("headers_to_add"), errs),
        allowed_upstream_headers: list(
            &resp.allowed_upstream_headers,
            "allowed_upstream_headers",
            errs,
        ),
        allowed_upstream_headers_to_append: list(
            &resp.allowed_upstream_headers_to_append,
            "allowed_upstream_headers_to_append",
            errs,
        ),
        allowed_client_headers: KeyMatcher::optional(
            resp.allowed_client_headers.as_ref(),
            &spath.field("allowed_client_headers"),
            errs,
        ),
        allowed_client_headers_on_success: list(
            &resp.allowed_client_headers_on_success,
            "allowed_client_headers_on_success",
            errs,
        ),
    })
}

impl RouteSettings {
    pub fn from_proto(c: &ExtAuthzPerRoute, path: &Path, errs: &mut ConfigErrors) -> Option<Self> {
        match &c.r#override {
            Some(Override::Disabled(true)) => Some(RouteSettings {
                disabled: true,
                ..RouteSettings::default()
            }),
            Some(Override::Disabled(false)) => {
                errs.push(path.field("disabled"), "must be true when set");
                None
            }
            Some(Override::CheckSettings(s)) => {
                let p = path.field("check_settings");
                let service = match &s.service_override {
                    Some(ServiceOverride::GrpcService(g)) => Some(Service::Grpc(grpc_service(
                        g,
                        &p.field("grpc_service"),
                        errs,
                    )?)),
                    Some(ServiceOverride::HttpService(h)) => Some(Service::Http(http_service(
                        h,
                        &p.field("http_service"),
                        errs,
                    )?)),
                    None => None,
                };
                Some(RouteSettings {
                    disabled: false,
                    context_extensions: s
                        .context_extensions
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    disable_request_body_buffering: s.disable_request_body_buffering,
                    with_request_body: s
                        .with_request_body
                        .as_ref()
                        .map(|b| buffer_settings(b, &p.field("with_request_body"), errs)),
                    service,
                })
            }
            None => {
                errs.push(path, "one of disabled or check_settings is required");
                None
            }
        }
    }
}
