//! Istio's built-in plugins on the Wasm `null` VM, as istiod (up to 1.17) and many EnvoyFilters
//! still configure telemetry: an `envoy.filters.http.wasm` / `envoy.filters.network.wasm` filter
//! whose VM runtime is `envoy.wasm.runtime.null` and whose code is the name of a plugin compiled
//! into Istio's proxy: `envoy.wasm.stats` (the stats filter) or `envoy.wasm.metadata_exchange`
//! (the HTTP peer metadata exchange). remora implements both natively, so such a filter becomes
//! the same settings as `istio.stats` / `istio.metadata_exchange`. Any other Wasm filter (real
//! Wasm code, another VM, another plugin) is an error naming the field: remora has no Wasm VM.

use envoy_types::pb::envoy::config::core::v3::{async_data_source, data_source};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm as HttpWasm;
use envoy_types::pb::envoy::extensions::filters::network::wasm::v3::Wasm as NetworkWasm;
use envoy_types::pb::envoy::extensions::wasm::v3::{plugin_config, PluginConfig as WasmPlugin};
use envoy_types::pb::google::protobuf::{Any, StringValue};
use prost::{Message, Name};

use super::super::parse::{any_type_name, unpack_any};
use super::super::{ConfigError, ConfigErrors, ParseOptions, Path};

const NULL_VM: &str = "envoy.wasm.runtime.null";
const STATS_PLUGIN: &str = "envoy.wasm.stats";
const EXCHANGE_PLUGIN: &str = "envoy.wasm.metadata_exchange";

/// The built-in plugin a null-VM Wasm filter names.
#[derive(Debug, Clone, PartialEq)]
pub enum NullVmPlugin {
    /// `envoy.wasm.stats`, with what its JSON configuration says that remora reads.
    Stats { disable_host_header_fallback: bool },
    /// `envoy.wasm.metadata_exchange`: both directions over Istio's headers.
    MetadataExchange,
}

/// Whether `any` is an HTTP or network Wasm filter config.
pub fn is_wasm(any: Option<&Any>) -> bool {
    any.is_some_and(|a| {
        let t = any_type_name(a);
        t == HttpWasm::full_name() || t == NetworkWasm::full_name()
    })
}

/// The plugin of a Wasm filter (`path` points at the filter); errors name the field that keeps
/// it from being one of Istio's built-in plugins.
pub fn null_vm_plugin(
    any: &Any,
    path: &Path,
    opts: ParseOptions,
) -> Result<NullVmPlugin, ConfigErrors> {
    let tpath = path.field("typed_config");
    let err = |p: Path, m: String| ConfigErrors::from(ConfigError::new(p, m));
    let unpack_err = |e: ConfigError| err(tpath.field(&e.path), e.message);
    let config = if any_type_name(any) == HttpWasm::full_name() {
        unpack_any::<HttpWasm>(any, opts)
            .map_err(unpack_err)?
            .config
    } else {
        unpack_any::<NetworkWasm>(any, opts)
            .map_err(unpack_err)?
            .config
    };
    let cpath = tpath.field("config");
    let config: WasmPlugin =
        config.ok_or_else(|| err(cpath.clone(), "a Wasm filter needs a config".into()))?;
    let vpath = cpath.field("vm_config");
    let Some(plugin_config::Vm::VmConfig(vm)) = &config.vm else {
        return Err(err(vpath, "a Wasm filter needs a vm_config".into()));
    };
    if vm.runtime != NULL_VM {
        return Err(err(
            vpath.field("runtime"),
            format!(
                "Wasm runtime {:?} is not available: remora runs only Istio's built-in plugins on the null VM ({NULL_VM})",
                vm.runtime
            ),
        ));
    }
    let code = vm.code.as_ref().and_then(|c| match &c.specifier {
        Some(async_data_source::Specifier::Local(d)) => match &d.specifier {
            Some(data_source::Specifier::InlineString(s)) => Some(s.as_str()),
            _ => None,
        },
        _ => None,
    });
    match code {
        Some(STATS_PLUGIN) => Ok(NullVmPlugin::Stats {
            disable_host_header_fallback: stats_json(
                config.configuration.as_ref(),
                &cpath.field("configuration"),
            )?,
        }),
        Some(EXCHANGE_PLUGIN) => Ok(NullVmPlugin::MetadataExchange),
        other => Err(err(
            vpath.field("code"),
            format!(
                "null-VM plugin {other:?} is not one remora implements ({STATS_PLUGIN}, {EXCHANGE_PLUGIN})"
            ),
        )),
    }
}

