//! Access log filters (`AccessLog.filter`): which streams get a line.

use envoy_types::pb::envoy::config::accesslog::v3::{
    access_log_filter::FilterSpecifier, comparison_filter, AccessLogFilter, ComparisonFilter,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, HeaderMatcher,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use regex::Regex;

use super::context::LogContext;
use crate::config::{ConfigErrors, Path};

/// Envoy's response flags: short form, long form.
const RESPONSE_FLAGS: &[(&str, &str)] = &[
    ("LH", "FailedLocalHealthCheck"),
    ("UH", "NoHealthyUpstream"),
    ("UT", "UpstreamRequestTimeout"),
    ("LR", "LocalReset"),
    ("UR", "UpstreamRemoteReset"),
    ("UF", "UpstreamConnectionFailure"),
    ("UC", "UpstreamConnectionTermination"),
    ("UO", "UpstreamOverflow"),
    ("NR", "NoRouteFound"),
    ("DI", "DelayInjected"),
    ("FI", "FaultInjected"),
    ("RL", "RateLimited"),
    ("UAEX", "UnauthorizedExternalService"),
    ("RLSE", "RateLimitServiceError"),
    ("DC", "DownstreamConnectionTermination"),
    ("URX", "UpstreamRetryLimitExceeded"),
    ("SI", "StreamIdleTimeout"),
    ("IH", "InvalidEnvoyRequestHeaders"),
    ("DPE", "DownstreamProtocolError"),
    ("UMSDR", "UpstreamMaxStreamDurationReached"),
    ("RFCF", "ResponseFromCacheFilter"),
    ("NFCF", "NoFilterConfigFound"),
    ("DT", "DurationTimeout"),
    ("UPE", "UpstreamProtocolError"),
    ("NC", "NoClusterFound"),
    ("OM", "OverloadManagerTerminated"),
    ("DF", "DnsResolutionFailed"),
    ("DO", "DropOverload"),
    ("DR", "DownstreamRemoteReset"),
];

/// The long name of a short response flag (`UH` → `NoHealthyUpstream`).
pub fn long_flag(short: &str) -> Option<&'static str> {
    RESPONSE_FLAGS
        .iter()
        .find(|(s, _)| *s == short)
        .map(|(_, l)| *l)
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Eq,
    Ge,
    Le,
    Ne,
}

/// `op value` over a response code or a duration.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    op: Op,
    value: u64,
}

impl Comparison {
    fn from_proto(c: Option<&ComparisonFilter>, path: &Path, errors: &mut ConfigErrors) -> Self {
        let Some(c) = c else {
            errors.push(path.field("comparison"), "comparison is required");
            return Comparison {
                op: Op::Eq,
                value: 0,
            };
        };
        let op = match comparison_filter::Op::try_from(c.op) {
            Ok(comparison_filter::Op::Eq) => Op::Eq,
            Ok(comparison_filter::Op::Ge) => Op::Ge,
            Ok(comparison_filter::Op::Le) => Op::Le,
            Ok(comparison_filter::Op::Ne) => Op::Ne,
            Err(_) => {
                errors.push(
                    path.field("comparison").field("op"),
                    format!("unknown op {}", c.op),
                );
                Op::Eq
            }
        };
        // Without a runtime, the runtime key's default is the value.
        let value = c.value.as_ref().map_or(0, |v| u64::from(v.default_value));
        Comparison { op, value }
    }

    fn matches(self, actual: u64) -> bool {
        match self.op {
            Op::Eq => actual == self.value,
            Op::Ge => actual >= self.value,
            Op::Le => actual <= self.value,
            Op::Ne => actual != self.value,
        }
    }
}

#[derive(Debug, Clone)]
enum ValueMatch {
    Present(bool),
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(Regex),
    Range(i64, i64),
    String {
        pattern: StringMatch,
        ignore_case: bool,
    },
}

#[derive(Debug, Clone)]
enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(Regex),
}

/// A request header condition (`header_filter`).
#[derive(Debug, Clone)]
pub struct HeaderMatch {
    name: String,
    value: ValueMatch,
    invert: bool,
    missing_as_empty: bool,
}

