//! `envoy.filters.network.http_connection_manager` → the validated connection-manager model.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{CodecType, RouteSpecifier, ServerHeaderTransformation},
    HttpConnectionManager,
};

use super::istio::HttpIstio;
use super::rds::Routes;
use super::{duration, BuildContext, ConfigErrors, Path};
use crate::access_log::AccessLogs;
use crate::http::route::{RouteContext, RouteTable};
use crate::listener::address::cidr;
use crate::listener::Cidr;

/// Which HTTP versions a connection manager speaks downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/1.1 or h2 prior knowledge, detected from the first bytes.
    Auto,
    Http1,
    Http2,
}

/// What to do with the `server` response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerHeader {
    Overwrite,
    AppendIfAbsent,
    PassThrough,
}

/// `forward_client_cert_details`: what to do with `x-forwarded-client-cert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardClientCert {
    Sanitize,
    ForwardOnly,
    AppendForward,
    SanitizeSet,
    AlwaysForwardOnly,
}

/// `set_current_client_cert_details`: which facts of the client certificate XFCC carries (`By` and
/// `Hash` are always there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCertDetails {
    pub subject: bool,
    pub uri: bool,
    pub dns: bool,
}

/// The validated connection manager: everything the HTTP stages read for one filter chain.
#[derive(Debug)]
pub struct HcmConfig {
    pub stat_prefix: String,
    pub codec: Codec,
    pub routes: Routes,
    pub server_name: String,
    pub server_header: ServerHeader,
    /// Zero means disabled, as in Envoy.
    pub stream_idle_timeout: Option<Duration>,
    pub request_timeout: Option<Duration>,
    pub request_headers_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub max_connection_duration: Option<Duration>,
    pub max_headers_count: usize,
    pub max_request_headers_kb: u32,
    pub use_remote_address: bool,
    pub xff_num_trusted_hops: u32,
    pub skip_xff_append: bool,
    pub via: Option<String>,
    pub generate_request_id: bool,
    pub preserve_external_request_id: bool,
    pub always_set_request_id_in_response: bool,
    pub websocket: bool,
    /// `upgrade_configs` enables CONNECT (routes may still override it).
    pub connect: bool,
    /// Upgrade types other than websocket that are enabled (lowercase).
    pub upgrades: Vec<String>,
    pub strip_matching_host_port: bool,
    pub strip_any_host_port: bool,
    pub merge_slashes: bool,
    pub normalize_path: bool,
    /// `internal_address_config.cidr_ranges`; empty means no address is internal (Envoy's default).
    pub internal_cidrs: Vec<Cidr>,
    pub forward_client_cert: ForwardClientCert,
    pub client_cert_details: ClientCertDetails,
    pub access_logs: AccessLogs,
    pub drain_timeout: Duration,
    /// Istio's stats and metadata exchange filters, when the chain has them.
    pub istio: HttpIstio,
    /// The HTTP filters before the router, in order.
    pub filters: Vec<crate::http::filter::FilterSpec>,
}

impl HcmConfig {
    /// Whether a trusted client address counts as internal.
    pub fn is_internal(&self, ip: std::net::IpAddr) -> bool {
        self.internal_cidrs.iter().any(|c| c.contains(ip))
    }
}

fn enabled(d: Option<Duration>) -> Option<Duration> {
    d.filter(|d| !d.is_zero())
}

