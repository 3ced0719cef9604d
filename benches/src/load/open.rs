//! Open-loop load at a fixed rate, free of coordinated omission.
//!
//! Sends are scheduled on a fixed timeline by a timer thread (thread sleeps are precise to tens of
//! microseconds, tokio's timer wheel only to a millisecond) and each request's latency is counted
//! from its scheduled time, so a stalled proxy is charged for the requests that queued behind the
//! stall. A request finds an idle keep-alive connection or opens a new one, so it never waits for
//! another request to finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;

use super::http::{h1_connect, h1_get, H1};
use super::{Outcome, Window};

/// The send times of a fixed-rate run from `begin` until `end`: `begin + i / rate`.
pub fn timeline(begin: Instant, end: Instant, rate: f64) -> impl Iterator<Item = Instant> {
    let step = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    (0u32..)
        .map(move |i| begin + step * i)
        .take_while(move |t| *t < end)
}

/// Keep-alive connections opened (with a few requests each) before the timeline starts, so that a
/// proxy meets the fixed rate with warm upstream pools rather than a burst of new connections:
/// a sidecar whose mTLS handshakes are slow would otherwise spiral (every late answer makes the
/// next request open one more connection, hence one more upstream handshake).
const PRIMED: usize = 4;

async fn prime(addr: SocketAddr, out: &mut Outcome) -> Vec<H1> {
    let tasks: Vec<_> = (0..PRIMED)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = super::http::timed(h1_connect(addr)).await?;
                for _ in 0..3 {
                    h1_get(&mut c, false).await?;
                }
                anyhow::Ok(c)
            })
        })
        .collect();
    let mut conns = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(c)) => conns.push(c),
            Ok(Err(e)) => out.fail(e),
            Err(e) => out.fail(e),
        }
    }
    conns
}

/// HTTP/1.1 GETs at `rate` per second until the window ends.
pub async fn h1_rate(addr: SocketAddr, rate: f64, w: Window) -> Outcome {
    let mut out = Outcome::default();
    let primed = prime(addr, &mut out).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let begin = Instant::now();
    let end = w.end;
    let ticker = std::thread::spawn(move || {
        for t in timeline(begin, end, rate) {
            let now = Instant::now();
            if t > now {
                std::thread::sleep(t - now);
            }
            if tx.send(t).is_err() {
                break;
            }
        }
    });
    let pool: Arc<Mutex<Vec<H1>>> = Arc::new(Mutex::new(primed));
    let mut set = JoinSet::new();
    while let Some(scheduled) = rx.recv().await {
        let pool = pool.clone();
        set.spawn(async move {
            let idle = pool.lock().await.pop();
            let mut conn = match idle {
                Some(c) => c,
                None => super::http::timed(h1_connect(addr)).await?,
            };
            h1_get(&mut conn, false).await?;
            let done = Instant::now();
            pool.lock().await.push(conn);
            anyhow::Ok((scheduled, done))
        });
        // Reap finished requests as we go so the set stays small.
        while let Some(r) = set.try_join_next() {
            settle(&mut out, &w, r);
        }
    }
    while let Some(r) = set.join_next().await {
        settle(&mut out, &w, r);
    }
    if ticker.join().is_err() {
        out.fail("timer thread panicked");
    }
    out
}

fn settle(
    out: &mut Outcome,
    w: &Window,
    r: Result<anyhow::Result<(Instant, Instant)>, tokio::task::JoinError>,
) {
    match r {
        Ok(Ok((scheduled, done))) => out.record(w, scheduled, done),
        Ok(Err(e)) => out.fail(e),
        Err(e) => out.fail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_is_evenly_spaced_and_ends_before_the_end() {
        let t0 = Instant::now();
        let ts: Vec<Instant> = timeline(t0, t0 + Duration::from_millis(10), 1000.0).collect();
        assert_eq!(ts.len(), 10);
        assert_eq!(ts[0], t0);
        assert_eq!(ts[9] - ts[8], Duration::from_millis(1));
        assert!(*ts.last().expect("ten") < t0 + Duration::from_millis(10));
    }
}
