//! Route string matching: Envoy's `StringMatcher` and RE2-style regexes, compiled once at config time.

use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatchAndSubstitute, RegexMatcher, StringMatcher,
};
use regex::Regex;

use super::request::{contains_ignore_case, ends_with_ignore_case, starts_with_ignore_case};
use crate::config::{ConfigErrors, Path};

/// A compiled `envoy.type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone)]
pub(crate) enum StringMatch {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    /// Full match; `ignore_case` has no effect on regexes in Envoy.
    Regex(Regex),
}

impl StringMatch {
    pub(crate) fn from_proto(
        m: &StringMatcher,
        path: &Path,
        errs: &mut ConfigErrors,
    ) -> Option<Self> {
        let ic = m.ignore_case;
        let non_empty = |s: &String, field: &str, errs: &mut ConfigErrors| {
            if s.is_empty() {
                errs.push(path.field(field), "must not be empty");
                None
            } else {
                Some(s.clone())
            }
        };
        match &m.match_pattern {
            Some(MatchPattern::Exact(s)) => Some(StringMatch::Exact(s.clone(), ic)),
            Some(MatchPattern::Prefix(s)) => {
                non_empty(s, "prefix", errs).map(|s| StringMatch::Prefix(s, ic))
            }
            Some(MatchPattern::Suffix(s)) => {
                non_empty(s, "suffix", errs).map(|s| StringMatch::Suffix(s, ic))
            }
            Some(MatchPattern::Contains(s)) => {
                non_empty(s, "contains", errs).map(|s| StringMatch::Contains(s, ic))
            }
            Some(MatchPattern::SafeRegex(r)) => {
                full_match_regex(r, &path.field("safe_regex"), errs).map(StringMatch::Regex)
            }
            Some(MatchPattern::Custom(_)) => {
                errs.push(
                    path.field("custom"),
                    "custom string matchers are not supported",
                );
                None
            }
            None => {
                errs.push(
                    path,
                    "one of exact, prefix, suffix, contains or safe_regex is required",
                );
                None
            }
        }
    }

    pub(crate) fn matches(&self, v: &str) -> bool {
        match self {
            StringMatch::Exact(s, false) => v == s,
            StringMatch::Exact(s, true) => v.eq_ignore_ascii_case(s),
            StringMatch::Prefix(s, false) => v.starts_with(s.as_str()),
            StringMatch::Prefix(s, true) => starts_with_ignore_case(v, s),
            StringMatch::Suffix(s, false) => v.ends_with(s.as_str()),
            StringMatch::Suffix(s, true) => ends_with_ignore_case(v, s),
            StringMatch::Contains(s, false) => v.contains(s.as_str()),
            StringMatch::Contains(s, true) => contains_ignore_case(v, s),
            StringMatch::Regex(r) => r.is_match(v),
        }
    }
}

/// A regex that must match the whole input, as RE2's `FullMatch` in Envoy's `safe_regex`.
pub(crate) fn full_match_regex(
    r: &RegexMatcher,
    path: &Path,
    errs: &mut ConfigErrors,
) -> Option<Regex> {
    match Regex::new(&format!("^(?:{})$", r.regex)) {
        Ok(re) => Some(re),
        Err(e) => {
            errs.push(
                path.field("regex"),
                format!("invalid regex '{}': {}", r.regex, first_line(&e)),
            );
            None
        }
    }
}

/// A compiled `RegexMatchAndSubstitute`: every non-overlapping match is replaced (RE2 `GlobalReplace`).
#[derive(Debug, Clone)]
pub(crate) struct RegexRewrite {
    regex: Regex,
    /// The substitution in `regex` crate syntax (`${1}`), converted from RE2's `\1`.
    replacement: String,
}

impl RegexRewrite {
    pub(crate) fn from_proto(
        m: &RegexMatchAndSubstitute,
        path: &Path,
        errs: &mut ConfigErrors,
    ) -> Option<Self> {
        let Some(pattern) = &m.pattern else {
            errs.push(path.field("pattern"), "is required");
            return None;
        };
        let regex = match Regex::new(&pattern.regex) {
            Ok(re) => re,
            Err(e) => {
                errs.push(
                    path.field("pattern").field("regex"),
                    format!("invalid regex '{}': {}", pattern.regex, first_line(&e)),
                );
                return None;
            }
        };
        // Capture group 0 is the whole match; `captures_len` counts it.
        let groups = regex.captures_len() - 1;
        match convert_substitution(&m.substitution, groups) {
            Ok(replacement) => Some(RegexRewrite { regex, replacement }),
            Err(msg) => {
                errs.push(path.field("substitution"), msg);
                None
            }
        }
    }

    pub(crate) fn replace_all(&self, input: &str) -> String {
        self.regex
            .replace_all(input, self.replacement.as_str())
            .into_owned()
    }
}

/// RE2 rewrite syntax to `regex` syntax: `\N` is a group, `\\` a backslash, `$` is literal.
fn convert_substitution(sub: &str, groups: usize) -> Result<String, String> {
    let mut out = String::with_capacity(sub.len() + 8);
    let mut chars = sub.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(d @ '0'..='9') => {
                    let n = d as usize - '0' as usize;
                    if n > groups {
                        return Err(format!(
                            "substitution '{sub}' refers to group \\{n} but the pattern has {groups} groups"
                        ));
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('\\') => out.push('\\'),
                _ => {
                    return Err(format!(
                        "invalid substitution '{sub}': a backslash must be followed by a digit or a backslash"
                    ))
                }
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn first_line(e: &regex::Error) -> String {
    e.to_string()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re2_substitution_becomes_regex_syntax() {
        assert_eq!(
            convert_substitution(r"/v\1/\2$x\\", 2).as_deref(),
            Ok("/v${1}/${2}$$x\\")
        );
        assert!(convert_substitution(r"\3", 2).is_err());
        assert!(convert_substitution(r"\q", 2).is_err());
    }
}
