//! Detect, peek: the connection's first bytes, read with `MSG_PEEK` so the chosen filter chain
//! (TLS passthrough included) still receives every byte.
//!
//! A peek of bytes already seen returns at once, so waiting for *more* bytes needs care: the peek
//! runs inside `try_io`, which clears the socket's readiness when it reports `WouldBlock`, and we
//! report `WouldBlock` whenever nothing new arrived. Readiness is sampled before the peek, so
//! bytes that arrive in between raise it again and are not missed.

use std::io;
use std::os::fd::AsFd;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Why no more bytes will come.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("reading the connection: {0}")]
    Io(#[from] io::Error),
}

/// The bytes peeked so far from one connection.
#[derive(Debug)]
pub struct Peeker<'a> {
    stream: &'a TcpStream,
    /// A second handle on the same socket, for a synchronous peek into a plain `&mut [u8]`; made
    /// at the first peek.
    dup: Option<std::net::TcpStream>,
    buf: Vec<u8>,
    len: usize,
}

impl<'a> Peeker<'a> {
    const FIRST: usize = 4 * 1024;

    pub fn new(stream: &'a TcpStream) -> Self {
        Self {
            stream,
            dup: None,
            buf: Vec::new(),
            len: 0,
        }
    }

    /// Everything peeked so far.
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Waits until more than `data().len()` bytes are available, looking at up to `max` bytes;
    /// returns at once when `max` are already there.
    pub async fn more(&mut self, max: usize) -> Result<(), PeekError> {
        if self.len >= max {
            return Ok(());
        }
        if self.buf.len() <= self.len {
            // Grow geometrically: most connections need a few hundred bytes, a few need `max`.
            let size = (self.buf.len() * 2).max(Self::FIRST).min(max);
            self.buf.resize(size.max(self.len + 1), 0);
        }
        let dup = match self.dup.take() {
            Some(d) => d,
            None => std::net::TcpStream::from(self.stream.as_fd().try_clone_to_owned()?),
        };
        let dup = &*self.dup.insert(dup);
        let seen = self.len;
        loop {
            let ready = self.stream.ready(Interest::READABLE).await?;
            let buf = &mut self.buf;
            let peeked = self.stream.try_io(Interest::READABLE, || {
                let n = dup.peek(buf)?;
                if n > seen {
                    Ok(n)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                }
            });
            match peeked {
                Ok(n) => {
                    self.len = n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Closed readiness is never cleared; with nothing new to peek, nothing will come.
                    if ready.is_read_closed() {
                        return Err(PeekError::Closed);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
