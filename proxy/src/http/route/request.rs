//! Route request view: the request's pseudo-headers (`:authority`, `:path`, `:scheme`, `:method`) as
//! Envoy sees them, read from `http::request::Parts` without allocating.

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Uri};

/// A header a matcher reads: an HTTP/2 pseudo-header or a regular header.
#[derive(Debug, Clone)]
pub(crate) enum HeaderKey {
    Method,
    Authority,
    Path,
    Scheme,
    /// `:status`, only present on responses (retriable_headers).
    Status,
    Regular(HeaderName),
}

impl HeaderKey {
    /// `None` when the name is neither a known pseudo-header nor a valid header name.
    pub(crate) fn parse(name: &str) -> Option<HeaderKey> {
        let lower = name.to_ascii_lowercase();
        Some(match lower.as_str() {
            ":method" => HeaderKey::Method,
            ":authority" => HeaderKey::Authority,
            ":path" => HeaderKey::Path,
            ":scheme" => HeaderKey::Scheme,
            ":status" => HeaderKey::Status,
            _ if lower.starts_with(':') => return None,
            _ => HeaderKey::Regular(HeaderName::from_bytes(lower.as_bytes()).ok()?),
        })
    }
}

/// Where header matchers read from: a request (pseudo-headers from the URI) or a response.
#[derive(Clone, Copy)]
pub(crate) enum HeaderSource<'a> {
    Request(&'a Parts),
    Response {
        status: u16,
        headers: &'a HeaderMap,
    },
    /// No headers at all: a connection that RBAC judges before any request (Envoy's network RBAC
    /// evaluates header matchers against an empty header map).
    Empty,
}

impl<'a> HeaderSource<'a> {
    /// Whether the header is present at all.
    pub(crate) fn present(&self, key: &HeaderKey) -> bool {
        match (self, key) {
            (HeaderSource::Request(_), HeaderKey::Method) => true,
            (HeaderSource::Request(p), HeaderKey::Authority) => authority(p).is_some(),
            (HeaderSource::Request(p), HeaderKey::Path) => p.uri.path_and_query().is_some(),
            (HeaderSource::Request(_), HeaderKey::Scheme) => true,
            (HeaderSource::Response { .. }, HeaderKey::Status) => true,
            (HeaderSource::Empty, _) => false,
            (_, HeaderKey::Regular(name)) => self.headers().is_some_and(|h| h.contains_key(name)),
            _ => false,
        }
    }

    fn headers(&self) -> Option<&'a HeaderMap> {
        match self {
            HeaderSource::Request(p) => Some(&p.headers),
            HeaderSource::Response { headers, .. } => Some(headers),
            HeaderSource::Empty => None,
        }
    }

    /// The header's value; several values of one header are joined with `,` as Envoy does (the only
    /// case that allocates).
    pub(crate) fn value(&self, key: &HeaderKey) -> Option<Cow<'a, str>> {
        match (self, key) {
            (HeaderSource::Request(p), HeaderKey::Method) => Some(Cow::Borrowed(p.method.as_str())),
            (HeaderSource::Request(p), HeaderKey::Authority) => authority(p).map(Cow::Borrowed),
            (HeaderSource::Request(p), HeaderKey::Path) => {
                p.uri.path_and_query().map(|pq| Cow::Borrowed(pq.as_str()))
            }
            (HeaderSource::Request(p), HeaderKey::Scheme) => Some(Cow::Borrowed(scheme(p))),
            (HeaderSource::Response { status, .. }, HeaderKey::Status) => {
                Some(Cow::Owned(status.to_string()))
            }
            (_, HeaderKey::Regular(name)) => self.headers().and_then(|h| joined(h, name)),
            _ => None,
        }
    }
}

/// All values of `name` joined by `,`, or `None` when absent.
pub(crate) fn joined<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(value_str(first));
    };
    let mut out = String::new();
    out.push_str(&value_str(first));
    for v in std::iter::once(second).chain(values) {
        out.push(',');
        out.push_str(&value_str(v));
    }
    Some(Cow::Owned(out))
}

/// A header value as text; bytes that are not UTF-8 (obs-text) are replaced rather than dropped.
pub(crate) fn value_str(v: &HeaderValue) -> Cow<'_, str> {
    String::from_utf8_lossy(v.as_bytes())
}

/// `:authority`: the URI's authority (HTTP/2, absolute-form HTTP/1) or else the `Host` header.
pub(crate) fn authority(p: &Parts) -> Option<&str> {
    if let Some(a) = p.uri.authority() {
        return Some(a.as_str());
    }
    p.headers
        .get(HOST)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
}

/// `:scheme`: the URI's scheme, else a sanitised `x-forwarded-proto`, else `http`. The server is
/// expected to put the connection's scheme into the URI (as Envoy sets `:scheme` for HTTP/1).
pub(crate) fn scheme(p: &Parts) -> &str {
    if let Some(s) = p.uri.scheme_str() {
        return s;
    }
    match forwarded_proto(&p.headers) {
        Some(x) if x.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    }
}

pub(crate) fn forwarded_proto(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
}

/// `:path` with its query; empty for a CONNECT (authority-form) request.
pub(crate) fn path_and_query(p: &Parts) -> &str {
    p.uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("")
}

/// The path without query string and fragment (Envoy's `removeQueryAndFragment`).
pub(crate) fn strip_query(path: &str) -> &str {
    match path.find(['?', '#']) {
        Some(i) => &path[..i],
        None => path,
    }
}

/// The byte offset of `:port` in a host, honouring IPv6 brackets (Envoy's `getPortStart`).
pub(crate) fn port_start(host: &str) -> Option<usize> {
    let colon = host.rfind(':')?;
    match host.rfind(']') {
        Some(bracket) if bracket > colon => None,
        _ => Some(colon),
    }
}

/// Replaces `:path`, keeping scheme and authority; `false` when the new path is not a valid URI path.
pub(crate) fn set_path(p: &mut Parts, path: &str) -> bool {
    let Ok(pq) = PathAndQuery::try_from(path) else {
        return false;
    };
    let mut up = p.uri.clone().into_parts();
    up.path_and_query = Some(pq);
    match Uri::from_parts(up) {
        Ok(uri) => {
            p.uri = uri;
            true
        }
        Err(_) => false,
    }
}

/// Replaces `:authority`: the `Host` header always, and the URI's authority when it has one.
pub(crate) fn set_authority(p: &mut Parts, value: &HeaderValue) {
    if p.uri.authority().is_some() {
        if let Ok(auth) = Authority::try_from(value.as_bytes()) {
            let mut up = p.uri.clone().into_parts();
            up.authority = Some(auth);
            if let Ok(uri) = Uri::from_parts(up) {
                p.uri = uri;
            }
        }
    }
    p.headers.insert(HOST, value.clone());
}

/// ASCII case-insensitive `starts_with` on bytes (no char-boundary concerns).
pub(crate) fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

pub(crate) fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

pub(crate) fn contains_ignore_case(s: &str, needle: &str) -> bool {
    needle.is_empty()
        || s.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}
