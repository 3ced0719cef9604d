//! ADS from a scripted control plane: listeners, routes (RDS), clusters and endpoints (EDS) over
//! state-of-the-world and delta, TCP and Unix sockets. The same push sequence, valid and invalid,
//! drives remora and Envoy; both must ACK/NACK the same versions, route the same requests the
//! same way, keep the last good config when the control plane dies, and resume when it returns.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use remora_tests::admin;
use remora_tests::client::{Client, Protocol, Request};
use remora_tests::control_plane::{
    resource, ControlPlane, Outcome, CLUSTER, ENDPOINT, LISTENER, ROUTE,
};
use remora_tests::ports::{free_port, loopback};
use remora_tests::proxy::StartOptions;
use remora_tests::select::for_each_kind;
use remora_tests::tempdir::TempDir;
use remora_tests::{HttpBackend, Kind, Proxy};

const SETTLE: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    Tcp,
    Uds,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Protocol2 {
    Sotw,
    Delta,
}

fn bootstrap(cp: &ControlPlane, protocol: Protocol2, admin_port: u16) -> String {
    let api = match protocol {
        Protocol2::Sotw => "GRPC",
        Protocol2::Delta => "DELTA_GRPC",
    };
    let endpoint = cp.endpoint_yaml();
    format!(
        r#"node: {{ id: sidecar~127.0.0.1~app.default~default.svc.cluster.local, cluster: app.default }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }} }}
dynamic_resources:
  ads_config:
    api_type: {api}
    transport_api_version: V3
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds-grpc }} }}]
    set_node_on_first_message_only: true
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {endpoint} }} }}] }}]
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
"#
    )
}

fn listener(port: u16, stat_prefix: &str) -> (String, Any) {
    resource::<Listener>(
        "main",
        &format!(
            r#"name: main
address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: {stat_prefix}
      rds:
        route_config_name: routes
        config_source: {{ ads: {{}}, resource_api_version: V3 }}
      http_filters: [{{ name: envoy.filters.http.router, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}]
"#
        ),
    )
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

fn weighted_routes(a: u32, b: u32) -> (String, Any) {
    resource::<RouteConfiguration>(
        "routes",
        &format!(
            r#"name: routes
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {{ prefix: "/" }}
    route:
      weighted_clusters:
        clusters: [{{ name: a, weight: {a} }}, {{ name: b, weight: {b} }}]
"#
        ),
    )
}

fn eds_cluster(name: &str) -> (String, Any) {
    resource::<Cluster>(
        name,
        &format!(
            r#"name: {name}
type: EDS
connect_timeout: 1s
eds_cluster_config: {{ eds_config: {{ ads: {{}}, resource_api_version: V3 }} }}
"#
        ),
    )
}

fn static_cluster(name: &str, address: &str, port: u16) -> (String, Any) {
    resource::<Cluster>(
        name,
        &format!(
            r#"name: {name}
type: STATIC
connect_timeout: 1s
load_assignment:
  cluster_name: {name}
  endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: "{address}", port_value: {port} }} }} }} }}] }}]
"#
        ),
    )
}

fn endpoints(cluster: &str, ports: &[u16]) -> (String, Any) {
    let lb: Vec<String> = ports
        .iter()
        .map(|p| {
            format!("{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }} }} }}")
        })
        .collect();
    resource::<ClusterLoadAssignment>(
        cluster,
        &format!(
            "cluster_name: {cluster}\nendpoints: [{{ lb_endpoints: [{}] }}]\n",
            lb.join(", ")
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
    a: HttpBackend,
    b: HttpBackend,
    c: HttpBackend,
}

async fn world(kind: Kind, transport: Transport, protocol: Protocol2) -> World {
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
        a,
        b,
        c,
    }
}

impl World {
    async fn outcome(&self, kind: Kind, type_url: &str, version: u64) -> Outcome {
        self.cp
            .outcome(type_url, version, SETTLE)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "[{kind}] an answer to {type_url} version {version}: {:#?}\n{}",
                    self.cp.seen(),
                    self.proxy.stderr()
                )
            })
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
async fn script(kind: Kind, transport: Transport, protocol: Protocol2) -> Vec<String> {
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
    if protocol == Protocol2::Sotw {
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

async fn differential(transport: Transport, protocol: Protocol2) {
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
    differential(Transport::Tcp, Protocol2::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_over_uds_matches_envoy() {
    differential(Transport::Uds, Protocol2::Delta).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_over_uds_and_delta_over_tcp_route_pushes() {
    for (transport, protocol) in [
        (Transport::Uds, Protocol2::Sotw),
        (Transport::Tcp, Protocol2::Delta),
    ] {
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
async fn control_plane_restart(transport: Transport, protocol: Protocol2) {
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
        if protocol == Protocol2::Delta {
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
    control_plane_restart(Transport::Tcp, Protocol2::Sotw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_restart_delta_uds() {
    control_plane_restart(Transport::Uds, Protocol2::Delta).await;
}

/// 1000 pushes of route weights and endpoints while a client keeps sending requests: none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_under_load_fails_no_request() {
    for_each_kind(|kind| async move {
        let w = world(kind, Transport::Uds, Protocol2::Sotw).await;
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut loops = Vec::new();
        for _ in 0..2 {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let addr = loopback(w.port);
            loops.push(tokio::spawn(async move {
                let mut client = Client::new(addr, Protocol::Http1);
                while !stop.load(Ordering::Relaxed) {
                    match client.send(&Request::get("/")).await {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            failed
                                .lock()
                                .expect("f")
                                .push(format!("{} {}", r.status, r.text()))
                        }
                        Err(e) => failed.lock().expect("f").push(e.to_string()),
                    }
                }
            }));
        }
        let started = Instant::now();
        let ports = [w.a.port(), w.c.port()];
        let mut last = (0, 0);
        for i in 0..1000u32 {
            let (t, v) = if i % 2 == 0 {
                (
                    ROUTE,
                    w.cp.set(ROUTE, vec![weighted_routes(1 + i % 7, 1 + i % 5)]),
                )
            } else {
                let pick: Vec<u16> = if i % 3 == 0 {
                    ports.to_vec()
                } else {
                    vec![ports[(i as usize / 2) % 2]]
                };
                (ENDPOINT, w.cp.set(ENDPOINT, vec![endpoints("a", &pick)]))
            };
            last = if t == ROUTE { (v, last.1) } else { (last.0, v) };
            // Pace by the proxy's answers, as a control plane does with ACKs.
            if i % 10 == 9 {
                assert_eq!(
                    w.outcome(kind, t, v).await,
                    Outcome::Ack,
                    "[{kind}] push {i}"
                );
            }
        }
        assert_eq!(w.outcome(kind, ROUTE, last.0).await, Outcome::Ack);
        assert_eq!(w.outcome(kind, ENDPOINT, last.1).await, Outcome::Ack);
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        for l in loops {
            l.await.expect("join");
        }
        let failed = failed.lock().expect("f");
        let ok = ok.load(Ordering::Relaxed);
        eprintln!(
            "[{kind}] 1000 pushes in {took:?}; {ok} requests ok, {} failed",
            failed.len()
        );
        assert!(ok > 100, "[{kind}] the load ran: {ok}");
        assert!(
            failed.is_empty(),
            "[{kind}] no request failed: {:?}",
            &failed[..failed.len().min(10)]
        );
        let _ = &w.b;
    })
    .await;
}
