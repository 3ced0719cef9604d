//! Connect stage: one TCP connection to an endpoint, within `connect_timeout`, with its accounting.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

use super::ConnFacts;
use crate::config::istio::AlpnList;
use crate::filter_state::FilterState;
use crate::listener::internal::INTERNAL_ADDRESS;
use crate::stats::Counter;
use crate::tls::{Alpn, ClientStream};
use crate::upstream::circuit::ResourceGuard;
use crate::upstream::cluster::Shared;
use crate::upstream::config::internal_upstream::{MetadataSource, TUNNEL_NAMESPACE};
use crate::upstream::config::Keepalive;
use crate::upstream::endpoint::Host;
use crate::upstream::stats::{bump, down, up};
use crate::upstream::UpstreamError;

/// Held for as long as an upstream connection is open: closing it (dropping the guard) updates the
/// active gauges, counts the destroy and gives the `max_connections` slot back.
#[derive(Debug)]
pub struct ConnectionGuard {
    shared: Arc<Shared>,
    host: Arc<Host>,
    slot: Option<ResourceGuard>,
}

impl ConnectionGuard {
    fn new(shared: Arc<Shared>, host: Arc<Host>, slot: ResourceGuard) -> Self {
        shared.stats.upstream_cx_total.inc();
        shared.stats.upstream_cx_active.inc();
        bump(&host.stats.cx_total);
        up(&host.stats.cx_active);
        host.pool.open.fetch_add(1, Ordering::AcqRel);
        Self {
            shared,
            host,
            slot: Some(slot),
        }
    }

    /// Counters for bytes moved on this connection (`upstream_cx_rx_bytes_total`, `..._tx_...`).
    pub fn byte_counters(&self) -> (Counter, Counter) {
        (
            self.shared.stats.upstream_cx_rx_bytes_total.clone(),
            self.shared.stats.upstream_cx_tx_bytes_total.clone(),
        )
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.shared.stats.upstream_cx_active.dec();
        self.shared.stats.upstream_cx_destroy.inc();
        down(&self.host.stats.cx_active);
        self.host.pool.open.fetch_sub(1, Ordering::AcqRel);
        // Release before waking: woken waiters re-check the breaker at once.
        drop(self.slot.take());
        self.shared.slot_freed.notify_waiters();
    }
}

/// Opens a TCP connection to `host` (TCP_NODELAY, keepalive as configured), counting
/// `upstream_cx_*` on the cluster and the host.
pub(crate) async fn tcp(
    shared: &Arc<Shared>,
    host: &Arc<Host>,
    slot: ResourceGuard,
) -> Result<(TcpStream, SocketAddr, ConnectionGuard), UpstreamError> {
    let addr = host.address();
    let guard = ConnectionGuard::new(shared.clone(), host.clone(), slot);
    let timeout = shared.spec.connect_timeout;
    let fail = |source: io::Error| {
        shared.stats.upstream_cx_connect_fail.inc();
        bump(&host.stats.cx_connect_fail);
        UpstreamError::ConnectFailure {
            cluster: shared.spec.name.clone(),
            endpoint: addr,
            source,
        }
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(fail)?;
    socket.set_nodelay(true).map_err(fail)?;
    if let Some(source) = shared.spec.source_address {
        socket.bind(source).map_err(fail)?;
    }
    let stream = match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(fail(e)),
        Err(_) => {
            shared.stats.upstream_cx_connect_timeout.inc();
            shared.stats.upstream_cx_connect_fail.inc();
            bump(&host.stats.cx_connect_fail);
            return Err(UpstreamError::ConnectTimeout {
                cluster: shared.spec.name.clone(),
                endpoint: addr,
                timeout,
            });
        }
    };
    if let Some(k) = &shared.spec.keepalive {
        set_keepalive(&stream, k);
    }
    Ok((stream, addr, guard))
}

/// A connected stream, its endpoint, its `max_connections` slot and its facts (local address, TLS).
pub(crate) type Transport = (ClientStream, SocketAddr, ConnectionGuard, ConnFacts);

