//! The end of a request: count the bytes that crossed, then write the access log and the final stats
//! once the response body is done (or the stream is dropped).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::body::BoxError;

pin_project_lite::pin_project! {
    /// A body that counts its bytes and calls `on_end` exactly once, when it ends or is dropped.
    pub struct Counted<B, F: FnOnce(u64, bool)> {
        #[pin]
        inner: B,
        bytes: u64,
        on_end: Option<F>,
    }

    impl<B, F: FnOnce(u64, bool)> PinnedDrop for Counted<B, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.on_end.take() {
                f(*this.bytes, false);
            }
        }
    }
}

impl<B, F: FnOnce(u64, bool)> Counted<B, F> {
    pub fn new(inner: B, on_end: F) -> Self {
        Self {
            inner,
            bytes: 0,
            on_end: Some(on_end),
        }
    }
}

impl<B, F> Body for Counted<B, F>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    F: FnOnce(u64, bool),
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    *this.bytes += d.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(f) = this.on_end.take() {
                    f(*this.bytes, false);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                if let Some(f) = this.on_end.take() {
                    f(*this.bytes, true);
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How far a downstream request body has come: bytes, completion and the time of the last frame,
/// shared between the body (on the upstream side) and the stream's timers.
#[derive(Debug)]
pub struct Progress {
    started: std::time::Instant,
    bytes: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicBool,
    /// Milliseconds after `started` of the last frame.
    last_ms: std::sync::atomic::AtomicU64,
    activity: tokio::sync::Notify,
}

impl Progress {
    pub fn new(started: std::time::Instant, already_done: bool) -> Self {
        Self {
            started,
            bytes: Default::default(),
            done: std::sync::atomic::AtomicBool::new(already_done),
            last_ms: Default::default(),
            activity: tokio::sync::Notify::new(),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn done(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// When the stream last saw request bytes (or started).
    pub fn last_activity(&self) -> std::time::Instant {
        self.started
            + std::time::Duration::from_millis(
                self.last_ms.load(std::sync::atomic::Ordering::Relaxed),
            )
    }

    fn frame(&self, n: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.bytes.fetch_add(n as u64, Relaxed);
        self.last_ms
            .store(self.started.elapsed().as_millis() as u64, Relaxed);
        self.activity.notify_waiters();
    }

    fn finish(&self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        self.activity.notify_waiters();
    }

    /// Resolves on the next request frame or the end of the body.
    pub async fn changed(&self) {
        self.activity.notified().await
    }
}

pin_project_lite::pin_project! {
    /// The downstream request body, reporting into a [`Progress`].
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        progress: std::sync::Arc<Progress>,
    }
}

impl<B> Tracked<B> {
    pub fn new(inner: B, progress: std::sync::Arc<Progress>) -> Self {
        Self { inner, progress }
    }
}

impl<B> Body for Tracked<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.progress
                    .frame(frame.data_ref().map(|d| d.len()).unwrap_or(0));
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                this.progress.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
