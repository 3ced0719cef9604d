//! The benchmark run: the topologies in order (direct floor, one proxy, the mesh pair, memory,
//! config scale, xDS, callgrind), each workload against every peer, gathered into the report's
//! tables.

mod callgrind;
mod mesh;
mod profile;
mod resources;
mod single;
mod xds;

use std::future::Future;
use std::path::PathBuf;
use std::time::Instant;

use crate::backend::Backend;
use crate::load::{Outcome, Window};
use crate::peers::{self, Kind, Role, Running, Setup, StartError};
use crate::pki::MeshPki;
use crate::ports::free_port;
use crate::procfs;
use crate::report::{Row, Status, Table};

pub use profile::{Profile, Workload, ALL_WORKLOADS};

pub fn profile_workloads() -> Vec<Workload> {
    ALL_WORKLOADS.to_vec()
}

/// A load's outcome with what the proxy spent while it ran.
#[derive(Debug)]
pub struct Measured {
    pub out: Outcome,
    /// CPU seconds of the measured processes inside the window.
    pub cpu: f64,
    /// The window's length in seconds.
    pub secs: f64,
    /// Bytes the backend's TCP sink received inside the window.
    pub tcp_bytes: u64,
}

impl Measured {
    pub fn rate(&self) -> f64 {
        self.out.requests as f64 / self.secs.max(1e-9)
    }

    /// CPU µs per completed request, NaN when no process was measured (direct) or none completed.
    pub fn cpu_us_per_request(&self, measured_any: bool) -> f64 {
        if measured_any {
            crate::stats::per(self.cpu * 1e6, self.out.requests)
        } else {
            f64::NAN
        }
    }
}

pub struct Bench {
    pub profile: Profile,
    pub runs: usize,
    pub peers: Vec<(Kind, PathBuf)>,
    pub workloads: Vec<Workload>,
    pub backend: Backend,
    pub pki: MeshPki,
    pub dir: PathBuf,
    pub nofile: u64,
}

impl Bench {
    fn wants(&self, w: Workload) -> bool {
        self.workloads.contains(&w)
    }

    fn setup(&self) -> Setup<'_> {
        Setup {
            backend_http: self.backend.http,
            backend_tcp: self.backend.tcp,
            pki: &self.pki,
            ready_timeout: self.profile.ready_timeout,
            nofile: self.nofile,
        }
    }

    fn start(
        &self,
        kind: Kind,
        bin: &std::path::Path,
        role: &Role,
        name: &str,
    ) -> Result<Running, StartError> {
        let dir = self
            .dir
            .join(format!("{}-{name}-{}", kind.name(), free_port()));
        peers::start(kind, bin, role, &self.setup(), &dir)
    }

    /// Runs `load` with warm-up, sampling the CPU of the trees of `roots` at the window's edges.
    pub async fn measure<F, Fut>(&self, roots: &[u32], load: F) -> Measured
    where
        F: FnOnce(Window) -> Fut,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        let pids = procfs::trees(roots);
        let w = Window::after(self.profile.warmup, self.profile.duration);
        let task = tokio::spawn(load(w));
        tokio::time::sleep_until(w.start.into()).await;
        let (c0, b0, t0) = (
            procfs::cpu_seconds(&pids),
            self.backend.tcp_bytes(),
            Instant::now(),
        );
        tokio::time::sleep_until(w.end.into()).await;
        let (c1, b1, t1) = (
            procfs::cpu_seconds(&pids),
            self.backend.tcp_bytes(),
            Instant::now(),
        );
        let out = match task.await {
            Ok(o) => o,
            Err(e) => {
                let mut o = Outcome::default();
                o.fail(e);
                o
            }
        };
        Measured {
            out,
            cpu: c1 - c0,
            secs: (t1 - t0).as_secs_f64(),
            tcp_bytes: b1.saturating_sub(b0),
        }
    }

    /// Every selected workload against the direct path and every peer.
    pub async fn run(&self) -> Vec<Table> {
        let mut t = Tables::new(&self.profile);
        self.direct(&mut t).await;
        for (kind, bin) in &self.peers {
            self.single(*kind, bin, &mut t).await;
            self.mesh(*kind, bin, &mut t).await;
            self.memory(*kind, bin, &mut t).await;
            self.scale(*kind, bin, &mut t).await;
            self.xds(*kind, bin, &mut t).await;
            self.callgrind(*kind, bin, &mut t).await;
        }
        t.into_selected(&self.workloads)
    }
}

/// Turns a peer that could not start into the rows it would have had.
fn start_failure(e: &StartError, mesh: bool) -> Status {
    match e {
        StartError::NoEquivalent(_) => Status::Unsupported(e.to_string()),
        // A sidecar that refuses the mTLS bootstrap lacks a feature rather than being broken.
        StartError::Exited { .. } | StartError::NotReady { .. } if mesh => {
            Status::Unsupported(e.to_string())
        }
        _ => Status::Failed(e.to_string()),
    }
}

