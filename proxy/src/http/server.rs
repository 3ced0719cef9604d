//! Serve: one downstream HTTP connection (HTTP/1.1, h2c prior knowledge, or either), its timeouts and
//! its drain.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{service_fn, HttpService};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::body::BoxBody;
use super::codec::Rewind;
use super::proxy::{self, Downstream, HttpRuntime};
use super::{codec, headers, keepalive, local_reply, upgrade};
use crate::drain;
use crate::tls::TlsInfo;

/// What the connection manager knows about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// `https` when the connection is TLS, `http` otherwise.
    pub scheme: &'static str,
    /// What the TLS handshake established, for TLS connections.
    pub tls: Option<Arc<TlsInfo>>,
    /// The SNI tls_inspector read (`%REQUESTED_SERVER_NAME%`). Envoy leaves it empty without that
    /// listener filter, even when the TLS handshake carried one.
    pub requested_server_name: Option<String>,
    /// What filters set on the connection (`set_filter_state`), or an internal upstream brought.
    pub filter_state: crate::filter_state::FilterState,
    /// On an internal listener, its name (the connection has no IP addresses).
    pub internal_listener: Option<Arc<str>>,
}

fn http1_builder(cfg: &crate::config::hcm::HcmConfig) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        // Above the limit, so that `too_many_headers` answers as Envoy does rather than hyper.
        .max_headers(cfg.max_headers_count.saturating_add(100))
        .max_buf_size((cfg.max_request_headers_kb as usize * 1024).max(8192))
        .header_read_timeout(cfg.request_headers_timeout)
        .keep_alive(true);
    b
}

fn http2_builder(cfg: &crate::config::hcm::HcmConfig) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(cfg.max_request_headers_kb * 1024)
        .max_concurrent_streams(2_147_483_647u32)
        .enable_connect_protocol();
    b
}

/// What the service answers a request with (boxed: hyper keeps the slot for it for the
/// connection's life, and an idle keep-alive connection should not hold a request's worth of state).
type ServiceFuture = Pin<
    Box<dyn Future<Output = Result<hyper::Response<BoxBody>, TooManyHeaders>> + Send + 'static>,
>;

type Http2Conn<I, S> = http2::Connection<TokioIo<Rewind<I>>, S, TokioExecutor>;

/// The request service both codecs drive.
trait Service:
    HttpService<Incoming, ResBody = BoxBody, Future = ServiceFuture, Error = TooManyHeaders>
    + Unpin
    + Clone
    + Send
    + 'static
{
}

impl<T> Service for T where
    T: HttpService<Incoming, ResBody = BoxBody, Future = ServiceFuture, Error = TooManyHeaders>
        + Unpin
        + Clone
        + Send
        + 'static
{
}

/// The codec serving a connection.
enum Served<I, S>
where
    S: HttpService<Incoming>,
{
    Http1(keepalive::Http1<I, S>),
    Http2(Pin<Box<Http2Conn<I, S>>>),
}

impl<I, S> Served<I, S>
where
    I: upgrade::Io,
    S: Service,
{
    fn graceful_shutdown(&mut self) {
        match self {
            Self::Http1(c) => c.graceful_shutdown(),
            Self::Http2(c) => c.as_mut().graceful_shutdown(),
        }
    }

    /// Lets an idle HTTP/1 connection drop its codec's buffers (HTTP/2 keeps its state).
    fn park(&mut self) {
        if let Self::Http1(c) = self {
            c.park();
        }
    }
}

impl<I, S> Future for Served<I, S>
where
    I: upgrade::Io,
    S: Service,
{
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Http1(c) => Pin::new(c).poll(cx),
            Self::Http2(c) => c.as_mut().poll(cx),
        }
    }
}

/// How long an HTTP/1 keep-alive connection stays idle before it parks (`keepalive`): long enough
/// that a busy connection never pays for rebuilding its codec, short enough that idle ones soon
/// stop holding buffers.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// A timer that never fires (thirty years), for a connection without an idle timeout.
const NEVER: Duration = Duration::from_secs(86400 * 365 * 30);

