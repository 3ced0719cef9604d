//! `xds.type.matcher.v3.IPMatcher`, the IP trie that Envoy registers as a custom tree matcher and
//! istiod uses for destination and source addresses. envoy-types does not generate it, so the message
//! is declared here with its wire tags, and its descriptor is added to the parsing pool so that
//! YAML/JSON bootstraps can spell it with `@type`.

use envoy_types::pb::xds::core::v3::CidrRange;
use envoy_types::pb::xds::r#type::matcher::v3::matcher::OnMatch;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorProto};

use crate::config::extra_descriptors::field;

pub const IP_MATCHER: &str = "xds.type.matcher.v3.IPMatcher";

/// `xds.type.matcher.v3.IPMatcher`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IpMatcher {
    #[prost(message, repeated, tag = "1")]
    pub range_matchers: Vec<IpRangeMatcher>,
}

/// `xds.type.matcher.v3.IPMatcher.IPRangeMatcher`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IpRangeMatcher {
    #[prost(message, repeated, tag = "1")]
    pub ranges: Vec<CidrRange>,
    #[prost(message, optional, tag = "2")]
    pub on_match: Option<OnMatch>,
    /// When false, a failed nested match falls back to less specific ranges.
    #[prost(bool, tag = "3")]
    pub exclusive: bool,
}

/// The descriptor of `xds/type/matcher/v3/ip.proto` (the two messages above).
pub fn file_descriptor() -> FileDescriptorProto {
    let range = DescriptorProto {
        name: Some("IPRangeMatcher".into()),
        field: vec![
            field(
                "ranges",
                1,
                Label::Repeated,
                Type::Message,
                Some(".xds.core.v3.CidrRange"),
            ),
            field(
                "on_match",
                2,
                Label::Optional,
                Type::Message,
                Some(".xds.type.matcher.v3.Matcher.OnMatch"),
            ),
            field("exclusive", 3, Label::Optional, Type::Bool, None),
        ],
        ..Default::default()
    };
    FileDescriptorProto {
        name: Some("xds/type/matcher/v3/ip.proto".into()),
        package: Some("xds.type.matcher.v3".into()),
        dependency: vec![
            "xds/core/v3/cidr.proto".into(),
            "xds/type/matcher/v3/matcher.proto".into(),
        ],
        message_type: vec![DescriptorProto {
            name: Some("IPMatcher".into()),
            field: vec![field(
                "range_matchers",
                1,
                Label::Repeated,
                Type::Message,
                Some(".xds.type.matcher.v3.IPMatcher.IPRangeMatcher"),
            )],
            nested_type: vec![range],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}
