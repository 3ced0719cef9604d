//! Route rewrites: the new `:path` (prefix or regex rewrite) and `:authority` (literal, header,
//! path regex, template) a forwarded request or a redirect carries.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;

use super::formatter::{FormatContext, Formatter, HeaderVars};
use super::matcher::PathMatch;
use super::request::{strip_query, value_str};
use super::string_match::RegexRewrite;

/// How the path changes.
#[derive(Debug, Clone)]
pub(crate) enum PathRewrite {
    /// Replaces the matched prefix (or the whole matched path for `path`/`safe_regex` routes).
    Prefix(String),
    /// Replaces every match in the path without query; the query is kept.
    Regex(RegexRewrite),
    /// `path_rewrite` with command operators: replaces the path, keeps the query.
    Template(Formatter),
}

/// The route match a prefix rewrite measures the matched part with.
#[derive(Debug, Clone)]
pub(crate) struct MatchedPath {
    pub(crate) path: PathMatch,
    pub(crate) case_sensitive: bool,
}

impl PathRewrite {
    /// The rewritten `:path` (query preserved), or `None` when the path does not fit the route match
    /// any more or the rewrite produced an empty path.
    pub(crate) fn apply(
        &self,
        matched: &MatchedPath,
        path: &str,
        headers: &HeaderMap,
        vars: &HeaderVars<'_>,
    ) -> Option<String> {
        let just = strip_query(path);
        let new_path = match self {
            PathRewrite::Prefix(p) => {
                let n = matched.path.matched_len(path, matched.case_sensitive)?;
                return Some(format!("{p}{}", &path[n..]));
            }
            PathRewrite::Regex(r) => r.replace_all(just),
            PathRewrite::Template(f) => f.format(&FormatContext {
                vars,
                request: Some(headers),
                response: None,
            }),
        };
        (!new_path.is_empty()).then(|| format!("{new_path}{}", &path[just.len()..]))
    }
}

/// How `:authority` changes when forwarding (except `auto_host_rewrite`, which needs the endpoint).
#[derive(Debug, Clone)]
pub(crate) enum HostRewrite {
    Literal(HeaderValue),
    /// The first value of this request header; an absent or empty header leaves the host alone.
    Header(HeaderName),
    /// A regex substitution over the path without query.
    PathRegex(RegexRewrite),
    /// `host_rewrite` with command operators; an empty result leaves the host alone.
    Template(Formatter),
}

impl HostRewrite {
    pub(crate) fn new_host(&self, parts: &Parts, vars: &HeaderVars<'_>) -> Option<HeaderValue> {
        let v = match self {
            HostRewrite::Literal(v) => return Some(v.clone()),
            HostRewrite::Header(h) => value_str(parts.headers.get(h)?).into_owned(),
            HostRewrite::PathRegex(r) => {
                r.replace_all(strip_query(super::request::path_and_query(parts)))
            }
            HostRewrite::Template(f) => f.format(&FormatContext {
                vars,
                request: Some(&parts.headers),
                response: None,
            }),
        };
        if v.is_empty() {
            return None;
        }
        HeaderValue::try_from(v).ok()
    }
}

/// Appends the pre-rewrite host to `x-forwarded-host` unless it is already the last value there.
pub(crate) fn append_forwarded_host(headers: &mut HeaderMap, original: &str) {
    const XFH: &str = "x-forwarded-host";
    let current = headers.get(XFH).map(|v| value_str(v).into_owned());
    let new = match current {
        Some(c) if c.rsplit(',').next().map(str::trim) == Some(original) => return,
        Some(c) if !c.is_empty() => format!("{c},{original}"),
        _ => original.to_string(),
    };
    if let Ok(v) = HeaderValue::try_from(new) {
        headers.insert(XFH, v);
    }
}