impl HeaderMatch {
    fn from_proto(m: &HeaderMatcher, path: &Path, errors: &mut ConfigErrors) -> Option<Self> {
        if m.name.is_empty() {
            errors.push(path.field("name"), "header name is required");
            return None;
        }
        let regex =
            |r: &str, p: Path, errors: &mut ConfigErrors| match Regex::new(&format!("^(?:{r})$")) {
                Ok(re) => Some(re),
                Err(e) => {
                    errors.push(&p, format!("invalid regex {r:?}: {e}"));
                    None
                }
            };
        #[allow(deprecated)]
        let value = match &m.header_match_specifier {
            None => ValueMatch::Present(true),
            Some(HeaderMatchSpecifier::PresentMatch(p)) => ValueMatch::Present(*p),
            Some(HeaderMatchSpecifier::ExactMatch(s)) => ValueMatch::Exact(s.clone()),
            Some(HeaderMatchSpecifier::PrefixMatch(s)) => ValueMatch::Prefix(s.clone()),
            Some(HeaderMatchSpecifier::SuffixMatch(s)) => ValueMatch::Suffix(s.clone()),
            Some(HeaderMatchSpecifier::ContainsMatch(s)) => ValueMatch::Contains(s.clone()),
            Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => {
                ValueMatch::Regex(regex(&r.regex, path.field("safe_regex_match"), errors)?)
            }
            Some(HeaderMatchSpecifier::RangeMatch(r)) => ValueMatch::Range(r.start, r.end),
            Some(HeaderMatchSpecifier::StringMatch(s)) => {
                let p = path.field("string_match");
                ValueMatch::String {
                    pattern: string_match(s, &p, errors, regex)?,
                    ignore_case: s.ignore_case,
                }
            }
        };
        Some(HeaderMatch {
            name: m.name.to_ascii_lowercase(),
            value,
            invert: m.invert_match,
            missing_as_empty: m.treat_missing_header_as_empty,
        })
    }

    /// Envoy's HeaderUtility semantics: a missing header matches only `present_match: false`, or, with
    /// `invert_match`, any matcher but a presence match.
    fn matches(&self, ctx: &LogContext<'_>) -> bool {
        let value = ctx
            .request_header(&self.name)
            .or_else(|| self.missing_as_empty.then(String::new));
        let Some(value) = value else {
            let presence = matches!(self.value, ValueMatch::Present(_));
            return if self.invert {
                !presence
            } else {
                matches!(self.value, ValueMatch::Present(false))
            };
        };
        let matched = match &self.value {
            ValueMatch::Present(p) => *p,
            ValueMatch::Exact(s) => value == *s,
            ValueMatch::Prefix(s) => value.starts_with(s.as_str()),
            ValueMatch::Suffix(s) => value.ends_with(s.as_str()),
            ValueMatch::Contains(s) => value.contains(s.as_str()),
            ValueMatch::Regex(re) => re.is_match(&value),
            ValueMatch::Range(start, end) => {
                value.parse::<i64>().is_ok_and(|v| v >= *start && v < *end)
            }
            ValueMatch::String {
                pattern,
                ignore_case,
            } => {
                let (v, fold) = if *ignore_case {
                    (value.to_lowercase(), true)
                } else {
                    (value.clone(), false)
                };
                let f = |s: &str| {
                    if fold {
                        s.to_lowercase()
                    } else {
                        s.to_string()
                    }
                };
                match pattern {
                    StringMatch::Exact(s) => v == f(s),
                    StringMatch::Prefix(s) => v.starts_with(&f(s)),
                    StringMatch::Suffix(s) => v.ends_with(&f(s)),
                    StringMatch::Contains(s) => v.contains(&f(s)),
                    StringMatch::Regex(re) => re.is_match(&value),
                }
            }
        };
        matched != self.invert
    }
}

fn string_match(
    s: &StringMatcher,
    path: &Path,
    errors: &mut ConfigErrors,
    regex: impl Fn(&str, Path, &mut ConfigErrors) -> Option<Regex>,
) -> Option<StringMatch> {
    Some(match &s.match_pattern {
        Some(MatchPattern::Exact(v)) => StringMatch::Exact(v.clone()),
        Some(MatchPattern::Prefix(v)) => StringMatch::Prefix(v.clone()),
        Some(MatchPattern::Suffix(v)) => StringMatch::Suffix(v.clone()),
        Some(MatchPattern::Contains(v)) => StringMatch::Contains(v.clone()),
        Some(MatchPattern::SafeRegex(r)) => {
            StringMatch::Regex(regex(&r.regex, path.field("safe_regex"), errors)?)
        }
        Some(MatchPattern::Custom(_)) => {
            errors.push(
                path.field("custom"),
                "custom string matchers are not supported",
            );
            return None;
        }
        None => {
            errors.push(path, "a match pattern is required");
            return None;
        }
    })
}

