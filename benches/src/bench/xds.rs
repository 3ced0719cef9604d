//! Live reconfiguration from an ADS control plane: the time from a push to the proxy's ACK for
//! 1k clusters, 10k endpoints and 10k routes, then CPU per push and RSS while the full route
//! table is pushed 10 times a second (as a busy mesh control plane does).

use std::path::Path;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use remora_tests::control_plane::{
    resource, ControlPlane, Outcome, CLUSTER, ENDPOINT, LISTENER, ROUTE,
};
use serde_json::json;

use super::{row, start_failure, Bench, Tables, Workload};
use crate::peers::{Kind, Role};
use crate::ports::free_port;
use crate::procfs;
use crate::report::{Row, Status};

const MB: f64 = 1024.0 * 1024.0;
/// How long one push may take to be answered.
const ANSWER: Duration = Duration::from_secs(60);
/// Endpoints per cluster in the EDS push.
const ENDPOINTS_PER_CLUSTER: usize = 10;
/// Pushes per second in the churn phase.
const PUSH_RATE: u32 = 10;

fn listener(port: u16) -> (String, Any) {
    let l = json!({
        "name": "bench",
        "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } },
        "filter_chains": [{ "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "bench",
                "rds": { "route_config_name": "bench", "config_source": { "ads": {}, "resource_api_version": "V3" } },
                "http_filters": [{ "name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }]
            }
        }]}]
    });
    resource::<Listener>("bench", &l.to_string())
}

fn clusters(n: usize) -> Vec<(String, Any)> {
    (0..n.max(1))
        .map(|c| {
            let name = format!("svc-{c}");
            let v = json!({
                "name": name,
                "type": "EDS",
                "connect_timeout": "1s",
                "eds_cluster_config": { "eds_config": { "ads": {}, "resource_api_version": "V3" } }
            });
            resource::<Cluster>(&name, &v.to_string())
        })
        .collect()
}

/// `per` endpoints for each cluster: the first is the backend, the rest addresses that are never
/// connected to (the bench measures applying them, not using them). `round` varies the ports.
fn endpoints(n: usize, per: usize, backend: u16, round: u16) -> Vec<(String, Any)> {
    (0..n.max(1))
        .map(|c| {
            let name = format!("svc-{c}");
            let lb: Vec<serde_json::Value> = (0..per)
                .map(|e| {
                    let (addr, port) = if e == 0 {
                        ("127.0.0.1".to_string(), backend)
                    } else {
                        (format!("127.1.{}.{}", c % 250, e), 10_000 + round)
                    };
                    json!({ "endpoint": { "address": { "socket_address": { "address": addr, "port_value": port } } } })
                })
                .collect();
            let v = json!({ "cluster_name": name, "endpoints": [{ "lb_endpoints": lb }] });
            resource::<ClusterLoadAssignment>(&name, &v.to_string())
        })
        .collect()
}

/// One virtual host per cluster, the routes shared out among them; `round` varies the timeouts
/// so that every push is a real change.
fn routes(routes: usize, clusters: usize, round: u32) -> Vec<(String, Any)> {
    let clusters = clusters.max(1);
    let per = routes.div_ceil(clusters);
    let mut vhosts = Vec::new();
    let mut made = 0;
    for c in 0..clusters {
        if made >= routes {
            break;
        }
        let n = per.min(routes - made);
        made += n;
        let rs: Vec<serde_json::Value> = (0..n)
            .map(|r| {
                json!({
                    "match": { "prefix": format!("/api/v{r}/") },
                    "route": { "cluster": format!("svc-{c}"), "timeout": format!("{}s", 15 + (round + r as u32) % 5) }
                })
            })
            .collect();
        vhosts.push(json!({
            "name": format!("svc-{c}"),
            "domains": [format!("svc-{c}.bench.local"), format!("svc-{c}")],
            "routes": rs
        }));
    }
    if vhosts.is_empty() {
        vhosts.push(json!({ "name": "all", "domains": ["*"], "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": "svc-0" } }] }));
    }
    let v = json!({ "name": "bench", "virtual_hosts": vhosts });
    vec![resource::<RouteConfiguration>("bench", &v.to_string())]
}

/// Pushes, then waits for the answer; the time to an ACK in ms.
async fn timed(cp: &ControlPlane, type_url: &str, res: Vec<(String, Any)>) -> Result<f64, String> {
    let t0 = Instant::now();
    let v = cp.set(type_url, res);
    match cp.outcome(type_url, v, ANSWER).await {
        Some(Outcome::Ack) => Ok(t0.elapsed().as_secs_f64() * 1e3),
        Some(Outcome::Nack(e)) => Err(format!("{type_url} NACKed: {e}")),
        None => Err(format!(
            "{type_url} version {v} not answered within {ANSWER:?}"
        )),
    }
}

