//! Port allocation: free loopback ports, never handed out twice by one test process.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};

/// One bit per port: set once the port was handed out.
static HANDED_OUT: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];

fn claim(port: u16) -> bool {
    let bit = 1u64 << (port % 64);
    HANDED_OUT[usize::from(port / 64)].fetch_or(bit, Ordering::Relaxed) & bit == 0
}

/// Ports are taken below the kernel's ephemeral range (32768–60999 by default), so that no client
/// socket opened meanwhile by this or another process can take a port before the proxy binds it.
const FIRST: u16 = 20_000;
const LAST: u16 = 32_000;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A loopback port that is free now and never handed out twice by one test process.
///
/// Each process starts at an offset derived from its pid, so concurrent test processes (nextest)
/// walk different stretches of the range.
pub fn free_port() -> u16 {
    let span = u64::from(LAST - FIRST);
    let start = u64::from(std::process::id()).wrapping_mul(2_654_435_761) % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + ((start + n) % span) as u16;
        if !claim(port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A port with nothing listening on it: connections are refused.
pub fn dead_port() -> u16 {
    free_port()
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The host's first non-loopback IPv4 address: what Envoy appends to `x-forwarded-for` (with
/// `use_remote_address`) when the peer is a loopback address.
pub fn local_ipv4() -> Option<std::net::Ipv4Addr> {
    static IP: std::sync::OnceLock<Option<std::net::Ipv4Addr>> = std::sync::OnceLock::new();
    *IP.get_or_init(|| {
        let out = std::process::Command::new("hostname")
            .arg("-I")
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|t| t.parse::<std::net::Ipv4Addr>().ok())
            .find(|ip| !ip.is_loopback())
    })
}
