//! A connection manager's `http_filters`: the router last, and which other filters may stand
//! before it.
//!
//! remora runs `envoy.filters.http.rbac`, `envoy.filters.http.fault`, `envoy.filters.http.cors`,
//! `envoy.filters.http.ext_authz`, `envoy.filters.http.grpc_stats` and
//! `envoy.filters.http.set_filter_state` (see `crate::http::filter`) before the router. A filter
//! it does not implement is an error unless `is_optional` or `disabled`, except Istio's
//! `istio.stats`, `istio.metadata_exchange` and `istio.alpn` (translated into the manager's
//! settings) and where the configuration given makes the filter a pass-through in Envoy too, so
//! nothing that would act is ever dropped silently.

use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter::ConfigType, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Name;

use super::istio::{self, HttpIstio};
use super::parse::{any_type_name, unpack_any, ParseOptions};
use super::{ConfigErrors, Path};
use crate::http::filter::{
    connect_authority, connect_baggage, cors, ext_authz, fault, grpc_stats, rbac, set_filter_state,
    FilterSpec, SpecKind,
};

pub const ROUTER_FILTER: &str = "envoy.filters.http.router";
const ROUTER_TYPE: &str = "envoy.extensions.filters.http.router.v3.Router";
const FAULT_FILTER: &str = "envoy.filters.http.fault";
const CORS_FILTER: &str = "envoy.filters.http.cors";

/// How remora takes one filter that is not the router.
enum Verdict {
    /// Its configuration does nothing; accepted and skipped.
    PassThrough,
    /// Known, but configured to act, which remora cannot do.
    Acts(String),
    Unknown,
}

fn typed_config(f: &HttpFilter) -> Option<&Any> {
    match &f.config_type {
        Some(ConfigType::TypedConfig(any)) => Some(any),
        _ => None,
    }
}

fn verdict(f: &HttpFilter, type_name: Option<&str>, opts: ParseOptions) -> Verdict {
    let is = |name: &str, ty: String| f.name == name || type_name == Some(ty.as_str());
    if is(FAULT_FILTER, HttpFault::full_name()) {
        let fault = match typed_config(f).map(|a| unpack_any::<HttpFault>(a, opts)) {
            Some(Ok(fault)) => fault,
            Some(Err(e)) => return Verdict::Acts(e.message),
            None => HttpFault::default(),
        };
        if fault.delay.is_some() || fault.abort.is_some() || fault.response_rate_limit.is_some() {
            return Verdict::Acts(
                "fault injection (delay, abort, response_rate_limit) is not implemented".into(),
            );
        }
        return Verdict::PassThrough;
    }
    Verdict::Unknown
}

