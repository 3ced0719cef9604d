//! Route redirects: the `Location` Envoy builds for a `redirect` action (and for TLS-required virtual
//! hosts), and the local 3xx response carrying it.

use std::borrow::Cow;

use envoy_types::pb::envoy::config::route::v3::{
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    RedirectAction,
};
use http::header::{HeaderValue, LOCATION};
use http::request::Parts;
use http::{Response, StatusCode};

use super::build::Build;
use super::formatter::{FormatContext, Formatter, HeaderVars};
use super::request::{self, forwarded_proto, port_start};
use super::rewrite::{MatchedPath, PathRewrite};
use super::string_match::RegexRewrite;
use crate::config::Path;
use crate::http::body::{self, BoxBody};

#[derive(Debug, Clone)]
enum PathRedirect {
    None,
    /// `path_redirect`; when it has a query it replaces the request's and `strip_query` is moot.
    Path {
        path: String,
        has_query: bool,
    },
    Rewrite(PathRewrite),
    /// `path_rewrite` with command operators; an empty result keeps the request's path.
    Template(Formatter),
}

/// A `redirect` action.
#[derive(Debug, Clone)]
pub struct Redirect {
    scheme: Option<String>,
    host: Option<String>,
    /// `:port`, ready to append.
    port: Option<String>,
    path: PathRedirect,
    matched: MatchedPath,
    strip_query: bool,
    status: StatusCode,
    /// The virtual host's `require_tls` redirect: `https://` + the request's host and path as-is.
    tls_only: bool,
}

