//! Connect configuration: the upstream HTTP protocol and connection pool options
//! (`typed_extension_protocol_options` and the deprecated cluster fields).

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::cluster::ClusterProtocolSelection;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    Http2ProtocolOptions, HttpProtocolOptions as CommonOptions,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    explicit_http_config::ProtocolConfig, UpstreamProtocolOptions,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use tracing::warn;

use crate::config::parse::{unpack_any, ParseOptions};
use crate::config::{ConfigErrors, Path};

use super::duration;

const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const TCP_OPTIONS: &str = "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions";

/// Which HTTP version requests are sent upstream with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    /// `use_downstream_protocol_config`: the version the request arrived with.
    Downstream,
}

/// `http2_protocol_options` that map onto the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Http2Settings {
    pub initial_stream_window_size: Option<u32>,
    pub initial_connection_window_size: Option<u32>,
    pub max_concurrent_streams: Option<u32>,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProtocolSpec {
    pub protocol: Protocol,
    /// Close a connection idle for this long (default 1 h; `0s` disables).
    pub idle_timeout: Option<Duration>,
    pub max_requests_per_connection: Option<u32>,
    pub http2: Http2Settings,
    /// `auto_config`: over TLS, ALPN offers h2 and http/1.1 and the server's choice wins.
    pub auto: bool,
}

fn http2_settings(o: &Http2ProtocolOptions) -> Http2Settings {
    let ka = o.connection_keepalive.as_ref();
    Http2Settings {
        initial_stream_window_size: o.initial_stream_window_size.map(|v| v.value),
        initial_connection_window_size: o.initial_connection_window_size.map(|v| v.value),
        max_concurrent_streams: o.max_concurrent_streams.map(|v| v.value),
        keepalive_interval: ka.and_then(|k| k.interval.as_ref()).map(duration),
        keepalive_timeout: ka.and_then(|k| k.timeout.as_ref()).map(duration),
    }
}

fn apply_common(spec: &mut ProtocolSpec, o: &CommonOptions, c: &Cluster, path: &Path) {
    if let Some(t) = &o.idle_timeout {
        let t = duration(t);
        spec.idle_timeout = (!t.is_zero()).then_some(t);
    }
    if let Some(m) = o.max_requests_per_connection {
        spec.max_requests_per_connection = (m.value > 0).then_some(m.value);
    }
    if o.max_connection_duration.is_some() {
        warn!(cluster = %c.name, path = %path.field("max_connection_duration"), "max_connection_duration is ignored");
    }
    if o.max_stream_duration.is_some() {
        warn!(cluster = %c.name, path = %path.field("max_stream_duration"), "upstream max_stream_duration is ignored");
    }
}

#[allow(deprecated)]
pub(super) fn from_cluster(c: &Cluster, path: &Path, errs: &mut ConfigErrors) -> ProtocolSpec {
    let mut spec = ProtocolSpec {
        protocol: Protocol::Http1,
        idle_timeout: Some(Duration::from_secs(3600)),
        max_requests_per_connection: None,
        http2: Http2Settings::default(),
        auto: false,
    };
    // The deprecated cluster fields first; the extension options win when both are given.
    if let Some(h2) = &c.http2_protocol_options {
        spec.protocol = Protocol::Http2;
        spec.http2 = http2_settings(h2);
    }
    if c.protocol_selection == ClusterProtocolSelection::UseDownstreamProtocol as i32 {
        spec.protocol = Protocol::Downstream;
    }
    if let Some(o) = &c.common_http_protocol_options {
        apply_common(&mut spec, o, c, &path.field("common_http_protocol_options"));
    }
    if let Some(m) = c.max_requests_per_connection {
        spec.max_requests_per_connection = (m.value > 0).then_some(m.value);
    }

    let opts_path = path.field("typed_extension_protocol_options");
    let mut keys: Vec<&String> = c.typed_extension_protocol_options.keys().collect();
    keys.sort();
    for key in keys {
        let any = &c.typed_extension_protocol_options[key];
        let kp = opts_path.field(key);
        match key.as_str() {
            HTTP_OPTIONS => {
                if c.http2_protocol_options.is_some() || c.common_http_protocol_options.is_some() {
                    errs.push(&kp, "cannot combine HttpProtocolOptions with the deprecated cluster protocol fields");
                }
                match unpack_any::<HttpProtocolOptions>(any, ParseOptions::default()) {
                    Ok(o) => apply_http_options(&mut spec, &o, c, &kp, errs),
                    Err(e) => errs.push(kp.field(&e.path), e.message),
                }
            }
            TCP_OPTIONS => {
                warn!(cluster = %c.name, path = %kp, "TcpProtocolOptions are ignored");
            }
            other => errs.push(
                &kp,
                format!("no protocol options implementation for name: '{other}'"),
            ),
        }
    }
    spec
}

fn apply_http_options(
    spec: &mut ProtocolSpec,
    o: &HttpProtocolOptions,
    c: &Cluster,
    path: &Path,
    errs: &mut ConfigErrors,
) {
    if let Some(common) = &o.common_http_protocol_options {
        apply_common(spec, common, c, &path.field("common_http_protocol_options"));
    }
    if let Some(u) = &o.upstream_http_protocol_options {
        // Per-request SNI needs connections keyed by SNI, which the pools do not do yet.
        if u.auto_sni || u.auto_san_validation || !u.override_auto_sni_header.is_empty() {
            errs.push(
                path.field("upstream_http_protocol_options"),
                "auto_sni and auto_san_validation are not supported yet; set sni in the UpstreamTlsContext",
            );
        }
    }
    if !o.http_filters.is_empty() {
        errs.push(
            path.field("http_filters"),
            "upstream HTTP filters are not supported yet",
        );
    }
    match &o.upstream_protocol_options {
        None => {}
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match &e.protocol_config {
            Some(ProtocolConfig::Http2ProtocolOptions(h2)) => {
                spec.protocol = Protocol::Http2;
                spec.http2 = http2_settings(h2);
            }
            Some(ProtocolConfig::Http3ProtocolOptions(_)) => errs.push(
                path.field("explicit_http_config")
                    .field("http3_protocol_options"),
                "HTTP/3 upstreams are not supported",
            ),
            Some(ProtocolConfig::HttpProtocolOptions(_)) | None => spec.protocol = Protocol::Http1,
        },
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(d)) => {
            spec.protocol = Protocol::Downstream;
            if let Some(h2) = &d.http2_protocol_options {
                spec.http2 = http2_settings(h2);
            }
        }
        Some(UpstreamProtocolOptions::AutoConfig(a)) => {
            // ALPN decides with TLS; plaintext connections are HTTP/1.1.
            spec.protocol = Protocol::Http1;
            spec.auto = true;
            if let Some(h2) = &a.http2_protocol_options {
                spec.http2 = http2_settings(h2);
            }
            if a.http3_protocol_options.is_some() {
                warn!(cluster = %c.name, path = %path.field("auto_config"), "HTTP/3 is not offered upstream");
            }
        }
    }
}
