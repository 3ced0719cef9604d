//! Route per-filter configuration: `typed_per_filter_config` of each level, validated against the
//! filters remora implements and looked up most-specific-first on the data path.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::route::v3::FilterConfig;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use crate::config::parse::{any_type_name, type_name};
use crate::config::{ConfigErrors, Path};
use crate::http::filter::{self, PerRoute};

/// Decides which per-filter config types remora understands.
pub struct FilterContext<'a> {
    /// Called with the config's message type name (`envoy.extensions.filters.http.cors.v3.CorsPolicy`).
    pub known: &'a dyn Fn(&str) -> bool,
}

/// One filter's override at one level.
#[derive(Debug, Clone)]
pub struct FilterOverride {
    /// The filter's config (unwrapped from `envoy.config.route.v3.FilterConfig`); `None` when the
    /// override only disables the filter.
    pub config: Option<Any>,
    /// `FilterConfig.disabled`: the filter is skipped for this route.
    pub disabled: bool,
    /// The config validated for the filter that takes it.
    pub parsed: Option<PerRoute>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct FilterConfigs(HashMap<String, FilterOverride>);

impl FilterConfigs {
    pub(crate) fn from_proto(
        map: &HashMap<String, Any>,
        path: &Path,
        fctx: &FilterContext<'_>,
        errs: &mut ConfigErrors,
    ) -> Self {
        let mut out = HashMap::new();
        // Sorted so that errors come out in a stable order.
        let mut names: Vec<&String> = map.keys().collect();
        names.sort();
        for name in names {
            let any = &map[name];
            let p = path.field(name);
            let (config, optional, disabled) =
                if type_name(&any.type_url) == FilterConfig::full_name() {
                    match FilterConfig::decode(any.value.as_slice()) {
                        Ok(fc) => (fc.config, fc.is_optional, fc.disabled),
                        Err(e) => {
                            errs.push(&p, format!("decoding FilterConfig: {e}"));
                            continue;
                        }
                    }
                } else {
                    (Some(any.clone()), false, false)
                };
            let mut parsed = None;
            if let Some(c) = &config {
                let real = any_type_name(c);
                if !(fctx.known)(&real) {
                    if optional {
                        tracing::debug!(path = %p, r#type = %real, "skipping optional per-filter config of an unknown type");
                        continue;
                    }
                    errs.push(
                        &p,
                        format!("no filter implementation for per-route config type '{real}'"),
                    );
                    continue;
                }
                if filter::per_route_known(&real) {
                    parsed = filter::per_route(c, &p, errs);
                    if parsed.is_none() {
                        continue;
                    }
                }
            }
            out.insert(
                name.clone(),
                FilterOverride {
                    config,
                    disabled,
                    parsed,
                },
            );
        }
        FilterConfigs(out)
    }

    pub(crate) fn get(&self, filter: &str) -> Option<&FilterOverride> {
        self.0.get(filter)
    }
}