/// Opens a connection to `host` and, for a cluster with a TLS context, runs the handshake
/// (within `connect_timeout`, as Envoy counts a connection as connected only once TLS is up).
/// `alpn` is what to offer when the context configures no `alpn_protocols`; `alpn_override`
/// replaces either (`istio.alpn`).
pub(crate) async fn transport(
    shared: &Arc<Shared>,
    host: &Arc<Host>,
    slot: ResourceGuard,
    alpn: Alpn,
    alpn_override: Option<&AlpnList>,
    downstream_state: &FilterState,
) -> Result<Transport, UpstreamError> {
    if let Some(target) = &host.internal {
        let (stream, addr, guard) =
            internal(shared, host, slot, &target.listener, downstream_state)?;
        let local = Some(INTERNAL_ADDRESS);
        let Some(tls) = shared.spec.tls_for(&host.socket_labels) else {
            let facts = ConnFacts { local, tls: None };
            return Ok((ClientStream::Internal(stream), addr, guard, facts));
        };
        let overrides = crate::tls::client::Overrides {
            alpn: downstream_state
                .application_protocols()
                .or(alpn_override.map(|a| &a[..])),
            sni: downstream_state.upstream_server_name(),
        };
        return match tls
            .connect(
                stream,
                addr,
                &host.hostname,
                alpn,
                overrides,
                shared.spec.connect_timeout,
            )
            .await
        {
            Ok((s, info)) => Ok((
                ClientStream::InternalTls(Box::new(s)),
                addr,
                guard,
                ConnFacts {
                    local,
                    tls: Some(Arc::new(info)),
                },
            )),
            Err(source) => Err(tls_failed(shared, host, addr, source)),
        };
    }
    let (stream, addr, guard) = tcp(shared, host, slot).await?;
    // Read once per connection: every request it carries logs it.
    let local = stream.local_addr().ok();
    let Some(tls) = shared.spec.tls_for(&host.socket_labels) else {
        let facts = ConnFacts { local, tls: None };
        return Ok((ClientStream::Plain(stream), addr, guard, facts));
    };
    match tls
        .connect(
            stream,
            addr,
            &host.hostname,
            alpn,
            crate::tls::client::Overrides {
                alpn: downstream_state
                    .application_protocols()
                    .or(alpn_override.map(|a| &a[..])),
                sni: downstream_state.upstream_server_name(),
            },
            shared.spec.connect_timeout,
        )
        .await
    {
        Ok((s, info)) => Ok((
            ClientStream::Tls(Box::new(s)),
            addr,
            guard,
            ConnFacts {
                local,
                tls: Some(Arc::new(info)),
            },
        )),
        Err(source) => Err(tls_failed(shared, host, addr, source)),
    }
}

/// Connects to an internal listener in-process (TLS, if the cluster has it, runs over the pipe).
/// Over an `internal_upstream` transport socket the objects `downstream_state` shares with the
/// upstream go along.
fn internal(
    shared: &Arc<Shared>,
    host: &Arc<Host>,
    slot: ResourceGuard,
    listener: &str,
    downstream_state: &FilterState,
) -> Result<(tokio::io::DuplexStream, SocketAddr, ConnectionGuard), UpstreamError> {
    let addr = host.address();
    let guard = ConnectionGuard::new(shared.clone(), host.clone(), slot);
    let mut tunnel = None;
    let state = match &shared.spec.internal_upstream {
        Some(spec) => {
            if let Some(c) = &shared.internal_no_metadata {
                let missing_on_host = spec
                    .passthrough_metadata
                    .iter()
                    .filter(|(source, ns)| {
                        *source == MetadataSource::Host && !host.metadata_namespaces.contains(ns)
                    })
                    .count() as u64;
                c.add(spec.missing_cluster_metadata + missing_on_host);
            }
            // The host's entry wins over the cluster's, as Envoy merges them.
            let host_tunnel = spec
                .passthrough_metadata
                .iter()
                .any(|(source, ns)| *source == MetadataSource::Host && ns == TUNNEL_NAMESPACE)
                .then(|| host.tunnel.clone())
                .flatten();
            tunnel = host_tunnel.or_else(|| spec.cluster_tunnel.clone());
            downstream_state.for_upstream()
        }
        None => FilterState::default(),
    };
    match shared.internal.connect_with(listener, state, tunnel) {
        Ok(stream) => Ok((stream, addr, guard)),
        Err(source) => {
            shared.stats.upstream_cx_connect_fail.inc();
            bump(&host.stats.cx_connect_fail);
            Err(UpstreamError::ConnectFailure {
                cluster: shared.spec.name.clone(),
                endpoint: addr,
                source,
            })
        }
    }
}

fn set_keepalive(stream: &TcpStream, k: &Keepalive) {
    let mut ka = socket2::TcpKeepalive::new();
    if let Some(t) = k.time {
        ka = ka.with_time(t);
    }
    if let Some(i) = k.interval {
        ka = ka.with_interval(i);
    }
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    if let Some(p) = k.probes {
        ka = ka.with_retries(p);
    }
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "setting upstream TCP keepalive");
    }
}

pin_project! {
    /// A stream that adds the bytes it moves to the cluster's rx/tx counters.
    pub(crate) struct Counted<S> {
        #[pin]
        inner: S,
        rx: Counter,
        tx: Counter,
    }
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, shared: &Shared) -> Self {
        Self {
            inner,
            rx: shared.stats.upstream_cx_rx_bytes_total.clone(),
            tx: shared.stats.upstream_cx_tx_bytes_total.clone(),
        }
    }
}

impl<S: AsyncRead> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            this.rx.add(n as u64);
        }
        r
    }
}

impl<S: AsyncWrite> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.tx.add(*n as u64);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            this.tx.add(*n as u64);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// A failed upstream TLS handshake, counted as the connect failure Envoy counts it as.
fn tls_failed(
    shared: &Shared,
    host: &Host,
    addr: SocketAddr,
    source: crate::tls::ConnectError,
) -> UpstreamError {
    shared.stats.upstream_cx_connect_fail.inc();
    bump(&host.stats.cx_connect_fail);
    UpstreamError::Tls {
        cluster: shared.spec.name.clone(),
        endpoint: addr,
        source,
    }
}
