//! Admin interface reads: `/ready`, `/stats` counters, Prometheus samples, any path, over plain
//! HTTP/1.1.

use std::time::{Duration, Instant};

use crate::client::{self, Protocol, Request, Response};

pub async fn get(port: u16, path: &str) -> anyhow::Result<Response> {
    let req = Request::get(path).host("127.0.0.1");
    client::send(crate::ports::loopback(port), Protocol::Http1, &req).await
}

pub async fn post(port: u16, path: &str) -> anyhow::Result<Response> {
    let req = Request::new("POST", path).host("127.0.0.1");
    client::send(crate::ports::loopback(port), Protocol::Http1, &req).await
}

/// The value of `name` in `/stats` text (`name: value` lines), if present.
pub fn stat_in(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(": ")?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The current value of one counter or gauge.
pub async fn stat(port: u16, name: &str) -> Option<u64> {
    // The filter is a regex; dots in the name match themselves among others, and `stat_in`
    // then picks the exact line.
    let r = get(port, &format!("/stats?filter={name}")).await.ok()?;
    stat_in(&r.text(), name)
}

/// The value of the first sample of `metric` in Prometheus text whose labels contain every one of
/// `labels` (`name="value"` each).
pub fn sample(exposition: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let rest = l.strip_prefix(metric)?.strip_prefix('{')?;
        let (set, value) = rest.rsplit_once("} ")?;
        labels
            .iter()
            .all(|want| set.split(',').any(|got| got == *want))
            .then(|| value.parse().ok())
            .flatten()
    })
}

/// `/stats/prometheus`.
pub async fn prometheus(port: u16) -> String {
    get(port, "/stats/prometheus")
        .await
        .expect("/stats/prometheus")
        .text()
}

/// Polls `/stats/prometheus` for up to 10 s until `metric{labels}` is `want` (responses finish, and
/// TCP closes, asynchronously); the last text read.
pub async fn wait_for_sample(port: u16, metric: &str, labels: &[&str], want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = prometheus(port).await;
        if sample(&text, metric, labels) == Some(want) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
