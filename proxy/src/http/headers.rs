//! Header preparation the connection manager does on every request and response: hop-by-hop removal,
//! `x-forwarded-*`, `x-request-id`, `server`.

use std::net::IpAddr;
use std::sync::OnceLock;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, SERVER, TE, TRANSFER_ENCODING, UPGRADE,
};

use crate::config::hcm::{ClientCertDetails, ForwardClientCert, HcmConfig, ServerHeader};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_ENVOY_INTERNAL: HeaderName = HeaderName::from_static("x-envoy-internal");
pub static X_ENVOY_EXTERNAL_ADDRESS: HeaderName =
    HeaderName::from_static("x-envoy-external-address");
pub static X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
pub static X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
pub static X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-timeout-ms");
pub static X_ENVOY_UPSTREAM_RQ_PER_TRY_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms");
pub static X_ENVOY_OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");
pub static X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the headers that describe one hop only. `keep_upgrade` keeps `connection: upgrade` and
/// `upgrade` for a WebSocket that is being forwarded.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of them: one pass over the names instead of a hashed removal each.
    if !keep_upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Headers named by `connection` are hop-by-hop too (RFC 9110 §7.6.1).
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == UPGRADE))
        .collect();
    for n in named {
        headers.remove(n);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(TRANSFER_ENCODING);
    if let Some(te) = headers.get(TE) {
        // Only `te: trailers` may cross a proxy.
        if !te
            .to_str()
            .map(|v| {
                v.split(',')
                    .any(|p| p.trim().eq_ignore_ascii_case("trailers"))
            })
            .unwrap_or(false)
        {
            headers.remove(TE);
        } else {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == TRANSFER_ENCODING
        || name == TE
}

/// Whether any header is one of Envoy's `x-envoy-*` (most requests carry none).
pub fn has_envoy_header(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|k| k.as_str().as_bytes().starts_with(b"x-envoy-"))
}

/// Whether a request asks for a WebSocket upgrade (HTTP/1.1 `Upgrade: websocket`).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    upgrade && connection
}

/// Headers only trusted from internal requests; stripped from every other one, as Envoy's
/// connection manager does before routing.
static INTERNAL_ONLY: [HeaderName; 15] = [
    HeaderName::from_static("x-envoy-decorator-operation"),
    HeaderName::from_static("x-envoy-downstream-service-cluster"),
    HeaderName::from_static("x-envoy-downstream-service-node"),
    HeaderName::from_static("x-envoy-retry-on"),
    HeaderName::from_static("x-envoy-retry-grpc-on"),
    HeaderName::from_static("x-envoy-max-retries"),
    HeaderName::from_static("x-envoy-upstream-alt-stat-name"),
    HeaderName::from_static("x-envoy-upstream-rq-timeout-ms"),
    HeaderName::from_static("x-envoy-upstream-rq-per-try-timeout-ms"),
    HeaderName::from_static("x-envoy-upstream-rq-timeout-alt-response"),
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms"),
    HeaderName::from_static("x-envoy-force-trace"),
    HeaderName::from_static("x-envoy-ip-tags"),
    HeaderName::from_static("x-envoy-original-url"),
    HeaderName::from_static("x-envoy-hedge-on-per-try-timeout"),
];

/// The machine's first non-loopback address of the peer's family: what Envoy appends to
/// `x-forwarded-for` for a loopback peer when it uses the remote address.
fn local_host_address(v6: bool) -> Option<IpAddr> {
    static ADDRS: OnceLock<(Option<IpAddr>, Option<IpAddr>)> = OnceLock::new();
    let (v4, v6addr) = ADDRS.get_or_init(|| {
        let ifaces = if_addrs::get_if_addrs().unwrap_or_default();
        let pick = |want_v6: bool| {
            ifaces
                .iter()
                .map(|i| i.ip())
                .find(|ip| !ip.is_loopback() && ip.is_ipv6() == want_v6)
        };
        (pick(false), pick(true))
    });
    if v6 {
        *v6addr
    } else {
        *v4
    }
}

