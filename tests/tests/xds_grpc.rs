//! ADS from a scripted control plane: listeners, routes (RDS), clusters and endpoints (EDS) over
//! state-of-the-world and delta, TCP and Unix sockets. The same push sequence, valid and invalid,
//! drives remora and Envoy; both must ACK/NACK the same versions, route the same requests the
//! same way, keep the last good config when the control plane dies, and resume when it returns.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use remora_tests::admin;
use remora_tests::control_plane::{
    resource, ControlPlane, Outcome, CLUSTER, ENDPOINT, LISTENER, ROUTE,
};
use remora_tests::ports::{free_port, loopback};
use remora_tests::proxy::StartOptions;
use remora_tests::select::for_each_kind;
use remora_tests::tempdir::TempDir;
use remora_tests::xds::{bootstrap, eds_cluster, endpoints, rds_listener, static_cluster, Ads};
use remora_tests::{HttpBackend, Kind, Proxy};

const SETTLE: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    Tcp,
    Uds,
}

fn listener(port: u16, stat_prefix: &str) -> (String, Any) {
    rds_listener("main", port, stat_prefix, "routes")
}

/// A listener whose network filter no proxy knows.
fn bad_listener(port: u16) -> (String, Any) {
    resource::<Listener>(
        "main",
        &format!(
            r#"name: main
address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
filter_chains:
- filters:
  - name: envoy.filters.network.no_such_filter
    typed_config: {{ "@type": type.googleapis.com/google.protobuf.Struct, value: {{}} }}
"#
        ),
    )
}

fn routes(cluster: &str) -> (String, Any) {
    resource::<RouteConfiguration>(
        "routes",
        &format!(
            r#"name: routes
virtual_hosts:
- name: all
  domains: ["*"]
  routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: {cluster} }} }}]
"#
        ),
    )
}

async fn backend_of(port: u16) -> Option<String> {
    let r = remora_tests::client::get(loopback(port), "/").await.ok()?;
    r.echo().map(|e| e.backend)
}

async fn eventually_backend(kind: Kind, port: u16, want: &str, after: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let got = backend_of(port).await;
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "[{kind}] after {after}: GET / reaches {want} within {SETTLE:?} (last: {got:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stat(kind: Kind, admin_port: u16, name: &str) -> u64 {
    admin::stat(admin_port, name)
        .await
        .unwrap_or_else(|| panic!("[{kind}] stat {name} exists"))
}

struct World {
    _dir: TempDir,
    cp: ControlPlane,
    proxy: Proxy,
    port: u16,
    admin: u16,
    _a: HttpBackend,
    b: HttpBackend,
    c: HttpBackend,
}

async fn world(kind: Kind, transport: Transport, protocol: Ads) -> World {
    let dir = TempDir::new("xds-grpc");
    let cp = match transport {
        Transport::Tcp => ControlPlane::tcp().await,
        Transport::Uds => ControlPlane::uds(&dir.join("XDS")).await,
    };
    let (a, b, c) = (
        HttpBackend::start("a").await,
        HttpBackend::start("b").await,
        HttpBackend::start("c").await,
    );
    let port = free_port();
    cp.set(
        CLUSTER,
        vec![eds_cluster("a"), static_cluster("b", "127.0.0.1", b.port())],
    );
    cp.set(ENDPOINT, vec![endpoints("a", &[a.port()])]);
    cp.set(LISTENER, vec![listener(port, "main")]);
    cp.set(ROUTE, vec![routes("a")]);
    let admin = free_port();
    let opts = StartOptions {
        args: vec!["--drain-time-s".into(), "1".into()],
        ..StartOptions::default()
    };
    let proxy = Proxy::start_with(kind, &bootstrap(&cp, protocol, admin), opts).await;
    eventually_backend(kind, port, "a", "the initial push").await;
    World {
        _dir: dir,
        cp,
        proxy,
        port,
        admin,
        _a: a,
        b,
        c,
    }
}

impl World {
    async fn outcome(&self, kind: Kind, type_url: &str, version: u64) -> Outcome {
        let stderr = || self.proxy.stderr();
        self.cp
            .answer(kind, type_url, version, SETTLE, stderr)
            .await
    }
}

