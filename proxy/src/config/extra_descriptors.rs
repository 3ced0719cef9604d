//! Message descriptors Envoy accepts in configuration that envoy-types' descriptor set lacks, added
//! to the parsing pool so that YAML/JSON can name them with `@type`.

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};

/// A field of a hand-written descriptor.
pub(crate) fn field(
    name: &str,
    number: i32,
    label: Label,
    ty: Type,
    type_name: Option<&str>,
) -> FieldDescriptorProto {
    FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(label as i32),
        r#type: Some(ty as i32),
        type_name: type_name.map(Into::into),
        json_name: Some(json_name(name)),
        ..Default::default()
    }
}

fn json_name(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `udpa/type/v1/typed_struct.proto`: the older TypedStruct that Istio's bootstrap and istiod use.
pub fn udpa_typed_struct() -> FileDescriptorProto {
    FileDescriptorProto {
        name: Some("udpa/type/v1/typed_struct.proto".into()),
        package: Some("udpa.type.v1".into()),
        dependency: vec!["google/protobuf/struct.proto".into()],
        message_type: vec![DescriptorProto {
            name: Some("TypedStruct".into()),
            field: vec![
                field("type_url", 1, Label::Optional, Type::String, None),
                field(
                    "value",
                    2,
                    Label::Optional,
                    Type::Message,
                    Some(".google.protobuf.Struct"),
                ),
            ],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

/// Every extra file, in dependency order.
pub fn all() -> Vec<FileDescriptorProto> {
    vec![
        udpa_typed_struct(),
        crate::listener::matcher::ip::file_descriptor(),
        super::istio::descriptors::stats_plugin_config(),
        super::istio::descriptors::peer_metadata_config(),
        super::istio::descriptors::tcp_metadata_exchange(),
        super::istio::descriptors::alpn_filter_config(),
        super::istio::descriptors::network_authn_config(),
        super::istio::descriptors::connect_authority_config(),
        super::istio::descriptors::connect_baggage_config(),
        super::istio::descriptors::set_internal_dst_address_config(),
    ]
}
