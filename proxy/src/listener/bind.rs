//! Accept, bind: open a listener's sockets with the options Envoy sets on them.
//!
//! Every socket gets `SO_REUSEADDR`. With `enable_reuse_port` (Envoy's default, honoured on Linux
//! only) each worker gets its own `SO_REUSEPORT` socket on the same address, so the kernel spreads
//! connections over workers; otherwise (or with `exact_balance`) one socket serves every worker.

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::address::ListenAddress;
use super::config::{ConnectionBalance, ListenerConfig, TcpKeepalive};
use super::error::BindError;

/// One bound, listening, non-blocking socket.
#[derive(Debug)]
pub struct Bound {
    /// The configured address with the kernel's port when the configuration said 0.
    pub address: SocketAddr,
    /// The worker this socket belongs to; a socket shared by all workers is worker 0.
    pub worker: usize,
    pub listener: TcpListener,
}

/// Whether reuse-port sockets are made on this platform: Envoy force-disables them for TCP elsewhere,
/// where the kernel does not balance between them.
const REUSE_PORT_BALANCES: bool = cfg!(target_os = "linux");

/// How many sockets each address gets.
pub fn sockets_per_address<C>(cfg: &ListenerConfig<C>, worker_count: usize) -> usize {
    if cfg.reuse_port
        && REUSE_PORT_BALANCES
        && cfg.connection_balance == ConnectionBalance::Kernel
        && worker_count > 1
    {
        worker_count
    } else {
        1
    }
}

/// Opens every socket of `cfg` for `worker_count` workers: for each address (`address`, then
/// `additional_addresses`), one socket per worker with reuse-port, else one. A listener with
/// `bind_to_port: false` gets none.
pub fn bind<C>(cfg: &ListenerConfig<C>, worker_count: usize) -> Result<Vec<Bound>, BindError> {
    if !cfg.bind_to_port {
        return Ok(Vec::new());
    }
    let per_address = sockets_per_address(cfg, worker_count);
    let mut out = Vec::with_capacity(per_address * (1 + cfg.additional_addresses.len()));
    for addr in cfg.addresses() {
        // With port 0 the first socket learns the kernel's port and the other workers join it.
        let mut target = addr;
        for worker in 0..per_address {
            let listener = bind_one(cfg, target)?;
            let err = |source| BindError {
                listener: cfg.name.clone(),
                address: target.address,
                step: "getsockname",
                source,
            };
            let local = listener.local_addr().map_err(err)?;
            target.address.set_port(local.port());
            out.push(Bound {
                address: target.address,
                worker,
                listener,
            });
        }
    }
    Ok(out)
}

fn bind_one<C>(cfg: &ListenerConfig<C>, addr: ListenAddress) -> Result<TcpListener, BindError> {
    let err = |step: &'static str| {
        let name = cfg.name.clone();
        move |source| BindError {
            listener: name,
            address: addr.address,
            step,
            source,
        }
    };
    let sa = addr.address;
    let socket = Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP))
        .map_err(err("socket"))?;
    socket
        .set_reuse_address(true)
        .map_err(err("SO_REUSEADDR"))?;
    if sa.is_ipv6() {
        socket
            .set_only_v6(!addr.ipv4_compat)
            .map_err(err("IPV6_V6ONLY"))?;
    }
    if cfg.reuse_port && REUSE_PORT_BALANCES {
        set_reuse_port(&socket).map_err(err("SO_REUSEPORT"))?;
    }
    if cfg.transparent {
        set_transparent(&socket, sa).map_err(err("IP_TRANSPARENT"))?;
    }
    if cfg.freebind {
        set_freebind(&socket, sa).map_err(err("IP_FREEBIND"))?;
    }
    if let Some(k) = &cfg.tcp_keepalive {
        // Accepted sockets inherit these from the listening socket.
        set_keepalive(&socket, k).map_err(err("TCP keepalive"))?;
    }
    socket.bind(&SockAddr::from(sa)).map_err(err("bind"))?;
    socket
        .listen(backlog(cfg.tcp_backlog_size))
        .map_err(err("listen"))?;
    socket.set_nonblocking(true).map_err(err("O_NONBLOCK"))?;
    Ok(socket.into())
}

/// Unset means the kernel's `net.core.somaxconn` on Linux (a negative backlog is clamped to it), and
/// 128 elsewhere, as in Envoy.
fn backlog(configured: Option<u32>) -> i32 {
    match configured {
        Some(n) => i32::try_from(n).unwrap_or(i32::MAX),
        None if cfg!(target_os = "linux") => -1,
        None => 128,
    }
}

#[cfg(target_os = "linux")]
fn set_reuse_port(socket: &Socket) -> std::io::Result<()> {
    socket.set_reuse_port(true)
}

#[cfg(not(target_os = "linux"))]
fn set_reuse_port(_socket: &Socket) -> std::io::Result<()> {
    Ok(())
}

#[cfg(target_os = "linux")]
fn set_transparent(socket: &Socket, sa: SocketAddr) -> std::io::Result<()> {
    if sa.is_ipv4() {
        socket.set_ip_transparent_v4(true)
    } else {
        socket.set_ip_transparent_v6(true)
    }
}

#[cfg(target_os = "linux")]
fn set_freebind(socket: &Socket, sa: SocketAddr) -> std::io::Result<()> {
    if sa.is_ipv4() {
        socket.set_freebind_v4(true)
    } else {
        socket.set_freebind_v6(true)
    }
}

#[cfg(not(target_os = "linux"))]
fn set_transparent(_socket: &Socket, _sa: SocketAddr) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "transparent sockets need Linux",
    ))
}

#[cfg(not(target_os = "linux"))]
fn set_freebind(_socket: &Socket, _sa: SocketAddr) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "freebind needs Linux",
    ))
}

fn set_keepalive(socket: &Socket, k: &TcpKeepalive) -> std::io::Result<()> {
    socket.set_keepalive(true)?;
    let mut params = socket2::TcpKeepalive::new();
    if let Some(t) = k.time {
        params = params.with_time(t);
    }
    #[cfg(target_os = "linux")]
    {
        if let Some(i) = k.interval {
            params = params.with_interval(i);
        }
        if let Some(p) = k.probes {
            params = params.with_retries(p);
        }
    }
    socket.set_tcp_keepalive(&params)
}
