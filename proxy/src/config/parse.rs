//! Envoy v3 messages from YAML or JSON, through the canonical proto3 JSON mapping.
//!
//! The descriptor set shipped by `envoy-types` drives a `prost-reflect` transcoder, so `Any` with
//! `@type`, durations, wrapper types, enums by name and both field-name spellings behave as in Envoy.
//! The resulting `DynamicMessage` is re-encoded and decoded into the generated prost type.

use std::sync::OnceLock;

use prost::{Message, Name};
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, ReflectMessage,
};

use envoy_types::pb::google::protobuf as pb;

use super::error::ConfigError;

static DESCRIPTORS: &[u8] = include_bytes!(env!("REMORA_ENVOY_DESCRIPTORS"));

/// Every Envoy v3 message descriptor (decoded once, on first use).
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The set is compiled into the binary from the envoy-types crate; failing to decode it is a build
        // defect, not an input error.
        #[allow(clippy::expect_used)]
        let mut pool =
            DescriptorPool::decode(DESCRIPTORS).expect("envoy-types descriptor set decodes");
        // Messages Envoy accepts that envoy-types' set lacks.
        for file in super::extra_descriptors::all() {
            let name = file.name.clone().unwrap_or_default();
            if pool.get_file_by_name(&name).is_some() {
                continue;
            }
            if let Err(e) = pool.add_file_descriptor_proto(file) {
                tracing::error!(error = %e, file = %name, "cannot register a descriptor");
            }
        }
        pool
    })
}

/// How strictly to treat fields the schema does not know (`--allow-unknown-static-fields`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions {
    pub allow_unknown_fields: bool,
}

fn message_descriptor<M: Name>() -> Result<MessageDescriptor, ConfigError> {
    let name = M::full_name();
    descriptor_pool()
        .get_message_by_name(&name)
        .ok_or_else(|| ConfigError::new("", format!("no descriptor for {name}")))
}

/// Parses YAML (a superset of JSON) text into `M`.
pub fn from_yaml<M: Message + Name + Default>(
    text: &str,
    opts: ParseOptions,
) -> Result<M, ConfigError> {
    let desc = message_descriptor::<M>()?;
    let de_opts = DeserializeOptions::new().deny_unknown_fields(!opts.allow_unknown_fields);
    let slot = super::yaml_stream::Slot::default();
    let yaml = super::yaml_stream::Typed::new(serde_yaml_ng::Deserializer::from_str(text), &slot);
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(yaml, &mut track);
    let result = DynamicMessage::deserialize_with_options(desc, de, &de_opts);
    let dynamic = match result {
        Ok(d) => d,
        Err(e) => {
            // A refused configuration is read again through the tree, so that it is refused with
            // the same error as ever (the tree names some errors the stream meets later, such as
            // a key that is not a scalar, and reports fields in key order).
            let streamed = if e.from_yaml {
                ConfigError::new("", format!("invalid YAML: {e}"))
            } else {
                decode_error(track, &e.message)
            };
            return match yaml_value(text).and_then(|v| from_value::<M>(v, opts)) {
                Err(tree) => Err(tree),
                Ok(_) => Err(streamed),
            };
        }
    };
    transcode(&dynamic)
}

/// Parses JSON text into `M` (kept separate so that JSON errors name JSON positions).
pub fn from_json<M: Message + Name + Default>(
    text: &str,
    opts: ParseOptions,
) -> Result<M, ConfigError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ConfigError::new("", format!("invalid JSON: {e}")))?;
    from_value(value, opts)
}

/// YAML text as a JSON value tree. YAML-only features (anchors, aliases) are resolved here.
pub fn yaml_value(text: &str) -> Result<serde_json::Value, ConfigError> {
    let value: serde_json::Value = serde_yaml_ng::from_str(text)
        .map_err(|e| ConfigError::new("", format!("invalid YAML: {e}")))?;
    Ok(value)
}

/// A JSON value tree into `M`, with the path of the first offending field in the error.
pub fn from_value<M: Message + Name + Default>(
    value: serde_json::Value,
    opts: ParseOptions,
) -> Result<M, ConfigError> {
    let desc = message_descriptor::<M>()?;
    let de_opts = DeserializeOptions::new().deny_unknown_fields(!opts.allow_unknown_fields);
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    let dynamic = DynamicMessage::deserialize_with_options(desc, de, &de_opts)
        .map_err(|e| decode_error(track, &e.to_string()))?;
    transcode(&dynamic)
}

/// A decoding error at the tracked path.
fn decode_error(track: serde_path_to_error::Track, message: &str) -> ConfigError {
    let path = track.path().to_string();
    let mut path = if path == "." { String::new() } else { path };
    // An unknown field is reported at its parent; name the field itself, as a user reads it.
    if let Some(field) = message
        .strip_prefix("unrecognized field name '")
        .and_then(|rest| rest.split('\'').next())
    {
        path = if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
    }
    ConfigError::new(path, message)
}

fn transcode<M: Message + Default>(dynamic: &DynamicMessage) -> Result<M, ConfigError> {
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| {
        ConfigError::new(
            "",
            format!("transcoding {}: {e}", dynamic.descriptor().full_name()),
        )
    })
}

/// Merges `overlay` into `base` with protobuf `MergeFrom` semantics (scalars replace, messages merge,
/// repeated fields append), as Envoy does for `--config-yaml`.
pub fn merge<M: Message + Default>(base: &M, overlay: &M) -> Result<M, ConfigError> {
    let mut bytes = base.encode_to_vec();
    overlay
        .encode(&mut bytes)
        .map_err(|e| ConfigError::new("", e.to_string()))?;
    M::decode(bytes.as_slice()).map_err(|e| ConfigError::new("", e.to_string()))
}