/// Translates one connection manager (`path` points at its `typed_config`).
pub fn build(
    hcm: &HttpConnectionManager,
    path: &Path,
    ctx: &BuildContext<'_>,
) -> Result<HcmConfig, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let codec = match CodecType::try_from(hcm.codec_type) {
        Ok(CodecType::Auto) => Codec::Auto,
        Ok(CodecType::Http1) => Codec::Http1,
        Ok(CodecType::Http2) => Codec::Http2,
        Ok(CodecType::Http3) => {
            errors.push(path.field("codec_type"), "HTTP3 is not supported");
            Codec::Auto
        }
        Err(_) => {
            errors.push(
                path.field("codec_type"),
                format!("unknown codec type {}", hcm.codec_type),
            );
            Codec::Auto
        }
    };
    if hcm.stat_prefix.is_empty() {
        errors.push(
            path.field("stat_prefix"),
            "value length must be at least 1 characters",
        );
    }
    let (istio, filters) =
        super::http_filters::check(hcm, path, ctx.opts, ctx.direction, &mut errors);
    let routes = match &hcm.route_specifier {
        Some(RouteSpecifier::RouteConfig(rc)) => {
            let rctx = RouteContext {
                cluster_exists: &|name: &str| ctx.cluster_exists(name),
                validate_clusters: rc.validate_clusters.map(|v| v.value).unwrap_or(true),
                filter_config_known: &crate::http::filter::per_route_known,
            };
            match RouteTable::from_proto(rc, &path.field("route_config"), &rctx) {
                Ok(t) => Some(Routes::Static(Arc::new(t))),
                Err(e) => {
                    errors.extend(e);
                    None
                }
            }
        }
        Some(RouteSpecifier::Rds(rds)) => {
            let rpath = path.field("rds");
            if rds.route_config_name.is_empty() {
                errors.push(
                    rpath.field("route_config_name"),
                    "value length must be at least 1 characters",
                );
            }
            use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
            let name = &rds.route_config_name;
            #[allow(deprecated)]
            match rds
                .config_source
                .as_ref()
                .and_then(|c| c.config_source_specifier.as_ref())
            {
                Some(ConfigSourceSpecifier::Ads(_) | ConfigSourceSpecifier::ApiConfigSource(_)) => {
                    Some(Routes::Rds(ctx.routes.subscribe(name)))
                }
                Some(ConfigSourceSpecifier::PathConfigSource(p)) => Some(Routes::Rds(
                    ctx.routes.watch_file(name, p.path.clone().into()),
                )),
                Some(ConfigSourceSpecifier::Path(p)) => {
                    Some(Routes::Rds(ctx.routes.watch_file(name, p.into())))
                }
                _ => {
                    errors.push(
                        rpath.field("config_source"),
                        "a config_source (ads, api_config_source or path_config_source) is required",
                    );
                    None
                }
            }
        }
        Some(RouteSpecifier::ScopedRoutes(_)) => {
            errors.push(
                path.field("scoped_routes"),
                "scoped routes are not supported",
            );
            None
        }
        None => {
            errors.push(
                path,
                "one of route_config, rds or scoped_routes is required",
            );
            None
        }
    };
    for (field, set) in [
        ("local_reply_config", hcm.local_reply_config.is_some()),
        (
            "original_ip_detection_extensions",
            !hcm.original_ip_detection_extensions.is_empty(),
        ),
        (
            "early_header_mutation_extensions",
            !hcm.early_header_mutation_extensions.is_empty(),
        ),
    ] {
        if set {
            errors.push(path.field(field), "not supported yet");
        }
    }
    check_request_id(hcm, path, &mut errors);
    if hcm.tracing.is_some() {
        tracing::warn!(path = %path, "tracing is not supported; requests are proxied without spans");
    }

    let mut websocket = false;
    let mut connect = false;
    let mut upgrades = Vec::new();
    for (i, u) in hcm.upgrade_configs.iter().enumerate() {
        let p = path.field("upgrade_configs").index(i);
        if !u.filters.is_empty() {
            errors.push(
                p.field("filters"),
                "per-upgrade filter chains are not supported",
            );
        }
        if u.enabled.map(|b| b.value).unwrap_or(true) {
            let t = u.upgrade_type.to_ascii_lowercase();
            if t == "websocket" {
                websocket = true;
            } else if t == "connect" {
                connect = true;
            } else {
                upgrades.push(t);
            }
        }
    }

    let common = hcm.common_http_protocol_options.unwrap_or_default();
    let access_logs = match AccessLogs::from_protos(
        &hcm.access_log,
        &path.field("access_log"),
        ctx.log_writers,
    ) {
        Ok(a) => Some(a),
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    let server_header = match ServerHeaderTransformation::try_from(hcm.server_header_transformation)
    {
        Ok(ServerHeaderTransformation::AppendIfAbsent) => ServerHeader::AppendIfAbsent,
        Ok(ServerHeaderTransformation::PassThrough) => ServerHeader::PassThrough,
        _ => ServerHeader::Overwrite,
    };
    let strip_any_host_port = matches!(
        hcm.strip_port_mode,
        Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::StripPortMode::StripAnyHostPort(true))
    );

    let mut internal_cidrs = Vec::new();
    if let Some(iac) = &hcm.internal_address_config {
        let ipath = path.field("internal_address_config").field("cidr_ranges");
        for (i, r) in iac.cidr_ranges.iter().enumerate() {
            match cidr(r, &ipath.index(i)) {
                Ok(c) => internal_cidrs.push(c),
                Err(e) => errors.0.push(e),
            }
        }
    }
    let forward_client_cert = match hcm.forward_client_cert_details {
        1 => ForwardClientCert::ForwardOnly,
        2 => ForwardClientCert::AppendForward,
        3 => ForwardClientCert::SanitizeSet,
        4 => ForwardClientCert::AlwaysForwardOnly,
        _ => ForwardClientCert::Sanitize,
    };
    let mut client_cert_details = ClientCertDetails::default();
    if let Some(d) = &hcm.set_current_client_cert_details {
        let dpath = path.field("set_current_client_cert_details");
        client_cert_details = ClientCertDetails {
            subject: d.subject.as_ref().is_some_and(|b| b.value),
            uri: d.uri,
            dns: d.dns,
        };
        for (field, set) in [("cert", d.cert), ("chain", d.chain), ("issuer", d.issuer)] {
            if set {
                errors.push(dpath.field(field), "not supported yet");
            }
        }
    }
    if hcm.path_with_escaped_slashes_action > 1 {
        errors.push(
            path.field("path_with_escaped_slashes_action"),
            "only KEEP_UNCHANGED is supported yet",
        );
    }

    let (Some(routes), Some(access_logs)) = (routes, access_logs) else {
        return Err(errors);
    };
    errors.finish(HcmConfig {
        stat_prefix: hcm.stat_prefix.clone(),
        codec,
        routes,
        server_name: if hcm.server_name.is_empty() {
            "envoy".into()
        } else {
            hcm.server_name.clone()
        },
        server_header,
        stream_idle_timeout: enabled(
            duration(&hcm.stream_idle_timeout).or(Some(Duration::from_secs(300))),
        ),
        request_timeout: enabled(duration(&hcm.request_timeout)),
        request_headers_timeout: enabled(duration(&hcm.request_headers_timeout)),
        idle_timeout: enabled(duration(&common.idle_timeout).or(Some(Duration::from_secs(3600)))),
        max_connection_duration: enabled(duration(&common.max_connection_duration)),
        max_headers_count: common
            .max_headers_count
            .map(|v| v.value as usize)
            .unwrap_or(100),
        max_request_headers_kb: hcm.max_request_headers_kb.map(|v| v.value).unwrap_or(60),
        use_remote_address: hcm.use_remote_address.map(|v| v.value).unwrap_or(false),
        xff_num_trusted_hops: hcm.xff_num_trusted_hops,
        skip_xff_append: hcm.skip_xff_append,
        via: (!hcm.via.is_empty()).then(|| hcm.via.clone()),
        generate_request_id: hcm.generate_request_id.map(|v| v.value).unwrap_or(true),
        preserve_external_request_id: hcm.preserve_external_request_id,
        always_set_request_id_in_response: hcm.always_set_request_id_in_response,
        websocket,
        connect,
        upgrades,
        strip_matching_host_port: hcm.strip_matching_host_port,
        strip_any_host_port,
        merge_slashes: hcm.merge_slashes,
        normalize_path: hcm.normalize_path.map(|v| v.value).unwrap_or(false),
        internal_cidrs,
        forward_client_cert,
        client_cert_details,
        access_logs,
        drain_timeout: duration(&hcm.drain_timeout).unwrap_or(Duration::from_secs(5)),
        istio,
        filters,
    })
}

/// `request_id_extension`: only the UUID extension, Envoy's default. Its two settings shape how a
/// tracing decision is packed into the ID and read back, and remora does not trace.
fn check_request_id(hcm: &HttpConnectionManager, path: &Path, errors: &mut ConfigErrors) {
    const UUID: &str = "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig";
    let Some(ext) = &hcm.request_id_extension else {
        return;
    };
    let rpath = path.field("request_id_extension").field("typed_config");
    match ext.typed_config.as_ref().map(super::parse::any_type_name) {
        Some(t) if t == UUID => {}
        Some(t) => errors.push(
            rpath,
            format!("request ID extension {t} is not supported yet"),
        ),
        None => errors.push(rpath, "a request ID extension needs a typed_config"),
    }
}
