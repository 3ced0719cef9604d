//! The application's side of the admin API: config dump, clusters and listeners views, drain.

use std::sync::Arc;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use serde_json::{json, Value};

use crate::access_log::format::time::TimeFormat;
use crate::admin::{AdminHooks, DrainListeners};
use crate::config::parse::to_json;
use crate::upstream::Origin;
use crate::xds::stats::UpdateStats;

use super::dynamic::DynamicConfig;

pub struct AppHooks {
    pub bootstrap: Bootstrap,
    pub config: Arc<DynamicConfig>,
    /// The file-based CDS and LDS subscriptions, for their `version_info`.
    pub cds: Option<UpdateStats>,
    pub lds: Option<UpdateStats>,
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
        let typed = |mut v: Value, type_url: &str| {
            if let Some(o) = v.as_object_mut() {
                o.insert("@type".into(), json!(type_url));
            }
            v
        };
        const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
        const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
        const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
        let cfg = &self.config;
        let mut static_clusters = Vec::new();
        let mut dynamic_active = Vec::new();
        for e in cfg.clusters.entries() {
            let c = typed(to_json(&e.proto), CLUSTER);
            match e.origin {
                Origin::Static => {
                    static_clusters.push(json!({ "cluster": c, "last_updated": updated }))
                }
                Origin::Dynamic => dynamic_active.push(json!({
                    "version_info": e.version,
                    "cluster": c,
                    "last_updated": timestamp(e.last_updated),
                })),
            }
        }
        let dynamic_warming: Vec<Value> = cfg
            .clusters
            .warming()
            .iter()
            .map(|e| {
                json!({
                    "version_info": e.version,
                    "cluster": typed(to_json(&e.proto), CLUSTER),
                    "last_updated": timestamp(e.last_updated),
                })
            })
            .collect();
        let mut static_listeners = Vec::new();
        let mut dynamic_listeners = Vec::new();
        for l in cfg.listeners.views() {
            let v = typed(to_json(&l.proto), LISTENER);
            match l.origin {
                Origin::Static => {
                    static_listeners.push(json!({ "listener": v, "last_updated": updated }))
                }
                Origin::Dynamic => dynamic_listeners.push(json!({
                    "name": l.name,
                    "active_state": {
                        "version_info": l.version,
                        "listener": v,
                        "last_updated": timestamp(l.last_updated),
                    },
                })),
            }
        }
        let dynamic_routes: Vec<Value> = cfg
            .routes
            .entries()
            .iter()
            .filter_map(|r| r.applied())
            .map(|a| {
                json!({
                    "version_info": a.version,
                    "route_config": typed(to_json(&a.proto), ROUTE),
                    "last_updated": timestamp(a.last_updated),
                })
            })
            .collect();
        let version = |s: &Option<UpdateStats>| s.as_ref().map(|s| (*s.version_text()).clone());
        let mut clusters = json!({
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "static_clusters": static_clusters,
        });
        let mut listeners = json!({
            "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "static_listeners": static_listeners,
        });
        // Envoy leaves empty repeated fields (and an unset version) out of the dump.
        if let Some(o) = clusters.as_object_mut() {
            if let Some(v) = version(&self.cds) {
                o.insert("version_info".into(), json!(v));
            }
            if !dynamic_active.is_empty() {
                o.insert("dynamic_active_clusters".into(), json!(dynamic_active));
            }
            if !dynamic_warming.is_empty() {
                o.insert("dynamic_warming_clusters".into(), json!(dynamic_warming));
            }
        }
        if let Some(o) = listeners.as_object_mut() {
            if let Some(v) = version(&self.lds) {
                o.insert("version_info".into(), json!(v));
            }
            if !dynamic_listeners.is_empty() {
                o.insert("dynamic_listeners".into(), json!(dynamic_listeners));
            }
        }
        let mut configs = vec![
            json!({
                "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
                "bootstrap": to_json(&self.bootstrap),
                "last_updated": updated,
            }),
            clusters,
            listeners,
        ];
        if !dynamic_routes.is_empty() {
            configs.push(json!({
                "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                "dynamic_route_configs": dynamic_routes,
            }));
        }
        json!({ "configs": configs })
    }

    fn clusters(&self, format_json: bool) -> String {
        if format_json {
            serde_json::to_string_pretty(&self.config.clusters.admin_json()).unwrap_or_default()
        } else {
            self.config.clusters.admin_text()
        }
    }

    fn listeners(&self, format_json: bool) -> String {
        // An internal listener has no socket; Envoy shows its `envoy_internal_address`.
        let listeners: Vec<(String, Result<std::net::SocketAddr, ()>)> = self
            .config
            .listeners
            .views()
            .into_iter()
            .filter_map(|l| match l.addresses.first() {
                Some(a) => Some((l.name, Ok(*a))),
                None if l.proto.listener_specifier.is_some() => Some((l.name, Err(()))),
                None => None,
            })
            .collect();
        if format_json {
            let statuses: Vec<Value> = listeners
                .iter()
                .map(|(name, addr)| {
                    let local = match addr {
                        Ok(addr) => json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } }),
                        Err(()) => json!({ "envoy_internal_address": { "server_listener_name": name } }),
                    };
                    json!({ "name": name, "local_address": local })
                })
                .collect();
            serde_json::to_string_pretty(&json!({ "listener_statuses": statuses }))
                .unwrap_or_default()
        } else {
            listeners
                .iter()
                .map(|(name, addr)| match addr {
                    Ok(addr) => format!("{name}::{addr}\n"),
                    Err(()) => format!("{name}::envoy://{name}/\n"),
                })
                .collect()
        }
    }

    fn drain_listeners(&self, request: DrainListeners) {
        self.config.listeners.drain_listeners(request);
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