/// Serves one connection until the peer closes it, it idles out, or a drain closes it gracefully.
pub async fn serve<I>(io: I, info: ConnInfo, rt: Arc<HttpRuntime>, drain: drain::Watch)
where
    I: upgrade::Io,
{
    let stats = rt.stats.clone();
    stats.cx_total.inc();
    stats.cx_active.inc();
    // The idle timeout bounds the wait for a silent peer's first bytes.
    let admit = codec::admit(io, rt.cfg.codec, server_name(&rt.cfg));
    let admit = async {
        match rt.cfg.idle_timeout {
            Some(t) => tokio::time::timeout(t, admit).await.unwrap_or(Ok(None)),
            None => admit.await,
        }
    };
    // A peer that has sent nothing yet is idle: a drain closes it by its end.
    let admitted = tokio::select! {
        admitted = admit => admitted,
        () = drained_while_silent(&drain) => Ok(None),
    };
    let Ok(Some(admitted)) = admitted else {
        tracing::debug!(codec = ?rt.cfg.codec, "connection refused by the codec");
        stats.cx_active.dec();
        stats.cx_destroy.inc();
        return;
    };
    let active = Arc::new(AtomicUsize::new(0));
    let activity = Arc::new(tokio::sync::Notify::new());
    let shared = Arc::new(keepalive::Shared::default());
    let down = Arc::new(Downstream {
        info,
        active: active.clone(),
        activity: activity.clone(),
        counted_protocol: Default::default(),
        closing: Default::default(),
        http2: Default::default(),
        conn: shared.clone(),
    });
    let flags = down.clone();
    let svc_rt = rt.clone();
    let service = service_fn(move |req: hyper::Request<Incoming>| -> ServiceFuture {
        let rt = svc_rt.clone();
        let down = down.clone();
        if too_many_headers(&req, rt.cfg.max_headers_count) {
            return Box::pin(std::future::ready(refuse_too_many_headers(&req, &rt)));
        }
        Box::pin(async move { Ok(proxy::handle(req, rt, down).await) })
    });
    let http1 = !admitted.http2;
    let conn = if admitted.http2 {
        Served::Http2(Box::pin(
            http2_builder(&rt.cfg).serve_connection(TokioIo::new(admitted.io), service),
        ))
    } else {
        Served::Http1(keepalive::Http1::new(
            http1_builder(&rt.cfg),
            admitted.io,
            service,
            shared,
        ))
    };
    tokio::pin!(conn);
    let idle = rt.cfg.idle_timeout;
    let max_duration = rt.cfg.max_connection_duration;
    let lifetime = async {
        match max_duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lifetime);
    let mut draining = false;
    // A gentle drain: responses close the connection more and more often over the grace time
    // (`drain::Ramp`); once it is over the connection closes as soon as it is idle. No request is
    // refused on a kept-alive connection meanwhile.
    let mut gentle: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut gentle_deadline: Option<Duration> = None;
    // The waits below live as long as the connection: a request's start and end wake this loop,
    // and re-creating them each time would re-register every one of them.
    let signaled = drain.signaled();
    tokio::pin!(signaled);
    let immediate = drain.immediate();
    tokio::pin!(immediate);
    let going_away = flags.closing.going_away();
    tokio::pin!(going_away);
    // The idle timer runs while no request is active; every change of activity re-arms it. An
    // HTTP/1 connection first parks (`PARK_AFTER`), then times out at `idle_deadline`.
    let idle_sleep = tokio::time::sleep(idle.unwrap_or(NEVER));
    tokio::pin!(idle_sleep);
    let mut idle_armed = idle.is_some();
    let mut idle_deadline = idle.map(|t| tokio::time::Instant::now() + t);
    let mut park_pending = false;
    let notified = activity.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    loop {
        if let Some(grace) = gentle_deadline.take() {
            gentle = Some(Box::pin(tokio::time::sleep(grace)));
        }
        let gentle_started = gentle.is_some();
        let grace = async {
            match gentle.as_mut() {
                Some(s) => s.as_mut().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "downstream connection ended with an error");
                }
                break;
            }
            _ = signaled.as_mut(), if !draining && !gentle_started => {
                match drain.mode() {
                    drain::Mode::Gentle(grace) | drain::Mode::Announce(grace) => {
                        flags.closing.start(grace);
                        gentle_deadline = Some(grace);
                    }
                    _ => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            _ = immediate.as_mut(), if !draining && gentle_started => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            // An HTTP/2 response drew the close: GOAWAY, in-flight streams finish.
            _ = going_away.as_mut(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = grace, if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = &mut lifetime, if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = notified.as_mut() => {
                // Registered before reading the count, so no change is missed in between.
                notified.set(activity.notified());
                notified.as_mut().enable();
                let now = tokio::time::Instant::now();
                let is_idle = active.load(Ordering::Acquire) == 0;
                idle_deadline = idle.filter(|_| is_idle).map(|t| now + t);
                park_pending = is_idle && http1;
                let wake = match (park_pending, idle_deadline) {
                    (true, Some(d)) => Some(d.min(now + PARK_AFTER)),
                    (true, None) => Some(now + PARK_AFTER),
                    (false, d) => d,
                };
                idle_armed = wake.is_some();
                if let Some(at) = wake {
                    idle_sleep.as_mut().reset(at);
                }
            }
            () = idle_sleep.as_mut(), if idle_armed && !draining && !gentle_started => {
                idle_armed = false;
                let now = tokio::time::Instant::now();
                if park_pending && idle_deadline.is_none_or(|d| now < d) {
                    park_pending = false;
                    if active.load(Ordering::Acquire) == 0 {
                        conn.as_mut().get_mut().park();
                    }
                    if let Some(d) = idle_deadline {
                        idle_sleep.as_mut().reset(d);
                        idle_armed = true;
                    }
                    continue;
                }
                if active.load(Ordering::Acquire) == 0 {
                    stats.cx_idle_timeout.inc();
                    if flags.http2.load(Ordering::Relaxed) {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    } else {
                        // As Envoy: an idle HTTP/1 connection drains for `drain_timeout` before it
                        // closes; a request in that window is served with `Connection: close`.
                        flags.closing.start(std::time::Duration::ZERO);
                        gentle_deadline = Some(rt.cfg.drain_timeout);
                    }
                }
            }
        }
    }
    stats.cx_active.dec();
    stats.cx_destroy.inc();
}

/// Resolves when a drain closes a connection that has not sent its first bytes: at once, or at
/// the end of a gentle drain's grace time.
async fn drained_while_silent(drain: &drain::Watch) {
    drain.signaled().await;
    match drain.mode() {
        drain::Mode::Gentle(grace) | drain::Mode::Announce(grace) => {
            tokio::select! {
                () = tokio::time::sleep(grace) => {}
                () = drain.immediate() => {}
            }
        }
        _ => {}
    }
}

/// The `server` header a local reply carries, empty for none.
fn server_name(cfg: &crate::config::hcm::HcmConfig) -> &str {
    let mut h = hyper::HeaderMap::new();
    headers::set_server(&mut h, cfg);
    if h.contains_key(hyper::header::SERVER) {
        &cfg.server_name
    } else {
        ""
    }
}

/// Whether `req` has more headers than `max_headers_count`, counted as Envoy's codecs do: every
/// HTTP/1 header line; every h2 header field, pseudo-headers included.
fn too_many_headers<B>(req: &hyper::Request<B>, max: usize) -> bool {
    let pseudo = match req.version() {
        hyper::Version::HTTP_2 if req.method() == hyper::Method::CONNECT => 2,
        hyper::Version::HTTP_2 => 4,
        _ => 0,
    };
    req.headers().len() + pseudo > max
}

/// Envoy's answer to too many headers: a 431 that closes an HTTP/1 connection, a reset h2 stream.
fn refuse_too_many_headers<B>(
    req: &hyper::Request<B>,
    rt: &HttpRuntime,
) -> Result<hyper::Response<crate::http::body::BoxBody>, TooManyHeaders> {
    rt.stats.rq_total.inc();
    if req.version() == hyper::Version::HTTP_2 {
        return Err(TooManyHeaders);
    }
    let mut resp = local_reply::text_response(
        hyper::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "Request Header Fields Too Large".to_string(),
    );
    headers::prepare_response(resp.headers_mut(), &rt.cfg);
    resp.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    rt.stats.response(431);
    Ok(resp)
}

/// The service error that resets an h2 stream carrying too many headers.
#[derive(Debug, thiserror::Error)]
#[error("too many request headers")]
struct TooManyHeaders;
