//! The `server.*` gauges Envoy keeps (`server.live`, `server.uptime`, `server.state`, ...).

use crate::stats::{Gauge, Store};

use super::{ServerInfo, ServerState};

/// Handles on the server gauges; `refresh` brings the time- and state-derived ones up to date.
#[derive(Debug, Clone)]
pub struct ServerStats {
    live: Gauge,
    uptime: Gauge,
    state: Gauge,
    pub concurrency: Gauge,
    pub version: Gauge,
}

/// Registers the server gauges. `server.version` holds the first six hex digits of the build revision
/// (the part of `version` before the first `/`), as Envoy's does, or 0 when there is none.
pub fn register_server_stats(store: &Store, concurrency: usize, version: &str) -> ServerStats {
    let s = ServerStats {
        live: store.gauge("server.live"),
        uptime: store.gauge("server.uptime"),
        state: store.gauge("server.state"),
        concurrency: store.gauge("server.concurrency"),
        version: store.gauge("server.version"),
    };
    s.concurrency
        .set(i64::try_from(concurrency).unwrap_or(i64::MAX));
    s.version.set(version_number(version));
    s.live.set(0);
    s.uptime.set(0);
    s.state.set(ServerState::PreInitializing.gauge_value());
    s
}

fn version_number(version: &str) -> i64 {
    let revision = version.split('/').next().unwrap_or("");
    match revision.get(..6) {
        Some(hex) if hex.chars().all(|c| c.is_ascii_hexdigit()) => {
            i64::from_str_radix(hex, 16).unwrap_or(0)
        }
        _ => 0,
    }
}

impl ServerStats {
    /// `server.live` is 1 only while LIVE and passing health checks, as in Envoy.
    pub fn refresh(&self, info: &ServerInfo, health_failed: bool) {
        let state = info.state.get();
        self.state.set(state.gauge_value());
        self.live
            .set(i64::from(state == ServerState::Live && !health_failed));
        self.uptime
            .set(i64::try_from(info.uptime().as_secs()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_gauge_is_the_revision_prefix() {
        assert_eq!(
            version_number(
                "9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL"
            ),
            10376576
        );
        assert_eq!(version_number("remora/0.1.0"), 0);
    }
}
