//! The admin API (Envoy's `/stats`, `/ready`, `/config_dump`, `/clusters`, ...).
//!
//! A plain HTTP/1 server on its own listener. Everything it reports comes from `AdminState`: the stats
//! store, the server's lifecycle, and `AdminHooks` the application implements for the views only it can
//! build (config dump, clusters, listeners) and for the actions only it can take (draining listeners).

mod config_dump;
mod query;
mod routes;
mod server_stats;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::logging::LogControl;
use crate::stats::Store;

pub use server_stats::{register_server_stats, ServerStats};

/// Envoy's server states, as `/ready`, `/server_info` and the `server.state` gauge report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Live,
    Draining,
    PreInitializing,
    Initializing,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Live => "LIVE",
            ServerState::Draining => "DRAINING",
            ServerState::PreInitializing => "PRE_INITIALIZING",
            ServerState::Initializing => "INITIALIZING",
        }
    }

    /// The `server.state` gauge value (Envoy's `envoy.admin.v3.ServerInfo.State` numbers).
    pub fn gauge_value(self) -> i64 {
        match self {
            ServerState::Live => 0,
            ServerState::Draining => 1,
            ServerState::PreInitializing => 2,
            ServerState::Initializing => 3,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => ServerState::Live,
            1 => ServerState::Draining,
            3 => ServerState::Initializing,
            _ => ServerState::PreInitializing,
        }
    }
}

/// The server's state, shared between whoever drives the lifecycle and the admin API. Cloning shares it.
#[derive(Debug, Clone)]
pub struct ServerStateCell(Arc<AtomicU8>);

impl Default for ServerStateCell {
    fn default() -> Self {
        Self(Arc::new(AtomicU8::new(2)))
    }
}

impl ServerStateCell {
    pub fn new(state: ServerState) -> Self {
        Self(Arc::new(AtomicU8::new(state.gauge_value() as u8)))
    }
    pub fn get(&self) -> ServerState {
        ServerState::from_u8(self.0.load(Ordering::Relaxed))
    }
    pub fn set(&self, state: ServerState) {
        self.0.store(state.gauge_value() as u8, Ordering::Relaxed);
    }
}

/// What `/server_info` reports.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `<revision>/<version>/<status>/<build type>` in Envoy; any string for remora.
    pub version: String,
    pub state: ServerStateCell,
    pub started: Instant,
    /// The parsed command line, in Envoy's `envoy.admin.v3.CommandLineOptions` JSON form.
    pub command_line_options: serde_json::Value,
    /// The bootstrap `node`, as JSON.
    pub node: serde_json::Value,
}

impl ServerInfo {
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// `POST /drain_listeners` options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainListeners {
    /// Only listeners whose `traffic_direction` is INBOUND.
    pub inbound_only: bool,
    /// Enter the graceful drain period (`--drain-time-s`) before closing listeners.
    pub graceful: bool,
    /// Drain connections but keep the listeners open.
    pub skip_exit: bool,
}

/// The admin views and actions that belong to the application.
pub trait AdminHooks: Send + Sync {
    /// `/config_dump`: `{"configs":[{"@type": "...BootstrapConfigDump", ...}, ...]}` with proto field
    /// names, as Envoy prints it.
    fn config_dump(&self) -> serde_json::Value {
        serde_json::json!({ "configs": [] })
    }
    /// `/clusters` (`?format=json` when `format_json`).
    fn clusters(&self, format_json: bool) -> String {
        if format_json {
            r#"{"cluster_statuses":[]}"#.to_string()
        } else {
            String::new()
        }
    }
    /// `/listeners` (`?format=json` when `format_json`).
    fn listeners(&self, format_json: bool) -> String {
        if format_json {
            r#"{"listener_statuses":[]}"#.to_string()
        } else {
            String::new()
        }
    }
    /// `POST /drain_listeners`.
    fn drain_listeners(&self, _request: DrainListeners) {}
}

/// Hooks that report nothing (tests, or before the application is wired).
#[derive(Debug, Default)]
pub struct NoHooks;

impl AdminHooks for NoHooks {}

/// Everything the admin API reads and acts on.
pub struct AdminState {
    pub stats: Store,
    pub server: ServerInfo,
    pub hooks: Arc<dyn AdminHooks>,
    pub log: LogControl,
    /// Refreshed before every stats read so `server.uptime` is current.
    pub server_stats: Option<ServerStats>,
    /// Istio's standard metrics, rendered after Envoy's own in the Prometheus output.
    pub istio: Option<crate::istio::IstioMetrics>,
    health_failed: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
}

impl AdminState {
    pub fn new(
        stats: Store,
        server: ServerInfo,
        hooks: Arc<dyn AdminHooks>,
        log: LogControl,
    ) -> Self {
        Self {
            stats,
            server,
            hooks,
            log,
            server_stats: None,
            istio: None,
            health_failed: Arc::new(AtomicBool::new(false)),
            shutdown: watch::Sender::new(false),
        }
    }

    pub fn with_server_stats(mut self, stats: ServerStats) -> Self {
        self.server_stats = Some(stats);
        self
    }

    pub fn with_istio(mut self, metrics: crate::istio::IstioMetrics) -> Self {
        self.istio = Some(metrics);
        self
    }

    /// The Prometheus exposition: Envoy's stats, then Istio's metrics (filtered by family name).
    fn prometheus(&self, used_only: bool, filter: Option<&regex::Regex>) -> String {
        let mut out = crate::stats::prometheus::render(&self.stats, used_only, filter);
        if let Some(m) = &self.istio {
            m.render_matching(&mut out, |family| {
                filter.is_none_or(|re| re.is_match(family))
            });
        }
        out
    }

    /// True after `POST /healthcheck/fail` until `POST /healthcheck/ok`: the HTTP health_check filter
    /// answers 503 and `/ready` reports DRAINING.
    pub fn health_failed(&self) -> bool {
        self.health_failed.load(Ordering::Relaxed)
    }

    /// The flag itself, for the data path to read without holding the state.
    pub fn health_flag(&self) -> Arc<AtomicBool> {
        self.health_failed.clone()
    }

    /// Becomes `true` on `POST /quitquitquit`.
    pub fn shutdown_requested(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    fn set_health_failed(&self, failed: bool) {
        self.health_failed.store(failed, Ordering::Relaxed);
    }

    fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    fn refresh_server_stats(&self) {
        if let Some(s) = &self.server_stats {
            s.refresh(&self.server, self.health_failed());
        }
    }
}

/// Serves the admin API on `listener` until `shutdown` completes; connections still open then are asked
/// to finish their current request and close.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()>,
) {
    let (closing_tx, closing_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(routes::handle(&state, req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { closing.wait_for(|c| *c).await.is_ok() } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
            }
        });
    }
    closing_tx.send_replace(true);
}
