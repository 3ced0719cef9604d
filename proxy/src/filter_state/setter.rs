//! `set_filter_state` values (`envoy.extensions.filters.common.set_filter_state.v3.FilterStateValue`),
//! shared by the network and HTTP filters: a key, the factory that types its value, and a format
//! string rendered per connection or request.

use std::sync::Arc;

use envoy_types::pb::envoy::extensions::filters::common::set_filter_state::v3::{
    filter_state_value::{Key, SharedWithUpstream, Value as ValueSpec},
    FilterStateValue,
};

use super::{Factory, FilterState, Object, Sharing};
use crate::access_log::{Formatter, LogContext};
use crate::config::{ConfigErrors, Path};

/// One configured value.
#[derive(Debug, Clone)]
pub struct Setter {
    key: String,
    factory: Factory,
    format: Formatter,
    sharing: Sharing,
    skip_if_empty: bool,
}

impl Setter {
    /// Validates one value found at `path`. A key whose factory remora does not have is an error
    /// naming `factory_key` (or `object_key`, when it is its own factory).
    pub fn from_proto(
        v: &FilterStateValue,
        path: &Path,
        errors: &mut ConfigErrors,
    ) -> Option<Setter> {
        let key = match &v.key {
            Some(Key::ObjectKey(k)) if !k.is_empty() => k.clone(),
            _ => {
                errors.push(path.field("object_key"), "object_key is required");
                return None;
            }
        };
        let (factory_key, field) = if v.factory_key.is_empty() {
            (key.as_str(), "object_key")
        } else {
            (v.factory_key.as_str(), "factory_key")
        };
        let Some(factory) = Factory::by_key(factory_key) else {
            errors.push(
                path.field(field),
                format!(
                    "filter state object {factory_key:?} is not supported (remora knows {}, {}, {}, {}, {}, {}, envoy.string and envoy.hashable_string)",
                    super::TCP_PROXY_CLUSTER,
                    super::ORIGINAL_DST_ADDRESS,
                    super::ORIGINAL_DST_LOCAL,
                    super::ORIGINAL_DST_REMOTE,
                    super::UPSTREAM_SERVER_NAME,
                    super::APPLICATION_PROTOCOLS,
                ),
            );
            return None;
        };
        let format = match &v.value {
            Some(ValueSpec::FormatString(sfs)) => {
                Formatter::from_proto(sfs, &path.field("format_string"), errors)?
            }
            None => {
                errors.push(path.field("format_string"), "format_string is required");
                return None;
            }
        };
        let sharing = match SharedWithUpstream::try_from(v.shared_with_upstream) {
            Ok(SharedWithUpstream::Once) => Sharing::Once,
            Ok(SharedWithUpstream::Transitive) => Sharing::Transitive,
            _ => Sharing::None,
        };
        Some(Setter {
            key,
            factory,
            format,
            sharing,
            skip_if_empty: v.skip_if_empty,
        })
    }

    /// Renders the value for the stream `ctx` describes and sets it in `state`.
    pub fn apply(&self, ctx: &LogContext<'_>, state: &mut FilterState) {
        let rendered = self.format.render(ctx);
        if rendered.is_empty() && self.skip_if_empty {
            return;
        }
        let Some(value) = self.factory.make(&rendered) else {
            tracing::debug!(key = %self.key, value = %rendered, "filter state value does not parse; not set");
            return;
        };
        let set = state.set(Object {
            key: self.key.clone(),
            value,
            // `read_only` is deprecated in Envoy and has no effect: a later value replaces it.
            read_only: false,
            sharing: self.sharing,
        });
        if !set {
            tracing::debug!(key = %self.key, "filter state object is read-only; not replaced");
        }
    }
}

/// The values of one filter, in order. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct Setters(Arc<[Setter]>);

impl Setters {
    /// Validates `values` found at `path` (a repeated field).
    pub fn from_protos(
        values: &[FilterStateValue],
        path: &Path,
        errors: &mut ConfigErrors,
    ) -> Setters {
        let list: Vec<Setter> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Setter::from_proto(v, &path.index(i), errors))
            .collect();
        Setters(list.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets every value in order; each sees the state the ones before it left, as
    /// `%FILTER_STATE%` reads it.
    pub fn apply(&self, ctx: &LogContext<'_>, state: &mut FilterState) {
        for s in self.0.iter() {
            let mut c = ctx.clone();
            let snapshot = state.clone();
            c.filter_state = Some(&snapshot);
            s.apply(&c, state);
        }
    }
}
