//! Upgrades (WebSocket over HTTP/1.1 Upgrade or HTTP/2 extended CONNECT): once the upstream answers
//! 101, both connections become one byte pipe.

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
    /// HTTP/1: the connection's driver hands its stream over once the 101 is written.
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
}

/// Joins the downstream and upstream halves of an upgraded request in a task of its own. Call it
/// as the response that upgrades (101) leaves the filter chain.
pub fn bridge(downstream: Pending, down: &Downstream, upstream: OnUpgrade, stats: HttpStats) {
    let downstream = match downstream {
        Pending::Hyper(on) => Handover::Hyper(on),
        Pending::Http1 => Handover::Http1(down.conn.upgrade()),
    };
    tokio::spawn(async move {
        let upstream = async { upstream.await.map_err(UpgradeError::Upstream) };
        let (down, up) = match tokio::try_join!(downstream.stream(), upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        stats.cx_upgrades_total.inc();
        stats.cx_upgrades_active.inc();
        let mut down = down;
        let mut up = TokioIo::new(up);
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %e, "upgraded stream ended with an error");
        }
        stats.cx_upgrades_active.dec();
    });
}

enum Handover {
    Hyper(OnUpgrade),
    Http1(tokio::sync::oneshot::Receiver<Upgraded>),
}

/// Why an upgrade never became a pipe.
#[derive(Debug, thiserror::Error)]
enum UpgradeError {
    #[error("downstream: {0}")]
    Downstream(hyper::Error),
    #[error("the downstream connection ended before the upgrade")]
    DownstreamClosed,
    #[error("upstream: {0}")]
    Upstream(hyper::Error),
}

impl Handover {
    async fn stream(self) -> Result<Upgraded, UpgradeError> {
        match self {
            Self::Hyper(on) => match on.await {
                Ok(up) => Ok(Box::new(TokioIo::new(up))),
                Err(e) => Err(UpgradeError::Downstream(e)),
            },
            Self::Http1(rx) => rx.await.map_err(|_| UpgradeError::DownstreamClosed),
        }
    }
}