fn xff_entries(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Applies the connection manager's request-side header policy (Envoy's `mutateRequestHeaders`):
/// `x-forwarded-for` / `-proto`, internal or edge classification, internal-only header stripping,
/// `x-envoy-external-address`, `x-request-id`, `via`.
///
/// Returns the downstream remote address when `x-forwarded-for` decides it (Envoy's "original client"
/// when the connection's peer is not trusted as the client: `use_remote_address: false`, or trusted
/// hops); `None` means the peer is the remote address.
pub fn prepare_request(
    headers: &mut HeaderMap,
    peer: IpAddr,
    scheme: &'static str,
    cfg: &HcmConfig,
    internal_only: &[HeaderName],
) -> Option<IpAddr> {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
        v4 => v4,
    };
    let (trusted, single) = if cfg.use_remote_address {
        let trusted = if cfg.xff_num_trusted_hops == 0 {
            Some(peer)
        } else {
            let xff = xff_entries(headers);
            xff.len()
                .checked_sub(cfg.xff_num_trusted_hops as usize)
                .and_then(|i| xff.get(i))
                .and_then(|s| s.parse().ok())
        };
        if !cfg.skip_xff_append {
            let appended = if peer.is_loopback() {
                local_host_address(peer.is_ipv6()).unwrap_or(peer)
            } else {
                peer
            };
            append_xff(headers, appended);
        }
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
        (trusted, xff_entries(headers).len() == 1)
    } else {
        let xff = xff_entries(headers);
        let from_right = cfg.xff_num_trusted_hops as usize + 1;
        let trusted: Option<IpAddr> = xff
            .len()
            .checked_sub(from_right)
            .and_then(|i| xff.get(i))
            .and_then(|s| s.parse().ok());
        let single = xff.len() == 1;
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
        }
        (trusted, single)
    };
    let internal = single && trusted.is_some_and(|ip| cfg.is_internal(ip));
    let edge = !internal && cfg.use_remote_address;
    let envoy_headers = has_envoy_header(headers);
    if internal {
        headers.insert(&X_ENVOY_INTERNAL, HeaderValue::from_static("true"));
    } else {
        if envoy_headers {
            headers.remove(&X_ENVOY_INTERNAL);
            for h in &INTERNAL_ONLY {
                headers.remove(h);
            }
        }
        for h in internal_only {
            headers.remove(h);
        }
    }
    if envoy_headers {
        headers.remove(&X_ENVOY_EXTERNAL_ADDRESS);
    }
    if edge {
        if let Some(ip) = trusted {
            if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
                headers.insert(&X_ENVOY_EXTERNAL_ADDRESS, v);
            }
        }
    }
    if cfg.generate_request_id {
        let reset = edge && !cfg.preserve_external_request_id;
        if reset || !headers.contains_key(&X_REQUEST_ID) {
            if let Ok(v) = HeaderValue::from_bytes(&uuid_v4_bytes()) {
                headers.insert(&X_REQUEST_ID, v);
            }
        }
    }
    if let Some(via) = &cfg.via {
        append_via(headers, via);
    }
    trusted.filter(|_| !cfg.use_remote_address || cfg.xff_num_trusted_hops > 0)
}

/// Adds the connection manager's `via` to a response, as Envoy does on both directions.
pub fn prepare_response(headers: &mut HeaderMap, cfg: &HcmConfig) {
    if let Some(via) = &cfg.via {
        append_via(headers, via);
    }
    set_server(headers, cfg);
}

fn append_xff(headers: &mut HeaderMap, ip: IpAddr) {
    let joined = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing},{ip}"),
        _ => ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
}

fn append_via(headers: &mut HeaderMap, via: &str) {
    static VIA: HeaderName = HeaderName::from_static("via");
    let joined = match headers.get(&VIA).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.is_empty() => format!("{existing}, {via}"),
        _ => via.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(&VIA, v);
    }
}

/// Applies the `server` header policy to a response (upstream or local).
pub fn set_server(headers: &mut HeaderMap, cfg: &HcmConfig) {
    match cfg.server_header {
        ServerHeader::PassThrough => {}
        ServerHeader::AppendIfAbsent if headers.contains_key(SERVER) => {}
        _ => {
            if let Ok(v) = HeaderValue::from_str(&cfg.server_name) {
                headers.insert(SERVER, v);
            }
        }
    }
}

/// Strips the port from the Host header when asked (`strip_matching_host_port`, `strip_any_host_port`).
pub fn strip_host_port(headers: &mut HeaderMap, local_port: u16, cfg: &HcmConfig) {
    if !cfg.strip_any_host_port && !cfg.strip_matching_host_port {
        return;
    }
    let Some(host) = headers.get(HOST).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let (name, port) = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => (&host[..i], &host[i + 1..]),
        _ => return,
    };
    let strip = cfg.strip_any_host_port || port.parse::<u16>().ok() == Some(local_port);
    if strip {
        if let Ok(v) = HeaderValue::from_str(name) {
            headers.insert(HOST, v);
        }
    }
}

/// A random UUID (version 4) in its canonical text form, as ASCII on the stack: every request
/// without an `x-request-id` gets one, so no formatting machinery on this path.
fn uuid_v4_bytes() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    let mut i = 0;
    for (n, x) in b.iter().enumerate() {
        if matches!(n, 4 | 6 | 8 | 10) {
            i += 1;
        }
        out[i] = HEX[usize::from(x >> 4)];
        out[i + 1] = HEX[usize::from(x & 0x0f)];
        i += 2;
    }
    out
}

