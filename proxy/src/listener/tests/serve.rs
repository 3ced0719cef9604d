//! Binding and accepting on loopback: reuse-port sockets, IPv6, the connection limit, drain, stats.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::build_ok;
use crate::drain;
use crate::listener::{bind, serve, Accepted, ActiveListener, ListenerConfig};
use crate::stats::Store;

fn config(name: &str, address: &str, port: u16, extra: &str) -> ListenerConfig<String> {
    build_ok(&format!(
        "name: {name}\naddress: {{socket_address: {{address: '{address}', port_value: {port}}}}}\n\
         filter_chains: [{{name: chain0}}]\n{extra}"
    ))
}

fn counter(store: &Store, name: &str) -> i64 {
    store
        .snapshot()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| match s {
            crate::stats::Stat::Counter(c) => i64::try_from(c.get()).unwrap_or(i64::MAX),
            crate::stats::Stat::Gauge(g) => g.get(),
            crate::stats::Stat::Text(_) => 0,
        })
        .unwrap_or_else(|| panic!("no stat {name}"))
}

/// Whether the peer closed the connection without sending anything.
async fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(0)) => true,
        Ok(Err(e)) => e.kind() == ErrorKind::ConnectionReset,
        _ => false,
    }
}

/// Echoes one byte back so the client knows it reached a handler, then holds the connection until
/// the client closes it.
async fn echo_and_hold(mut a: Accepted<String>) {
    let mut buf = [0u8; 1];
    if a.stream.read_exact(&mut buf).await.is_ok() {
        let _ = a.stream.write_all(&buf).await;
        let _ = a.stream.read(&mut buf).await;
    }
}

async fn reaches_handler(s: &mut TcpStream) -> bool {
    if s.write_all(b"x").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(1))
    )
}

#[test]
fn reuse_port_gives_each_worker_a_socket_on_one_port() {
    let cfg = config("l0", "127.0.0.1", 0, "");
    let socks = bind(&cfg, 2).expect("bind");
    assert_eq!(socks.len(), 2);
    let port = socks[0].address.port();
    assert_ne!(port, 0);
    assert_eq!(socks[1].address.port(), port);
    assert_eq!(socks[1].listener.local_addr().expect("local").port(), port);
    assert_eq!((socks[0].worker, socks[1].worker), (0, 1));
    // A second reuse-port listener may join the same port (Envoy's listener update path)…
    let same = config("l0b", "127.0.0.1", port, "");
    let joined = bind(&same, 1).expect("reuse-port bind on a taken port");
    assert_eq!(joined.len(), 1);
    // …but one without reuse-port cannot, and the error says which listener and where.
    let exclusive = config("l1", "127.0.0.1", port, "enable_reuse_port: false");
    let err = bind(&exclusive, 1).expect_err("address in use");
    assert_eq!(err.kind(), ErrorKind::AddrInUse);
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("listener \"l1\" 127.0.0.1:{port}: ")),
        "{msg}"
    );
    assert!(
        msg.to_lowercase().contains("address already in use"),
        "{msg}"
    );
}

#[test]
fn without_reuse_port_workers_share_one_socket() {
    let cfg = config("l0", "127.0.0.1", 0, "enable_reuse_port: false");
    assert_eq!(bind(&cfg, 4).expect("bind").len(), 1);
    let unbound = config("l1", "127.0.0.1", 0, "bind_to_port: false");
    assert!(bind(&unbound, 4).expect("bind").is_empty());
}

#[tokio::test]
async fn ipv6_loopback_listener_accepts() {
    let cfg = config("v6", "::1", 0, "");
    let socks = match bind(&cfg, 1) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::AddrNotAvailable => {
            eprintln!("skipping: no IPv6 loopback here ({e})");
            return;
        }
        Err(e) => panic!("bind: {e}"),
    };
    let addr = socks[0].address;
    assert!(addr.is_ipv6());
    let store = Store::new();
    let active = ActiveListener::new(cfg, &store);
    let (signal, watch) = drain::channel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let std = socks.into_iter().next().expect("socket").listener;
    let listener = tokio::net::TcpListener::from_std(std).expect("tokio listener");
    tokio::spawn(serve(
        listener,
        active,
        move |a: Accepted<String>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((a.peer, a.local, a.chain().cloned(), a.stream.nodelay().ok()));
            }
        },
        watch,
    ));
    let _client = TcpStream::connect(addr).await.expect("connect");
    let (peer, local, chain, nodelay) = rx.recv().await.expect("accepted");
    assert!(peer.ip().is_loopback() && peer.is_ipv6());
    assert_eq!(local, addr);
    assert_eq!(chain.as_deref(), Some("chain0"));
    assert_eq!(nodelay, Some(true));
    assert_eq!(counter(&store, "listener.[__1]_0.downstream_cx_total"), 1);
    signal.drain();
}