impl Bench {
    pub(super) async fn xds(&self, kind: Kind, bin: &Path, t: &mut Tables) {
        if !self.wants(Workload::Xds) {
            return;
        }
        if !kind.reads_envoy_config() {
            let n = t.xds.columns.len();
            t.xds.rows.push(Row::not_run(
                kind.name(),
                Status::Unsupported("no xDS".into()),
                n,
            ));
            return;
        }
        let mut runs = Vec::new();
        let mut first = None;
        for _ in 0..self.runs {
            match self.xds_run(kind, bin).await {
                Ok(r) => runs.push(r),
                Err(RunError::Start(status)) => {
                    let n = t.xds.columns.len();
                    t.xds.rows.push(Row::not_run(kind.name(), status, n));
                    return;
                }
                Err(RunError::Push(e)) => {
                    first = first.or(Some(e));
                    break;
                }
            }
        }
        row(kind.name(), &mut t.xds, runs, first);
    }

    async fn xds_run(&self, kind: Kind, bin: &Path) -> Result<Vec<f64>, RunError> {
        let p = &self.profile;
        // The control plane runs on its own thread: the bench's runtime blocks while a peer starts.
        let cp_rt = Background(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .map_err(|e| RunError::Push(format!("control plane runtime: {e}")))?,
        ));
        let cp = cp_rt
            .spawn(ControlPlane::tcp())
            .await
            .map_err(|e| RunError::Push(format!("control plane: {e}")))?;
        let backend = self.backend.http.port();
        let listen = free_port();
        cp.set(CLUSTER, clusters(1));
        cp.set(ENDPOINT, endpoints(1, 1, backend, 0));
        cp.set(LISTENER, vec![listener(listen)]);
        cp.set(ROUTE, routes(1, 1, 0));
        let role = Role::Xds {
            listen,
            ads: cp.port(),
        };
        let proxy = self
            .start(kind, bin, &role, "xds")
            .map_err(|e| RunError::Start(start_failure(&e, false)))?;
        let pids = procfs::trees(&[proxy.pid()]);
        let (n_routes, n_clusters) = (p.scale_routes, p.scale_clusters);

        let push = RunError::Push;
        // The assignments are there before the clusters, as a control plane has them: Envoy ACKs
        // CDS only once its new clusters have warmed with their EDS.
        cp.set(
            ENDPOINT,
            endpoints(n_clusters, ENDPOINTS_PER_CLUSTER, backend, 1),
        );
        let cds = timed(&cp, CLUSTER, clusters(n_clusters))
            .await
            .map_err(push)?;
        let eds = timed(
            &cp,
            ENDPOINT,
            endpoints(n_clusters, ENDPOINTS_PER_CLUSTER, backend, 2),
        )
        .await
        .map_err(push)?;
        let rds = timed(&cp, ROUTE, routes(n_routes, n_clusters, 1))
            .await
            .map_err(push)?;

        // Churn: the full route table, PUSH_RATE times a second (prepared beforehand).
        let pushes = (p.duration.as_secs_f64() * f64::from(PUSH_RATE)).ceil() as u32;
        let tables: Vec<Vec<(String, Any)>> = (0..pushes)
            .map(|i| routes(n_routes, n_clusters, i + 2))
            .collect();
        let c0 = procfs::cpu_seconds(&pids);
        let mut tick = tokio::time::interval(Duration::from_secs(1) / PUSH_RATE);
        let mut last = 0;
        for table in tables {
            tick.tick().await;
            last = cp.set(ROUTE, table);
        }
        match cp.outcome(ROUTE, last, ANSWER).await {
            Some(Outcome::Ack) => {}
            other => return Err(push(format!("the last churn push: {other:?}"))),
        }
        let cpu = procfs::cpu_seconds(&pids) - c0;
        let rss = procfs::rss_bytes(&pids) as f64;
        drop(proxy);
        drop(cp);
        drop(cp_rt);
        Ok(vec![
            cds,
            eds,
            rds,
            cpu * 1e3 / f64::from(pushes.max(1)),
            rss / MB,
        ])
    }
}

enum RunError {
    Start(Status),
    Push(String),
}

/// A runtime owned by async code: shut down without blocking when dropped.
struct Background(Option<tokio::runtime::Runtime>);

impl Background {
    fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(rt) => rt.spawn(f),
            None => unreachable!("the runtime lives until drop"),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
