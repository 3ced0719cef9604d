//! Upgraded streams: a WebSocket (HTTP/1.1 Upgrade or HTTP/2 extended CONNECT) once the upstream
//! answers 101, a CONNECT once it is answered 2xx; both connections become one byte pipe.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::proxy::Downstream;
use super::stats::HttpStats;

/// A byte stream a connection can be handed over as.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// An upgraded connection's stream.
pub type Upgraded = Box<dyn Io>;

/// The downstream side of an upgrade a request asks for, before its response decides it.
pub enum Pending {
    /// HTTP/2: hyper hands the stream over.
    Hyper(OnUpgrade),
    /// HTTP/1: the connection's driver hands its stream over once the response is written.
    Http1,
}

impl Pending {
    /// The downstream side of `req`'s upgrade.
    pub fn of<B>(req: &mut hyper::Request<B>) -> Self {
        if req.version() == hyper::Version::HTTP_2 {
            Self::Hyper(hyper::upgrade::on(req))
        } else {
            Self::Http1
        }
    }

    /// Commits to the upgrade: call it as the response that upgrades (101, a CONNECT's 2xx)
    /// leaves the filter chain.
    fn handover(self, down: &Downstream) -> Handover {
        match self {
            Self::Hyper(on) => Handover::Hyper(on),
            Self::Http1 => Handover::Http1(down.conn.upgrade()),
        }
    }
}

/// Joins the downstream and upstream halves of an upgraded request in a task of its own.
pub fn bridge(downstream: Pending, down: &Downstream, upstream: OnUpgrade, stats: HttpStats) {
    let downstream = downstream.handover(down);
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
pub fn pipe<U, H>(downstream: Pending, down: &Downstream, upstream: U, hold: H, stats: HttpStats)
where
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Send + 'static,
{
    let downstream = downstream.handover(down);
    tokio::spawn(async move {
        join(downstream, upstream, stats).await;
        drop(hold);
    });
}

async fn join<U>(downstream: Handover, mut up: U, stats: HttpStats)
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut down = match downstream.stream().await {
        Ok(down) => down,
        Err(e) => {
            tracing::debug!(error = %e, "downstream upgrade did not complete");
            return;
        }
    };
    stats.cx_upgrades_total.inc();
    stats.cx_upgrades_active.inc();
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(error = %e, "upgraded stream ended with an error");
    }
    stats.cx_upgrades_active.dec();
}

enum Handover {
    Hyper(OnUpgrade),
    Http1(tokio::sync::oneshot::Receiver<Upgraded>),
}

/// Why an upgrade never became a pipe.
#[derive(Debug, thiserror::Error)]
enum UpgradeError {
    #[error("{0}")]
    Hyper(hyper::Error),
    #[error("the downstream connection ended before the upgrade")]
    DownstreamClosed,
}

impl Handover {
    async fn stream(self) -> Result<Upgraded, UpgradeError> {
        match self {
            Self::Hyper(on) => match on.await {
                Ok(up) => Ok(Box::new(TokioIo::new(up))),
                Err(e) => Err(UpgradeError::Hyper(e)),
            },
            Self::Http1(rx) => rx.await.map_err(|_| UpgradeError::DownstreamClosed),
        }
    }
}
