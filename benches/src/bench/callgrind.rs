//! Instructions per request: one proxy run under callgrind, its counters zeroed after a warm-up and
//! dumped after N sequential requests on one keep-alive connection (HTTP/1.1, then h2c streams one
//! after another). One connection and one request at a time keep every request on the same code
//! path, so the figure repeats across runs and machines where CPU time does not.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{row, start_failure, Bench, Tables, Workload};
use crate::load::http::{self, H1, H2};
use crate::peers::{self, Kind, Role, Setup};
use crate::ports::{free_port, loopback};
use crate::report::{Row, Status};

pub const COLUMNS: [&str; 3] = ["HTTP/1.1 Ir/request", "h2c Ir/request", "errors"];

const INSTALL: &str = "apt-get install valgrind";

/// valgrind and callgrind_control, found in `PATH`.
struct Tools {
    valgrind: PathBuf,
    control: PathBuf,
    version: String,
}

impl Tools {
    fn locate() -> Result<Tools, String> {
        let find = |name: &str| {
            peers::in_path(name)
                .into_iter()
                .find(|p| p.is_file())
                .ok_or_else(|| format!("{name} not found; install it: {INSTALL}"))
        };
        let valgrind = find("valgrind")?;
        let control = find("callgrind_control")?;
        let version = std::process::Command::new(&valgrind)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Ok(Tools {
            valgrind,
            control,
            version,
        })
    }
}

/// A proxy process under callgrind and the dumps it has written so far.
struct Session<'a> {
    control: &'a Path,
    pid: u32,
    out_dir: PathBuf,
    dumps: u32,
}

/// Longest a zero or dump may take (a dump of Envoy writes a few MB).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);

/// valgrind's `--vgdb-prefix` for a session writing into `out_dir`: its FIFOs live there, so that
/// a peer killed before valgrind could clean up leaves nothing behind in /tmp.
fn vgdb_prefix(out_dir: &Path) -> String {
    format!("--vgdb-prefix={}/vgdb", out_dir.display())
}

