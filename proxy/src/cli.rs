//! Command-line flags, spelled as Envoy's so that launchers (istio-agent) can start remora unchanged.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "remora",
    version,
    about = "An Envoy-compatible data-plane proxy for service meshes"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// A tiny HTTP backend that answers every request with a JSON echo of it (for demos and tests).
    Echo(EchoArgs),
    /// Development PKI: a CA, SPIFFE workload certificates, certificate inspection.
    Certs(crate::certs_cli::CertsArgs),
    /// GET an HTTP URL and exit 0 on a 2xx answer (container health checks without curl).
    Probe(ProbeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// The URL to GET, e.g. http://127.0.0.1:15021/healthz/ready.
    pub url: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 2.0)]
    pub timeout: f64,
}

#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: std::net::SocketAddr,
    /// Name reported in the `backend` field of every answer.
    #[arg(long, default_value = "echo")]
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Serve,
    Validate,
    InitOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DrainStrategy {
    Gradual,
    Immediate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IpVersion {
    V4,
    V6,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Path to an Envoy v3 bootstrap (YAML or JSON).
    #[arg(short = 'c', long = "config-path")]
    pub config_path: Option<PathBuf>,
    /// Bootstrap YAML merged over the file's, as Envoy's protobuf MergeFrom does.
    #[arg(long = "config-yaml")]
    pub config_yaml: Option<String>,
    /// serve, validate (check the config and exit) or init_only.
    #[arg(long, value_enum, default_value = "serve")]
    pub mode: Mode,
    /// Log level: trace, debug, info, warning/warn, error, critical, off.
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    pub log_level: String,
    /// Per-component levels, `upstream:debug,connection:trace`.
    #[arg(long = "component-log-level")]
    pub component_log_level: Option<String>,
    /// Envoy log line format; accepted, remora keeps its own layout unless `%j`-style JSON is asked.
    #[arg(long = "log-format")]
    pub log_format: Option<String>,
    #[arg(long = "log-format-escaped")]
    pub log_format_escaped: bool,
    /// Where to write logs instead of stderr.
    #[arg(long = "log-path")]
    pub log_path: Option<PathBuf>,
    /// Worker threads (0 or absent: one per core).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Time to let connections finish on shutdown.
    #[arg(long = "drain-time-s", default_value_t = 600)]
    pub drain_time_s: u64,
    #[arg(long = "parent-shutdown-time-s", default_value_t = 900)]
    pub parent_shutdown_time_s: u64,
    #[arg(long = "drain-strategy", value_enum, default_value = "gradual")]
    pub drain_strategy: DrainStrategy,
    #[arg(long = "service-node")]
    pub service_node: Option<String>,
    #[arg(long = "service-cluster")]
    pub service_cluster: Option<String>,
    #[arg(long = "service-zone")]
    pub service_zone: Option<String>,
    #[arg(long = "local-address-ip-version", value_enum, default_value = "v4")]
    pub local_address_ip_version: IpVersion,
    /// Accepted for compatibility: remora has no hot restart.
    #[arg(long = "disable-hot-restart")]
    pub disable_hot_restart: bool,
    #[arg(long = "allow-unknown-static-fields")]
    pub allow_unknown_static_fields: bool,
    #[arg(long = "reject-unknown-dynamic-fields")]
    pub reject_unknown_dynamic_fields: bool,
    #[arg(long = "ignore-unknown-dynamic-fields")]
    pub ignore_unknown_dynamic_fields: bool,
    #[arg(long = "file-flush-interval-msec", default_value_t = 10000)]
    pub file_flush_interval_msec: u64,
    #[arg(long = "base-id", default_value_t = 0)]
    pub base_id: u32,
    #[arg(long = "use-dynamic-base-id")]
    pub use_dynamic_base_id: bool,
    #[arg(long = "restart-epoch", default_value_t = 0)]
    pub restart_epoch: u32,
    #[arg(long = "disable-extensions")]
    pub disable_extensions: Option<String>,
    #[arg(long = "enable-fine-grain-logging")]
    pub enable_fine_grain_logging: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_istio_agent_passes() {
        let cli = Cli::try_parse_from([
            "remora",
            "-c",
            "etc/istio/proxy/envoy-rev.json",
            "--drain-time-s",
            "45",
            "--drain-strategy",
            "immediate",
            "--local-address-ip-version",
            "v4",
            "--file-flush-interval-msec",
            "1000",
            "--disable-hot-restart",
            "--allow-unknown-static-fields",
            "--log-format",
            "%Y-%m-%dT%T.%fZ\t%l\t%n\t%v",
            "-l",
            "warning",
            "--component-log-level",
            "misc:error",
            "--concurrency",
            "2",
            "--parent-shutdown-time-s",
            "60",
            "--service-node",
            "sidecar~1.2.3.4~x.ns~ns.svc.cluster.local",
            "--service-cluster",
            "x.ns",
            "--base-id",
            "1",
        ])
        .expect("istio-agent's flags parse");
        assert!(cli.command.is_none());
        assert_eq!(cli.server.concurrency, Some(2));
        assert_eq!(cli.server.drain_strategy, DrainStrategy::Immediate);
    }

    #[test]
    fn unknown_flags_are_errors() {
        assert!(Cli::try_parse_from(["remora", "--no-such-flag"]).is_err());
    }
}
