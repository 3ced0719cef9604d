//! `/config_dump?resource=&mask=`: selecting and trimming the application's config dump.
//!
//! The dump arrives as JSON; the message descriptors tell which fields exist, which are repeated and
//! what their elements are called, so `resource` and `mask` behave as on Envoy's protos.

use std::collections::BTreeMap;

use prost_reflect::{Kind, MessageDescriptor};
use serde_json::{Map, Value};

use crate::config::parse::{descriptor_pool, type_name};

const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// Why a dump request cannot be answered, with Envoy's status and text.
#[derive(Debug, PartialEq, Eq)]
pub enum DumpError {
    NotFound(String),
    BadRequest(String),
}

fn descriptor_of(config: &Value) -> Option<MessageDescriptor> {
    let url = config.get("@type")?.as_str()?;
    descriptor_pool().get_message_by_name(type_name(url))
}

/// A FieldMask's paths as a tree: `cluster.name,cluster.type` → `{cluster: {name: {}, type: {}}}`.
#[derive(Debug, Default)]
struct MaskTree(BTreeMap<String, MaskTree>);

impl MaskTree {
    fn parse(mask: &str) -> Self {
        let mut root = MaskTree::default();
        for path in mask.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut node = &mut root;
            for seg in path.split('.') {
                node = node.0.entry(seg.to_string()).or_default();
            }
        }
        root
    }

    /// Protobuf FieldMask rules: every segment names a field, and only the last may be repeated.
    /// An `Any` ends what can be checked (its type is only known per value).
    fn valid_for(&self, desc: &MessageDescriptor) -> bool {
        self.0.iter().all(|(name, sub)| {
            let Some(field) = desc.get_field_by_name(name) else {
                return false;
            };
            if sub.0.is_empty() {
                return true;
            }
            match field.kind() {
                Kind::Message(m) if !field.is_list() && !field.is_map() => {
                    m.full_name() == "google.protobuf.Any" || sub.valid_for(&m)
                }
                _ => false,
            }
        })
    }

    fn apply(&self, value: &Value) -> Value {
        let Value::Object(obj) = value else {
            return value.clone();
        };
        let mut out = Map::new();
        if let Some(t) = obj.get("@type") {
            out.insert("@type".to_string(), t.clone());
        }
        for (name, sub) in &self.0 {
            if let Some(v) = obj.get(name) {
                let kept = if sub.0.is_empty() {
                    v.clone()
                } else {
                    sub.apply(v)
                };
                out.insert(name.clone(), kept);
            }
        }
        Value::Object(out)
    }
}

fn mask_error(mask: &str) -> DumpError {
    let paths: Vec<String> = mask
        .split(',')
        .map(|p| format!("paths: \"{p}\"\n"))
        .collect();
    DumpError::BadRequest(format!(
        "FieldMask {} could not be successfully used.",
        paths.concat()
    ))
}

/// Applies `resource` and `mask` to a full dump (`{"configs":[...]}`).
pub fn select(dump: Value, resource: Option<&str>, mask: Option<&str>) -> Result<Value, DumpError> {
    let configs = match dump {
        Value::Object(mut m) => match m.remove("configs") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    let tree = mask.map(MaskTree::parse);
    match resource.filter(|r| !r.is_empty()) {
        Some(resource) => {
            for config in &configs {
                let Some(desc) = descriptor_of(config) else {
                    continue;
                };
                let Some(field) = desc.get_field_by_name(resource) else {
                    continue;
                };
                let Kind::Message(element) = field.kind() else {
                    continue;
                };
                if !field.is_list() {
                    continue;
                }
                if let (Some(tree), Some(mask)) = (&tree, mask) {
                    if !tree.valid_for(&element) {
                        return Err(mask_error(mask));
                    }
                }
                let type_url = format!("{TYPE_URL_PREFIX}{}", element.full_name());
                let items = config
                    .get(resource)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let items = items
                    .into_iter()
                    .map(|item| {
                        let item = match &tree {
                            Some(t) => t.apply(&item),
                            None => item,
                        };
                        with_type(item, &type_url)
                    })
                    .collect();
                return Ok(serde_json::json!({ "configs": Value::Array(items) }));
            }
            Err(DumpError::NotFound(format!(
                "{resource} not found in config dump"
            )))
        }
        None => match (&tree, mask) {
            (Some(tree), Some(mask)) => {
                // As in Envoy, only the configs the mask fits are kept.
                let kept: Vec<Value> = configs
                    .iter()
                    .filter(|c| descriptor_of(c).is_some_and(|d| tree.valid_for(&d)))
                    .map(|c| tree.apply(c))
                    .collect();
                if kept.is_empty() {
                    return Err(DumpError::BadRequest(format!(
                        "FieldMask {mask} could not be successfully applied to any configs."
                    )));
                }
                Ok(serde_json::json!({ "configs": kept }))
            }
            _ => Ok(serde_json::json!({ "configs": configs })),
        },
    }
}

/// Puts `@type` first, as Envoy prints an `Any`.
fn with_type(item: Value, type_url: &str) -> Value {
    let mut out = Map::new();
    out.insert("@type".to_string(), Value::String(type_url.to_string()));
    if let Value::Object(obj) = item {
        out.extend(obj.into_iter().filter(|(k, _)| k != "@type"));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dump() -> Value {
        json!({"configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
             "bootstrap": {"node": {"id": "n"}}},
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
             "version_info": "1",
             "static_clusters": [
                {"cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                             "name": "web", "connect_timeout": "1s"},
                 "last_updated": "2026-01-01T00:00:00Z"}]}
        ]})
    }

    #[test]
    fn resource_flattens_the_repeated_field_with_element_types() {
        let out = select(dump(), Some("static_clusters"), None).expect("found");
        assert_eq!(
            out["configs"][0]["@type"],
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster"
        );
        assert_eq!(out["configs"][0]["cluster"]["name"], "web");
        assert_eq!(
            select(dump(), Some("bogus"), None),
            Err(DumpError::NotFound("bogus not found in config dump".into()))
        );
    }

    #[test]
    fn mask_trims_each_element_and_reaches_into_any() {
        let out = select(dump(), Some("static_clusters"), Some("cluster.name")).expect("masked");
        assert_eq!(
            out["configs"][0]["cluster"],
            json!({"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "web"})
        );
        assert!(out["configs"][0].get("last_updated").is_none());
        assert!(matches!(
            select(dump(), Some("static_clusters"), Some("cluster_bogus")),
            Err(DumpError::BadRequest(_))
        ));
    }

    #[test]
    fn mask_without_resource_keeps_only_configs_it_fits() {
        let out = select(dump(), None, Some("version_info")).expect("masked");
        assert_eq!(
            out,
            json!({"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "version_info": "1"}]})
        );
        // A path through a repeated field is not a valid FieldMask.
        assert_eq!(
            select(dump(), None, Some("static_clusters.cluster.name")),
            Err(DumpError::BadRequest(
                "FieldMask static_clusters.cluster.name could not be successfully applied to any configs."
                    .into()
            ))
        );
    }
}
