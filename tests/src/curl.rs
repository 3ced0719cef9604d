//! The real `curl`: what a user would type, HTTP/1.1 or `--http2-prior-knowledge`.

use std::process::Command;

/// The outcome of one curl run: `-w` status and the body on stdout, headers from `-D`.
#[derive(Debug, Clone)]
pub struct CurlOutput {
    pub status: u16,
    /// Lowercased names.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub http_version: String,
}

impl CurlOutput {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Run curl on `url` with extra args (`-H`, `-X`, `--http2-prior-knowledge`).
pub fn curl(url: &str, args: &[&str]) -> anyhow::Result<CurlOutput> {
    let dir = crate::tempdir::TempDir::new("curl");
    let (head_path, body_path) = (dir.join("headers"), dir.join("body"));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .arg("-D")
        .arg(&head_path)
        .arg("-o")
        .arg(&body_path)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .arg(url)
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "curl {url} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut it = stdout.split_whitespace();
    let status = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let http_version = it.next().unwrap_or("").to_string();
    let head = std::fs::read_to_string(&head_path).unwrap_or_default();
    let headers = head
        .lines()
        .filter(|l| !l.starts_with("HTTP/"))
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(CurlOutput {
        status,
        headers,
        body: std::fs::read_to_string(&body_path).unwrap_or_default(),
        http_version,
    })
}

/// HTTP/1.1 GET.
pub fn get(url: &str, args: &[&str]) -> anyhow::Result<CurlOutput> {
    curl(url, &[&["--http1.1"], args].concat())
}

/// h2c with prior knowledge.
pub fn get_h2c(url: &str, args: &[&str]) -> anyhow::Result<CurlOutput> {
    curl(url, &[&["--http2-prior-knowledge"], args].concat())
}

/// `curl` on `url` `n` times in one run (one keep-alive connection) at `rate` (`20/s`), `args`
/// first: each transfer prints `<status> <num_connects>` on its own line.
pub fn keep_alive_loop(args: &[String], url: &str, n: usize, rate: &str) -> crate::exec::Outcome {
    let mut a = args.to_vec();
    a.extend([
        "--rate".into(),
        rate.into(),
        "-w".into(),
        "%{http_code} %{num_connects}\n".into(),
    ]);
    // `-o` pairs with one URL each.
    for _ in 0..n {
        a.extend(["-o".into(), "/dev/null".into(), url.to_string()]);
    }
    crate::exec::run_with_input(
        "curl".as_ref(),
        &a,
        b"",
        std::time::Duration::from_secs(120),
    )
}

/// The transfers of a [`keep_alive_loop`]: each status, and how many connections curl opened in
/// all (1 when the connection was kept alive throughout).
pub fn loop_transfers(stdout: &str) -> (Vec<u16>, u32) {
    let mut statuses = Vec::new();
    let mut connects = 0;
    for line in stdout.lines() {
        let mut it = line.split_whitespace();
        statuses.push(it.next().and_then(|s| s.parse().ok()).unwrap_or(0));
        connects += it.next().and_then(|c| c.parse::<u32>().ok()).unwrap_or(0);
    }
    (statuses, connects)
}
