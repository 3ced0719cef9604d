//! Reporting on the balance and connect stages: Envoy's `/clusters` text and JSON forms.

use std::fmt::Write;
use std::net::SocketAddr;

use serde_json::{json, Map, Value};

use super::circuit::Limits;
use super::cluster::Cluster;
use super::config::Health;
use super::endpoint::Host;

fn health_flags(h: &Host) -> &'static str {
    match h.health {
        Health::Healthy => "healthy",
        Health::Unhealthy => "/failed_eds_health",
        Health::Draining => "/eds_status_draining",
        Health::Degraded => "/degraded_eds_health",
    }
}

fn eds_health_status(h: &Host) -> &'static str {
    match h.health {
        Health::Healthy => "HEALTHY",
        Health::Unhealthy => "UNHEALTHY",
        Health::Draining => "DRAINING",
        Health::Degraded => "DEGRADED",
    }
}

/// `/clusters` lines of one cluster.
pub(crate) fn text(c: &Cluster, out: &mut String) {
    let name = c.name();
    let b = c.breakers();
    let _ = writeln!(out, "{name}::observability_name::{name}");
    for (prio, l) in [
        ("default_priority", &b.default_limits),
        ("high_priority", &b.high_limits),
    ] {
        let _ = writeln!(
            out,
            "{name}::{prio}::max_connections::{}",
            l.max_connections
        );
        let _ = writeln!(
            out,
            "{name}::{prio}::max_pending_requests::{}",
            l.max_pending_requests
        );
        let _ = writeln!(out, "{name}::{prio}::max_requests::{}", l.max_requests);
        let _ = writeln!(out, "{name}::{prio}::max_retries::{}", l.max_retries);
    }
    let _ = writeln!(out, "{name}::added_via_api::false");
    for h in &c.host_set().hosts {
        let p = match &h.internal {
            Some(t) => format!("{name}::{}", t.uri),
            None => format!("{name}::{}", h.address()),
        };
        for (stat, v, _) in h.stats.rows() {
            let _ = writeln!(out, "{p}::{stat}::{v}");
        }
        let _ = writeln!(out, "{p}::hostname::{}", h.hostname);
        let _ = writeln!(out, "{p}::health_flags::{}", health_flags(h));
        let _ = writeln!(out, "{p}::weight::{}", h.weight);
        let _ = writeln!(out, "{p}::region::{}", h.locality.region);
        let _ = writeln!(out, "{p}::zone::{}", h.locality.zone);
        let _ = writeln!(out, "{p}::sub_zone::{}", h.locality.sub_zone);
        let _ = writeln!(out, "{p}::canary::false");
        let _ = writeln!(out, "{p}::priority::{}", h.priority);
        let _ = writeln!(out, "{p}::success_rate::-1");
        let _ = writeln!(out, "{p}::local_origin_success_rate::-1");
    }
}

fn socket_address(a: SocketAddr) -> Value {
    json!({ "socket_address": { "address": a.ip().to_string(), "port_value": a.port() } })
}

fn thresholds(l: &Limits, high: bool) -> Value {
    let mut m = Map::new();
    if high {
        m.insert("priority".into(), json!("HIGH"));
    }
    m.insert("max_connections".into(), json!(l.max_connections));
    m.insert("max_pending_requests".into(), json!(l.max_pending_requests));
    m.insert("max_requests".into(), json!(l.max_requests));
    m.insert("max_retries".into(), json!(l.max_retries));
    Value::Object(m)
}

/// One `cluster_statuses[]` entry, shaped as Envoy's `envoy.admin.v3.ClusterStatus` JSON (zero
/// values omitted, uint64 as strings).
pub(crate) fn json(c: &Cluster) -> Value {
    let hosts: Vec<Value> = c
        .host_set()
        .hosts
        .iter()
        .map(|h| {
            let rows = h.stats.rows();
            // Envoy lists counters first, then gauges.
            let stat = |(name, v, gauge): (&str, i64, bool)| {
                let mut m = Map::new();
                if v != 0 {
                    m.insert("value".into(), json!(v.to_string()));
                }
                if gauge {
                    m.insert("type".into(), json!("GAUGE"));
                }
                m.insert("name".into(), json!(name));
                Value::Object(m)
            };
            let mut stats: Vec<Value> = rows.iter().filter(|r| !r.2).map(|r| stat(*r)).collect();
            stats.extend(rows.iter().filter(|r| r.2).map(|r| stat(*r)));
            let mut m = Map::new();
            let address = match &h.internal {
                Some(t) => {
                    json!({ "envoy_internal_address": { "server_listener_name": t.listener } })
                }
                None => socket_address(h.address()),
            };
            m.insert("address".into(), address);
            m.insert("stats".into(), Value::Array(stats));
            m.insert(
                "health_status".into(),
                json!({ "eds_health_status": eds_health_status(h) }),
            );
            m.insert("weight".into(), json!(h.weight));
            if !h.hostname.is_empty() {
                m.insert("hostname".into(), json!(h.hostname));
            }
            if h.priority != 0 {
                m.insert("priority".into(), json!(h.priority));
            }
            let mut loc = Map::new();
            for (k, v) in [
                ("region", &h.locality.region),
                ("zone", &h.locality.zone),
                ("sub_zone", &h.locality.sub_zone),
            ] {
                if !v.is_empty() {
                    loc.insert(k.into(), json!(v));
                }
            }
            m.insert("locality".into(), Value::Object(loc));
            Value::Object(m)
        })
        .collect();
    let b = c.breakers();
    let mut m = Map::new();
    m.insert("name".into(), json!(c.name()));
    if !hosts.is_empty() {
        m.insert("host_statuses".into(), Value::Array(hosts));
    }
    m.insert(
        "circuit_breakers".into(),
        json!({ "thresholds": [thresholds(&b.default_limits, false), thresholds(&b.high_limits, true)] }),
    );
    m.insert("observability_name".into(), json!(c.name()));
    Value::Object(m)
}