/// The filter list must end in the router (`direction` is the listener's `traffic_direction`,
/// which decides the side Istio's stats report from); filters remora does not implement are errors unless
/// optional, disabled or configured to do nothing.
pub fn check(
    hcm: &HttpConnectionManager,
    path: &Path,
    opts: ParseOptions,
    direction: i32,
    errors: &mut ConfigErrors,
) -> (HttpIstio, Vec<FilterSpec>) {
    let mut found = HttpIstio::default();
    let mut specs = Vec::new();
    let fpath = path.field("http_filters");
    let last = hcm.http_filters.iter().rposition(|f| !f.disabled);
    for (i, f) in hcm.http_filters.iter().enumerate() {
        let p = fpath.index(i);
        let type_name = typed_config(f).map(any_type_name);
        let is_router = f.name == ROUTER_FILTER || type_name.as_deref() == Some(ROUTER_TYPE);
        if is_router {
            if Some(i) != last {
                errors.push(p, "the router filter must be the last HTTP filter");
            }
            continue;
        }
        // Istio's stats and metadata-exchange filters are translated into the manager's settings.
        let any = typed_config(f);
        // Istio's built-in plugins on the Wasm null VM are the same filters by another name.
        if let Some(any) = any.filter(|a| !f.disabled && istio::is_wasm(Some(a))) {
            match istio::wasm(any, &p, opts, direction) {
                Ok(istio::WasmIstio::Stats(c)) => found.stats = Some(c),
                Ok(istio::WasmIstio::Exchange(c)) => found.exchange = Some(c),
                Err(e) => errors.extend(e),
            }
            continue;
        }
        if !f.disabled && istio::is_stats(&f.name, any) {
            match istio::stats(any, &p, opts, direction) {
                Ok(c) => found.stats = Some(c),
                Err(e) => errors.extend(e),
            }
            continue;
        }
        if !f.disabled && istio::is_exchange(&f.name, any) {
            match istio::exchange(any, &p, opts) {
                Ok(c) => found.exchange = Some(c),
                Err(e) => errors.extend(e),
            }
            continue;
        }
        if istio::is_alpn(&f.name, any) {
            match istio::alpn(any, &p, opts) {
                Ok(_) if f.disabled => {
                    // istiod never sends it disabled; a route cannot turn it on here.
                    tracing::warn!(filter = %f.name, path = %p, "istio.alpn is disabled: upstream connections keep the clusters' ALPN on every route");
                }
                Ok(c) => found.alpn = Some(std::sync::Arc::new(c)),
                Err(e) => errors.extend(e),
            }
            continue;
        }
        if f.name == CORS_FILTER || type_name.as_deref() == Some(cors::TYPE) {
            // The filter's own config is empty; what it does comes from the routes' CorsPolicy.
            if let Some(Err(e)) = any.map(|a| unpack_any::<Cors>(a, opts)) {
                errors.push(p.field("typed_config"), e.message);
            }
            specs.push(FilterSpec {
                name: f.name.clone(),
                disabled: f.disabled,
                kind: SpecKind::Cors,
            });
            continue;
        }
        if let Some(kind) = implemented(any, type_name.as_deref(), &p, opts, errors) {
            if let Some(kind) = kind {
                specs.push(FilterSpec {
                    name: f.name.clone(),
                    disabled: f.disabled,
                    kind,
                });
            }
            continue;
        }
        let what = type_name.clone().unwrap_or_else(|| f.name.clone());
        match verdict(f, type_name.as_deref(), opts) {
            Verdict::PassThrough => {
                tracing::debug!(filter = %f.name, path = %p, "HTTP filter {what} is configured to do nothing");
            }
            _ if f.is_optional || f.disabled => {
                tracing::warn!(filter = %f.name, path = %p, "optional HTTP filter {what} is not implemented and is skipped");
            }
            Verdict::Acts(why) => errors.push(p, format!("HTTP filter \"{}\": {why}", f.name)),
            Verdict::Unknown => {
                errors.push(p, format!("unknown HTTP filter \"{}\" ({what})", f.name))
            }
        }
    }
    if last.is_none() {
        errors.push(
            fpath,
            "the HTTP filter chain must end with envoy.filters.http.router",
        );
    }
    (found, specs)
}

