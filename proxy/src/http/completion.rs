//! Watching bodies cross the proxy: how many bytes, when the last frame came, and when the stream
//! ended. The request side feeds the stream's timers; the response side writes the access log and
//! the final stats once the body is done (or the stream is dropped).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::body::BoxError;

/// What an [`Observed`] body reports to.
pub trait Observer {
    /// A data frame of `bytes` passed.
    fn frame(&mut self, _bytes: usize) {}
    /// The body ended (`complete`) or failed / was dropped early; called exactly once.
    fn end(&mut self, complete: bool);
}

pin_project_lite::pin_project! {
    /// A body that reports its frames and its end to an [`Observer`].
    pub struct Observed<B, O: Observer> {
        #[pin]
        inner: B,
        observer: O,
        ended: bool,
    }

    impl<B, O: Observer> PinnedDrop for Observed<B, O> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.ended {
                this.observer.end(false);
            }
        }
    }
}

impl<B, O: Observer> Observed<B, O> {
    pub fn new(inner: B, observer: O) -> Self {
        Self {
            inner,
            observer,
            ended: false,
        }
    }
}

impl<B, O> Body for Observed<B, O>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    O: Observer,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.observer.frame(frame.data_ref().map_or(0, |d| d.len()))
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) if !*this.ended => {
                *this.ended = true;
                this.observer.end(matches!(polled, Poll::Ready(None)));
            }
            _ => {}
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts bytes and runs `F(bytes, complete)` at the end: the response side's access log.
pub struct OnEnd<F: FnOnce(u64, bool)> {
    bytes: u64,
    f: Option<F>,
}

impl<F: FnOnce(u64, bool)> OnEnd<F> {
    pub fn new(f: F) -> Self {
        Self {
            bytes: 0,
            f: Some(f),
        }
    }
}

impl<F: FnOnce(u64, bool)> Observer for OnEnd<F> {
    fn frame(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }
    fn end(&mut self, complete: bool) {
        if let Some(f) = self.f.take() {
            f(self.bytes, complete);
        }
    }
}

/// How far a downstream request body has come: bytes, completion and the time of the last frame,
/// shared between the body (on the upstream side) and the stream's timers.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    bytes: AtomicU64,
    done: AtomicBool,
    /// Milliseconds after `started` of the last frame.
    last_ms: AtomicU64,
    activity: tokio::sync::Notify,
}

impl Progress {
    pub fn new(started: Instant, already_done: bool) -> Self {
        Self {
            started,
            bytes: AtomicU64::new(0),
            done: AtomicBool::new(already_done),
            last_ms: AtomicU64::new(0),
            activity: tokio::sync::Notify::new(),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// When the stream last saw request bytes (or started).
    pub fn last_activity(&self) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves on the next request frame or the end of the body.
    pub async fn changed(&self) {
        self.activity.notified().await
    }
}

impl Observer for Arc<Progress> {
    fn frame(&mut self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.last_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.activity.notify_waiters();
    }

    fn end(&mut self, complete: bool) {
        if complete {
            self.done.store(true, Ordering::Relaxed);
        }
        self.activity.notify_waiters();
    }
}
