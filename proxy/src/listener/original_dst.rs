//! Accept, `envoy.filters.listener.original_dst`: the destination a connection had before an
//! iptables `REDIRECT` sent it to this listener (`SO_ORIGINAL_DST`, IPv4 and IPv6).
//!
//! A connection that was not redirected (no NAT entry, or a TPROXY listener where the local address
//! already is the original destination) keeps its local address, as in Envoy.

use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

/// The original destination of `stream`, or `local` when it has none.
pub fn restore(stream: &TcpStream, local: SocketAddr) -> SocketAddr {
    original(stream, local).unwrap_or(local)
}

/// The original destination of `stream` (whose local address is `local`) when the kernel knows
/// one: Envoy's restored local address, which `use_original_dst` hands off.
pub fn original(stream: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    let sock = SockRef::from(stream);
    let original = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    };
    original
        .ok()
        .and_then(|a| a.as_socket())
        .map(super::accept::canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_that_was_not_redirected_keeps_its_local_address() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let _c = TcpStream::connect(addr).await.expect("connect");
        let (s, _) = l.accept().await.expect("accept");
        let local = s.local_addr().expect("local");
        assert_eq!(restore(&s, local), local);
    }
}
