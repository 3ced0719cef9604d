//! Access log files as the proxy writes them: wait for lines, then match their shape.

use std::path::Path;
use std::time::{Duration, Instant};

/// Lines of `path` once it has at least `n` (the proxy flushes on an interval); panics after 15s.
pub async fn wait_for_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        if Instant::now() > deadline {
            panic!(
                "{} has {} lines, expected {n}:\n{text}",
                path.display(),
                lines.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Envoy's default access log format as a regex, for one request whose method, path, protocol,
/// status and flags are given.
pub fn default_format(
    method: &str,
    path: &str,
    protocol: &str,
    status: u16,
    flags: &str,
) -> regex::Regex {
    let pattern = format!(
        r#"^\[\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\] "{} {} {}" {status} {} \d+ \d+ \d+ (\d+|-) "[^"]*" "[^"]*" "[0-9a-f-]+" "[^"]+" "(127\.0\.0\.1:\d+|-)"$"#,
        regex::escape(method),
        regex::escape(path),
        regex::escape(protocol),
        regex::escape(flags),
    );
    regex::Regex::new(&pattern).expect("access log regex")
}
