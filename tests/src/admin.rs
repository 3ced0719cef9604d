//! Admin interface reads: `/ready`, `/stats` counters, any path, over plain HTTP/1.1.

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
