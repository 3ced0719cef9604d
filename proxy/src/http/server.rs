//! Serve: one downstream HTTP connection (HTTP/1.1, h2c prior knowledge, or either), its timeouts and
//! its drain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use super::proxy::{self, Downstream, HttpRuntime};
use super::{codec, headers, local_reply};
use crate::config::hcm::Codec;
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

fn builder(rt: &HttpRuntime, info: &ConnInfo) -> auto::Builder<TokioExecutor> {
    let cfg = &rt.cfg;
    let mut b = auto::Builder::new(TokioExecutor::new());
    // With TLS, the negotiated ALPN protocol picks the codec of an AUTO connection manager.
    let alpn = info.tls.as_ref().and_then(|t| t.alpn.as_deref());
    let codec = match (cfg.codec, alpn) {
        (Codec::Auto, Some(b"h2")) => Codec::Http2,
        (Codec::Auto, Some(b"http/1.1" | b"http/1.0")) => Codec::Http1,
        (c, _) => c,
    };
    b = match codec {
        Codec::Http1 => b.http1_only(),
        Codec::Http2 => b.http2_only(),
        Codec::Auto => b,
    };
    b.http1()
        .timer(TokioTimer::new())
        // Above the limit, so that `too_many_headers` answers as Envoy does rather than hyper.
        .max_headers(cfg.max_headers_count.saturating_add(100))
        .max_buf_size((cfg.max_request_headers_kb as usize * 1024).max(8192))
        .header_read_timeout(cfg.request_headers_timeout)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(cfg.max_request_headers_kb * 1024)
        .max_concurrent_streams(2_147_483_647u32)
        .enable_connect_protocol();
    b
}

/// A timer that never fires (thirty years), for a connection without an idle timeout.
const NEVER: Duration = Duration::from_secs(86400 * 365 * 30);

/// Serves one connection until the peer closes it, it idles out, or a drain closes it gracefully.
pub async fn serve<I>(io: I, info: ConnInfo, rt: Arc<HttpRuntime>, drain: drain::Watch)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stats = rt.stats.clone();
    stats.cx_total.inc();
    stats.cx_active.inc();
    // The idle timeout bounds the wait for a silent peer's first bytes.
    let admit = codec::admit(io, rt.cfg.codec, server_name(&rt.cfg));
    let admitted = match rt.cfg.idle_timeout {
        Some(t) => tokio::time::timeout(t, admit).await.unwrap_or(Ok(None)),
        None => admit.await,
    };
    let Ok(Some(io)) = admitted else {
        tracing::debug!(codec = ?rt.cfg.codec, "connection refused by the codec");
        stats.cx_active.dec();
        stats.cx_destroy.inc();
        return;
    };
    let builder = builder(&rt, &info);
    let active = Arc::new(AtomicUsize::new(0));
    let activity = Arc::new(tokio::sync::Notify::new());
    let down = Arc::new(Downstream {
        info,
        active: active.clone(),
        activity: activity.clone(),
        counted_protocol: Default::default(),
        closing: Default::default(),
        http2: Default::default(),
    });
    let flags = down.clone();
    let svc_rt = rt.clone();
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let rt = svc_rt.clone();
        let down = down.clone();
        async move {
            if too_many_headers(&req, rt.cfg.max_headers_count) {
                return refuse_too_many_headers(&req, &rt);
            }
            // Boxed per request: hyper keeps the slot for this future for the connection's life,
            // and an idle keep-alive connection should not hold a request's worth of state.
            Ok(Box::pin(proxy::handle(req, rt, down)).await)
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
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
    // The idle timer runs while no request is active; every change of activity re-arms it.
    let idle_sleep = tokio::time::sleep(idle.unwrap_or(NEVER));
    tokio::pin!(idle_sleep);
    let mut idle_armed = idle.is_some();
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
                idle_armed = match idle {
                    Some(t) if active.load(Ordering::Acquire) == 0 => {
                        idle_sleep.as_mut().reset(tokio::time::Instant::now() + t);
                        true
                    }
                    _ => false,
                };
            }
            () = idle_sleep.as_mut(), if idle_armed && !draining && !gentle_started => {
                idle_armed = false;
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
