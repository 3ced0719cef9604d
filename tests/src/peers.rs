//! TLS peers of the proxy under test: curl and `openssl s_client` as clients with or without a
//! workload certificate, nginx as an mTLS-verifying upstream, and a stack that starts a proxy on
//! a fixture that names certificates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::pki::{prerender, Identity, Pki};
use crate::proxy::{Kind, Proxy, StartOptions};
use crate::stack::Env;
use crate::tempdir::TempDir;
use crate::template::{render, Vars};

/// What a client run printed and how it ended.
/// How a client run ended (the shared one-shot runner's outcome).
pub use crate::exec::Outcome as Run;

pub fn run(program: &str, args: &[String], input: &[u8], deadline: Duration) -> Run {
    crate::exec::run_with_input(program.as_ref(), args, input, deadline)
}

/// A TLS client's credentials and expectations.
#[derive(Debug, Clone, Default)]
pub struct TlsClient {
    /// The client certificate to present (none: no client auth).
    pub identity: Option<Identity>,
    /// Root to verify the server with (none: `-k`, no verification).
    pub ca: Option<PathBuf>,
    /// SNI / host name (`--resolve` maps it to 127.0.0.1).
    pub host: String,
    pub extra: Vec<String>,
}

impl TlsClient {
    pub fn new(host: &str) -> Self {
        Self {
            host: host.to_string(),
            ..Self::default()
        }
    }
    pub fn cert(mut self, id: &Identity) -> Self {
        self.identity = Some(id.clone());
        self
    }
    pub fn ca(mut self, ca: &Path) -> Self {
        self.ca = Some(ca.to_path_buf());
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.to_string());
        self
    }

    fn curl_args(&self, port: u16) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-sS".into(),
            "--max-time".into(),
            "15".into(),
            "--resolve".into(),
            format!("{}:{port}:127.0.0.1", self.host),
        ];
        if let Some(id) = &self.identity {
            a.extend([
                "--cert".into(),
                id.cert().display().to_string(),
                "--key".into(),
                id.key().display().to_string(),
            ]);
        }
        match &self.ca {
            Some(ca) => a.extend(["--cacert".into(), ca.display().to_string()]),
            None => a.push("-k".into()),
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// `curl https://<host>:<port><path>`; stdout is the body followed by `\n<status>`.
    pub fn curl(&self, port: u16, path: &str) -> Run {
        let mut a = self.curl_args(port);
        a.extend(["-w".into(), "\n%{http_code}".into()]);
        a.push(format!("https://{}:{port}{path}", self.host));
        run("curl", &a, b"", Duration::from_secs(20))
    }

    /// `curl` on `n` URLs in one run (one keep-alive connection) at `rate` (`20/s`): each
    /// transfer prints `<status> <num_connects>` on its own line.
    pub fn curl_loop(&self, port: u16, path: &str, n: usize, rate: &str) -> Run {
        let url = format!("https://{}:{port}{path}", self.host);
        crate::curl::keep_alive_loop(&self.curl_args(port), &url, n, rate)
    }

    /// `openssl s_client` handshake to `port`, sending `input` and then waiting for the server to
    /// close (`-ign_eof`); with no input it exits after the handshake. `-showcerts` so the
    /// server chain can be read back.
    pub fn s_client(&self, port: u16, flags: &[&str], input: &[u8]) -> Run {
        let mut a: Vec<String> = vec![
            "s_client".into(),
            "-connect".into(),
            format!("127.0.0.1:{port}"),
            "-servername".into(),
            self.host.clone(),
            "-showcerts".into(),
        ];
        if !input.is_empty() {
            a.push("-ign_eof".into());
        }
        if let Some(id) = &self.identity {
            a.extend([
                "-cert".into(),
                id.cert().display().to_string(),
                "-key".into(),
                id.key().display().to_string(),
            ]);
        }
        if let Some(ca) = &self.ca {
            a.extend([
                "-CAfile".into(),
                ca.display().to_string(),
                "-verify_return_error".into(),
            ]);
        }
        a.extend(flags.iter().map(|f| f.to_string()));
        run("openssl", &a, input, Duration::from_secs(20))
    }
}

/// The value after `key` on the first line of `text` that starts with it (`ALPN protocol: `).
pub fn line_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(key))
        .map(str::trim)
}

/// The serial of the first certificate s_client printed (the server's leaf).
pub fn server_serial(s_client_stdout: &str) -> Option<String> {
    let start = s_client_stdout.find("-----BEGIN CERTIFICATE-----")?;
    let end = s_client_stdout[start..].find("-----END CERTIFICATE-----")? + start + 25;
    let info =
        remora_certs::CertInfo::from_pem("s_client", &s_client_stdout.as_bytes()[start..end])
            .ok()?;
    info.first().map(|c| c.serial().to_string())
}