/// Binds `cfg` on one socket and serves it with `echo_and_hold`.
fn start(
    cfg: ListenerConfig<String>,
    store: &Store,
) -> (
    std::net::SocketAddr,
    drain::Signal,
    tokio::task::JoinHandle<()>,
) {
    let socks = bind(&cfg, 1).expect("bind");
    let addr = socks[0].address;
    let std = socks.into_iter().next().expect("socket").listener;
    let listener = tokio::net::TcpListener::from_std(std).expect("tokio listener");
    let active = ActiveListener::new(cfg, store);
    let (signal, watch) = drain::channel();
    let task = tokio::spawn(serve(listener, active, echo_and_hold, watch));
    (addr, signal, task)
}

#[tokio::test]
async fn connection_limit_closes_the_connection_over_it() {
    let store = Store::new();
    let cfg = config("limited", "127.0.0.1", 0, "").with_runtime_connection_limit(
        &[(
            "envoy.resource_limits.listener.limited.connection_limit".to_string(),
            "2".to_string(),
        )]
        .into_iter()
        .collect(),
    );
    let (addr, signal, _task) = start(cfg, &store);
    let mut c1 = TcpStream::connect(addr).await.expect("c1");
    let mut c2 = TcpStream::connect(addr).await.expect("c2");
    assert!(reaches_handler(&mut c1).await);
    assert!(reaches_handler(&mut c2).await);
    let mut c3 = TcpStream::connect(addr)
        .await
        .expect("c3 connects at TCP level");
    assert!(
        closed_by_peer(&mut c3).await,
        "third connection must be closed"
    );
    let p = "listener.127.0.0.1_0.";
    assert_eq!(counter(&store, &format!("{p}downstream_cx_overflow")), 1);
    assert_eq!(counter(&store, &format!("{p}downstream_cx_active")), 2);
    // Closing one frees its slot.
    drop(c1);
    let mut c4 = None;
    for _ in 0..50 {
        let mut c = TcpStream::connect(addr).await.expect("c4");
        if reaches_handler(&mut c).await {
            c4 = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(c4.is_some(), "a freed slot admits a new connection");
    assert_eq!(counter(&store, &format!("{p}downstream_cx_total")), 3);
    assert_eq!(counter(&store, &format!("{p}downstream_cx_destroy")), 1);
    signal.drain();
}

#[tokio::test]
async fn connections_without_a_chain_are_closed_and_counted() {
    let store = Store::new();
    let cfg = build_ok(
        "name: picky\naddress: {socket_address: {address: 127.0.0.1, port_value: 0}}\n\
         filter_chains: [{name: only1, filter_chain_match: {destination_port: 1}}]",
    );
    let (addr, signal, _task) = start(cfg, &store);
    let mut c = TcpStream::connect(addr).await.expect("connect");
    assert!(closed_by_peer(&mut c).await);
    let p = "listener.127.0.0.1_0.";
    assert_eq!(counter(&store, &format!("{p}no_filter_chain_match")), 1);
    assert_eq!(counter(&store, &format!("{p}downstream_cx_total")), 0);
    signal.drain();
}

#[tokio::test]
async fn drain_stops_accepting_and_wait_idle_follows_the_connections() {
    let store = Store::new();
    let (addr, signal, task) = start(config("d", "127.0.0.1", 0, ""), &store);
    assert_eq!(
        counter(&store, "listener_manager.total_listeners_active"),
        1
    );
    let mut held = TcpStream::connect(addr).await.expect("connect");
    assert!(reaches_handler(&mut held).await);
    assert_eq!(signal.inflight(), 1);

    signal.drain();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("accept loop ends on drain")
        .expect("accept loop");
    // The listening socket is gone with the loop.
    assert!(TcpStream::connect(addr).await.is_err());
    // The listener itself is still referenced by the held connection.
    assert_eq!(
        counter(&store, "listener_manager.total_listeners_active"),
        1
    );

    // The held connection keeps the drain from completing…
    assert!(!signal.wait_idle(Duration::from_millis(100)).await);
    // …until it ends.
    drop(held);
    assert!(signal.wait_idle(Duration::from_secs(5)).await);
    // Its handler has returned, so nothing holds the listener any more.
    for _ in 0..50 {
        if counter(&store, "listener_manager.total_listeners_active") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        counter(&store, "listener_manager.total_listeners_active"),
        0
    );
    assert_eq!(
        counter(&store, "listener.127.0.0.1_0.downstream_cx_active"),
        0
    );
}

#[tokio::test]
async fn listeners_with_listener_filters_leave_the_choice_to_detect() {
    let store = Store::new();
    let cfg = build_ok(
        "name: sni\naddress: {socket_address: {address: 127.0.0.1, port_value: 0}}\n\
         listener_filters: [{name: envoy.filters.listener.tls_inspector}]\n\
         filter_chains:\n\
         - {name: a, filter_chain_match: {server_names: [a.example]}}\n\
         - {name: plain}",
    );
    let socks = bind(&cfg, 1).expect("bind");
    let addr = socks[0].address;
    let std = socks.into_iter().next().expect("socket").listener;
    let listener = tokio::net::TcpListener::from_std(std).expect("tokio listener");
    let active = ActiveListener::new(cfg, &store);
    let (signal, watch) = drain::channel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(serve(
        listener,
        active,
        move |mut a: Accepted<String>| {
            let tx = tx.clone();
            let mut release = release_rx.clone();
            async move {
                let before = a.chain.is_none();
                // What a tls_inspector would have found.
                let mut input = a.raw_match_input();
                input.server_name = Some("a.example");
                input.transport_protocol = "tls";
                a.select(&input);
                let _ = tx.send((before, a.chain().cloned()));
                let _ = release.wait_for(|r| *r).await;
            }
        },
        watch,
    ));
    let _c = TcpStream::connect(addr).await.expect("connect");
    let (was_pending, chain) = rx.recv().await.expect("accepted");
    assert!(was_pending);
    assert_eq!(chain.as_deref(), Some("a"));
    let p = "listener.127.0.0.1_0.";
    assert_eq!(counter(&store, &format!("{p}downstream_cx_active")), 1);
    assert_eq!(counter(&store, &format!("{p}downstream_pre_cx_active")), 0);
    release_tx.send_replace(true);
    signal.drain();
    assert!(signal.wait_idle(Duration::from_secs(5)).await);
    assert_eq!(counter(&store, &format!("{p}downstream_cx_destroy")), 1);
}

#[tokio::test]
async fn connection_ids_are_unique() {
    let store = Store::new();
    let cfg = config("ids", "127.0.0.1", 0, "");
    let socks = bind(&cfg, 1).expect("bind");
    let addr = socks[0].address;
    let std = socks.into_iter().next().expect("socket").listener;
    let listener = tokio::net::TcpListener::from_std(std).expect("tokio listener");
    let active: Arc<ActiveListener<String>> = ActiveListener::new(cfg, &store);
    let (signal, watch) = drain::channel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(serve(
        listener,
        active,
        move |a: Accepted<String>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(a.id);
            }
        },
        watch,
    ));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let _c = TcpStream::connect(addr).await.expect("connect");
        ids.push(rx.recv().await.expect("id"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 3);
    signal.drain();
}

#[tokio::test]
async fn ipv4_compat_listener_reports_ipv4_peers_as_ipv4() {
    let cfg = build_ok(
        "name: dual\naddress: {socket_address: {address: '::', port_value: 0, ipv4_compat: true}}\n\
         filter_chains: [{name: c}]",
    );
    let socks = match bind(&cfg, 1) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::AddrNotAvailable => {
            eprintln!("skipping: no IPv6 here ({e})");
            return;
        }
        Err(e) => panic!("bind: {e}"),
    };
    let port = socks[0].address.port();
    let std = socks.into_iter().next().expect("socket").listener;
    let listener = tokio::net::TcpListener::from_std(std).expect("tokio listener");
    let store = Store::new();
    let (signal, watch) = drain::channel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(serve(
        listener,
        ActiveListener::new(cfg, &store),
        move |a: Accepted<String>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((a.peer, a.local));
            }
        },
        watch,
    ));
    let _c = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("IPv4 connect");
    let (peer, local) = rx.recv().await.expect("accepted");
    assert_eq!(peer.ip().to_string(), "127.0.0.1");
    assert_eq!(local.to_string(), format!("127.0.0.1:{port}"));
    signal.drain();

    // Without ipv4_compat the socket is IPv6 only.
    let v6only = build_ok(
        "name: v6only\naddress: {socket_address: {address: '::', port_value: 0}}\nfilter_chains: [{name: c}]",
    );
    let socks = bind(&v6only, 1).expect("bind");
    let port = socks[0].address.port();
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
}