/// A row from per-run figures, noting errors that a run had.
fn row(peer: &str, table: &mut Table, runs: Vec<Vec<f64>>, first_error: Option<String>) {
    let n = table.columns.len();
    table.rows.push(Row::measured(peer, runs, n));
    if let Some(e) = first_error {
        table.notes.push(format!("{peer}: first error: {e}"));
    }
}

/// The tables of one benchmark run, one per workload.
pub struct Tables {
    pub http1: Table,
    pub h2c: Table,
    pub rate: Table,
    pub mesh: Table,
    pub tcp: Table,
    pub handshake: Table,
    pub memory: Table,
    pub scale: Table,
    pub xds: Table,
    pub callgrind: Table,
}

pub const RATE_COLUMNS: [&str; 8] = [
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "p99.9 ms",
    "+p50 ms",
    "+p99 ms",
    "CPU µs/req",
    "errors",
];

impl Tables {
    fn new(p: &Profile) -> Tables {
        let sat = ["req/s", "CPU µs/req", "p50 ms", "p99 ms", "errors"];
        let (n1, n2) = (p.idle_conns[0], p.idle_conns[1]);
        let mut memory = Table::new(
            "memory",
            format!("Memory: idle RSS and RSS with {n1} / {n2} idle keep-alive connections"),
            &[
                "idle MB",
                &format!("MB @{n1}"),
                &format!("MB @{n2}"),
                "B/conn",
                "errors",
            ],
        );
        memory.notes.push(format!(
            "B/conn = (RSS with {n2} connections − idle RSS) / {n2}; nginx counts master and worker."
        ));
        let mut rate = Table::new(
            "rate",
            format!(
                "One proxy, HTTP/1.1 at {} req/s open loop (latency from the scheduled send)",
                p.rate
            ),
            &RATE_COLUMNS,
        );
        rate.notes
            .push("+p50 / +p99: added over the direct path's median.".into());
        let mut xds = Table::new(
            "xds",
            format!(
                "xDS updates over ADS: push to ACK for {} clusters, {} endpoints, {} routes; then the full route table {} times a second",
                p.scale_clusters,
                p.scale_clusters * 10,
                p.scale_routes,
                10
            ),
            &["CDS ms", "EDS ms", "RDS ms", "CPU ms/push", "RSS MB"],
        );
        xds.notes.push(
            "Each figure is one push's time from the control plane's send to the proxy's ACK (which follows the apply).".into(),
        );
        let mut callgrind = Table::new(
            "callgrind",
            format!(
                "Instructions per request under callgrind ({} sequential requests on one keep-alive connection, after {})",
                p.callgrind_requests, p.callgrind_warmup
            ),
            &callgrind::COLUMNS,
        );
        callgrind.notes.push(
            "Ir: instructions the proxy process executed (every thread) between callgrind's zero and dump, divided by the requests; h2c is one connection with sequential streams.".into(),
        );
        Tables {
            http1: Table::new(
                "http1",
                format!("One proxy, HTTP/1.1 keep-alive saturation ({} connections, closed loop)", p.h1_conns),
                &sat,
            ),
            h2c: Table::new(
                "h2c",
                format!(
                    "One proxy, h2c multiplexed ({} connections × {} streams, HTTP/1.1 upstream)",
                    p.h2_conns, p.h2_streams
                ),
                &sat,
            ),
            rate,
            mesh: Table::new(
                "mesh",
                format!(
                    "Mesh pair (client → outbound → mTLS → inbound → backend) at {} req/s; CPU is both sidecars'",
                    p.rate
                ),
                &RATE_COLUMNS,
            ),
            tcp: Table::new(
                "tcp",
                format!("TCP proxy, bulk throughput ({} connection(s))", p.tcp_conns),
                &["Gb/s", "× direct", "CPU s/GB", "errors"],
            ),
            handshake: Table::new(
                "handshake",
                format!(
                    "New-connection mTLS handshakes at the inbound sidecar ({} clients, no resumption)",
                    p.tls_clients
                ),
                &["handshakes/s", "CPU ms/handshake", "errors"],
            ),
            memory,
            scale: Table::new(
                "scale",
                format!(
                    "Config scale: {} routes, {} clusters (spawn to admin /ready 200)",
                    p.scale_routes, p.scale_clusters
                ),
                &["ready ms", "RSS MB"],
            ),
            xds,
            callgrind,
        }
    }

    fn into_selected(self, w: &[Workload]) -> Vec<Table> {
        [
            (Workload::Http1, self.http1),
            (Workload::H2c, self.h2c),
            (Workload::Rate, self.rate),
            (Workload::Mesh, self.mesh),
            (Workload::Tcp, self.tcp),
            (Workload::Handshake, self.handshake),
            (Workload::Memory, self.memory),
            (Workload::Scale, self.scale),
            (Workload::Xds, self.xds),
            (Workload::Callgrind, self.callgrind),
        ]
        .into_iter()
        .filter(|(k, _)| w.contains(k))
        .map(|(_, t)| t)
        .collect()
    }
}
