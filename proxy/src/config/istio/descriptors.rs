//! Descriptors of the Istio filter configurations istiod sends (`stats.PluginConfig`,
//! `io.istio.http.peer_metadata.Config`, the TCP metadata exchange, `istio.alpn`), so that TypedStruct and YAML forms of them parse and are
//! checked field by field like Envoy's own messages.

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
    FileDescriptorProto, MessageOptions, OneofDescriptorProto,
};

use crate::config::extra_descriptors::field;

fn message(name: &str, fields: Vec<FieldDescriptorProto>) -> DescriptorProto {
    DescriptorProto {
        name: Some(name.into()),
        field: fields,
        ..Default::default()
    }
}

fn enumeration(name: &str, values: &[&str]) -> EnumDescriptorProto {
    EnumDescriptorProto {
        name: Some(name.into()),
        value: values
            .iter()
            .enumerate()
            .map(|(i, v)| EnumValueDescriptorProto {
                name: Some((*v).into()),
                number: Some(i as i32),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn in_oneof(mut f: FieldDescriptorProto) -> FieldDescriptorProto {
    f.oneof_index = Some(0);
    f
}

/// `stats.PluginConfig` (istio/proxy `istio_stats/config.proto`).
pub fn stats_plugin_config() -> FileDescriptorProto {
    use Label::{Optional, Repeated};
    let duration = Some(".google.protobuf.Duration");
    let mut metric_config = message(
        "MetricConfig",
        vec![
            field(
                "dimensions",
                1,
                Repeated,
                Type::Message,
                Some(".stats.MetricConfig.DimensionsEntry"),
            ),
            field("name", 2, Optional, Type::String, None),
            field("tags_to_remove", 3, Repeated, Type::String, None),
            field("match", 4, Optional, Type::String, None),
            field("drop", 5, Optional, Type::Bool, None),
        ],
    );
    metric_config.nested_type.push(DescriptorProto {
        options: Some(MessageOptions {
            map_entry: Some(true),
            ..Default::default()
        }),
        ..message(
            "DimensionsEntry",
            vec![
                field("key", 1, Optional, Type::String, None),
                field("value", 2, Optional, Type::String, None),
            ],
        )
    });
    FileDescriptorProto {
        name: Some("istio/stats/config.proto".into()),
        package: Some("stats".into()),
        dependency: vec!["google/protobuf/duration.proto".into()],
        message_type: vec![
            metric_config,
            message(
                "MetricDefinition",
                vec![
                    field("name", 1, Optional, Type::String, None),
                    field("value", 2, Optional, Type::String, None),
                    field("type", 3, Optional, Type::Enum, Some(".stats.MetricType")),
                ],
            ),
            message(
                "PluginConfig",
                vec![
                    field(
                        "disable_host_header_fallback",
                        6,
                        Optional,
                        Type::Bool,
                        None,
                    ),
                    field(
                        "tcp_reporting_duration",
                        7,
                        Optional,
                        Type::Message,
                        duration,
                    ),
                    field(
                        "metrics",
                        8,
                        Repeated,
                        Type::Message,
                        Some(".stats.MetricConfig"),
                    ),
                    field(
                        "definitions",
                        9,
                        Repeated,
                        Type::Message,
                        Some(".stats.MetricDefinition"),
                    ),
                    field(
                        "reporter",
                        10,
                        Optional,
                        Type::Enum,
                        Some(".stats.Reporter"),
                    ),
                    field("rescoping_duration", 11, Optional, Type::Message, duration),
                    field(
                        "scope_grace_period_duration",
                        12,
                        Optional,
                        Type::Message,
                        duration,
                    ),
                ],
            ),
        ],
        enum_type: vec![
            enumeration("MetricType", &["COUNTER", "GAUGE", "HISTOGRAM"]),
            enumeration("Reporter", &["UNSPECIFIED", "SERVER_GATEWAY"]),
        ],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

/// `io.istio.http.peer_metadata.Config` (istio/proxy `peer_metadata/config.proto`), the HTTP
/// metadata exchange istiod configures as `istio.metadata_exchange`.
pub fn peer_metadata_config() -> FileDescriptorProto {
    use Label::{Optional, Repeated};
    const P: &str = ".io.istio.http.peer_metadata.Config";
    let discovery = format!("{P}.DiscoveryMethod");
    let propagation = format!("{P}.PropagationMethod");
    let headers = format!("{P}.IstioHeaders");
    let oneof = |mut m: DescriptorProto| {
        m.oneof_decl.push(OneofDescriptorProto {
            name: Some("method_specifier".into()),
            ..Default::default()
        });
        m
    };
    let mut config = message(
        "Config",
        vec![
            field(
                "downstream_discovery",
                1,
                Repeated,
                Type::Message,
                Some(&discovery),
            ),
            field(
                "upstream_discovery",
                2,
                Repeated,
                Type::Message,
                Some(&discovery),
            ),
            field(
                "downstream_propagation",
                3,
                Repeated,
                Type::Message,
                Some(&propagation),
            ),
            field(
                "upstream_propagation",
                4,
                Repeated,
                Type::Message,
                Some(&propagation),
            ),
            field("shared_with_upstream", 5, Optional, Type::Bool, None),
            field("additional_labels", 6, Repeated, Type::String, None),
        ],
    );
    config.nested_type = vec![
        message("Baggage", vec![]),
        message("WorkloadDiscovery", vec![]),
        message(
            "IstioHeaders",
            vec![field(
                "skip_external_clusters",
                1,
                Optional,
                Type::Bool,
                None,
            )],
        ),
        oneof(message(
            "DiscoveryMethod",
            vec![
                in_oneof(field(
                    "baggage",
                    1,
                    Optional,
                    Type::Message,
                    Some(&format!("{P}.Baggage")),
                )),
                in_oneof(field(
                    "workload_discovery",
                    2,
                    Optional,
                    Type::Message,
                    Some(&format!("{P}.WorkloadDiscovery")),
                )),
                in_oneof(field(
                    "istio_headers",
                    3,
                    Optional,
                    Type::Message,
                    Some(&headers),
                )),
            ],
        )),
        oneof(message(
            "PropagationMethod",
            vec![in_oneof(field(
                "istio_headers",
                1,
                Optional,
                Type::Message,
                Some(&headers),
            ))],
        )),
    ];
    FileDescriptorProto {
        name: Some("istio/peer_metadata/config.proto".into()),
        package: Some("io.istio.http.peer_metadata".into()),
        message_type: vec![config],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

/// `envoy.tcp.metadataexchange.config.MetadataExchange` (istio/proxy
/// `metadata_exchange/config/metadata_exchange.proto`): the TCP metadata exchange, as a network
/// filter and as a cluster's upstream filter.
pub fn tcp_metadata_exchange() -> FileDescriptorProto {
    use Label::{Optional, Repeated};
    FileDescriptorProto {
        name: Some("envoy/tcp/metadataexchange/config/metadata_exchange.proto".into()),
        package: Some("envoy.tcp.metadataexchange.config".into()),
        message_type: vec![message(
            "MetadataExchange",
            vec![
                field("protocol", 1, Optional, Type::String, None),
                field("enable_discovery", 2, Optional, Type::Bool, None),
                field("additional_labels", 3, Repeated, Type::String, None),
            ],
        )],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

/// `istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig` (istio/api
/// `envoy/config/filter/http/alpn/v2alpha1/config.proto`): `istio.alpn`.
pub fn alpn_filter_config() -> FileDescriptorProto {
    use Label::{Optional, Repeated};
    const P: &str = ".istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig";
    let mut config = message(
        "FilterConfig",
        vec![field(
            "alpn_override",
            1,
            Repeated,
            Type::Message,
            Some(&format!("{P}.AlpnOverride")),
        )],
    );
    config.nested_type.push(message(
        "AlpnOverride",
        vec![
            field(
                "upstream_protocol",
                1,
                Optional,
                Type::Enum,
                Some(&format!("{P}.Protocol")),
            ),
            field("alpn_override", 2, Repeated, Type::String, None),
        ],
    ));
    config
        .enum_type
        .push(enumeration("Protocol", &["HTTP10", "HTTP11", "HTTP2"]));
    FileDescriptorProto {
        name: Some("envoy/config/filter/http/alpn/v2alpha1/config.proto".into()),
        package: Some("istio.envoy.config.filter.http.alpn.v2alpha1".into()),
        message_type: vec![config],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

/// `io.istio.network.authn.Config` (istio/proxy `istio_authn/config.proto`): an empty message.
pub fn network_authn_config() -> FileDescriptorProto {
    FileDescriptorProto {
        name: Some("source/extensions/filters/network/istio_authn/config.proto".into()),
        package: Some("io.istio.network.authn".into()),
        message_type: vec![message("Config", Vec::new())],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

/// `io.istio.http.connect_authority.Config` (istio/proxy `connect_authority/config.proto`).
pub fn connect_authority_config() -> FileDescriptorProto {
    use Label::Optional;
    FileDescriptorProto {
        name: Some("source/extensions/filters/http/connect_authority/config.proto".into()),
        package: Some("io.istio.http.connect_authority".into()),
        message_type: vec![message(
            "Config",
            vec![
                field("enabled", 1, Optional, Type::Bool, None),
                field("port", 2, Optional, Type::Uint32, None),
            ],
        )],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

/// `istio.set_internal_dst_address.v1.Config` (istio/proxy `set_internal_dst_address/config.proto`):
/// an empty message.
pub fn set_internal_dst_address_config() -> FileDescriptorProto {
    FileDescriptorProto {
        name: Some(
            "source/extensions/filters/listener/set_internal_dst_address/config.proto".into(),
        ),
        package: Some("istio.set_internal_dst_address.v1".into()),
        message_type: vec![message("Config", Vec::new())],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

/// `io.istio.http.connect_baggage.Config` (istio/proxy `connect_baggage/config.proto`): an empty
/// message.
pub fn connect_baggage_config() -> FileDescriptorProto {
    FileDescriptorProto {
        name: Some("source/extensions/filters/http/connect_baggage/config.proto".into()),
        package: Some("io.istio.http.connect_baggage".into()),
        message_type: vec![message("Config", Vec::new())],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}
