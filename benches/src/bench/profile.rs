//! How long and how hard each workload runs: the full profile, and `--quick` for smoke runs.

use std::time::Duration;

/// The workloads, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Workload {
    /// HTTP/1.1 keep-alive saturation, closed loop.
    Http1,
    /// h2c multiplexed, closed loop.
    H2c,
    /// HTTP/1.1 at a fixed rate, open loop, through one proxy.
    Rate,
    /// The fixed rate through the mTLS sidecar pair.
    Mesh,
    /// TCP bulk throughput.
    Tcp,
    /// New-connection mTLS handshakes.
    Handshake,
    /// Idle RSS and RSS per idle keep-alive connection.
    Memory,
    /// Start-up time and RSS with a large generated bootstrap.
    Scale,
    /// Applying large xDS pushes, and CPU per push under a steady push rate.
    Xds,
    /// Instructions per request under callgrind (valgrind); slow, so only when asked for by name.
    Callgrind,
}

/// The workloads a run without `--workloads` does: all but `callgrind`.
pub const ALL_WORKLOADS: [Workload; 9] = [
    Workload::Http1,
    Workload::H2c,
    Workload::Rate,
    Workload::Mesh,
    Workload::Tcp,
    Workload::Handshake,
    Workload::Memory,
    Workload::Scale,
    Workload::Xds,
];

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: &'static str,
    pub warmup: Duration,
    pub duration: Duration,
    pub h1_conns: usize,
    pub h2_conns: usize,
    pub h2_streams: usize,
    pub rate: f64,
    pub tcp_conns: usize,
    pub tls_clients: usize,
    /// Idle keep-alive connection counts at which RSS is read.
    pub idle_conns: [usize; 2],
    /// Connections opened at once while building up the idle set.
    pub idle_batch: usize,
    /// Pause before reading RSS, so freed and lazily touched pages settle.
    pub settle: Duration,
    pub scale_routes: usize,
    pub scale_clusters: usize,
    pub ready_timeout: Duration,
    /// Sequential requests on the connection before callgrind's counters are zeroed.
    pub callgrind_warmup: usize,
    /// Sequential requests counted per callgrind run.
    pub callgrind_requests: usize,
    /// Start-up under valgrind is some 50 times slower.
    pub callgrind_ready_timeout: Duration,
}

impl Profile {
    pub fn full() -> Profile {
        Profile {
            name: "full",
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            h1_conns: 16,
            h2_conns: 4,
            h2_streams: 32,
            rate: 1000.0,
            tcp_conns: 1,
            tls_clients: 4,
            idle_conns: [1000, 10_000],
            idle_batch: 64,
            settle: Duration::from_millis(500),
            scale_routes: 10_000,
            scale_clusters: 1000,
            ready_timeout: Duration::from_secs(30),
            callgrind_warmup: 1000,
            callgrind_requests: 2000,
            callgrind_ready_timeout: Duration::from_secs(300),
        }
    }

    /// Tiny durations and sizes: checks that every topology works, measures nothing worth quoting.
    pub fn quick() -> Profile {
        Profile {
            name: "quick",
            warmup: Duration::from_millis(200),
            duration: Duration::from_millis(300),
            idle_conns: [50, 200],
            settle: Duration::from_millis(50),
            scale_routes: 1000,
            scale_clusters: 100,
            ready_timeout: Duration::from_secs(20),
            callgrind_warmup: 10,
            callgrind_requests: 50,
            ..Profile::full()
        }
    }
}
