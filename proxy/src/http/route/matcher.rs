//! Route matching: a route's `match` block (path, headers, query parameters, cookies, gRPC) compiled
//! into a form the data path evaluates without allocating.

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier,
    route_match::PathSpecifier, CookieMatcher as CookieMatcherProto,
    HeaderMatcher as HeaderMatcherProto, QueryParameterMatcher, RouteMatch,
};
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use http::header::{CONTENT_TYPE, COOKIE};
use http::request::Parts;
use http::Method;
use regex::Regex;

use super::request::{self, starts_with_ignore_case, strip_query, HeaderKey, HeaderSource};
use super::string_match::{full_match_regex, StringMatch};
use crate::config::{ConfigErrors, Path};

/// How a route matches `:path`.
#[derive(Debug, Clone)]
pub(crate) enum PathMatch {
    /// Matched against the whole `:path`, query included (as Envoy does).
    Prefix(String),
    /// Matched against the path without its query.
    Exact(String),
    /// Full match of the path without its query; case sensitivity does not apply.
    Regex(Regex),
    /// The path without query equals the prefix or continues with `/`.
    SeparatedPrefix(String),
    /// CONNECT requests only.
    Connect,
}

impl PathMatch {
    /// The length of the matched part of `path` (what a `prefix_rewrite` replaces), or `None`.
    pub(crate) fn matched_len(&self, path: &str, case_sensitive: bool) -> Option<usize> {
        let eq = |a: &str, b: &str| {
            if case_sensitive {
                a == b
            } else {
                a.eq_ignore_ascii_case(b)
            }
        };
        let starts = |s: &str, p: &str| {
            if case_sensitive {
                s.starts_with(p)
            } else {
                starts_with_ignore_case(s, p)
            }
        };
        match self {
            PathMatch::Prefix(p) => starts(path, p).then_some(p.len()),
            PathMatch::Exact(p) => {
                let just = strip_query(path);
                eq(just, p).then_some(just.len())
            }
            PathMatch::Regex(re) => {
                let just = strip_query(path);
                re.is_match(just).then_some(just.len())
            }
            PathMatch::SeparatedPrefix(p) => {
                let just = strip_query(path);
                let ok =
                    starts(just, p) && (just.len() == p.len() || just.as_bytes()[p.len()] == b'/');
                ok.then_some(p.len())
            }
            PathMatch::Connect => None,
        }
    }
}

/// A compiled `RouteMatch`.
#[derive(Debug, Clone)]
pub(crate) struct RouteMatcher {
    pub(crate) path: PathMatch,
    pub(crate) case_sensitive: bool,
    headers: Vec<HeaderMatcher>,
    query: Vec<QueryMatcher>,
    cookies: Vec<CookieMatcher>,
    grpc: bool,
    /// `runtime_fraction.default_value` as (numerator, denominator); no runtime layer overrides it.
    fraction: Option<(u64, u64)>,
}

