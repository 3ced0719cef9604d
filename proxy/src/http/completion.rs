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
    /// The data of that frame (before [`Observer::frame`] is told its length).
    fn data(&mut self, _data: &Bytes) {}
    /// The trailers passed.
    fn trailers(&mut self, _trailers: &http::HeaderMap) {}
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
                if let Some(d) = frame.data_ref() {
                    this.observer.data(d);
                }
                // Trailers count as activity (of zero bytes), as before they were observed.
                this.observer.frame(frame.data_ref().map_or(0, |d| d.len()));
                if let Some(t) = frame.trailers_ref() {
                    this.observer.trailers(t);
                }
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

/// How a response body ended, for the access log and the stats.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ended {
    pub bytes: u64,
    pub complete: bool,
    /// `grpc-status` from the trailers, when they carried one.
    pub grpc_status: Option<u32>,
}

/// Counts bytes and runs `F` at the end: the response side's access log and stats.
pub struct OnEnd<F: FnOnce(Ended)> {
    ended: Ended,
    f: Option<F>,
}

impl<F: FnOnce(Ended)> OnEnd<F> {
    pub fn new(f: F) -> Self {
        Self {
            ended: Ended::default(),
            f: Some(f),
        }
    }
}

impl<F: FnOnce(Ended)> Observer for OnEnd<F> {
    fn frame(&mut self, bytes: usize) {
        self.ended.bytes += bytes as u64;
    }
    fn trailers(&mut self, trailers: &http::HeaderMap) {
        self.ended.grpc_status = trailers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
    }
    fn end(&mut self, complete: bool) {
        if let Some(f) = self.f.take() {
            self.ended.complete = complete;
            f(self.ended);
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

pin_project_lite::pin_project! {
    /// A response body that fails when no frame arrives for `idle` (`stream_idle_timeout` once the
    /// response has started: Envoy resets the stream).
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: tokio::time::Sleep,
        idle: Duration,
    }
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            sleep: tokio::time::sleep(idle),
            idle,
        }
    }
}

/// The error an idle response body ends with.
#[derive(Debug, thiserror::Error)]
#[error("stream idle timeout after {0:?}")]
pub struct StreamIdle(Duration);

impl<B> Body for IdleTimeout<B>
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
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + *this.idle;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match std::future::Future::poll(this.sleep, cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(StreamIdle(*this.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn a_silent_response_body_fails_after_the_idle_timeout() {
        // "a" at once, "b" after 4 s of silence, then 60 s of silence before the end.
        let frames = futures_util::stream::unfold(0u8, |step| async move {
            let data = match step {
                0 => "a",
                1 => {
                    tokio::time::sleep(Duration::from_secs(4)).await;
                    "b"
                }
                _ => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return None;
                }
            };
            Some((
                Ok::<_, BoxError>(Frame::data(Bytes::from_static(data.as_bytes()))),
                step + 1,
            ))
        });
        let body = http_body_util::StreamBody::new(frames);
        let mut body = std::pin::pin!(IdleTimeout::new(body, Duration::from_secs(5)));
        assert!(body.frame().await.is_some_and(|f| f.is_ok()), "first frame");
        assert!(
            body.frame().await.is_some_and(|f| f.is_ok()),
            "4 s of silence is within the limit"
        );
        let err = body
            .frame()
            .await
            .expect("an error, not the end")
            .expect_err("idle");
        assert!(err.to_string().contains("idle"), "{err}");
    }

    #[tokio::test]
    async fn the_end_carries_the_grpc_status_of_the_trailers() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
        let frames = futures_util::stream::iter([
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::trailers(trailers)),
        ]);
        let (tx, rx) = std::sync::mpsc::channel();
        let body = Observed::new(
            http_body_util::StreamBody::new(frames),
            OnEnd::new(move |e| {
                let _ = tx.send(e);
            }),
        );
        let _ = body.collect().await.expect("collects");
        let ended = rx.try_recv().expect("ended once");
        assert_eq!((ended.bytes, ended.complete), (3, true));
        assert_eq!(ended.grpc_status, Some(14));
    }
}