/// Every `/stats` counter whose name starts with `prefix`.
pub async fn stats_with_prefix(admin: u16, prefix: &str) -> BTreeMap<String, u64> {
    let text = crate::admin::get(admin, "/stats")
        .await
        .map(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| n.starts_with(prefix))
        .filter_map(|(n, v)| Some((n.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// The counters that changed between two reads, with their increments.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(n, v)| {
            let d = v.saturating_sub(before.get(n).copied().unwrap_or(0));
            (d > 0).then(|| (n.clone(), d))
        })
        .collect()
}

/// A proxy running a fixture whose `{{pki_*}}` and extra placeholders are filled first, with the
/// backends and ports the rest asks for.
pub struct MeshStack {
    pub env: Env,
    pub proxy: Proxy,
}

impl MeshStack {
    pub async fn start(kind: Kind, rel: &str, pki: &Pki, extra: &Vars) -> MeshStack {
        Self::start_text(kind, &crate::fixture(rel), pki, extra).await
    }

    pub async fn start_text(kind: Kind, template: &str, pki: &Pki, extra: &Vars) -> MeshStack {
        Self::start_opts(kind, template, pki, extra, false).await
    }

    /// [`MeshStack::start`] without waiting for the listeners and `/ready` (a config whose
    /// secrets are withheld on purpose).
    pub async fn start_unready(kind: Kind, rel: &str, pki: &Pki, extra: &Vars) -> MeshStack {
        Self::start_opts(kind, &crate::fixture(rel), pki, extra, true).await
    }

    async fn start_opts(
        kind: Kind,
        template: &str,
        pki: &Pki,
        extra: &Vars,
        no_wait: bool,
    ) -> MeshStack {
        let template = prerender(&prerender(template, &pki.vars()), extra);
        let env = Env::for_template(&template).await;
        let config = render(&template, &env.vars);
        let opts = StartOptions {
            args: vec!["--file-flush-interval-msec".into(), "100".into()],
            no_wait,
        };
        let proxy = Proxy::start_with(kind, &config, opts).await;
        MeshStack { env, proxy }
    }

    /// The port of a `{{listener_port*}}` placeholder.
    pub fn port(&self, placeholder: &str) -> u16 {
        self.env.addr(placeholder).port()
    }

    pub fn admin(&self) -> u16 {
        self.proxy.admin()
    }

    /// Envoy's listener stat prefix for a listener bound to 127.0.0.1:<port>.
    pub fn listener_prefix(&self, placeholder: &str) -> String {
        format!("listener.127.0.0.1_{}.", self.port(placeholder))
    }
}

/// nginx on a loopback port, terminating TLS with `server` and (when `client_ca` is given)
/// requiring a client certificate from that CA; answers
/// `nginx verify=<$ssl_client_verify> san=<$ssl_client_s_dn>`. Root-less friendly: no daemon,
/// no master, every path in its own prefix. Killed on drop.
pub struct Nginx {
    child: std::process::Child,
    pub port: u16,
    dir: TempDir,
}

impl Nginx {
    pub fn available() -> bool {
        crate::bins::has_tool("nginx") || Path::new("/usr/sbin/nginx").is_file()
    }

    pub async fn start(server: &Identity, client_ca: Option<&Path>) -> Nginx {
        let dir = TempDir::new("nginx");
        let port = crate::ports::free_port();
        let p = |n: &str| dir.join(n).display().to_string();
        for d in ["logs", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join(d)).expect("nginx dir");
        }
        let verify = match client_ca {
            Some(ca) => format!(
                "ssl_verify_client on;\n    ssl_client_certificate {};\n    ssl_verify_depth 2;",
                ca.display()
            ),
            None => String::new(),
        };
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {pid};
error_log {err} info;
events {{ worker_connections 64; }}
http {{
  access_log {acc};
  client_body_temp_path {cb};
  proxy_temp_path {pt};
  fastcgi_temp_path {ft};
  uwsgi_temp_path {ut};
  scgi_temp_path {st};
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    {verify}
    location / {{
      default_type text/plain;
      return 200 "nginx verify=$ssl_client_verify sni=$ssl_server_name\n";
    }}
  }}
}}
"#,
            pid = p("nginx.pid"),
            err = p("logs/error.log"),
            acc = p("logs/access.log"),
            cb = p("client_body"),
            pt = p("proxy"),
            ft = p("fastcgi"),
            ut = p("uwsgi"),
            st = p("scgi"),
            cert = server.cert().display(),
            key = server.key().display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).expect("stderr"))
            .spawn()
            .expect("spawn nginx");
        let mut n = Nginx { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(s)) = n.child.try_wait() {
                panic!("nginx exited ({s}): {}", n.error_log());
            }
            assert!(Instant::now() < deadline, "nginx not up: {}", n.error_log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        n
    }

    pub fn error_log(&self) -> String {
        format!(
            "{}{}",
            std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default(),
            std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