impl RouteMatcher {
    pub(crate) fn from_proto(m: &RouteMatch, path: &Path, errs: &mut ConfigErrors) -> Option<Self> {
        let case_sensitive = m.case_sensitive.map(|b| b.value).unwrap_or(true);
        let pm = match &m.path_specifier {
            Some(PathSpecifier::Prefix(p)) => Some(PathMatch::Prefix(p.clone())),
            Some(PathSpecifier::Path(p)) => Some(PathMatch::Exact(p.clone())),
            Some(PathSpecifier::SafeRegex(r)) => {
                full_match_regex(r, &path.field("safe_regex"), errs).map(PathMatch::Regex)
            }
            Some(PathSpecifier::ConnectMatcher(_)) => Some(PathMatch::Connect),
            Some(PathSpecifier::PathSeparatedPrefix(p)) => {
                let valid = !p.is_empty() && !p.contains(['?', '#']) && !p.ends_with('/');
                if !valid {
                    errs.push(
                        path.field("path_separated_prefix"),
                        format!(
                            "'{p}' must be non-empty, contain no '?' or '#' and not end with '/'"
                        ),
                    );
                }
                valid.then(|| PathMatch::SeparatedPrefix(p.clone()))
            }
            Some(PathSpecifier::PathMatchPolicy(_)) => {
                errs.push(
                    path.field("path_match_policy"),
                    "path match policies are not supported",
                );
                None
            }
            None => {
                errs.push(path, "one of prefix, path, safe_regex, path_separated_prefix or connect_matcher is required");
                None
            }
        };
        let headers = m
            .headers
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                HeaderMatcher::from_proto(h, &path.field("headers").index(i), errs)
            })
            .collect();
        let query = m
            .query_parameters
            .iter()
            .enumerate()
            .filter_map(|(i, q)| {
                QueryMatcher::from_proto(q, &path.field("query_parameters").index(i), errs)
            })
            .collect();
        let cookies = m
            .cookies
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                CookieMatcher::from_proto(c, &path.field("cookies").index(i), errs)
            })
            .collect();
        if m.tls_context.is_some() {
            errs.push(
                path.field("tls_context"),
                "matching on the client TLS context is not supported",
            );
        }
        if !m.dynamic_metadata.is_empty() {
            errs.push(
                path.field("dynamic_metadata"),
                "matching on dynamic metadata is not supported",
            );
        }
        if !m.filter_state.is_empty() {
            errs.push(
                path.field("filter_state"),
                "matching on filter state is not supported",
            );
        }
        let fraction = m.runtime_fraction.as_ref().and_then(runtime_fraction);
        Some(RouteMatcher {
            path: pm?,
            case_sensitive,
            headers,
            query,
            cookies,
            grpc: m.grpc.is_some(),
            fraction,
        })
    }

    /// Matches every request with a path (the `require_tls` redirect).
    pub(crate) fn any() -> Self {
        RouteMatcher {
            path: PathMatch::Prefix(String::new()),
            case_sensitive: true,
            headers: Vec::new(),
            query: Vec::new(),
            cookies: Vec::new(),
            grpc: false,
            fraction: None,
        }
    }

    /// Whether the request matches; `path` is its `:path` as path matching sees it. Evaluated
    /// cheapest first.
    pub(crate) fn matches(&self, req: &Parts, path: &str) -> bool {
        let is_connect = req.method == Method::CONNECT;
        let path_ok = match (&self.path, is_connect) {
            (PathMatch::Connect, c) => c,
            // A CONNECT without `:path` only matches connect_matcher routes.
            (_, true) if req.uri.path_and_query().is_none() => false,
            (pm, _) => pm.matched_len(path, self.case_sensitive).is_some(),
        };
        if !path_ok {
            return false;
        }
        let src = HeaderSource::Request(req);
        if !self.headers.iter().all(|h| h.matches(src)) {
            return false;
        }
        if !self.query.is_empty() {
            let query = query_string(request::path_and_query(req));
            if !self.query.iter().all(|q| q.matches(query)) {
                return false;
            }
        }
        if !self.cookies.iter().all(|c| c.matches(req)) {
            return false;
        }
        if self.grpc && !is_grpc(req) {
            return false;
        }
        match self.fraction {
            Some((num, den)) => rand::random::<u64>() % den < num,
            None => true,
        }
    }
}

pub(crate) fn runtime_fraction(f: &RuntimeFractionalPercent) -> Option<(u64, u64)> {
    // Without a runtime layer Envoy uses the default value; an unset default means 0%.
    let d = f.default_value.unwrap_or_default();
    let den = match d.denominator() {
        DenominatorType::Hundred => 100,
        DenominatorType::TenThousand => 10_000,
        DenominatorType::Million => 1_000_000,
    };
    let num = u64::from(d.numerator).min(den);
    (num < den).then_some((num, den))
}

/// gRPC as Envoy detects it: `content-type` is `application/grpc` or `application/grpc+...`.
pub(crate) fn is_grpc(req: &Parts) -> bool {
    let Some(ct) = req.headers.get(CONTENT_TYPE) else {
        return false;
    };
    let ct = ct.as_bytes();
    let base = b"application/grpc";
    ct.starts_with(base) && (ct.len() == base.len() || ct[base.len()] == b'+')
}

#[derive(Debug, Clone)]
enum HeaderMatchKind {
    /// Deprecated `exact_match`: an empty value matches any value.
    LegacyExact(String),
    Str(StringMatch),
    Range(i64, i64),
    Present(bool),
}

/// A compiled `HeaderMatcher`.
#[derive(Debug, Clone)]
pub(crate) struct HeaderMatcher {
    key: HeaderKey,
    kind: HeaderMatchKind,
    invert: bool,
    missing_as_empty: bool,
}

impl HeaderMatcher {
    // The deprecated direct fields are still valid v3 input.
    #[allow(deprecated)]
    pub(crate) fn from_proto(
        h: &HeaderMatcherProto,
        path: &Path,
        errs: &mut ConfigErrors,
    ) -> Option<Self> {
        let Some(key) = HeaderKey::parse(&h.name) else {
            errs.push(
                path.field("name"),
                format!("invalid header name '{}'", h.name),
            );
            return None;
        };
        let non_empty = |s: &String, field: &str, errs: &mut ConfigErrors| {
            if s.is_empty() {
                errs.push(path.field(field), "must not be empty");
                None
            } else {
                Some(s.clone())
            }
        };
        let kind = match &h.header_match_specifier {
            Some(HeaderMatchSpecifier::ExactMatch(s)) => HeaderMatchKind::LegacyExact(s.clone()),
            Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => HeaderMatchKind::Str(
                StringMatch::Regex(full_match_regex(r, &path.field("safe_regex_match"), errs)?),
            ),
            Some(HeaderMatchSpecifier::RangeMatch(r)) => {
                if r.start >= r.end {
                    errs.push(path.field("range_match"), "start must be less than end");
                    return None;
                }
                HeaderMatchKind::Range(r.start, r.end)
            }
            Some(HeaderMatchSpecifier::PresentMatch(b)) => HeaderMatchKind::Present(*b),
            Some(HeaderMatchSpecifier::PrefixMatch(s)) => HeaderMatchKind::Str(
                StringMatch::Prefix(non_empty(s, "prefix_match", errs)?, false),
            ),
            Some(HeaderMatchSpecifier::SuffixMatch(s)) => HeaderMatchKind::Str(
                StringMatch::Suffix(non_empty(s, "suffix_match", errs)?, false),
            ),
            Some(HeaderMatchSpecifier::ContainsMatch(s)) => HeaderMatchKind::Str(
                StringMatch::Contains(non_empty(s, "contains_match", errs)?, false),
            ),
            Some(HeaderMatchSpecifier::StringMatch(m)) => HeaderMatchKind::Str(
                StringMatch::from_proto(m, &path.field("string_match"), errs)?,
            ),
            // No specifier means "the header is present".
            None => HeaderMatchKind::Present(true),
        };
        Some(HeaderMatcher {
            key,
            kind,
            invert: h.invert_match,
            missing_as_empty: h.treat_missing_header_as_empty,
        })
    }