static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// `x-forwarded-client-cert` as Envoy's `forward_client_cert_details` asks: sanitized unless the
/// connection is mTLS (or ALWAYS_FORWARD_ONLY), then forwarded, appended to, or set from the client
/// certificate as `By=<our URI SAN>;Hash=<sha256>;Subject="…";URI=…;DNS=…`.
pub fn forward_client_cert(
    headers: &mut HeaderMap,
    tls: Option<&crate::tls::TlsInfo>,
    mode: ForwardClientCert,
    d: ClientCertDetails,
) {
    use ForwardClientCert as F;
    let peer = tls.and_then(|t| t.peer.as_ref().map(|p| (t, p)));
    if mode == F::AlwaysForwardOnly {
        return;
    }
    let Some((tls, peer)) = peer else {
        headers.remove(&X_FORWARDED_CLIENT_CERT);
        return;
    };
    let element = || {
        let mut parts: Vec<String> = tls
            .local_uri_sans
            .iter()
            .map(|by| format!("By={by}"))
            .collect();
        parts.push(format!("Hash={}", peer.sha256));
        if d.subject {
            parts.push(format!("Subject=\"{}\"", peer.subject.replace('"', "\\\"")));
        }
        if d.uri {
            parts.extend(peer.uri_sans.iter().map(|u| format!("URI={u}")));
        }
        if d.dns {
            parts.extend(peer.dns_sans.iter().map(|n| format!("DNS={n}")));
        }
        parts.join(";")
    };
    let value = match mode {
        F::Sanitize => {
            headers.remove(&X_FORWARDED_CLIENT_CERT);
            return;
        }
        F::ForwardOnly | F::AlwaysForwardOnly => return,
        F::SanitizeSet => element(),
        F::AppendForward => match headers
            .get(&X_FORWARDED_CLIENT_CERT)
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.is_empty() => format!("{prev},{}", element()),
            _ => element(),
        },
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(&X_FORWARDED_CLIENT_CERT, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TE, HeaderValue::from_static("gzip"));
        h.insert("x-end", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-end"));
    }

    fn mtls_info() -> crate::tls::TlsInfo {
        crate::tls::TlsInfo {
            version: "TLSv1.3",
            cipher: "TLS_AES_128_GCM_SHA256",
            sni: None,
            alpn: None,
            peer: Some(crate::tls::PeerCert {
                uri_sans: vec!["spiffe://td/ns/a/sa/client".into()],
                dns_sans: vec!["client.a".into()],
                subject: String::new(),
                serial: "01".into(),
                spiffe_id: Some("spiffe://td/ns/a/sa/client".into()),
                sha256: "abcd".into(),
                der: Default::default(),
                signature_scheme: None,
            }),
            local_uri_sans: vec!["spiffe://td/ns/b/sa/server".into()],
        }
    }

    #[test]
    fn xfcc_follows_forward_client_cert_details() {
        let uri = ClientCertDetails {
            uri: true,
            ..Default::default()
        };
        let forged = || {
            let mut h = HeaderMap::new();
            h.insert(
                "x-forwarded-client-cert",
                HeaderValue::from_static("By=evil"),
            );
            h
        };
        let xfcc = |h: &HeaderMap| {
            h.get("x-forwarded-client-cert")
                .map(|v| v.to_str().unwrap_or("").to_string())
        };
        let info = mtls_info();

        let mut h = forged();
        forward_client_cert(&mut h, Some(&info), ForwardClientCert::SanitizeSet, uri);
        assert_eq!(
            xfcc(&h).as_deref(),
            Some("By=spiffe://td/ns/b/sa/server;Hash=abcd;URI=spiffe://td/ns/a/sa/client")
        );

        let mut h = forged();
        forward_client_cert(
            &mut h,
            Some(&info),
            ForwardClientCert::AppendForward,
            ClientCertDetails::default(),
        );
        assert_eq!(
            xfcc(&h).as_deref(),
            Some("By=evil,By=spiffe://td/ns/b/sa/server;Hash=abcd")
        );

        let mut h = forged();
        forward_client_cert(&mut h, None, ForwardClientCert::SanitizeSet, uri);
        assert_eq!(
            xfcc(&h),
            None,
            "plaintext requests never carry a client's XFCC"
        );

        let mut h = forged();
        forward_client_cert(&mut h, Some(&info), ForwardClientCert::Sanitize, uri);
        assert_eq!(xfcc(&h), None);

        let mut h = forged();
        forward_client_cert(&mut h, None, ForwardClientCert::AlwaysForwardOnly, uri);
        assert_eq!(xfcc(&h).as_deref(), Some("By=evil"));
    }

    #[test]
    fn internal_only_headers_are_all_x_envoy() {
        // `prepare_request` skips their removal when no header starts with `x-envoy-`.
        assert!(INTERNAL_ONLY
            .iter()
            .chain([&X_ENVOY_INTERNAL, &X_ENVOY_EXTERNAL_ADDRESS])
            .all(|h| h.as_str().starts_with("x-envoy-")));
    }

    #[test]
    fn uuid_shape() {
        let bytes = uuid_v4_bytes();
        let u = std::str::from_utf8(&bytes).expect("ASCII");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4", "{u}: version 4");
        assert!("89ab".contains(&u[19..20]), "{u}: RFC 4122 variant");
        for (i, c) in u.char_indices() {
            match i {
                8 | 13 | 18 | 23 => assert_eq!(c, '-', "{u}"),
                _ => assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{u}"),
            }
        }
        assert_ne!(uuid_v4_bytes(), bytes, "random");
    }
}
