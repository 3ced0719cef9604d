//! Proxy process: render a bootstrap to a file, run remora or Envoy on it, wait until it serves.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::bins;
use crate::tempdir::TempDir;

/// Which binary plays the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Remora,
    Envoy,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Remora => "remora",
            Kind::Envoy => "envoy",
        }
    }

    /// The executable, or `None` for an Envoy that is not installed.
    pub fn binary(self) -> Option<PathBuf> {
        match self {
            Kind::Remora => Some(bins::remora()),
            Kind::Envoy => bins::envoy(),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How long a proxy may take to accept on every listener and report ready; generous because the
/// test machine is shared with builds.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Options beyond the bootstrap.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Extra flags after the standard ones (`--drain-time-s 2`).
    pub args: Vec<String>,
    /// Skip waiting for readiness (for configs expected to fail).
    pub no_wait: bool,
}

/// A running proxy; killed when dropped.
#[derive(Debug)]
pub struct Proxy {
    pub kind: Kind,
    child: Child,
    /// Ports of `static_resources.listeners[*]`, in order.
    pub listener_ports: Vec<u16>,
    pub admin_port: Option<u16>,
    pub config_path: PathBuf,
    stderr_path: PathBuf,
    dir: TempDir,
}

fn next_base_id() -> u32 {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    // Unique across concurrently running test binaries (pid) and within one (sequence).
    (std::process::id() % 20_000) * 100 + SEQ.fetch_add(1, Ordering::Relaxed) % 100
}

impl Proxy {
    /// Start `kind` on `config` (already rendered) and wait until every listener accepts and the
    /// admin `/ready` (when configured) answers 200. Panics with the process's stderr otherwise.
    pub async fn start(kind: Kind, config: &str) -> Proxy {
        Self::start_with(kind, config, StartOptions::default()).await
    }

    pub async fn start_with(kind: Kind, config: &str, opts: StartOptions) -> Proxy {
        let binary = kind
            .binary()
            .unwrap_or_else(|| panic!("{} binary not available", kind.name()));
        let dir = TempDir::new(kind.name());
        let config_path = dir.join("bootstrap.yaml");
        std::fs::write(&config_path, config).expect("write bootstrap");
        let stderr_path = dir.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("create stderr log");
        let (listener_ports, admin_port) = ports_of(config);

        let mut cmd = Command::new(&binary);
        cmd.arg("-c").arg(&config_path).args([
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "-l",
            "warning",
        ]);
        if kind == Kind::Envoy {
            cmd.args(["--base-id", &next_base_id().to_string()]);
        }
        cmd.args(&opts.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
        let mut proxy = Proxy {
            kind,
            child,
            listener_ports,
            admin_port,
            config_path,
            stderr_path,
            dir,
        };
        if !opts.no_wait {
            proxy.wait_ready().await;
        }
        proxy
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut pending: Vec<u16> = self.listener_ports.clone();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited during startup ({status}) on {}\n--- stderr ---\n{}",
                    self.kind,
                    self.config_path.display(),
                    self.stderr()
                );
            }
            let mut still = Vec::new();
            for port in pending {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_err()
                {
                    still.push(port);
                }
            }
            pending = still;
            let admin_ready = match self.admin_port {
                Some(p) => crate::admin::get(p, "/ready")
                    .await
                    .map(|r| r.status == 200)
                    .unwrap_or(false),
                None => true,
            };
            if pending.is_empty() && admin_ready {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} not ready after {STARTUP_TIMEOUT:?}: listeners {pending:?} not accepting, \
                     admin ready: {admin_ready}\n--- stderr ---\n{}",
                    self.kind,
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The first listener's port.
    pub fn port(&self) -> u16 {
        *self.listener_ports.first().expect("config has a listener")
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        crate::ports::loopback(self.port())
    }

    pub fn admin(&self) -> u16 {
        self.admin_port.expect("config has an admin address")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A path inside this proxy's scratch directory (for access logs).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Send SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Send SIGINT (Ctrl-C).
    pub fn interrupt(&self) {
        self.signal("INT");
    }

    fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status();
    }

    /// The exit status, once the process has exited within `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Listener and admin ports named in a bootstrap (YAML or JSON).
pub fn ports_of(config: &str) -> (Vec<u16>, Option<u16>) {
    let Ok(doc) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(config) else {
        return (Vec::new(), None);
    };
    let port = |v: &serde_yaml_ng::Value| -> Option<u16> {
        v.get("address")?
            .get("socket_address")?
            .get("port_value")?
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
    };
    let listeners = doc
        .get("static_resources")
        .and_then(|s| s.get("listeners"))
        .and_then(|l| l.as_sequence())
        .map(|ls| ls.iter().filter_map(port).collect())
        .unwrap_or_default();
    let admin = doc.get("admin").and_then(port);
    (listeners, admin)
}
