//! What a listener or cluster update over ADS does to the connections already open, on remora and
//! on Envoy with the same pushes and `--drain-time-s 2`:
//! - a changed HTTP listener: new connections take the new filter chain at once; the old version's
//!   connections keep their chain, are told to go (`Connection: close`, GOAWAY) and are closed by
//!   the end of the drain time; an in-flight request finishes; an unchanged listener's connections
//!   and the clusters' pools are not touched;
//! - a changed or removed tcp_proxy listener: its connections keep flowing during the drain time,
//!   then the proxy closes them (and their upstream connections);
//! - a removed cluster: its in-flight request finishes, then its pooled connection closes; the other
//!   clusters keep their pools.

use std::time::{Duration, Instant};

use remora_tests::client::{Client, Protocol, Request};
use remora_tests::control_plane::{ControlPlane, Outcome, CLUSTER, LISTENER};
use remora_tests::ports::{free_port, loopback};
use remora_tests::proxy::StartOptions;
use remora_tests::select::for_each_kind;
use remora_tests::tempdir::TempDir;
use remora_tests::xds::{bootstrap, http_listener, static_cluster, tcp_listener, Ads};
use remora_tests::{HttpBackend, Kind, Proxy, TcpEcho};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SETTLE: Duration = Duration::from_secs(20);
/// `--drain-time-s`.
const DRAIN: Duration = Duration::from_secs(2);
/// How late past the drain time a close may come on a loaded machine.
const SLACK: Duration = Duration::from_millis(1500);

struct World {
    _dir: TempDir,
    cp: ControlPlane,
    proxy: Proxy,
    kind: Kind,
}