/// A short name for an outcome, for comparing the two proxies.
fn short(o: &Outcome) -> &'static str {
    match o {
        Outcome::Ack => "ACK",
        Outcome::Nack(_) => "NACK",
    }
}

/// The push script: each step's (what, how it was taken, where GET / went).
async fn script(kind: Kind, transport: Transport, protocol: Ads) -> Vec<String> {
    let w = world(kind, transport, protocol).await;
    let mut log = Vec::new();
    for t in [CLUSTER, ENDPOINT, LISTENER, ROUTE] {
        let o = w.outcome(kind, t, 1).await;
        log.push(format!("initial {t}: {}", short(&o)));
    }

    let v = w.cp.set(ROUTE, vec![routes("b")]);
    let o = w.outcome(kind, ROUTE, v).await;
    eventually_backend(kind, w.port, "b", "RDS to b").await;
    log.push(format!("RDS to b: {} -> b", short(&o)));

    let v = w.cp.set(ROUTE, vec![routes("a")]);
    let o = w.outcome(kind, ROUTE, v).await;
    eventually_backend(kind, w.port, "a", "RDS back to a").await;
    log.push(format!("RDS to a: {}", short(&o)));

    let v = w.cp.set(ENDPOINT, vec![endpoints("a", &[w.c.port()])]);
    let o = w.outcome(kind, ENDPOINT, v).await;
    eventually_backend(kind, w.port, "c", "EDS a -> c").await;
    log.push(format!("EDS a to c's port: {} -> c", short(&o)));

    let v = w.cp.set(LISTENER, vec![bad_listener(w.port)]);
    let o = w.outcome(kind, LISTENER, v).await;
    if let Outcome::Nack(msg) = &o {
        eprintln!("[{kind}] LDS NACK: {msg}");
        if kind == Kind::Remora {
            assert!(
                msg.contains("main") && msg.contains("no_such_filter"),
                "[{kind}] the NACK names the listener and the filter: {msg}"
            );
        }
    }
    let after = backend_of(w.port).await;
    log.push(format!(
        "bad listener: {} -> {}",
        short(&o),
        after.as_deref().unwrap_or("none")
    ));

    let v = w.cp.set(
        CLUSTER,
        vec![
            eds_cluster("a"),
            static_cluster("b", "not-an-ip", w.b.port()),
        ],
    );
    let o = w.outcome(kind, CLUSTER, v).await;
    if let Outcome::Nack(msg) = &o {
        eprintln!("[{kind}] CDS NACK: {msg}");
        if kind == Kind::Remora {
            assert!(
                msg.contains("b") && msg.contains("not-an-ip"),
                "[{kind}] the NACK names the cluster and the address: {msg}"
            );
        }
    }
    let after = backend_of(w.port).await;
    log.push(format!(
        "bad cluster: {} -> {}",
        short(&o),
        after.as_deref().unwrap_or("none")
    ));

    // The SotW client reports the last version it accepted.
    if protocol == Ads::Sotw {
        let last =
            w.cp.seen()
                .into_iter()
                .rfind(|s| s.type_url == CLUSTER)
                .map(|s| s.version_info);
        log.push(format!("CDS version_info after the NACK: {last:?}"));
    }

    // A good listener after the bad one: the new chains serve, the version is taken.
    let v = w.cp.set(LISTENER, vec![listener(w.port, "main2")]);
    let o = w.outcome(kind, LISTENER, v).await;
    eventually_backend(kind, w.port, "c", "a good listener again").await;
    log.push(format!("good listener: {}", short(&o)));

    // Removing a cluster the routes do not use.
    let v = w.cp.set(CLUSTER, vec![eds_cluster("a")]);
    let o = w.outcome(kind, CLUSTER, v).await;
    log.push(format!("remove b: {}", short(&o)));
    let deadline = Instant::now() + SETTLE;
    while admin::stat(w.admin, "cluster.b.upstream_cx_total")
        .await
        .is_some()
    {
        assert!(Instant::now() < deadline, "[{kind}] cluster b goes away");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for name in [
        "listener_manager.lds.update_success",
        "listener_manager.lds.update_rejected",
        "cluster_manager.cds.update_success",
        "cluster_manager.cds.update_rejected",
        "control_plane.connected_state",
    ] {
        log.push(format!("{name}: {}", stat(kind, w.admin, name).await));
    }
    log
}

/// One proxy's account of the script.
type KindLog = (Kind, Vec<String>);

async fn differential(transport: Transport, protocol: Ads) {
    let logs: Arc<Mutex<Vec<KindLog>>> = Arc::default();
    let sink = logs.clone();
    for_each_kind(move |kind| {
        let sink = sink.clone();
        async move {
            let log = script(kind, transport, protocol).await;
            sink.lock().expect("logs").push((kind, log));
        }
    })
    .await;
    let logs = logs.lock().expect("logs");
    for (kind, log) in logs.iter() {
        eprintln!(
            "--- {kind} ({transport:?}, {protocol:?})\n{}",
            log.join("\n")
        );
    }
    if let [(k1, l1), (k2, l2)] = &logs[..] {
        assert_eq!(l1, l2, "{k1} and {k2} took the pushes the same way");
    }
    let (_, remora) = logs
        .iter()
        .find(|(k, _)| *k == Kind::Remora)
        .expect("remora ran");
    for step in [
        "bad listener: NACK -> c",
        "bad cluster: NACK -> c",
        "good listener: ACK",
    ] {
        assert!(
            remora.iter().any(|l| l == step),
            "remora: {step}: {remora:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_over_tcp_matches_envoy() {
    differential(Transport::Tcp, Ads::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_over_uds_matches_envoy() {
    differential(Transport::Uds, Ads::Delta).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_over_uds_and_delta_over_tcp_route_pushes() {
    for (transport, protocol) in [(Transport::Uds, Ads::Sotw), (Transport::Tcp, Ads::Delta)] {
        for_each_kind(move |kind| async move {
            let w = world(kind, transport, protocol).await;
            let v = w.cp.set(ROUTE, vec![routes("b")]);
            assert_eq!(w.outcome(kind, ROUTE, v).await, Outcome::Ack);
            eventually_backend(
                kind,
                w.port,
                "b",
                &format!("{transport:?}/{protocol:?} RDS"),
            )
            .await;
        })
        .await;
    }
}

/// The control plane dies: the proxy keeps serving the last config, reports itself disconnected,
/// reconnects when it returns and takes new pushes (delta: telling what it already has).
async fn control_plane_restart(transport: Transport, protocol: Ads) {
    for_each_kind(move |kind| async move {
        let mut w = world(kind, transport, protocol).await;
        assert_eq!(
            stat(kind, w.admin, "control_plane.connected_state").await,
            1
        );
        let streams = w.cp.streams();
        w.cp.kill().await;
        let deadline = Instant::now() + SETTLE;
        while stat(kind, w.admin, "control_plane.connected_state").await != 0 {
            assert!(
                Instant::now() < deadline,
                "[{kind}] connected_state drops to 0"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..10 {
            assert_eq!(
                backend_of(w.port).await.as_deref(),
                Some("a"),
                "[{kind}] the last good config serves without a control plane"
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        w.cp.restart().await;
        let v = w.cp.set(ROUTE, vec![routes("b")]);
        eventually_backend(kind, w.port, "b", "the control plane's return").await;
        assert_eq!(w.outcome(kind, ROUTE, v).await, Outcome::Ack);
        assert!(w.cp.streams() > streams, "[{kind}] a new stream");
        let deadline = Instant::now() + SETTLE;
        while stat(kind, w.admin, "control_plane.connected_state").await != 1 {
            assert!(
                Instant::now() < deadline,
                "[{kind}] connected_state back to 1"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if protocol == Ads::Delta {
            let seen = w.cp.seen();
            let first_after = seen
                .iter()
                .find(|s| s.stream > streams && s.type_url == CLUSTER)
                .unwrap_or_else(|| panic!("[{kind}] a CDS request on the new stream: {seen:#?}"));
            let mut initial = first_after.initial.clone();
            initial.sort();
            assert_eq!(
                initial,
                ["a", "b"],
                "[{kind}] delta reconnect sends initial_resource_versions"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_restart_sotw_tcp() {
    control_plane_restart(Transport::Tcp, Ads::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_restart_delta_uds() {
    control_plane_restart(Transport::Uds, Ads::Delta).await;
}
