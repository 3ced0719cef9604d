//! Upgraded streams: a WebSocket once the upstream answers 101, a CONNECT once it is answered 2xx;
//! both connections become one byte pipe.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::stats::HttpStats;

/// The downstream side of an upgrade (WebSocket, CONNECT): the connection (HTTP/1.1) or stream
/// (h2 CONNECT) that carries the tunnel once the response has been sent.
pub fn downstream<B>(req: &mut hyper::Request<B>) -> OnUpgrade {
    hyper::upgrade::on(req)
}

/// Joins the downstream and upstream halves of an upgraded request in a task of its own.
pub fn bridge(downstream: OnUpgrade, upstream: OnUpgrade, stats: HttpStats) {
    tokio::spawn(async move {
        let up = match upstream.await {
            Ok(up) => up,
            Err(e) => {
                tracing::debug!(error = %e, "upstream upgrade did not complete");
                return;
            }
        };
        join(downstream, TokioIo::new(up), stats).await;
    });
}

/// Joins the downstream half of an upgrade to an upstream byte stream (CONNECT terminated here);
/// `hold` lives as long as the tunnel (the upstream connection's accounting).
pub fn pipe<U, H>(downstream: OnUpgrade, upstream: U, hold: H, stats: HttpStats)
where
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Send + 'static,
{
    tokio::spawn(async move {
        join(downstream, upstream, stats).await;
        drop(hold);
    });
}

async fn join<U>(downstream: OnUpgrade, mut up: U, stats: HttpStats)
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    let down = match downstream.await {
        Ok(down) => down,
        Err(e) => {
            tracing::debug!(error = %e, "downstream upgrade did not complete");
            return;
        }
    };
    stats.cx_upgrades_total.inc();
    stats.cx_upgrades_active.inc();
    let mut down = TokioIo::new(down);
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(error = %e, "upgraded stream ended with an error");
    }
    stats.cx_upgrades_active.dec();
}
