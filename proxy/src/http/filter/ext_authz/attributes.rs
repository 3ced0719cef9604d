//! The `CheckRequest` of one request: its connection's peers, the HTTP request as the filter sees
//! it, the route's context extensions and, when buffered, the body.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::SystemTime;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderMap as HeaderMapProto, HeaderValue as HeaderValueProto, Metadata,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as RequestAttrs, TlsSession,
};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Timestamp, Value};
use http::header::{CONTENT_LENGTH, HOST};
use http::request::Parts;
use http::Version;

use super::config::ExtAuthzConfig;
use crate::http::filter::{DynamicMetadata, Request};
use crate::tls::TlsInfo;

/// The request body as buffered for the check.
pub struct Body<'a> {
    pub bytes: &'a Bytes,
    pub pack_as_bytes: bool,
}

fn socket(a: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: a.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                a.port(),
            ))),
            ..SocketAddress::default()
        })),
    }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Envoy's principal of a certificate: its first URI SAN, else its subject.
fn peer_principal(tls: Option<&TlsInfo>) -> String {
    let Some(cert) = tls.and_then(|t| t.peer.as_ref()) else {
        return String::new();
    };
    cert.uri_sans
        .first()
        .cloned()
        .unwrap_or_else(|| cert.subject.clone())
}

/// The peer certificate as URL-encoded PEM, as Envoy sends it.
fn peer_certificate(tls: Option<&TlsInfo>) -> String {
    use base64::Engine;
    let Some(der) = tls.and_then(|t| t.peer.as_ref()).map(|c| &c.der) else {
        return String::new();
    };
    if der.is_empty() {
        return String::new();
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    url_encode(&pem)
}

/// Percent-encodes everything but unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The request's headers as the check sees them, in order, pseudo-headers first, filtered by
/// `allowed_headers` / `disallowed_headers`.
fn check_header_list(parts: &Parts, scheme: &str, cfg: &ExtAuthzConfig) -> Vec<(String, Vec<u8>)> {
    let host = parts.headers.get(HOST).map_or(&b""[..], |v| v.as_bytes());
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // Envoy's order of its pseudo-headers.
    let pseudo = [
        (":authority", host),
        (":path", path.as_bytes()),
        (":method", parts.method.as_str().as_bytes()),
        (":scheme", scheme.as_bytes()),
    ];
    let regular = parts
        .headers
        .iter()
        .filter(|(k, _)| *k != HOST)
        .map(|(k, v)| (k.as_str(), v.as_bytes()));
    pseudo
        .into_iter()
        .chain(regular)
        .filter(|(k, _)| {
            cfg.allowed_headers.as_ref().is_none_or(|m| m.matches(k))
                && !cfg
                    .disallowed_headers
                    .as_ref()
                    .is_some_and(|m| m.matches(k))
        })
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

/// The headers as `HttpRequest.headers`: repeated ones joined with `,`.
pub fn check_headers(parts: &Parts, scheme: &str, cfg: &ExtAuthzConfig) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    for (k, v) in check_header_list(parts, scheme, cfg) {
        let v = String::from_utf8_lossy(&v).into_owned();
        out.entry(k)
            .and_modify(|old| {
                old.push(',');
                old.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

/// The headers as `HttpRequest.header_map` (`encode_raw_headers`): raw values, one entry each.
fn raw_headers(parts: &Parts, scheme: &str, cfg: &ExtAuthzConfig) -> HeaderMapProto {
    HeaderMapProto {
        headers: check_header_list(parts, scheme, cfg)
            .into_iter()
            .map(|(key, raw_value)| HeaderValueProto {
                key,
                raw_value,
                ..HeaderValueProto::default()
            })
            .collect(),
    }
}

/// `metadata_context`: the configured namespaces of the request's dynamic metadata.
fn metadata_context(cfg: &ExtAuthzConfig, meta: &DynamicMetadata) -> Option<Metadata> {
    let mut filter_metadata = HashMap::new();
    for ns in &cfg.metadata_context_namespaces {
        let fields: HashMap<String, Value> = meta
            .namespace(ns)
            .map(|(k, v)| {
                let value = Value {
                    kind: Some(Kind::StringValue(v.to_string())),
                };
                (k.to_string(), value)
            })
            .collect();
        if !fields.is_empty() {
            filter_metadata.insert(ns.clone(), Struct { fields });
        }
    }
    (!filter_metadata.is_empty()).then(|| Metadata {
        filter_metadata,
        ..Metadata::default()
    })
}

/// What the check tells about the request besides its parts.
pub struct About<'a> {
    pub conn: &'a Request<'a>,
    pub scheme: &'a str,
    pub context_extensions: &'a BTreeMap<String, String>,
    pub meta: &'a DynamicMetadata,
}

/// Everything the check sends about the request.
pub fn check_request(
    cfg: &ExtAuthzConfig,
    about: &About<'_>,
    parts: &Parts,
    body: Option<Body<'_>>,
) -> CheckRequest {
    let (req, scheme, context_extensions) = (about.conn, about.scheme, about.context_extensions);
    let tls = req.tls;
    let source = Peer {
        address: Some(socket(req.peer)),
        principal: peer_principal(tls),
        certificate: if cfg.include_peer_certificate {
            peer_certificate(tls)
        } else {
            String::new()
        },
        ..Peer::default()
    };
    let destination = Peer {
        address: Some(socket(req.local)),
        principal: tls
            .and_then(|t| t.local_uri_sans.first().cloned())
            .unwrap_or_default(),
        ..Peer::default()
    };
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let size = match &body {
        Some(b) => b.bytes.len() as i64,
        None => parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0),
    };
    let (body, raw_body) = match body {
        Some(b) if b.pack_as_bytes => (String::new(), b.bytes.to_vec()),
        Some(b) => (String::from_utf8_lossy(b.bytes).into_owned(), Vec::new()),
        None => (String::new(), Vec::new()),
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let http = HttpRequest {
        // Envoy sends its stream id, a random 64-bit number, not x-request-id.
        id: rand::random::<u64>().to_string(),
        method: parts.method.as_str().to_string(),
        headers: if cfg.encode_raw_headers {
            HashMap::new()
        } else {
            check_headers(parts, scheme, cfg)
        },
        header_map: cfg
            .encode_raw_headers
            .then(|| raw_headers(parts, scheme, cfg)),
        path: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string(),
        host: header("host"),
        scheme: scheme.to_string(),
        size,
        protocol: protocol(parts.version).to_string(),
        body,
        raw_body,
        ..HttpRequest::default()
    };
    let tls_session = match tls {
        Some(t) if cfg.include_tls_session => Some(TlsSession {
            sni: req
                .requested_server_name
                .or(t.sni.as_deref())
                .unwrap_or_default()
                .to_string(),
        }),
        _ => None,
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(source),
            destination: Some(destination),
            request: Some(RequestAttrs {
                time: Some(Timestamp {
                    seconds: now.as_secs() as i64,
                    nanos: now.subsec_nanos() as i32,
                }),
                http: Some(http),
            }),
            context_extensions: context_extensions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            tls_session,
            metadata_context: metadata_context(cfg, about.meta),
            ..AttributeContext::default()
        }),
    }
}