impl World {
    /// A proxy on `clusters` and `listeners` over ADS, once every listener accepts.
    async fn start(
        kind: Kind,
        clusters: Vec<(String, envoy_types::pb::google::protobuf::Any)>,
        listeners: Vec<(String, envoy_types::pb::google::protobuf::Any)>,
        ports: &[u16],
    ) -> World {
        let dir = TempDir::new("xds-drain");
        let cp = ControlPlane::uds(&dir.join("XDS")).await;
        cp.set(CLUSTER, clusters);
        cp.set(LISTENER, listeners);
        let opts = StartOptions {
            args: vec!["--drain-time-s".into(), DRAIN.as_secs().to_string()],
            ..StartOptions::default()
        };
        let proxy = Proxy::start_with(kind, &bootstrap(&cp, Ads::Sotw, free_port()), opts).await;
        let deadline = Instant::now() + SETTLE;
        for port in ports {
            while TcpStream::connect(loopback(*port)).await.is_err() {
                assert!(
                    Instant::now() < deadline,
                    "[{kind}] listener {port} accepts\n{}",
                    proxy.stderr()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        World {
            _dir: dir,
            cp,
            proxy,
            kind,
        }
    }

    /// Pushes `resources` as the whole of `type_url` and waits for the ACK.
    async fn push(
        &self,
        type_url: &str,
        resources: Vec<(String, envoy_types::pb::google::protobuf::Any)>,
    ) {
        let v = self.cp.set(type_url, resources);
        let o = self.cp.outcome(type_url, v, SETTLE).await;
        assert_eq!(
            o,
            Some(Outcome::Ack),
            "[{}] {type_url} v{v} taken\n{}",
            self.kind,
            self.proxy.stderr()
        );
    }
}

/// Which backend answered `GET path`, and whether the response said `Connection: close`.
async fn hit(c: &mut Client, path: &str) -> (String, bool) {
    let r = c
        .send(&Request::get(path))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    let close = r
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    (r.echo().map(|e| e.backend).unwrap_or_default(), close)
}

/// How long until the peer closes `s` (EOF or reset), reading and dropping anything it sends;
/// `None` when it is still open after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout_at((start + limit).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Whether bytes still go through a tcp_proxy connection to an echo backend.
async fn echoes(s: &mut TcpStream) -> bool {
    if s.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"ping"
    )
}

async fn until<F, Fut>(kind: Kind, what: &str, limit: Duration, f: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "[{kind}] {what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_http_listener_drains_its_connections() {
    for_each_kind(|kind| async move {
        let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
        let (web, other) = (free_port(), free_port());
        let clusters = vec![
            static_cluster("a", "127.0.0.1", a.port()),
            static_cluster("b", "127.0.0.1", b.port()),
        ];
        let w = World::start(
            kind,
            clusters,
            vec![
                http_listener("web", web, "web", "a"),
                http_listener("other", other, "other", "a"),
            ],
            &[web, other],
        )
        .await;
        let mut h1 = Client::new(loopback(web), Protocol::Http1);
        let mut h2 = Client::new(loopback(web), Protocol::H2c);
        let mut kept = Client::new(loopback(other), Protocol::Http1);
        for c in [&mut h1, &mut h2, &mut kept] {
            assert_eq!(hit(c, "/").await.0, "a", "[{kind}]");
        }
        let mut idle = TcpStream::connect(loopback(web)).await.expect("connect");
        let asked = a.requests();
        let slow = tokio::spawn(async move {
            let mut c = Client::new(loopback(web), Protocol::Http1);
            let r = c.send(&Request::get("/delay/1500")).await;
            r.map(|r| (r.status, r.echo().map(|e| e.backend)))
        });
        until(kind, "the slow request reaches a", SETTLE, || async {
            a.requests() > asked
        })
        .await;
        // The slow request holds one pooled connection; the others share a second one.
        assert_eq!(hit(&mut kept, "/").await.0, "a", "[{kind}]");
        // Connections to a that have closed; the pool being kept means none closes. (Counting
        // connections opened would not do: a request that starts before the previous one's connection
        // is back in the pool rightly opens one more.)
        let a_closed = a.connections() - a.open();

        let pushed = Instant::now();
        w.push(
            LISTENER,
            vec![
                http_listener("web", web, "web2", "b"),
                http_listener("other", other, "other", "a"),
            ],
        )
        .await;
        until(kind, "a new connection reaches b", SETTLE, || async {
            remora_tests::client::get(loopback(web), "/")
                .await
                .ok()
                .and_then(|r| r.echo())
                .is_some_and(|e| e.backend == "b")
        })
        .await;

        // The old connections keep the old chain until they are told to go, then reconnect.
        let mut h1_log = Vec::new();
        let mut h2_log = Vec::new();
        while pushed.elapsed() < DRAIN + SLACK && (h1.connections < 2 || h2.connections < 2) {
            let (to, close) = hit(&mut h1, "/").await;
            h1_log.push(format!(
                "{:?} {to}{}",
                pushed.elapsed(),
                if close { " close" } else { "" }
            ));
            let (to, _) = hit(&mut h2, "/").await;
            h2_log.push(format!(
                "{:?} {to} conn {}",
                pushed.elapsed(),
                h2.connections
            ));
            let (to, close) = hit(&mut kept, "/").await;
            assert!(
                to == "a" && !close,
                "[{kind}] the unchanged listener's connection is untouched"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("[{kind}] h1 on the old chain: {h1_log:#?}\n[{kind}] h2: {h2_log:#?}");
        assert!(
            h1_log[0].contains(" a"),
            "[{kind}] the kept-alive HTTP/1 connection keeps the old chain: {h1_log:?}"
        );
        assert!(
            h2_log[0].contains(" a "),
            "[{kind}] the HTTP/2 connection keeps the old chain: {h2_log:?}"
        );
        assert_eq!(
            h1.connections, 2,
            "[{kind}] HTTP/1 was told to close by the drain's end: {h1_log:?}"
        );
        assert_eq!(
            h2.connections, 2,
            "[{kind}] HTTP/2 got a GOAWAY by the drain's end: {h2_log:?}"
        );
        assert_eq!(hit(&mut h1, "/").await.0, "b", "[{kind}]");
        assert_eq!(hit(&mut h2, "/").await.0, "b", "[{kind}]");

        let slow = slow.await.expect("join").expect("the in-flight request");
        assert_eq!(
            slow,
            (200, Some("a".to_string())),
            "[{kind}] the in-flight request finished on the old chain"
        );
        let idle_closed = closed_within(&mut idle, DRAIN + SLACK).await;
        eprintln!(
            "[{kind}] an idle old connection closed after {:?} (from the push: {:?})",
            idle_closed,
            pushed.elapsed()
        );
        assert!(
            idle_closed.is_some(),
            "[{kind}] an idle connection of the old listener is closed by the drain's end"
        );
        assert_eq!(
            kept.connections, 1,
            "[{kind}] the unchanged listener's connection stayed"
        );
        assert_eq!(
            a.connections() - a.open(),
            a_closed,
            "[{kind}] cluster a's pool was kept: no connection to a closed"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_connections_close_at_the_end_of_the_drain() {
    for_each_kind(|kind| async move {
        let (x, y) = (TcpEcho::start().await, TcpEcho::start().await);
        let (changed, removed) = (free_port(), free_port());
        let clusters = vec![
            static_cluster("x", "127.0.0.1", x.port()),
            static_cluster("y", "127.0.0.1", y.port()),
        ];
        let w = World::start(
            kind,
            clusters,
            vec![
                tcp_listener("changed", changed, "x"),
                tcp_listener("removed", removed, "x"),
            ],
            &[changed, removed],
        )
        .await;
        let mut c1 = TcpStream::connect(loopback(changed)).await.expect("connect");
        let mut c2 = TcpStream::connect(loopback(removed)).await.expect("connect");
        assert!(echoes(&mut c1).await && echoes(&mut c2).await, "[{kind}]");
        // The readiness probes' upstream connections close soon after them.
        until(kind, "two upstream connections", SETTLE, || async { x.open() == 2 }).await;

        let pushed = Instant::now();
        w.push(LISTENER, vec![tcp_listener("changed", changed, "y")]).await;
        until(kind, "a new connection reaches y", SETTLE, || async {
            let before = y.connections();
            match TcpStream::connect(loopback(changed)).await {
                Ok(mut s) => echoes(&mut s).await && y.connections() > before,
                Err(_) => false,
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let during = (echoes(&mut c1).await, echoes(&mut c2).await);
        let at = pushed.elapsed();
        let (closed1, closed2) = tokio::join!(
            closed_within(&mut c1, DRAIN + SLACK),
            closed_within(&mut c2, DRAIN + SLACK)
        );
        let (closed1, closed2) = (closed1.map(|d| d + at), closed2.map(|d| d + at));
        eprintln!("[{kind}] during the drain (at {at:?}) both flow: {during:?}; closed after the push: {closed1:?} {closed2:?}");
        assert_eq!(during, (true, true), "[{kind}] old connections flow during the drain");
        for (what, closed) in [("changed", closed1), ("removed", closed2)] {
            let closed = closed.unwrap_or_else(|| panic!("[{kind}] the {what} listener's connection is closed by the drain's end"));
            assert!(closed >= DRAIN - Duration::from_millis(300), "[{kind}] the {what} listener's connection lived through the drain time: {closed:?}");
        }
        until(kind, "the upstream connections close", SLACK, || async { x.open() == 0 }).await;
        let refused = TcpStream::connect(loopback(removed)).await.is_err();
        eprintln!("[{kind}] the removed listener refuses connections: {refused}");
        assert!(refused, "[{kind}] the removed listener no longer accepts");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_cluster_finishes_its_request_then_closes_its_pool() {
    for_each_kind(|kind| async move {
        let (keep, gone) = (HttpBackend::start("keep").await, HttpBackend::start("gone").await);
        let (kp, gp) = (free_port(), free_port());
        let w = World::start(
            kind,
            vec![
                static_cluster("keep", "127.0.0.1", keep.port()),
                static_cluster("gone", "127.0.0.1", gone.port()),
            ],
            vec![
                http_listener("keep", kp, "keep", "keep"),
                http_listener("gone", gp, "gone", "gone"),
            ],
            &[kp, gp],
        )
        .await;
        let mut k = Client::new(loopback(kp), Protocol::Http1);
        assert_eq!(hit(&mut k, "/").await.0, "keep", "[{kind}]");
        let pooled = keep.connections();
        let slow = tokio::spawn(async move {
            let mut c = Client::new(loopback(gp), Protocol::Http1);
            let r = c.send(&Request::get("/delay/1500")).await;
            r.map(|r| (r.status, r.echo().map(|e| e.backend)))
        });
        until(kind, "the slow request reaches its backend", SETTLE, || async { gone.requests() == 1 }).await;

        w.push(CLUSTER, vec![static_cluster("keep", "127.0.0.1", keep.port())]).await;
        let after_push = remora_tests::client::get(loopback(gp), "/").await.map(|r| r.status).ok();
        let slow = slow.await.expect("join").expect("the in-flight request");
        assert_eq!(slow, (200, Some("gone".to_string())), "[{kind}] the in-flight request finished");
        let closed = until(kind, "the removed cluster's connection closes", SLACK, || async { gone.open() == 0 }).await;
        eprintln!("[{kind}] new request to the removed cluster: {after_push:?}; its pool closed {closed:?} after the response");
        assert_eq!(after_push, Some(503), "[{kind}] a new request finds no cluster");
        assert_eq!(hit(&mut k, "/").await.0, "keep", "[{kind}]");
        assert_eq!(keep.connections(), pooled, "[{kind}] the unchanged cluster kept its pooled connection");
    })
    .await;
}
