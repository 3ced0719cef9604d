//! Connect stage output: the upstream response body, which holds the request's active slot until
//! the response has been read to its end (or dropped).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use super::circuit::ResourceGuard;
use super::cluster::Shared;
use super::endpoint::Host;
use super::stats::down;

/// One request counted in `upstream_rq_active` and the `max_requests` breaker.
#[derive(Debug)]
pub(crate) struct ActiveRequest {
    shared: Arc<Shared>,
    host: Arc<Host>,
    _slot: ResourceGuard,
}

impl ActiveRequest {
    pub(crate) fn new(shared: Arc<Shared>, host: Arc<Host>, slot: ResourceGuard) -> Self {
        shared.stats.upstream_rq_total.inc();
        shared.stats.upstream_rq_active.inc();
        super::stats::bump(&host.stats.rq_total);
        super::stats::up(&host.stats.rq_active);
        Self {
            shared,
            host,
            _slot: slot,
        }
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.shared.stats.upstream_rq_active.dec();
        down(&self.host.stats.rq_active);
    }
}

pin_project! {
    /// The body of an upstream response.
    pub struct ResponseBody {
        #[pin]
        inner: Incoming,
        active: Option<ActiveRequest>,
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl ResponseBody {
    pub(crate) fn new(inner: Incoming, active: ActiveRequest) -> Self {
        Self {
            inner,
            active: Some(active),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        match &r {
            Poll::Ready(None) => {
                if let Some(a) = this.active.take() {
                    a.shared.stats.upstream_rq_completed.inc();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(a) = this.active.take() {
                    a.shared.stats.upstream_rq_rx_reset.inc();
                }
            }
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
