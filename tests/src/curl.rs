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
