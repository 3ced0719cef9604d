//! Codec: the first bytes of a connection tell HTTP/2 (its preface) from HTTP/1, and an explicit
//! `codec_type` refuses the other protocol, as Envoy's codecs do — `HTTP2` closes a connection that
//! does not open with the h2 preface, `HTTP1` one that does. The bytes read are replayed to the
//! codec.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::access_log::format::time::TimeFormat;
use crate::config::hcm::Codec;
use crate::detect::http::H2_PREFACE;

/// A stream that first yields bytes already read from it.
pub struct Rewind<I> {
    prefix: Vec<u8>,
    pos: usize,
    inner: I,
}

impl<I> Rewind<I> {
    pub fn new(inner: I, prefix: Vec<u8>) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }

    /// The stream, and the bytes of the prefix not read yet.
    pub fn into_parts(self) -> (I, Vec<u8>) {
        let mut prefix = self.prefix;
        prefix.drain(..self.pos);
        (self.inner, prefix)
    }
}

/// A connection the codec takes, with the protocol its first bytes chose.
pub struct Admitted<I> {
    pub io: Rewind<I>,
    pub http2: bool,
}

/// Reads until the opening bytes tell an h2 preface from anything else; `None` when they belong
/// to the protocol `codec` refuses (then closed), or the peer closed first.
pub async fn admit<I>(mut io: I, codec: Codec, server: &str) -> io::Result<Option<Admitted<I>>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(H2_PREFACE.len());
    let is_h2 = loop {
        if !H2_PREFACE.starts_with(&buf) {
            break false;
        }
        if buf.len() == H2_PREFACE.len() {
            break true;
        }
        let mut chunk = [0u8; 24];
        let want = H2_PREFACE.len() - buf.len();
        let n = io.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let allowed = match codec {
        Codec::Http1 => !is_h2,
        Codec::Http2 => is_h2,
        Codec::Auto => true,
    };
    if allowed {
        return Ok(Some(Admitted {
            io: Rewind::new(io, buf),
            http2: is_h2,
        }));
    }
    if codec == Codec::Http1 {
        // Envoy's HTTP/1 codec answers the preface as a malformed request; a peer already gone
        // is closed all the same.
        let reply = bad_request(server, SystemTime::now());
        let _ = io.write_all(reply.as_bytes()).await;
    }
    // As Envoy's delayed close: discard what the peer sends until it closes or the delay is up,
    // then close; closing with unread bytes would reset the connection instead.
    let _ = tokio::time::timeout(DELAYED_CLOSE, async {
        let mut sink = [0u8; 4096];
        while io.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
    let _ = io.shutdown().await;
    Ok(None)
}

/// The HTTP/1 400 Envoy sends to a request it cannot parse.
fn bad_request(server: &str, now: SystemTime) -> String {
    let mut date = String::new();
    if let Ok(f) = TimeFormat::parse("%a, %d %b %Y %H:%M:%S GMT") {
        f.format(now, &mut date);
    }
    let server = if server.is_empty() {
        String::new()
    } else {
        format!("server: {server}\r\n")
    };
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\ncontent-type: text/plain\r\n\
         date: {date}\r\n{server}connection: close\r\n\r\nBad Request"
    )
}

/// Envoy's default `delayed_close_timeout`.
const DELAYED_CLOSE: std::time::Duration = std::time::Duration::from_secs(1);

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                // Replayed: a long-lived connection need not keep the allocation.
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn admitted(codec: Codec, input: &[u8]) -> Option<Vec<u8>> {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, input)
            .await
            .expect("write");
        drop(client);
        let mut io = admit(server, codec, "envoy").await.expect("admit")?.io;
        let mut replayed = Vec::new();
        io.read_to_end(&mut replayed).await.expect("read");
        Some(replayed)
    }

    #[tokio::test]
    async fn explicit_codecs_refuse_the_other_protocol() {
        let h1 = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        let h2 = [H2_PREFACE, b"\0\0\0\x04\0\0\0\0\0"].concat();
        assert_eq!(admitted(Codec::Http1, h1).await.as_deref(), Some(&h1[..]));
        assert_eq!(admitted(Codec::Http1, &h2).await, None);
        let reply = bad_request("envoy", SystemTime::UNIX_EPOCH);
        assert!(
            reply.contains("\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\nserver: envoy\r\n"),
            "{reply}"
        );
        assert_eq!(admitted(Codec::Http2, &h2).await, Some(h2.clone()));
        assert_eq!(admitted(Codec::Http2, h1).await, None);
        assert_eq!(admitted(Codec::Auto, h1).await.as_deref(), Some(&h1[..]));
        // A peer that closes before its first bytes decide is not served.
        assert_eq!(admitted(Codec::Http1, b"P").await, None);
    }
}
