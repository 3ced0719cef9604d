//! Keep-alive: an HTTP/1 connection served request after request. Once it has been idle a while it
//! is parked: hyper's connection state and its read and write buffers are dropped, and only the
//! bare stream waits for the next request's first bytes, which rebuild the codec. An idle
//! keep-alive connection then costs its socket and this driver instead of some 30 KB of buffers.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::body::BoxBody;
use super::codec::Rewind;
use super::upgrade::{Io, Upgraded};

/// How much of the next request a parked connection reads before it rebuilds the codec; hyper
/// reads the rest.
const FIRST_READ: usize = 32;

type Conn<I, S> = http1::Connection<TokioIo<Watched<I>>, S>;

/// What the connection's driver shares with its requests and its stream.
#[derive(Default)]
pub struct Shared {
    /// Where a response that upgrades the connection (101, CONNECT) waits for its stream.
    upgrade: Mutex<Option<tokio::sync::oneshot::Sender<Upgraded>>>,
    /// The stream's last write or flush was refused: hyper holds bytes the peer has not taken.
    write_blocked: AtomicBool,
}

impl Shared {
    /// Asks for the stream once the response now being sent has upgraded the connection.
    pub fn upgrade(&self) -> tokio::sync::oneshot::Receiver<Upgraded> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Ok(mut slot) = self.upgrade.lock() {
            *slot = Some(tx);
        }
        rx
    }

    fn take_upgrade(&self) -> Option<tokio::sync::oneshot::Sender<Upgraded>> {
        self.upgrade.lock().ok().and_then(|mut s| s.take())
    }
}

enum State<I, S>
where
    S: HttpService<Incoming>,
{
    Serving {
        conn: Pin<Box<Conn<I, S>>>,
        /// `park` asked the codec to stop after the current (idle) state.
        parking: bool,
    },
    Parked {
        io: I,
        service: S,
        first: [u8; FIRST_READ],
    },
    /// The connection is over; the stream is being shut down (FIN, or TLS close_notify).
    Closing(I),
    Done,
}

/// Drives one HTTP/1 server connection to its end; see the module documentation.
pub struct Http1<I, S>
where
    S: HttpService<Incoming>,
{
    builder: http1::Builder,
    state: State<I, S>,
    shared: Arc<Shared>,
    /// A drain asked the connection to close: no parking, the next idle moment ends it.
    closing: bool,
}

impl<I, S> Http1<I, S>
where
    I: Io,
    S: HttpService<Incoming, ResBody = BoxBody> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(builder: http1::Builder, io: Rewind<I>, service: S, shared: Arc<Shared>) -> Self {
        let mut this = Self {
            builder,
            state: State::Done,
            shared,
            closing: false,
        };
        this.state = this.serve(io, service);
        this
    }

    /// As hyper's `graceful_shutdown`: a request in flight finishes (its response says
    /// `Connection: close`), an idle or parked connection closes now.
    pub fn graceful_shutdown(&mut self) {
        self.closing = true;
        match std::mem::replace(&mut self.state, State::Done) {
            State::Serving { mut conn, parking } => {
                conn.as_mut().graceful_shutdown();
                self.state = State::Serving { conn, parking };
            }
            State::Parked { io, .. } | State::Closing(io) => self.state = State::Closing(io),
            State::Done => {}
        }
    }

    /// Parks the connection if the codec is idle and all its bytes are written; a no-op otherwise
    /// (a request or a write is in progress, or the connection is closing). Call it when no
    /// request is active.
    pub fn park(&mut self) {
        if self.closing {
            return;
        }
        if let State::Serving { conn, parking } = &mut self.state {
            // A response still waiting for the socket would lose its bytes with the codec.
            if *parking || self.shared.write_blocked.load(Ordering::Relaxed) {
                return;
            }
            // On an idle HTTP/1 connection this ends the codec at once, without touching the
            // stream; on a busy one it would close the connection after the response, which the
            // caller rules out by asking only when no request is active.
            conn.as_mut().graceful_shutdown();
            *parking = true;
        }
    }

    /// Whether the connection is parked (for tests and stats).
    pub fn is_parked(&self) -> bool {
        matches!(self.state, State::Parked { .. })
    }

    fn serve(&self, io: Rewind<I>, service: S) -> State<I, S> {
        self.shared.write_blocked.store(false, Ordering::Relaxed);
        let io = Watched {
            io,
            shared: self.shared.clone(),
        };
        State::Serving {
            conn: Box::pin(self.builder.serve_connection(TokioIo::new(io), service)),
            parking: false,
        }
    }
}

impl<I, S> Future for Http1<I, S>
where
    I: Io,
    S: HttpService<Incoming, ResBody = BoxBody> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = hyper::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Serving { conn, .. } => {
                    let res = ready!(conn.as_mut().poll_without_shutdown(cx));
                    let State::Serving { conn, parking } =
                        std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("the state was Serving a moment ago")
                    };
                    if let Err(e) = res {
                        return Poll::Ready(Err(e));
                    }
                    let parts = Pin::into_inner(conn).into_parts();
                    let (io, rest) = parts.io.into_inner().io.into_parts();
                    let prefix = join(rest, &parts.read_buf);
                    if let Some(handover) = this.shared.take_upgrade() {
                        // The response upgraded the connection: what the peer sent after the
                        // request is the tunnel's first bytes.
                        let _ = handover.send(Box::new(Rewind::new(io, prefix)));
                        return Poll::Ready(Ok(()));
                    }
                    if !parking || this.closing {
                        this.state = State::Closing(io);
                        continue;
                    }
                    this.state = if prefix.is_empty() {
                        State::Parked {
                            io,
                            service: parts.service,
                            first: [0; FIRST_READ],
                        }
                    } else {
                        // Bytes of the next request arrived while parking: serve them now.
                        this.serve(Rewind::new(io, prefix), parts.service)
                    };
                }
                State::Parked { io, first, .. } => {
                    let mut buf = ReadBuf::new(first);
                    let read = ready!(Pin::new(io).poll_read(cx, &mut buf));
                    let n = buf.filled().len();
                    let State::Parked { io, service, first } =
                        std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("the state was Parked a moment ago")
                    };
                    this.state = match read {
                        Ok(()) if n > 0 => {
                            this.serve(Rewind::new(io, first[..n].to_vec()), service)
                        }
                        // The peer closed its idle connection, or the read failed.
                        _ => State::Closing(io),
                    };
                }
                State::Closing(io) => {
                    let res = ready!(Pin::new(io).poll_shutdown(cx));
                    this.state = State::Done;
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "shutting down the downstream stream failed");
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// The rewound bytes hyper did not read, then the bytes it read past its last message.
fn join(mut rest: Vec<u8>, read_buf: &[u8]) -> Vec<u8> {
    rest.extend_from_slice(read_buf);
    rest
}

/// The stream as hyper sees it: records whether its last write or flush was refused.
struct Watched<I> {
    io: Rewind<I>,
    shared: Arc<Shared>,
}

impl<I: Io> Watched<I> {
    fn note<T>(&self, p: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.shared
            .write_blocked
            .store(p.is_pending(), Ordering::Relaxed);
        p
    }
}

impl<I: Io> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: Io> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note(p)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let p = Pin::new(&mut self.io).poll_flush(cx);
        self.note(p)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.note(p)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
