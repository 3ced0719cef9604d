//! WebSocket (HTTP/1.1 Upgrade): once the upstream answers 101, both connections become one byte pipe.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::stats::HttpStats;

/// Joins the downstream and upstream halves of an upgraded request in a task of its own.
pub fn bridge(downstream: OnUpgrade, upstream: OnUpgrade, stats: HttpStats) {
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        stats.cx_upgrades_total.inc();
        stats.cx_upgrades_active.inc();
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %e, "upgraded stream ended with an error");
        }
        stats.cx_upgrades_active.dec();
    });
}
