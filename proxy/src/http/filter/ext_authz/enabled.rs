//! Whether the filter checks a request at all: `filter_enabled` (a share of requests, the runtime
//! default) and `filter_enabled_metadata` (the request's dynamic metadata, which Istio's CUSTOM
//! action reads from the RBAC filter's shadow rules), and `deny_at_disable`.

use crate::config::{ConfigErrors, Path};
use crate::http::filter::DynamicMetadata;
use crate::http::route::runtime_fraction;
use crate::http::route::string_match::StringMatch;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::ExtAuthz;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    metadata_matcher::path_segment::Segment, value_matcher::MatchPattern, MetadataMatcher,
};

#[derive(Debug)]
enum ValueMatch {
    String(StringMatch),
    Present(bool),
}

/// A `MetadataMatcher` on one key of one filter's namespace.
#[derive(Debug)]
struct MetadataMatch {
    filter: String,
    key: String,
    value: ValueMatch,
    invert: bool,
}

impl MetadataMatch {
    fn from_proto(m: &MetadataMatcher, path: &Path, errs: &mut ConfigErrors) -> Option<Self> {
        let key = match m.path.as_slice() {
            [seg] => match &seg.segment {
                Some(Segment::Key(k)) => k.clone(),
                None => {
                    errs.push(path.field("path").index(0).field("key"), "is required");
                    return None;
                }
            },
            _ => {
                errs.push(
                    path.field("path"),
                    "only a path of one key is supported (remora's dynamic metadata is flat)",
                );
                return None;
            }
        };
        let vpath = path.field("value");
        let value = match m.value.as_ref().and_then(|v| v.match_pattern.as_ref()) {
            Some(MatchPattern::StringMatch(s)) => ValueMatch::String(StringMatch::from_proto(
                s,
                &vpath.field("string_match"),
                errs,
            )?),
            Some(MatchPattern::PresentMatch(p)) => ValueMatch::Present(*p),
            Some(_) => {
                errs.push(vpath, "only string_match and present_match are supported");
                return None;
            }
            None => {
                errs.push(vpath, "is required");
                return None;
            }
        };
        Some(MetadataMatch {
            filter: m.filter.clone(),
            key,
            value,
            invert: m.invert,
        })
    }

    fn matches(&self, meta: &DynamicMetadata) -> bool {
        let found = meta.get(&self.filter, &self.key);
        let matched = match (&self.value, found) {
            (ValueMatch::String(m), Some(v)) => m.matches(v),
            (ValueMatch::Present(want), v) => v.is_some() == *want,
            (ValueMatch::String(_), None) => false,
        };
        matched != self.invert
    }
}

/// The filter's enablement.
#[derive(Debug, Default)]
pub struct Enabled {
    /// `(numerator, denominator)` below 100%.
    fraction: Option<(u64, u64)>,
    metadata: Option<MetadataMatch>,
    pub deny_at_disable: bool,
}

impl Enabled {
    pub fn from_proto(c: &ExtAuthz, path: &Path, errs: &mut ConfigErrors) -> Self {
        Enabled {
            fraction: c.filter_enabled.as_ref().and_then(runtime_fraction),
            metadata: c.filter_enabled_metadata.as_ref().and_then(|m| {
                MetadataMatch::from_proto(m, &path.field("filter_enabled_metadata"), errs)
            }),
            deny_at_disable: c
                .deny_at_disable
                .as_ref()
                .and_then(|f| f.default_value)
                .is_some_and(|b| b.value),
        }
    }

    /// Whether this request is checked.
    pub fn enabled(&self, meta: &DynamicMetadata) -> bool {
        let by_share = self
            .fraction
            .is_none_or(|(num, den)| rand::random_range(0..den) < num);
        by_share && self.metadata.as_ref().is_none_or(|m| m.matches(meta))
    }
}
