//! TCP proxy: connect to the cluster picked for the connection and pipe bytes both ways until either
//! side closes, the connection idles out, or its listener's drain time ends. Istio's TCP metadata
//! exchange (`exchange`) runs first with the downstream and then with the upstream when the chain
//! or the cluster has it.

mod exchange;
pub mod tunnel;

pub use exchange::TcpExchange;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::access_log::LogContext;
use crate::config::tcp_proxy::TcpProxyConfig;
use crate::drain;
use crate::filter_state::FilterState;
use crate::istio::TcpFacts;
use crate::stats::{Counter, Gauge, Store};
use crate::tls::Alpn;
use crate::upstream::{ClusterManager, ConnectContext};

const BUFFER: usize = 16 * 1024;

/// Stats under `tcp.<stat_prefix>.`, as Envoy names them.
#[derive(Debug, Clone)]
pub struct TcpStats {
    pub cx_total: Counter,
    pub cx_no_route: Counter,
    pub cx_rx_bytes: Counter,
    pub cx_tx_bytes: Counter,
    pub idle_timeout: Counter,
    pub max_duration_reached: Counter,
    pub upstream_flush_active: Gauge,
}

impl TcpStats {
    pub fn new(store: &Store, prefix: &str) -> Self {
        let s = store.scope(format!("tcp.{prefix}."));
        Self {
            cx_total: s.counter("downstream_cx_total"),
            cx_no_route: s.counter("downstream_cx_no_route"),
            cx_rx_bytes: s.counter("downstream_cx_rx_bytes_total"),
            cx_tx_bytes: s.counter("downstream_cx_tx_bytes_total"),
            idle_timeout: s.counter("idle_timeout"),
            max_duration_reached: s.counter("max_downstream_connection_duration"),
            upstream_flush_active: s.gauge("upstream_flush_active"),
        }
    }
}

/// The downstream connection a TCP proxy serves.
#[derive(Debug, Clone, Copy)]
pub struct Downstream<'a> {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub id: u64,
    /// The listener's TLS, when it terminated TLS.
    pub tls: Option<&'a crate::tls::TlsInfo>,
    pub filter_state: &'a FilterState,
    /// On an internal listener, its name.
    pub internal_listener: Option<&'a str>,
}

/// What every connection of one TCP proxy filter shares.
pub struct TcpRuntime {
    pub cfg: Arc<TcpProxyConfig>,
    pub clusters: Arc<ClusterManager>,
    pub stats: TcpStats,
    /// The `istio.stats` network filter, when the chain has it.
    pub istio: Option<crate::istio::TcpTelemetry>,
    /// Istio's TCP metadata exchange (the chain's filter, and the local node for clusters').
    pub exchange: TcpExchange,
}

