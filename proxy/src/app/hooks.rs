//! The application's side of the admin API: config dump, clusters and listeners views, drain.

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use serde_json::{json, Value};

use crate::access_log::format::time::TimeFormat;
use crate::admin::{AdminHooks, DrainListeners};
use crate::config::parse::to_json;
use crate::upstream::ClusterManager;

pub struct AppHooks {
    pub bootstrap: Bootstrap,
    pub clusters: Arc<ClusterManager>,
    pub listeners: Vec<(String, SocketAddr)>,
    pub drain: tokio::sync::watch::Sender<Option<DrainListeners>>,
    pub loaded: std::time::SystemTime,
}

fn timestamp(t: std::time::SystemTime) -> String {
    let mut out = String::new();
    TimeFormat::envoy_default().format(t, &mut out);
    out
}

impl AdminHooks for AppHooks {
    fn config_dump(&self) -> Value {
        let updated = timestamp(self.loaded);
        let res = self.bootstrap.static_resources.clone().unwrap_or_default();
        let clusters: Vec<Value> = res
            .clusters
            .iter()
            .map(|c| {
                let mut v = to_json(c);
                if let Some(o) = v.as_object_mut() {
                    o.insert(
                        "@type".into(),
                        json!("type.googleapis.com/envoy.config.cluster.v3.Cluster"),
                    );
                }
                json!({ "cluster": v, "last_updated": updated })
            })
            .collect();
        let listeners: Vec<Value> = res
            .listeners
            .iter()
            .map(|l| {
                let mut v = to_json(l);
                if let Some(o) = v.as_object_mut() {
                    o.insert(
                        "@type".into(),
                        json!("type.googleapis.com/envoy.config.listener.v3.Listener"),
                    );
                }
                json!({ "listener": v, "last_updated": updated })
            })
            .collect();
        json!({
            "configs": [
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
                    "bootstrap": to_json(&self.bootstrap),
                    "last_updated": updated,
                },
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                    "static_clusters": clusters,
                },
                {
                    "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                    "static_listeners": listeners,
                },
            ]
        })
    }

    fn clusters(&self, format_json: bool) -> String {
        if format_json {
            serde_json::to_string_pretty(&self.clusters.admin_json()).unwrap_or_default()
        } else {
            self.clusters.admin_text()
        }
    }

    fn listeners(&self, format_json: bool) -> String {
        if format_json {
            let statuses: Vec<Value> = self
                .listeners
                .iter()
                .map(|(name, addr)| {
                    json!({
                        "name": name,
                        "local_address": { "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } },
                    })
                })
                .collect();
            serde_json::to_string_pretty(&json!({ "listener_statuses": statuses }))
                .unwrap_or_default()
        } else {
            self.listeners
                .iter()
                .map(|(name, addr)| format!("{name}::{addr}\n"))
                .collect()
        }
    }

    fn drain_listeners(&self, request: DrainListeners) {
        self.drain.send_replace(Some(request));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(timestamp(t), "2023-11-14T22:13:20.123Z");
    }
}