/// A filter remora runs: `Some(None)` when its config has errors (reported), `None` when the filter
/// is not one of them.
fn implemented(
    any: Option<&Any>,
    type_name: Option<&str>,
    path: &Path,
    opts: ParseOptions,
    errors: &mut ConfigErrors,
) -> Option<Option<SpecKind>> {
    let any = any?;
    let cpath = path.field("typed_config");
    match type_name? {
        rbac::TYPE => Some(
            unpack_any(any, opts)
                .map_err(|e| errors.push(&cpath, e.message))
                .ok()
                .and_then(|c| rbac::RbacConfig::from_proto(&c, &cpath, errors))
                .map(SpecKind::Rbac),
        ),
        fault::TYPE => Some(
            unpack_any(any, opts)
                .map_err(|e| errors.push(&cpath, e.message))
                .ok()
                .and_then(|c| fault::Faults::from_proto(&c, &cpath, errors))
                .map(SpecKind::Fault),
        ),
        set_filter_state::TYPE => Some(
            unpack_any(any, opts)
                .map_err(|e| errors.push(&cpath, e.message))
                .ok()
                .map(|c| {
                    let mut own = ConfigErrors::default();
                    let s = set_filter_state::from_proto(&c, &cpath, &mut own);
                    let ok = own.is_empty();
                    errors.extend(own);
                    (s, ok)
                })
                .and_then(|(s, ok)| ok.then_some(SpecKind::SetFilterState(s))),
        ),
        grpc_stats::TYPE => Some(
            unpack_any(any, opts)
                .map_err(|e| errors.push(&cpath, e.message))
                .ok()
                .and_then(|c| grpc_stats::GrpcStats::from_proto(&c, &cpath, errors))
                .map(SpecKind::GrpcStats),
        ),
        ext_authz::TYPE => Some(
            unpack_any(any, opts)
                .map_err(|e| errors.push(&cpath, e.message))
                .ok()
                .and_then(|c| ext_authz::ExtAuthzConfig::from_proto(&c, &cpath, errors))
                .map(SpecKind::ExtAuthz),
        ),
        connect_baggage::TYPE => Some(
            unpack_any::<connect_baggage::Config>(any, opts)
                .map_err(|e| errors.push(&cpath, e.message))
                .ok()
                .map(|_| SpecKind::ConnectBaggage),
        ),
        connect_authority::TYPE => Some(
            unpack_any::<connect_authority::Config>(any, opts)
                .map_err(|e| errors.push(&cpath, e.message))
                .ok()
                .map(|_| SpecKind::ConnectAuthority),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse::from_yaml;

    fn errors(filters: &str) -> String {
        let yaml = format!("stat_prefix: t\nhttp_filters:\n{filters}");
        let hcm: HttpConnectionManager = from_yaml(&yaml, ParseOptions::default()).expect("parses");
        let mut errors = ConfigErrors::default();
        let _ = check(
            &hcm,
            &Path::root("hcm"),
            ParseOptions::default(),
            0,
            &mut errors,
        );
        errors.to_string()
    }

    const ROUTER: &str = "- { name: envoy.filters.http.router, typed_config: { '@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }\n";
    const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

    #[test]
    fn istiods_empty_fault_and_cors_filters_pass_through() {
        let filters = format!(
            "- {{ name: envoy.filters.http.fault, typed_config: {{ '@type': {FAULT} }} }}\n\
             - {{ name: envoy.filters.http.cors, typed_config: {{ '@type': type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors }} }}\n{ROUTER}"
        );
        assert_eq!(errors(&filters), "");
    }

    #[test]
    fn a_fault_remora_cannot_inject_is_an_error() {
        let filters = format!(
            "- {{ name: envoy.filters.http.fault, typed_config: {{ '@type': {FAULT}, response_rate_limit: {{ fixed_limit: {{ limit_kbps: 1 }}, percentage: {{ numerator: 100 }} }} }} }}\n{ROUTER}"
        );
        let e = errors(&filters);
        assert!(
            e.contains("http_filters[0].typed_config.response_rate_limit"),
            "{e}"
        );
    }

    #[test]
    fn ext_authz_runs_and_its_errors_name_the_field() {
        let authz = |cfg: &str| {
            format!(
                "- {{ name: envoy.filters.http.ext_authz, typed_config: {{ '@type': type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz, {cfg} }} }}\n{ROUTER}"
            )
        };
        assert_eq!(
            errors(&authz(
                "grpc_service: { envoy_grpc: { cluster_name: authz } }"
            )),
            ""
        );
        let e = errors(&authz(
            "grpc_service: { google_grpc: { target_uri: x, stat_prefix: s } }",
        ));
        assert!(
            e.contains("hcm.http_filters[0].typed_config.grpc_service.google_grpc"),
            "{e}"
        );
    }

    #[test]
    fn unknown_filters_are_errors_unless_optional() {
        let lua = "{ name: envoy.filters.http.lua, typed_config: { '@type': type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua, default_source_code: { inline_string: 'function envoy_on_request(h) end' } } }";
        let e = errors(&format!("- {lua}\n{ROUTER}"));
        assert!(
            e.contains("unknown HTTP filter \"envoy.filters.http.lua\""),
            "{e}"
        );
        let optional = lua.replace("{ name:", "{ is_optional: true, name:");
        assert_eq!(errors(&format!("- {optional}\n{ROUTER}")), "");
    }

    const GRPC_STATS: &str =
        "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig";

    #[test]
    fn istiods_grpc_stats_is_accepted() {
        let filters = format!(
            "- {{ name: envoy.filters.http.grpc_stats, typed_config: {{ '@type': {GRPC_STATS}, emit_filter_state: true, stats_for_all_methods: false }} }}\n{ROUTER}"
        );
        assert_eq!(errors(&filters), "");
        let allowlist = format!(
            "- {{ name: envoy.filters.http.grpc_stats, typed_config: {{ '@type': {GRPC_STATS}, individual_method_stats_allowlist: {{ services: [ {{ name: a.B, method_names: [C] }} ] }} }} }}\n{ROUTER}"
        );
        assert_eq!(errors(&allowlist), "");
    }

    #[test]
    fn grpc_stats_errors_name_the_field() {
        let upstream = format!(
            "- {{ name: envoy.filters.http.grpc_stats, typed_config: {{ '@type': {GRPC_STATS}, enable_upstream_stats: true }} }}\n{ROUTER}"
        );
        let e = errors(&upstream);
        assert!(
            e.contains("http_filters[0].typed_config.enable_upstream_stats"),
            "{e}"
        );
        let typo = format!(
            "- {{ name: envoy.filters.http.grpc_stats, typed_config: {{ '@type': {GRPC_STATS}, stats_for_all_method: true }} }}\n{ROUTER}"
        );
        let yaml = format!("stat_prefix: t\nhttp_filters:\n{typo}");
        let e = from_yaml::<HttpConnectionManager>(&yaml, ParseOptions::default())
            .expect_err("an unknown field");
        assert_eq!(e.path, "http_filters[0].typed_config.stats_for_all_method");
    }
}
