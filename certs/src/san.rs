//! SAN verification: Envoy's `match_typed_subject_alt_names` (`SubjectAltNameMatcher`) and the
//! SPIFFE identity checks, applied to a verified leaf certificate.

use std::fmt;

use regex::Regex;

use crate::error::CertError;
use crate::info::CertInfo;
use crate::spiffe::{SpiffeId, TrustDomain};

/// Which kind of subjectAltName a typed matcher looks at (Envoy's `SubjectAltNameMatcher.SanType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SanType {
    /// `uniformResourceIdentifier`, where SPIFFE IDs live.
    Uri,
    /// `dNSName`.
    Dns,
    /// `rfc822Name`.
    Email,
    /// `iPAddress`, compared in its textual form (`10.0.0.1`, `2001:db8::1`).
    IpAddress,
}

/// How a string matcher compares (Envoy's `type.matcher.v3.StringMatcher.match_pattern`).
#[derive(Debug, Clone)]
pub enum StringPattern {
    /// The whole value equals the string.
    Exact(String),
    /// The value starts with the string.
    Prefix(String),
    /// The value ends with the string.
    Suffix(String),
    /// The value contains the string.
    Contains(String),
    /// The whole value matches the regex (Envoy's `safe_regex` is a full match).
    SafeRegex(Regex),
}

/// Envoy's `StringMatcher`: a pattern and `ignore_case` (which `safe_regex` ignores, as in Envoy).
#[derive(Debug, Clone)]
pub struct StringMatcher {
    pattern: StringPattern,
    ignore_case: bool,
}

impl StringMatcher {
    /// Matches the whole value.
    pub fn exact(value: impl Into<String>) -> Self {
        Self::from_pattern(StringPattern::Exact(value.into()))
    }

    /// Matches a prefix.
    pub fn prefix(value: impl Into<String>) -> Self {
        Self::from_pattern(StringPattern::Prefix(value.into()))
    }

    /// Matches a suffix.
    pub fn suffix(value: impl Into<String>) -> Self {
        Self::from_pattern(StringPattern::Suffix(value.into()))
    }

    /// Matches a substring.
    pub fn contains(value: impl Into<String>) -> Self {
        Self::from_pattern(StringPattern::Contains(value.into()))
    }

    /// Matches a regex against the whole value.
    pub fn safe_regex(pattern: &str) -> Result<Self, CertError> {
        let anchored = format!("^(?:{pattern})$");
        let regex = Regex::new(&anchored).map_err(|source| CertError::Regex {
            pattern: pattern.to_string(),
            source,
        })?;
        Ok(Self::from_pattern(StringPattern::SafeRegex(regex)))
    }

    /// Compares ASCII case-insensitively (no effect on `safe_regex`).
    pub fn ignore_case(mut self, ignore_case: bool) -> Self {
        self.ignore_case = ignore_case;
        self
    }

    fn from_pattern(pattern: StringPattern) -> Self {
        Self {
            pattern,
            ignore_case: false,
        }
    }

    /// The pattern.
    pub fn pattern(&self) -> &StringPattern {
        &self.pattern
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        let fold = |s: &str| {
            if self.ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        match &self.pattern {
            StringPattern::Exact(p) => fold(value) == fold(p),
            StringPattern::Prefix(p) => fold(value).starts_with(&fold(p)),
            StringPattern::Suffix(p) => fold(value).ends_with(&fold(p)),
            StringPattern::Contains(p) => fold(value).contains(&fold(p)),
            StringPattern::SafeRegex(re) => re.is_match(value),
        }
    }
}

/// One accepted identity for a peer certificate. A list of matchers accepts a certificate when
/// any matcher accepts any of its SANs; a certificate without SANs is rejected by every matcher.
#[derive(Debug, Clone)]
pub enum SanMatcher {
    /// Envoy's `SubjectAltNameMatcher`. For a DNS SAN an `exact` matcher follows DNS rules, as in
    /// Envoy: case-insensitive, and a certificate's `*.example.com` covers `a.example.com`.
    Typed {
        /// The SAN kind examined.
        san_type: SanType,
        /// The comparison.
        matcher: StringMatcher,
    },
    /// Exactly this SPIFFE ID.
    SpiffeId(SpiffeId),
    /// Any SPIFFE ID in this trust domain.
    TrustDomain(TrustDomain),
    /// Any SPIFFE ID whose string form starts with this prefix
    /// (`spiffe://cluster.local/ns/payments/`).
    SpiffePrefix(String),
}

impl SanMatcher {
    /// A typed matcher (`match_typed_subject_alt_names` entry).
    pub fn typed(san_type: SanType, matcher: StringMatcher) -> Self {
        SanMatcher::Typed { san_type, matcher }
    }

    /// Whether this matcher accepts the certificate.
    pub fn matches(&self, cert: &CertInfo) -> bool {
        match self {
            SanMatcher::Typed { san_type, matcher } => match san_type {
                SanType::Uri => cert.uri_sans().iter().any(|s| matcher.matches(s)),
                SanType::Email => cert.email_sans().iter().any(|s| matcher.matches(s)),
                SanType::IpAddress => cert
                    .ip_sans()
                    .iter()
                    .any(|ip| matcher.matches(&ip.to_string())),
                SanType::Dns => cert.dns_sans().iter().any(|san| match matcher.pattern() {
                    StringPattern::Exact(name) => dns_name_match(name, san),
                    _ => matcher.matches(san),
                }),
            },
            SanMatcher::SpiffeId(id) => cert.spiffe_id().as_ref() == Some(id),
            SanMatcher::TrustDomain(td) => {
                cert.spiffe_id().is_some_and(|id| id.trust_domain() == td)
            }
            SanMatcher::SpiffePrefix(prefix) => cert
                .spiffe_id()
                .is_some_and(|id| id.to_string().starts_with(prefix.as_str())),
        }
    }
}

impl fmt::Display for SanMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SanMatcher::Typed { san_type, matcher } => {
                write!(f, "{san_type:?} {:?}", matcher.pattern)?;
                if matcher.ignore_case {
                    f.write_str(" (ignore case)")?;
                }
                Ok(())
            }
            SanMatcher::SpiffeId(id) => write!(f, "SPIFFE ID {id}"),
            SanMatcher::TrustDomain(td) => write!(f, "trust domain {td}"),
            SanMatcher::SpiffePrefix(p) => write!(f, "SPIFFE ID prefix {p}"),
        }
    }
}

/// Whether any matcher accepts `cert`; an empty list accepts everything.
pub fn any_match(matchers: &[SanMatcher], cert: &CertInfo) -> bool {
    matchers.is_empty() || (cert.has_sans() && matchers.iter().any(|m| m.matches(cert)))
}

/// DNS name matching as Envoy does it: `name` is the configured name, `san` the certificate's,
/// which may carry one wildcard in its leftmost label (`*.example.com`, `api-*.example.com`),
/// never in an A-label (`xn--`).
fn dns_name_match(name: &str, san: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let san = san.to_ascii_lowercase();
    if name == san {
        return true;
    }
    let (Some((name_label, name_rest)), Some((san_label, san_rest))) =
        (name.split_once('.'), san.split_once('.'))
    else {
        return false;
    };
    if !san_label.contains('*') || san_rest.contains('*') || san_label.starts_with("xn--") {
        return false;
    }
    name_rest == san_rest && label_wildcard_match(name_label, san_label)
}

fn label_wildcard_match(label: &str, pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.split_once('*') {
        Some((head, tail)) if !tail.contains('*') => {
            pattern.len() <= label.len() + 1 && label.starts_with(head) && label.ends_with(tail)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
