//! `transport_socket_matches`: which transport socket an endpoint's connections use, picked by the
//! endpoint's `envoy.transport_socket_match` metadata. Istio labels mesh endpoints `tlsMode: istio`
//! to get mTLS and leaves the rest to a catch-all plaintext match.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{Metadata, TransportSocket};
use serde_json::{Map, Value};

use crate::config::parse::{struct_to_json, ParseOptions};
use crate::config::{ConfigErrors, Path};
use crate::secrets::SecretStore;
use crate::tls::{self, ClientTls};

/// The metadata namespace Envoy reads the labels from.
pub const METADATA_KEY: &str = "envoy.transport_socket_match";

/// An endpoint's labels, and those of its locality (consulted when no match takes the endpoint's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SocketLabels {
    pub endpoint: Map<String, Value>,
    pub locality: Map<String, Value>,
}

fn labels(m: Option<&Metadata>) -> Map<String, Value> {
    match m.and_then(|m| m.filter_metadata.get(METADATA_KEY)) {
        Some(s) => match struct_to_json(s.clone()) {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        None => Map::new(),
    }
}

impl SocketLabels {
    pub fn from_metadata(endpoint: Option<&Metadata>, locality: Option<&Metadata>) -> Self {
        SocketLabels {
            endpoint: labels(endpoint),
            locality: labels(locality),
        }
    }
}

/// One entry of `transport_socket_matches`; `tls` is `None` for a plaintext socket.
#[derive(Debug, Clone)]
pub struct SocketMatch {
    pub name: String,
    criteria: Map<String, Value>,
    pub tls: Option<Arc<ClientTls>>,
}

impl SocketMatch {
    /// Every criterion equals the label of that name (an empty `match` takes any endpoint).
    fn takes(&self, labels: &Map<String, Value>) -> bool {
        self.criteria.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// The first match for the endpoint's labels, else the first for its locality's, as Envoy resolves
/// them; `None` means the cluster's own `transport_socket`.
pub fn pick<'a>(matches: &'a [SocketMatch], labels: &SocketLabels) -> Option<&'a SocketMatch> {
    matches
        .iter()
        .find(|m| m.takes(&labels.endpoint))
        .or_else(|| matches.iter().find(|m| m.takes(&labels.locality)))
}

/// A transport socket as the client side of a cluster: TLS, plaintext (`None`), or errors.
pub(super) fn client_tls(
    ts: &TransportSocket,
    path: &Path,
    secrets: &SecretStore,
    alpn: Option<&[&[u8]]>,
    errs: &mut ConfigErrors,
) -> Option<Arc<ClientTls>> {
    tls::upstream_context(ts, path, ParseOptions::default())
        .and_then(|ctx| {
            ctx.map(|ctx| ClientTls::from_proto(&ctx, &path.field("typed_config"), secrets, alpn))
                .transpose()
        })
        .map_err(|e| errs.extend(e))
        .ok()
        .flatten()
}

pub(super) fn from_cluster(
    c: &Cluster,
    path: &Path,
    secrets: &SecretStore,
    alpn: Option<&[&[u8]]>,
    errs: &mut ConfigErrors,
) -> Vec<SocketMatch> {
    let mpath = path.field("transport_socket_matches");
    c.transport_socket_matches
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let p = mpath.index(i);
            let tls = match &m.transport_socket {
                Some(ts) => client_tls(ts, &p.field("transport_socket"), secrets, alpn, errs),
                None => {
                    errs.push(p.field("transport_socket"), "transport_socket is required");
                    None
                }
            };
            let criteria = match m.r#match.clone().map(struct_to_json) {
                Some(Value::Object(map)) => map,
                _ => Map::new(),
            };
            SocketMatch {
                name: m.name.clone(),
                criteria,
                tls,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(name: &str, criteria: Value) -> SocketMatch {
        let Value::Object(criteria) = criteria else {
            panic!("criteria are an object")
        };
        SocketMatch {
            name: name.into(),
            criteria,
            tls: None,
        }
    }

    fn labels(endpoint: Value, locality: Value) -> SocketLabels {
        let (Value::Object(endpoint), Value::Object(locality)) = (endpoint, locality) else {
            panic!("labels are objects")
        };
        SocketLabels { endpoint, locality }
    }

    fn picked(matches: &[SocketMatch], l: &SocketLabels) -> Option<String> {
        pick(matches, l).map(|m| m.name.clone())
    }

    #[test]
    fn istios_tls_mode_label_picks_mtls_and_the_rest_fall_to_the_catch_all() {
        let matches = [
            m("tlsMode-istio", json!({ "tlsMode": "istio" })),
            m("tlsMode-disabled", json!({})),
        ];
        let istio = labels(json!({ "tlsMode": "istio" }), json!({}));
        assert_eq!(picked(&matches, &istio).as_deref(), Some("tlsMode-istio"));
        let plain = labels(json!({ "tlsMode": "disabled" }), json!({}));
        assert_eq!(
            picked(&matches, &plain).as_deref(),
            Some("tlsMode-disabled")
        );
        assert_eq!(
            picked(&matches, &SocketLabels::default()).as_deref(),
            Some("tlsMode-disabled")
        );
    }

    #[test]
    fn the_locality_labels_are_tried_when_no_match_takes_the_endpoints() {
        let matches = [m("a", json!({ "mode": "a", "x": 1 }))];
        let l = labels(json!({ "mode": "a" }), json!({ "mode": "a", "x": 1 }));
        assert_eq!(picked(&matches, &l).as_deref(), Some("a"));
        let none = labels(json!({ "mode": "a" }), json!({}));
        assert_eq!(
            picked(&matches, &none),
            None,
            "the cluster's own transport socket"
        );
    }
}
