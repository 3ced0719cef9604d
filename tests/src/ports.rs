//! Port allocation: free loopback ports, never handed out twice by one test process.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};

/// One bit per port: set once the port was handed out.
static HANDED_OUT: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];

fn claim(port: u16) -> bool {
    let bit = 1u64 << (port % 64);
    HANDED_OUT[usize::from(port / 64)].fetch_or(bit, Ordering::Relaxed) & bit == 0
}

/// A loopback port that was free a moment ago (bind 127.0.0.1:0, read, close).
///
/// Parallel tests in the same binary never receive the same port; another process may still take
/// it in the window before the proxy binds, which the kernel makes unlikely by not reusing
/// ephemeral ports right away.
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        drop(l);
        if claim(port) {
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
