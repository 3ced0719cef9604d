//! SDS over its own gRPC `api_config_source` (Istio's `sds-grpc` socket to istio-agent): one
//! client per distinct source, subscribed to exactly the secret names the TLS contexts expect from
//! it, and following them as listeners and clusters come and go.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{ApiConfigSource, Node};
use prost::Message;
use remora_xds_client::{Subscriptions, TypeUrl, XdsClient};

use super::handlers::{ConfigSink, Kind, TypeHandler};
use super::stats::UpdateStats;
use crate::config::Path;
use crate::secrets::SecretStore;
use crate::stats::Store;

/// Runs until `shutdown`: starts a client for each SDS source as TLS contexts name it.
pub fn spawn(
    secrets: SecretStore,
    clusters: Vec<Cluster>,
    node: Node,
    sink: Arc<dyn ConfigSink>,
    store: Store,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = secrets.api_changes();
        // Keyed by the source's encoding: ApiConfigSource has no Hash.
        let mut running: HashMap<Vec<u8>, Subscriptions> = HashMap::new();
        let mut failed: HashMap<Vec<u8>, String> = HashMap::new();
        loop {
            for (source, names) in secrets.api_sources() {
                let key = source.encode_to_vec();
                if let Some(subs) = running.get(&key) {
                    subs.subscribe(TypeUrl::SECRET, names);
                    continue;
                }
                match start(&source, &clusters, &node, &sink, &store, &shutdown) {
                    Ok(subs) => {
                        subs.subscribe(TypeUrl::SECRET, names);
                        running.insert(key, subs);
                    }
                    Err(e) => {
                        if failed.insert(key, e.clone()).is_none() {
                            tracing::error!(error = %e, "cannot start the SDS client; secrets from it stay missing");
                        }
                    }
                }
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = shutdown.wait_for(|s| *s) => return,
            }
            // Let a burst of contexts (one LDS update) register before resubscribing.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

fn start(
    source: &ApiConfigSource,
    clusters: &[Cluster],
    node: &Node,
    sink: &Arc<dyn ConfigSink>,
    store: &Store,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> Result<Subscriptions, String> {
    let path = Path::default()
        .field("sds_config")
        .field("api_config_source");
    let grpc = super::source::resolve(source, &path, clusters).map_err(|e| e.to_string())?;
    let builder = XdsClient::builder(grpc.endpoint.clone(), node.clone())
        .ads(false)
        .delta(grpc.delta)
        .node_on_every_request(!grpc.node_on_first_message_only)
        .backoff(Duration::from_millis(500), Duration::from_secs(30));
    let subscriptions = builder.subscriptions();
    let stats = UpdateStats::new(store, "xds.sds.");
    let client = builder
        .handler(TypeHandler::new(
            Kind::Secret,
            sink.clone(),
            subscriptions.clone(),
            stats,
            false,
        ))
        .build()
        .map_err(|e| e.to_string())?;
    tracing::info!(target = %grpc.target, delta = grpc.delta, "connecting to the SDS server");
    let mut shutdown = shutdown.clone();
    tokio::spawn(async move {
        client
            .run(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await;
    });
    Ok(subscriptions)
}