impl Redirect {
    pub(crate) fn from_proto(
        r: &RedirectAction,
        matched: MatchedPath,
        path: &Path,
        b: &mut Build<'_>,
    ) -> Option<Redirect> {
        let scheme = match &r.scheme_rewrite_specifier {
            Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".to_string()),
            Some(SchemeRewriteSpecifier::SchemeRedirect(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        let port = match r.port_redirect {
            0 => None,
            p @ 1..=65535 => Some(format!(":{p}")),
            p => {
                b.errs
                    .push(path.field("port_redirect"), format!("invalid port {p}"));
                None
            }
        };
        let path_redirect = match &r.path_rewrite_specifier {
            Some(PathRewriteSpecifier::PathRedirect(p)) if !p.is_empty() => PathRedirect::Path {
                path: p.clone(),
                has_query: p.contains('?'),
            },
            Some(PathRewriteSpecifier::PrefixRewrite(p)) if !p.is_empty() => {
                PathRedirect::Rewrite(PathRewrite::Prefix(p.clone()))
            }
            Some(PathRewriteSpecifier::RegexRewrite(rr)) => {
                match RegexRewrite::from_proto(rr, &path.field("regex_rewrite"), &mut b.errs) {
                    Some(rr) => PathRedirect::Rewrite(PathRewrite::Regex(rr)),
                    None => PathRedirect::None,
                }
            }
            Some(PathRewriteSpecifier::PathRewrite(t)) if !t.is_empty() => {
                match Formatter::parse(t) {
                    Ok(f) => PathRedirect::Template(f),
                    Err(e) => {
                        b.errs.push(path.field("path_rewrite"), e);
                        PathRedirect::None
                    }
                }
            }
            _ => PathRedirect::None,
        };
        let status = match RedirectResponseCode::try_from(r.response_code) {
            Ok(RedirectResponseCode::MovedPermanently) => StatusCode::MOVED_PERMANENTLY,
            Ok(RedirectResponseCode::Found) => StatusCode::FOUND,
            Ok(RedirectResponseCode::SeeOther) => StatusCode::SEE_OTHER,
            Ok(RedirectResponseCode::TemporaryRedirect) => StatusCode::TEMPORARY_REDIRECT,
            Ok(RedirectResponseCode::PermanentRedirect) => StatusCode::PERMANENT_REDIRECT,
            Err(_) => {
                b.errs.push(
                    path.field("response_code"),
                    format!("unknown response code {}", r.response_code),
                );
                return None;
            }
        };
        let host = (!r.host_redirect.is_empty()).then(|| r.host_redirect.clone());
        Some(Redirect {
            scheme,
            host,
            port,
            path: path_redirect,
            matched,
            strip_query: r.strip_query,
            status,
            tls_only: false,
        })
    }

    /// The redirect a `require_tls` virtual host answers plain-text requests with.
    pub(crate) fn tls_required(matched: MatchedPath) -> Redirect {
        Redirect {
            scheme: Some("https".into()),
            host: None,
            port: None,
            path: PathRedirect::None,
            matched,
            strip_query: false,
            status: StatusCode::MOVED_PERMANENTLY,
            tls_only: true,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `Location` value, built as Envoy's `Http::Utility::newUri` does.
    pub fn location(&self, req: &Parts) -> String {
        let host_header = request::authority(req).unwrap_or("");
        let original = request::path_and_query(req);
        if self.tls_only {
            return format!("https://{host_header}{original}");
        }
        let rewritten = match &self.path {
            PathRedirect::Rewrite(rw) => rw.apply(
                &self.matched,
                original,
                &req.headers,
                &HeaderVars::default(),
            ),
            _ => None,
        };
        let current = rewritten.as_deref().unwrap_or(original);
        let scheme = self
            .scheme
            .as_deref()
            .unwrap_or_else(|| request::scheme(req));
        let port = self.port.as_deref().unwrap_or("");
        let host = match &self.host {
            Some(h) => h.as_str(),
            None => request_host(req, host_header, scheme, port),
        };
        // path_redirect (or a non-empty path_rewrite) replaces the path; with its own query it also
        // replaces the request's, which strip_query then leaves alone.
        let redirect_path: Option<(Cow<'_, str>, bool)> = match &self.path {
            PathRedirect::Path { path, has_query } => Some((Cow::Borrowed(path), *has_query)),
            PathRedirect::Template(f) => {
                let p = f.format(&FormatContext {
                    vars: &HeaderVars::default(),
                    request: Some(&req.headers),
                    response: None,
                });
                let q = p.contains('?');
                (!p.is_empty()).then_some((Cow::Owned(p), q))
            }
            _ => None,
        };
        let query_fixed = redirect_path.as_ref().is_some_and(|(_, q)| *q);
        let mut path = match redirect_path {
            Some((p, true)) => p.into_owned(),
            Some((p, false)) => match current.find('?') {
                Some(q) => format!("{p}{}", &current[q..]),
                None => p.into_owned(),
            },
            None => current.to_string(),
        };
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if self.strip_query && !query_fixed {
            if let Some(q) = path.find('?') {
                path.truncate(q);
            }
        }
        format!("{scheme}://{host}{port}{path}")
    }

    /// The local redirect response (empty body). Route response header mutations still apply:
    /// call `Selected::apply_response_headers` on it.
    pub fn response(&self, req: &Parts) -> Response<BoxBody> {
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = self.status;
        match HeaderValue::try_from(self.location(req)) {
            Ok(v) => {
                resp.headers_mut().insert(LOCATION, v);
            }
            Err(_) => {
                tracing::debug!("redirect location is not a valid header value; sent without it")
            }
        }
        resp
    }
}

/// The request's host for a redirect: its port is dropped when a new port is set, or when the
/// scheme changes away from the one whose default port it is (judged by `x-forwarded-proto`).
fn request_host<'a>(req: &Parts, host: &'a str, new_scheme: &str, new_port: &str) -> &'a str {
    if host.is_empty() {
        return host;
    }
    let end = if host.starts_with('[') {
        host.rfind("]:").map(|i| i + 1)
    } else {
        port_start(host)
    };
    let Some(end) = end else { return host };
    let port = &host[end..];
    let proto = forwarded_proto(&req.headers).unwrap_or_else(|| request::scheme(req));
    let mut remove = !new_port.is_empty();
    if new_scheme != proto {
        remove |= proto.eq_ignore_ascii_case("https") && port == ":443";
        remove |= proto.eq_ignore_ascii_case("http") && port == ":80";
    }
    if remove {
        &host[..end]
    } else {
        host
    }
}
