#![forbid(unsafe_code)]
//! remora-bench: starts remora and its peers on loopback, runs the same workloads against each,
//! and reports CPU per request, latency, throughput and memory as Markdown, JSON and SVG.
//!
//! `cargo build --release -p remora-proxy && cargo run --release -p remora-bench -- --quick`

mod backend;
mod bench;
mod load;
mod peers;
mod pin;
mod pki;
mod ports;
mod procfs;
mod report;
mod stats;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use bench::{Bench, Profile, Workload};
use peers::Kind;

#[derive(Debug, Parser)]
#[command(
    name = "remora-bench",
    about = "Load-test remora against Envoy, nginx and HAProxy"
)]
struct Args {
    /// Peers to run, comma separated (remora, envoy, nginx, haproxy); missing ones are skipped.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "remora,envoy,nginx,haproxy"
    )]
    peers: Vec<String>,
    /// Workloads to run, comma separated (default: all but callgrind, which runs only when named).
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// Sequential requests counted per callgrind run, overriding the profile's.
    #[arg(long)]
    callgrind_requests: Option<usize>,
    /// Tiny durations and sizes, for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Runs per workload and peer; the report gives medians with min–max.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where to write the JSON report.
    #[arg(long, default_value = "remora-bench.json")]
    json: PathBuf,
    /// Also write an SVG chart (latency percentiles and CPU per request), to this path.
    #[arg(long, num_args = 0..=1, default_missing_value = "remora-bench.svg")]
    plot: Option<PathBuf>,
    /// Measured seconds per run, overriding the profile's.
    #[arg(long)]
    duration: Option<f64>,
    /// Keep the working directory (configurations, certificates, peer logs).
    #[arg(long)]
    keep: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut profile = if args.quick {
        Profile::quick()
    } else {
        Profile::full()
    };
    if let Some(d) = args.duration {
        profile.duration = std::time::Duration::from_secs_f64(d.max(0.05));
    }
    if let Some(n) = args.callgrind_requests {
        profile.callgrind_requests = n.max(1);
    }
    // 10 000 idle connections need as many descriptors here and in the proxy (which inherits).
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: could not raise the descriptor limit: {e}");
    }
    // Capped: HAProxy sizes its descriptor table by `maxconn`, which would inflate its RSS on
    // machines whose hard limit is a million.
    let nofile =
        rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft.min(65_536));
    let fit = peers::max_idle_connections(nofile);
    if profile.idle_conns[1] > fit {
        eprintln!(
            "note: {nofile} descriptors allow {fit} idle connections, not {}",
            profile.idle_conns[1]
        );
        profile.idle_conns[1] = fit;
        profile.idle_conns[0] = profile.idle_conns[0].min(fit);
    }
    // Before the runtime exists, so that every thread inherits core 1.
    let pinned = match pin::pin_self(1) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("warning: not pinned ({e}); figures will be noisier");
            false
        }
    };

    let mut peers = Vec::new();
    let mut skipped = Vec::new();
    for name in &args.peers {
        let Some(kind) = Kind::parse(name) else {
            anyhow::bail!("unknown peer {name:?} (known: remora, envoy, nginx, haproxy)");
        };
        match kind.locate() {
            Ok(bin) => peers.push((kind, bin)),
            Err(hint) => {
                eprintln!("skipping {}: not found; {hint}", kind.name());
                skipped.push((kind.name().to_string(), format!("not found; {hint}")));
            }
        }
    }
    let workloads = if args.workloads.is_empty() {
        bench::profile_workloads()
    } else {
        args.workloads.clone()
    };
    let runs = args.runs.max(1);

    let dir = std::env::temp_dir().join(format!("remora-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tables = rt.block_on(async {
        let bench = Bench {
            backend: backend::Backend::start().await?,
            pki: pki::MeshPki::mint(&dir.join("pki"))?,
            profile,
            runs,
            peers,
            workloads,
            dir: dir.clone(),
            nofile,
        };
        anyhow::Ok((bench.profile.name, bench.run().await))
    })?;
    let (profile_name, tables) = tables;
    let targets = report::check(&tables);
    let rep = report::Report {
        machine: report::Machine::describe(pinned),
        profile: profile_name,
        runs,
        skipped,
        tables,
        targets,
    };
    println!("{}", report::render(&rep));
    std::fs::write(&args.json, serde_json::to_string_pretty(&rep)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    eprintln!("wrote {}", args.json.display());
    if let Some(svg) = &args.plot {
        report::plot::write(&rep, svg)?;
        eprintln!("wrote {}", svg.display());
    }
    if args.keep {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
