//! `io.istio.http.connect_baggage` (istio/proxy): the workload a CONNECT's `baggage` header
//! describes (`k8s.namespace.name=...,k8s.deployment.name=...`) becomes the downstream peer in the
//! filter state (`wasm.downstream_peer`, with `wasm.downstream_peer_id` "unknown"), shared once
//! with the upstream connection: behind an HBONE terminator, the internal listener's TCP stats
//! label its connections with it.

use prost::Name;

use crate::filter_state::{
    FilterState, Object, Sharing, Value, DOWNSTREAM_PEER, DOWNSTREAM_PEER_ID,
};
use crate::istio::WorkloadMetadata;

pub const TYPE: &str = "io.istio.http.connect_baggage.Config";

/// `io.istio.http.connect_baggage.Config`: no fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Config {}

impl Name for Config {
    const NAME: &'static str = "Config";
    const PACKAGE: &'static str = "io.istio.http.connect_baggage";
}

/// Records the peer the request's `baggage` headers (all of them, comma-joined) describe.
pub fn decode(headers: &http::HeaderMap, state: &mut FilterState) {
    let values: Vec<&str> = headers
        .get_all("baggage")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return;
    }
    let peer = WorkloadMetadata::from_baggage(&values.join(","));
    for (key, value) in [
        (DOWNSTREAM_PEER, Value::Peer(Box::new(peer))),
        (DOWNSTREAM_PEER_ID, Value::String("unknown".to_string())),
    ] {
        state.set(Object {
            key: key.to_string(),
            value,
            read_only: false,
            sharing: Sharing::Once,
        });
    }
}
