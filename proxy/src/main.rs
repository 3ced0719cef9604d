#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use remora_proxy::access_log::Writers;
use remora_proxy::cli::{Cli, Command, Mode};
use remora_proxy::stats::Store;
use remora_proxy::{app, echo, logging, probe};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Echo(args)) => return run_echo(args),
        Some(Command::Certs(args)) => return run_certs(&args),
        Some(Command::Probe(args)) => return run_probe(&args),
        None => {}
    }
    let args = cli.server;
    let log_opts = logging::LoggingOptions {
        level: &args.log_level,
        component_log_level: args.component_log_level.as_deref(),
        log_path: args.log_path.as_deref(),
    };
    let log = match logging::init(&log_opts) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("remora: {e}");
            return ExitCode::FAILURE;
        }
    };
    let workers = app::workers(&args);
    let Some(rt) = runtime(workers) else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async move {
        let stats = Store::new();
        let writers = Writers::new(
            &stats,
            std::time::Duration::from_millis(args.file_flush_interval_msec),
        );
        let snapshot = match app::load(&args, &stats, &writers) {
            Ok(s) => s,
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("error: {e}");
                }
                return ExitCode::FAILURE;
            }
        };
        let name = args
            .config_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "--config-yaml".into());
        match args.mode {
            Mode::Validate => {
                println!("configuration '{name}' OK");
                ExitCode::SUCCESS
            }
            Mode::InitOnly => ExitCode::SUCCESS,
            Mode::Serve => match app::run(args, snapshot, stats, writers, log).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

fn run_certs(args: &remora_proxy::certs_cli::CertsArgs) -> ExitCode {
    match remora_proxy::certs_cli::run(args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("remora certs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_probe(args: &remora_proxy::cli::ProbeArgs) -> ExitCode {
    let Some(rt) = runtime(1) else {
        return ExitCode::FAILURE;
    };
    let timeout = std::time::Duration::from_secs_f64(args.timeout.max(0.001));
    match rt.block_on(probe::run(&args.url, timeout)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("remora probe {}: {e}", args.url);
            ExitCode::FAILURE
        }
    }
}

fn run_echo(args: remora_proxy::cli::EchoArgs) -> ExitCode {
    let Some(rt) = runtime(1) else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(echo::run(args.listen, args.name)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("remora echo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-thread runtime with `workers` threads; reports the reason when it cannot start.
fn runtime(workers: usize) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("remora: cannot start the runtime: {e}");
            None
        }
    }
}