/// Proxies one downstream connection (plain TCP, or TLS terminated by the listener).
///
/// Bytes carry on while the listener drains (it changed or went away over LDS); when its drain
/// time ends the proxy closes both sides, as Envoy does when it removes the old listener. The
/// process drain does not cut a connection short: the process exit ends it.
pub async fn serve<D>(mut down: D, conn: Downstream<'_>, rt: Arc<TcpRuntime>, drain: drain::Watch)
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let Downstream {
        peer,
        local,
        id,
        tls,
        filter_state,
        internal_listener,
    } = conn;
    let start = Instant::now();
    let start_time = SystemTime::now();
    rt.stats.cx_total.inc();
    // `envoy.tcp_proxy.cluster` in the connection's filter state overrides the configured target.
    let cluster_name = match filter_state.tcp_proxy_cluster() {
        Some(c) => c.to_string(),
        None => rt.cfg.target.pick().to_string(),
    };
    let mut flags = "";
    let mut upstream_host = None;
    let mut upstream_internal = None;
    let mut upstream_local = None;
    let (mut rx, mut tx) = (0u64, 0u64);
    let mut istio_labels = None;
    let from_down = rt.exchange.with_downstream(&mut down, tls).await;
    // Behind an HBONE terminator, the peer `connect_baggage` read from the CONNECT.
    let mut peer_meta = from_down
        .peer
        .or_else(|| filter_state.downstream_peer().cloned());
    match rt.clusters.get(&cluster_name) {
        None => {
            rt.stats.cx_no_route.inc();
            flags = "NC";
        }
        Some(cluster) => {
            let mut connected = None;
            let mut last_err = None;
            for _ in 0..rt.cfg.max_connect_attempts {
                match cluster
                    .connect_tcp(&ConnectContext {
                        original_dst: filter_state.original_dst_address().or(Some(local)),
                        filter_state: filter_state.clone(),
                        alpn: match rt.cfg.tunneling {
                            Some(_) if tunnel::wants_h2(&cluster) => Alpn::Http2,
                            Some(_) => Alpn::Http1,
                            None => Alpn::None,
                        },
                    })
                    .await
                {
                    Ok(pair) => {
                        connected = Some(pair);
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            match connected {
                Some(mut conn) => {
                    upstream_host = Some(conn.upstream);
                    upstream_internal = conn.internal.take();
                    upstream_local = conn.facts.local;
                    let alpn = conn.stream.alpn().map(<[u8]>::to_vec);
                    let opened: Option<Box<dyn tunnel::Io>> = match &rt.cfg.tunneling {
                        None => Some(Box::new(conn.stream)),
                        Some(t) => {
                            let addrs = tunnel::Addresses { peer, local };
                            match tunnel::originate(t, &cluster, conn.stream, addrs).await {
                                Ok(io) => Some(io),
                                Err(e) => {
                                    tracing::debug!(cluster = %cluster_name, error = %e, "tcp tunnel not established");
                                    flags = "UF";
                                    None
                                }
                            }
                        }
                    };
                    if let Some(mut up) = opened {
                        let from_up = rt
                            .exchange
                            .with_upstream(
                                &mut up,
                                cluster.spec().exchange.as_ref(),
                                alpn.as_deref(),
                            )
                            .await;
                        if matches!(
                            rt.istio.as_ref().map(|t| t.cfg.reporter),
                            Some(crate::istio::Reporter::ClientSidecar)
                        ) {
                            peer_meta = from_up.peer;
                        }
                        if let Some(t) = &rt.istio {
                            let facts = TcpFacts {
                                downstream_tls: tls,
                                upstream_tls: conn.facts.tls.as_deref(),
                                peer: peer_meta.as_ref(),
                            };
                            let labels = t.labels(&facts, &cluster_name, flags);
                            t.opened(&labels);
                            istio_labels = Some(labels);
                        }
                        // Bytes read while looking for a peer's exchange belong to the application.
                        let sent_up = forward(&from_down.leftover, &mut up).await;
                        let sent_down = forward(&from_up.leftover, &mut down).await;
                        if sent_up && sent_down {
                            let (r, t) = pipe(&mut down, &mut up, &rt, &drain).await;
                            rx = r;
                            tx = t;
                        }
                        rx += from_down.leftover.len() as u64;
                        tx += from_up.leftover.len() as u64;
                    }
                }
                None => {
                    if let Some(e) = last_err {
                        tracing::debug!(cluster = %cluster_name, error = %e, "tcp upstream connect failed");
                        flags = e.response_flag();
                        upstream_host = e.endpoint();
                    }
                }
            }
        }
    }
    rt.stats.cx_rx_bytes.add(rx);
    rt.stats.cx_tx_bytes.add(tx);
    if let Some(t) = &rt.istio {
        // A connection that never reached its upstream opens and closes here, with its flag.
        let labels = istio_labels.unwrap_or_else(|| {
            let facts = TcpFacts {
                downstream_tls: tls,
                peer: peer_meta.as_ref(),
                ..Default::default()
            };
            let labels = t.labels(&facts, &cluster_name, flags);
            t.opened(&labels);
            labels
        });
        t.closed(labels, tx, rx);
    }
    if !rt.cfg.access_logs.is_empty() {
        let ctx = LogContext {
            duration: Some(start.elapsed()),
            response_flags: flags,
            bytes_received: rx,
            bytes_sent: tx,
            upstream_host,
            upstream_cluster: Some(cluster_name.as_str()),
            downstream_remote_address: Some(peer),
            downstream_local_address: Some(local),
            downstream_direct_remote_address: Some(peer),
            connection_id: Some(id),
            filter_state: Some(filter_state),
            downstream_internal: internal_listener,
            upstream_internal: upstream_internal.as_deref(),
            upstream_local_address: upstream_local,
            ..LogContext::new(start_time)
        };
        rt.cfg.access_logs.log(&ctx);
    }
}

/// Writes `bytes` (nothing to do when empty); false when the other side is gone.
async fn forward<W: AsyncWrite + Unpin>(bytes: &[u8], w: &mut W) -> bool {
    bytes.is_empty() || w.write_all(bytes).await.is_ok()
}

/// Resolves when a gentle drain's grace time has passed (never for the process drain).
async fn drain_ended(drain: &drain::Watch) {
    drain.signaled().await;
    match drain.mode() {
        drain::Mode::Gentle(grace) => tokio::time::sleep(grace).await,
        drain::Mode::Announce(_) | drain::Mode::Now | drain::Mode::Running => {
            std::future::pending().await
        }
    }
}

/// Copies both ways; returns (bytes from downstream, bytes to downstream).
async fn pipe<D, U>(down: &mut D, up: &mut U, rt: &TcpRuntime, drain: &drain::Watch) -> (u64, u64)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut dr, mut dw) = tokio::io::split(down);
    let (mut ur, mut uw) = tokio::io::split(up);
    let mut b1 = vec![0u8; BUFFER];
    let mut b2 = vec![0u8; BUFFER];
    let (mut rx, mut tx) = (0u64, 0u64);
    let (mut down_eof, mut up_eof) = (false, false);
    let idle = rt.cfg.idle_timeout;
    let max = rt
        .cfg
        .max_downstream_connection_duration
        .map(|d| tokio::time::Instant::now() + d);
    let mut idle_at = idle.map(|d| tokio::time::Instant::now() + d);
    let drained = drain_ended(drain);
    tokio::pin!(drained);
    loop {
        if down_eof && up_eof {
            break;
        }
        let idle_sleep = async {
            match idle_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let max_sleep = async {
            match max {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = dr.read(&mut b1), if !down_eof => match r {
                Ok(0) | Err(_) => {
                    down_eof = true;
                    let _ = uw.shutdown().await;
                }
                Ok(n) => {
                    rx += n as u64;
                    if uw.write_all(&b1[..n]).await.is_err() {
                        break;
                    }
                }
            },
            r = ur.read(&mut b2), if !up_eof => match r {
                Ok(0) | Err(_) => {
                    up_eof = true;
                    let _ = dw.shutdown().await;
                }
                Ok(n) => {
                    tx += n as u64;
                    if dw.write_all(&b2[..n]).await.is_err() {
                        break;
                    }
                }
            },
            _ = idle_sleep => {
                rt.stats.idle_timeout.inc();
                return (rx, tx);
            }
            _ = max_sleep => {
                rt.stats.max_duration_reached.inc();
                break;
            }
            () = &mut drained => {
                tracing::debug!("listener drain time over; closing the tcp_proxy connection");
                break;
            }
        }
        idle_at = idle.map(|d| tokio::time::Instant::now() + d);
    }
    (rx, tx)
}
