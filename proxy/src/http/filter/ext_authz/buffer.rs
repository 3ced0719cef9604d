//! `with_request_body`: read the start of the request body for the check and hand the stream on
//! unchanged (the frames read first, then the rest).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::http::body::{BoxBody, BoxError};

/// Frames already read, then the rest of the body.
struct Replayed {
    frames: VecDeque<Frame<Bytes>>,
    rest: BoxBody,
}

impl Body for Replayed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(f) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(buffered + rest.lower());
        if let Some(u) = rest.upper() {
            hint.set_upper(buffered + u);
        }
        hint
    }
}

/// What buffering found.
pub enum Buffered {
    /// The body up to the limit (all of it when it ended first).
    Body(Bytes),
    /// Longer than the limit, and partial messages are not allowed.
    TooLarge,
    /// The downstream failed while sending.
    Failed,
}

/// Reads up to `max` bytes of `body` (`allow_partial`: stop there; else the body must end within
/// it) and puts what it read back in front of the rest.
pub async fn buffer(body: &mut BoxBody, max: usize, allow_partial: bool) -> Buffered {
    let mut rest = std::mem::replace(body, crate::http::body::empty());
    let mut frames = VecDeque::new();
    let mut data = BytesMut::new();
    let mut failed = false;
    // Without partial messages, one byte past the limit is enough to refuse.
    let want = |len: usize| if allow_partial { len < max } else { len <= max };
    while want(data.len()) && !rest.is_end_stream() {
        match rest.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    data.extend_from_slice(d);
                }
                frames.push_back(f);
            }
            Some(Err(_)) => {
                failed = true;
                break;
            }
            None => break,
        }
    }
    *body = BoxBody::new(Replayed { frames, rest });
    if failed {
        Buffered::Failed
    } else if data.len() > max && !allow_partial {
        Buffered::TooLarge
    } else {
        let mut bytes = data.freeze();
        bytes.truncate(max);
        Buffered::Body(bytes)
    }
}