/// The type URL's message name (`type.googleapis.com/envoy.x.y.Z` → `envoy.x.y.Z`).
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Unpacks an `Any` into `M`, accepting `udpa.type.v1.TypedStruct` / `xds.type.v3.TypedStruct` wrappers
/// (a JSON `Struct` plus the real type URL) as Envoy does.
pub fn unpack_any<M: Message + Name + Default>(
    any: &pb::Any,
    opts: ParseOptions,
) -> Result<M, ConfigError> {
    let got = type_name(&any.type_url);
    let want = M::full_name();
    if got == want {
        return M::decode(any.value.as_slice())
            .map_err(|e| ConfigError::new("typed_config", format!("decoding {want}: {e}")));
    }
    if got == "udpa.type.v1.TypedStruct" || got == "xds.type.v3.TypedStruct" {
        let ts = TypedStruct::decode(any.value.as_slice())
            .map_err(|e| ConfigError::new("typed_config", format!("decoding {got}: {e}")))?;
        if type_name(&ts.type_url) != want {
            return Err(ConfigError::new(
                "typed_config",
                format!("expected {want}, got TypedStruct of {}", ts.type_url),
            ));
        }
        let value = ts
            .value
            .map(struct_to_json)
            .unwrap_or(serde_json::Value::Object(Default::default()));
        return from_value(value, opts)
            .map_err(|e| ConfigError::new(format!("typed_config.value.{}", e.path), e.message));
    }
    Err(ConfigError::new(
        "typed_config",
        format!("expected {want}, got {}", any.type_url),
    ))
}

/// `xds.type.v3.TypedStruct` (same wire form as `udpa.type.v1.TypedStruct`); envoy-types does not
/// generate it.
#[derive(Clone, PartialEq, prost::Message)]
struct TypedStruct {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(message, optional, tag = "2")]
    value: Option<pb::Struct>,
}

/// The real type name behind an `Any`, looking through TypedStruct wrappers.
pub fn any_type_name(any: &pb::Any) -> String {
    let got = type_name(&any.type_url);
    if got == "udpa.type.v1.TypedStruct" || got == "xds.type.v3.TypedStruct" {
        if let Ok(ts) = TypedStruct::decode(any.value.as_slice()) {
            return type_name(&ts.type_url).to_string();
        }
    }
    got.to_string()
}

/// Renders a protobuf message as canonical proto3 JSON (for `/config_dump`).
pub fn to_json<M: Message + Name>(msg: &M) -> serde_json::Value {
    let Ok(desc) = message_descriptor::<M>() else {
        return serde_json::Value::Null;
    };
    let Ok(dynamic) = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()) else {
        return serde_json::Value::Null;
    };
    let opts = prost_reflect::SerializeOptions::new().skip_default_fields(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &opts)
        .unwrap_or(serde_json::Value::Null)
}

/// `google.protobuf.Struct` as a JSON value.
pub fn struct_to_json(s: pb::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| (k, value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: pb::Value) -> serde_json::Value {
    use pb::value::Kind;
    match v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(n)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.into_iter().map(value_to_json).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

    #[test]
    fn bootstrap_with_any_and_durations() {
        let yaml = r#"
static_resources:
  clusters:
  - name: a
    connectTimeout: 0.25s
    lb_policy: LEAST_REQUEST
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: 8080 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: a
"#;
        let b: Bootstrap = from_yaml(yaml, ParseOptions::default()).expect("parses");
        let res = b.static_resources.expect("static");
        assert_eq!(
            res.clusters[0].connect_timeout.as_ref().map(|d| d.nanos),
            Some(250_000_000)
        );
        assert_eq!(res.clusters[0].lb_policy, 1);
        let any = res.listeners[0].filter_chains[0].filters[0]
            .config_type
            .clone();
        assert!(format!("{any:?}").contains("tcp_proxy"));
    }

    #[test]
    fn errors_carry_the_field_path() {
        let yaml = "static_resources:\n  clusters:\n  - name: a\n    lb_policy: NOPE\n";
        let e = from_yaml::<Bootstrap>(yaml, ParseOptions::default()).expect_err("bad enum");
        assert_eq!(e.path, "static_resources.clusters[0].lb_policy", "{e}");
        let yaml = "static_resources:\n  clusters:\n  - name: a\n    bogus: 1\n";
        let e = from_yaml::<Bootstrap>(yaml, ParseOptions::default()).expect_err("unknown field");
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(from_yaml::<Bootstrap>(
            yaml,
            ParseOptions {
                allow_unknown_fields: true
            }
        )
        .is_ok());
    }

    #[test]
    fn merge_appends_repeated_and_replaces_scalars() {
        let a: Bootstrap = from_yaml(
            "static_resources: { clusters: [ { name: a } ] }\nnode: { id: x }",
            ParseOptions::default(),
        )
        .expect("a");
        let b: Bootstrap = from_yaml(
            "static_resources: { clusters: [ { name: b } ] }\nnode: { id: y }",
            ParseOptions::default(),
        )
        .expect("b");
        let m = merge(&a, &b).expect("merge");
        assert_eq!(m.static_resources.expect("static").clusters.len(), 2);
        assert_eq!(m.node.expect("node").id, "y");
    }
}