/// The stats plugin's JSON configuration (a `StringValue`): `disable_host_header_fallback` is
/// what changes remora's labels; `metrics` (dimension overrides), `debug`, `stat_prefix` and the
/// reporting intervals are accepted without effect (the standard labels are emitted).
fn stats_json(configuration: Option<&Any>, path: &Path) -> Result<bool, ConfigErrors> {
    let Some(any) = configuration else {
        return Ok(false);
    };
    let err = |m: String| ConfigErrors::from(ConfigError::new(path.clone(), m));
    if any_type_name(any) != StringValue::full_name() {
        return Err(err(format!(
            "the stats plugin's configuration must be a google.protobuf.StringValue, not {}",
            any_type_name(any)
        )));
    }
    let text = StringValue::decode(any.value.as_slice())
        .map_err(|e| err(format!("decoding StringValue: {e}")))?
        .value;
    if text.trim().is_empty() {
        return Ok(false);
    }
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(format!("the plugin's JSON: {e}")))?;
    if let Some(prefix) = json.get("stat_prefix").and_then(|v| v.as_str()) {
        if prefix != "istio" {
            return Err(err(format!(
                "stat_prefix {prefix:?}: remora's Istio metrics are named istio_*"
            )));
        }
    }
    Ok(match json.get("disable_host_header_fallback") {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s == "true",
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse::from_yaml;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;

    fn plugin(yaml: &str) -> Result<NullVmPlugin, String> {
        let f: HttpFilter = from_yaml(yaml, ParseOptions::default()).expect("parses");
        let Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(any)) = f.config_type else {
            panic!("typed_config");
        };
        assert!(is_wasm(Some(&any)));
        null_vm_plugin(&any, &Path::root("f"), ParseOptions::default()).map_err(|e| e.to_string())
    }

    const STATS: &str = r#"
name: istio.stats
typed_config:
  "@type": type.googleapis.com/udpa.type.v1.TypedStruct
  type_url: type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
  value:
    config:
      root_id: stats_outbound
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: |
          {"debug": "false", "stat_prefix": "istio", "disable_host_header_fallback": true, "metrics": [{"dimensions": {"source_cluster": "node.metadata['CLUSTER_ID']"}}]}
      vm_config:
        vm_id: stats_outbound
        runtime: envoy.wasm.runtime.null
        code: { local: { inline_string: envoy.wasm.stats } }
"#;

    #[test]
    fn istios_null_vm_plugins_are_recognised() {
        assert_eq!(
            plugin(STATS),
            Ok(NullVmPlugin::Stats {
                disable_host_header_fallback: true
            })
        );
        let mx = r#"
name: istio.metadata_exchange
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
  config:
    configuration:
      "@type": type.googleapis.com/google.protobuf.StringValue
      value: "{}"
    vm_config:
      runtime: envoy.wasm.runtime.null
      code: { local: { inline_string: envoy.wasm.metadata_exchange } }
"#;
        assert_eq!(plugin(mx), Ok(NullVmPlugin::MetadataExchange));
    }

    #[test]
    fn other_wasm_is_an_error_naming_the_field() {
        let v8 = STATS.replace("envoy.wasm.runtime.null", "envoy.wasm.runtime.v8");
        let e = plugin(&v8).expect_err("v8");
        assert!(e.contains("f.typed_config.config.vm_config.runtime"), "{e}");
        let other = STATS.replace(
            "inline_string: envoy.wasm.stats",
            "inline_string: my.plugin",
        );
        let e = plugin(&other).expect_err("unknown plugin");
        assert!(
            e.contains("vm_config.code") && e.contains("my.plugin"),
            "{e}"
        );
        let prefix = STATS.replace(r#""stat_prefix": "istio""#, r#""stat_prefix": "mine""#);
        let e = plugin(&prefix).expect_err("prefix");
        assert!(
            e.contains("config.configuration") && e.contains("mine"),
            "{e}"
        );
    }
}