    pub(crate) fn matches(&self, src: HeaderSource<'_>) -> bool {
        if let HeaderMatchKind::Present(want) = self.kind {
            return (src.present(&self.key) == want) != self.invert;
        }
        let value = match src.value(&self.key) {
            Some(v) => v,
            None if self.missing_as_empty => "".into(),
            // A missing header fails a value matcher whether or not it is inverted.
            None => return false,
        };
        let v: &str = &value;
        let m = match &self.kind {
            HeaderMatchKind::LegacyExact(s) => s.is_empty() || v == s,
            HeaderMatchKind::Str(sm) => sm.matches(v),
            HeaderMatchKind::Range(start, end) => v
                .trim_matches(|c: char| c.is_ascii_whitespace())
                .parse::<i64>()
                .is_ok_and(|n| n >= *start && n < *end),
            HeaderMatchKind::Present(_) => true,
        };
        m != self.invert
    }
}

/// The query string of a `:path` (after `?`, before `#`).
fn query_string(path: &str) -> &str {
    let Some(q) = path.find('?') else {
        return "";
    };
    let rest = &path[q + 1..];
    rest.find('#').map_or(rest, |h| &rest[..h])
}

/// The first value of query parameter `name`, undecoded (as Envoy's route matching reads it).
fn first_query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| match kv.split_once('=') {
        Some((k, v)) if k == name => Some(v),
        None if kv == name => Some(""),
        _ => None,
    })
}

#[derive(Debug, Clone)]
struct QueryMatcher {
    name: String,
    /// `None`: the parameter only has to be present.
    value: Option<StringMatch>,
}

impl QueryMatcher {
    fn from_proto(q: &QueryParameterMatcher, path: &Path, errs: &mut ConfigErrors) -> Option<Self> {
        if q.name.is_empty() {
            errs.push(path.field("name"), "must not be empty");
            return None;
        }
        let value =
            match &q.query_parameter_match_specifier {
                Some(QueryParameterMatchSpecifier::StringMatch(m)) => Some(
                    StringMatch::from_proto(m, &path.field("string_match"), errs)?,
                ),
                Some(QueryParameterMatchSpecifier::PresentMatch(_)) | None => None,
            };
        Some(QueryMatcher {
            name: q.name.clone(),
            value,
        })
    }

    fn matches(&self, query: &str) -> bool {
        match (first_query_value(query, &self.name), &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(v), Some(m)) => m.matches(v),
        }
    }
}

#[derive(Debug, Clone)]
struct CookieMatcher {
    name: String,
    value: StringMatch,
    invert: bool,
}

impl CookieMatcher {
    fn from_proto(c: &CookieMatcherProto, path: &Path, errs: &mut ConfigErrors) -> Option<Self> {
        let Some(sm) = &c.string_match else {
            errs.push(path.field("string_match"), "is required");
            return None;
        };
        Some(CookieMatcher {
            name: c.name.clone(),
            value: StringMatch::from_proto(sm, &path.field("string_match"), errs)?,
            invert: c.invert_match,
        })
    }

    fn matches(&self, req: &Parts) -> bool {
        // An absent cookie does not match, so an inverted matcher succeeds.
        let m = cookie(req, &self.name).is_some_and(|v| self.value.matches(v));
        m != self.invert
    }
}

/// The first cookie called `name` across all `Cookie` headers, with surrounding quotes removed.
fn cookie<'a>(req: &'a Parts, name: &str) -> Option<&'a str> {
    req.headers.get_all(COOKIE).iter().find_map(|h| {
        let h = std::str::from_utf8(h.as_bytes()).ok()?;
        h.split(';').find_map(|c| {
            let (k, v) = c.trim_start_matches(' ').split_once('=')?;
            if k != name {
                return None;
            }
            Some(
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v),
            )
        })
    })
}