impl Session<'_> {
    async fn control(&self, flag: &str) -> anyhow::Result<()> {
        let run = tokio::process::Command::new(self.control)
            .arg(vgdb_prefix(&self.out_dir))
            .arg(flag)
            .arg(self.pid.to_string())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(CONTROL_TIMEOUT, run)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "callgrind_control {flag} {}: no answer within {CONTROL_TIMEOUT:?}",
                    self.pid
                )
            })?
            .with_context(|| format!("running {}", self.control.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success() && stdout.contains("OK"),
            "callgrind_control {flag} {}: {} {}",
            self.pid,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// Asks for a dump and returns the instructions it counted since the last zero.
    async fn dump(&mut self) -> anyhow::Result<u64> {
        self.control("-d").await?;
        self.dumps += 1;
        let path = self
            .out_dir
            .join(format!("callgrind.out.{}.{}", self.pid, self.dumps));
        // callgrind_control answers once the dump is written; the wait covers a slow file system.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(ir) = std::fs::read_to_string(&path)
                .ok()
                .as_deref()
                .and_then(ir_of)
            {
                return Ok(ir);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no complete callgrind dump at {}",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The total instruction count (Ir, the first event) of a callgrind dump: its `summary:` line, or
/// the `totals:` line when there is no summary.
pub fn ir_of(dump: &str) -> Option<u64> {
    let first = |key: &str| {
        dump.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    };
    first("summary:").or_else(|| first("totals:"))
}

/// The client side of one measured connection.
enum Conn {
    H1(H1),
    H2(H2),
}

impl Conn {
    async fn get(&mut self) -> anyhow::Result<()> {
        match self {
            Conn::H1(s) => http::h1_get(s, false).await,
            Conn::H2(s) => http::h2_get(s).await,
        }
    }
}

/// What a series of requests produced.
#[derive(Debug, Default)]
struct Sent {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

async fn send(conn: &mut Conn, n: usize) -> Sent {
    let mut s = Sent::default();
    for _ in 0..n {
        match conn.get().await {
            Ok(()) => s.ok += 1,
            Err(e) => {
                s.errors += 1;
                s.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    s
}

impl Bench {
    pub(super) async fn callgrind(&self, kind: Kind, bin: &Path, t: &mut Tables) {
        if !self.wants(Workload::Callgrind) {
            return;
        }
        let table = &mut t.callgrind;
        let n = table.columns.len();
        let tools = match Tools::locate() {
            Ok(x) => x,
            Err(hint) => {
                table
                    .rows
                    .push(Row::not_run(kind.name(), Status::Unsupported(hint), n));
                return;
            }
        };
        let note = format!("Counted with {}.", tools.version);
        if !table.notes.contains(&note) {
            table.notes.push(note);
        }
        let dir = self
            .dir
            .join(format!("{}-callgrind-{}", kind.name(), free_port()));
        let out_dir = dir.join("callgrind");
        if let Err(e) = std::fs::create_dir_all(&out_dir) {
            let why = format!("creating {}: {e}", out_dir.display());
            table
                .rows
                .push(Row::not_run(kind.name(), Status::Failed(why), n));
            return;
        }
        let wrap = [
            tools.valgrind.display().to_string(),
            "--tool=callgrind".to_string(),
            format!(
                "--callgrind-out-file={}/callgrind.out.%p",
                out_dir.display()
            ),
            vgdb_prefix(&out_dir),
        ];
        let (http1, h2c, tcp) = (free_port(), free_port(), free_port());
        let role = Role::Single { http1, h2c, tcp };
        let setup = Setup {
            ready_timeout: self.profile.callgrind_ready_timeout,
            ..self.setup()
        };
        let proxy = match peers::start_wrapped(kind, bin, &role, &setup, &dir, &wrap) {
            Ok(p) => p,
            Err(e) => {
                table
                    .rows
                    .push(Row::not_run(kind.name(), start_failure(&e, false), n));
                return;
            }
        };
        let mut session = Session {
            control: &tools.control,
            pid: proxy.pid(),
            out_dir,
            dumps: 0,
        };
        let (runs, first) = self.count_runs(&mut session, http1, h2c).await;
        drop(proxy);
        let measured = runs.iter().any(|r| r[..2].iter().any(|v| !v.is_nan()));
        if measured {
            row(kind.name(), table, runs, first);
        } else {
            let why = first.unwrap_or_else(|| "nothing measured".into());
            table
                .rows
                .push(Row::not_run(kind.name(), Status::Failed(why), n));
        }
    }

    /// Per run: [HTTP/1.1 Ir/request, h2c Ir/request, errors], and the first error.
    async fn count_runs(
        &self,
        session: &mut Session<'_>,
        http1: u16,
        h2c: u16,
    ) -> (Vec<Vec<f64>>, Option<String>) {
        let p = &self.profile;
        let mut first: Option<String> = None;
        let mut conns = Vec::new();
        for (name, connected) in [
            (
                "HTTP/1.1",
                http::timed(http::h1_connect(loopback(http1)))
                    .await
                    .map(Conn::H1),
            ),
            (
                "h2c",
                http::timed(http::h2_connect(loopback(h2c)))
                    .await
                    .map(Conn::H2),
            ),
        ] {
            match connected {
                Ok(mut c) => {
                    let warm = send(&mut c, p.callgrind_warmup).await;
                    first = first.or(warm.first_error);
                    conns.push(Some(c));
                }
                Err(e) => {
                    first.get_or_insert_with(|| format!("connecting {name}: {e:#}"));
                    conns.push(None);
                }
            }
        }
        let mut runs = Vec::new();
        for _ in 0..self.runs {
            let mut figures = Vec::new();
            let mut errors = 0;
            for conn in &mut conns {
                let Some(conn) = conn.as_mut() else {
                    figures.push(f64::NAN);
                    errors += 1;
                    continue;
                };
                match counted(session, conn, p.callgrind_requests).await {
                    Ok((ir, sent)) => {
                        figures.push(crate::stats::per(ir as f64, sent.ok));
                        errors += sent.errors;
                        first = first.or(sent.first_error);
                    }
                    Err(e) => {
                        figures.push(f64::NAN);
                        errors += 1;
                        first.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            figures.push(errors as f64);
            runs.push(figures);
        }
        (runs, first)
    }
}

/// Zeroes the counters, sends `n` requests, dumps: the instructions they took and how they went.
async fn counted(
    session: &mut Session<'_>,
    conn: &mut Conn,
    n: usize,
) -> anyhow::Result<(u64, Sent)> {
    session.control("-z").await?;
    let sent = send(conn, n).await;
    let ir = session.dump().await?;
    Ok((ir, sent))
}

#[cfg(test)]
mod tests {
    use super::ir_of;

    #[test]
    fn a_dump_gives_its_instruction_count() {
        let dump = "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 7\n\
                    events: Ir\nsummary: 123456789\n\nfn=(1) main\n3 5\ntotals: 123456790\n";
        assert_eq!(ir_of(dump), Some(123_456_789));
        assert_eq!(ir_of("events: Ir\nfn=main\n1 2\ntotals: 42\n"), Some(42));
        assert_eq!(ir_of("events: Ir\n"), None);
    }
}
