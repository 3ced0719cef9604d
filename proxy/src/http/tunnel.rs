//! Tunnel plumbing: a byte stream carried in HTTP message bodies (POST tunnels, `allow_post`), in
//! both directions.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::body::{BoxBody, BoxError};

const CHUNK: usize = 16 * 1024;

/// A body whose data is what a reader yields, until it ends.
struct ReaderBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl Body for ReaderBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|next| next.map(|r| r.map(Frame::data).map_err(BoxError::from)))
    }
}

/// The bytes `reader` yields as a body (read by a task of its own, so the body is `Sync`); `hold`
/// lives until the reader ends (the connection's accounting).
pub fn reader_body<R, H>(mut reader: R, hold: H) -> BoxBody
where
    R: AsyncRead + Unpin + Send + 'static,
    H: Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let _hold = hold;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let item = match reader.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    ReaderBody { rx }.boxed()
}

/// Writes the data of `body` to `writer`, then shuts the writer down; returns the bytes written.
pub async fn body_to_writer<B, W>(mut body: B, mut writer: W) -> u64
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "tunnel body ended with an error");
                break;
            }
        };
        if let Ok(data) = frame.into_data() {
            if writer.write_all(&data).await.is_err() {
                return total;
            }
            total += data.len() as u64;
        }
    }
    let _ = writer.shutdown().await;
    total
}