/// A compiled `AccessLogFilter`.
#[derive(Debug, Clone)]
pub enum Filter {
    StatusCode(Comparison),
    Duration(Comparison),
    NotHealthCheck,
    /// Empty: any flag set.
    ResponseFlag(Vec<String>),
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Header(HeaderMatch),
}

impl Filter {
    /// Compiles `f`, reporting every problem under `path` (the `filter` field).
    pub fn from_proto(
        f: &AccessLogFilter,
        path: &Path,
        errors: &mut ConfigErrors,
    ) -> Option<Filter> {
        let list = |filters: &[AccessLogFilter], p: Path, errors: &mut ConfigErrors| {
            let p = p.field("filters");
            let compiled: Vec<Option<Filter>> = filters
                .iter()
                .enumerate()
                .map(|(i, f)| Filter::from_proto(f, &p.index(i), errors))
                .collect();
            compiled.into_iter().collect::<Option<Vec<_>>>()
        };
        Some(match &f.filter_specifier {
            Some(FilterSpecifier::StatusCodeFilter(s)) => {
                Filter::StatusCode(Comparison::from_proto(
                    s.comparison.as_ref(),
                    &path.field("status_code_filter"),
                    errors,
                ))
            }
            Some(FilterSpecifier::DurationFilter(d)) => Filter::Duration(Comparison::from_proto(
                d.comparison.as_ref(),
                &path.field("duration_filter"),
                errors,
            )),
            Some(FilterSpecifier::NotHealthCheckFilter(_)) => Filter::NotHealthCheck,
            Some(FilterSpecifier::ResponseFlagFilter(r)) => {
                let p = path.field("response_flag_filter").field("flags");
                for (i, flag) in r.flags.iter().enumerate() {
                    if long_flag(flag).is_none() {
                        errors.push(p.index(i), format!("unknown response flag {flag:?}"));
                    }
                }
                Filter::ResponseFlag(r.flags.clone())
            }
            Some(FilterSpecifier::AndFilter(a)) => {
                Filter::And(list(&a.filters, path.field("and_filter"), errors)?)
            }
            Some(FilterSpecifier::OrFilter(o)) => {
                Filter::Or(list(&o.filters, path.field("or_filter"), errors)?)
            }
            Some(FilterSpecifier::HeaderFilter(h)) => {
                let p = path.field("header_filter").field("header");
                let Some(m) = &h.header else {
                    errors.push(&p, "header is required");
                    return None;
                };
                Filter::Header(HeaderMatch::from_proto(m, &p, errors)?)
            }
            Some(other) => {
                let name = match other {
                    FilterSpecifier::TraceableFilter(_) => "traceable_filter",
                    FilterSpecifier::RuntimeFilter(_) => "runtime_filter",
                    FilterSpecifier::GrpcStatusFilter(_) => "grpc_status_filter",
                    FilterSpecifier::ExtensionFilter(_) => "extension_filter",
                    FilterSpecifier::MetadataFilter(_) => "metadata_filter",
                    FilterSpecifier::LogTypeFilter(_) => "log_type_filter",
                    _ => "filter",
                };
                errors.push(path.field(name), format!("{name} is not supported"));
                return None;
            }
            None => {
                errors.push(path, "a filter must set one filter type");
                return None;
            }
        })
    }

    pub fn matches(&self, ctx: &LogContext<'_>) -> bool {
        match self {
            Filter::StatusCode(c) => c.matches(u64::from(ctx.response_code.unwrap_or(0))),
            Filter::Duration(c) => c.matches(
                ctx.duration
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ),
            Filter::NotHealthCheck => !ctx.is_health_check,
            Filter::ResponseFlag(wanted) => {
                let mut set = ctx.response_flags.split(',').filter(|f| !f.is_empty());
                if wanted.is_empty() {
                    set.next().is_some()
                } else {
                    set.any(|f| wanted.iter().any(|w| w == f))
                }
            }
            Filter::And(all) => all.iter().all(|f| f.matches(ctx)),
            Filter::Or(any) => any.iter().any(|f| f.matches(ctx)),
            Filter::Header(h) => h.matches(ctx),
        }
    }
}
