//! File-based xDS (Envoy's dynamic-config-fs example): LDS and CDS from `path_config_source` files
//! replaced by atomic rename, on remora and on Envoy with the same files and the same requests.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use remora_tests::admin;
use remora_tests::client::{Client, Protocol, Request};
use remora_tests::ports::{free_port, loopback};
use remora_tests::proxy::StartOptions;
use remora_tests::select::for_each_kind;
use remora_tests::tempdir::TempDir;
use remora_tests::{HttpBackend, Kind, Proxy};

/// How long a file change may take to show (Envoy reacts to inotify, remora polls every 500 ms).
const SETTLE: Duration = Duration::from_secs(10);

fn bootstrap(dir: &Path, admin_port: u16) -> String {
    let d = dir.display();
    format!(
        r#"node: {{ id: node1, cluster: test }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }} }}
dynamic_resources:
  cds_config:
    resource_api_version: V3
    path_config_source: {{ path: {d}/cds/cds.yaml, watched_directory: {{ path: {d}/cds }} }}
  lds_config:
    resource_api_version: V3
    path_config_source: {{ path: {d}/lds/lds.yaml, watched_directory: {{ path: {d}/lds }} }}
"#
    )
}

fn cluster(name: &str, port: u16, connect_timeout: &str) -> String {
    format!(
        r#"- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: {name}
  connect_timeout: {connect_timeout}
  type: STATIC
  load_assignment:
    cluster_name: {name}
    endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}]
"#
    )
}

fn listener(name: &str, port: u16, cluster: &str) -> String {
    format!(
        r#"- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: {name}
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: {name}
        http_filters: [{{ name: envoy.filters.http.router, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}]
        route_config:
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: {cluster} }} }}]
"#
    )
}

/// Replaces `dir/<type>/<name>` atomically, as Envoy's example does with `mv`. Each type has its
/// own watched directory: Envoy reloads a file on any rename into its `watched_directory`.
fn publish(dir: &Path, name: &str, version: &str, resources: &[String]) {
    let sub = dir.join(name.trim_end_matches(".yaml"));
    std::fs::create_dir_all(&sub).expect("mkdir");
    let text = format!(
        "version_info: \"{version}\"\nresources:\n{}",
        resources.concat()
    );
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, sub.join(name)).expect("rename");
}

/// Which backend answers `GET /` on `port`, if any.
async fn backend_of(port: u16) -> Option<String> {
    let r = remora_tests::client::get(loopback(port), "/").await.ok()?;
    r.echo().map(|e| e.backend)
}

async fn eventually<F, Fut>(what: &str, kind: Kind, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + SETTLE;
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "[{kind}] {what} within {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Setup {
    dir: TempDir,
    proxy: Proxy,
    a: HttpBackend,
    b: HttpBackend,
    port: u16,
}

async fn start(kind: Kind, extra_listeners: &[String]) -> Setup {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let dir = TempDir::new("xds-file");
    let port = free_port();
    publish(
        dir.path(),
        "cds.yaml",
        "c1",
        &[cluster("a", a.port(), "1s"), cluster("b", b.port(), "1s")],
    );
    let mut listeners = vec![listener("main", port, "a")];
    listeners.extend(extra_listeners.iter().cloned());
    publish(dir.path(), "lds.yaml", "l1", &listeners);
    let opts = StartOptions {
        args: vec!["--drain-time-s".into(), "1".into()],
        ..StartOptions::default()
    };
    let proxy = Proxy::start_with(kind, &bootstrap(dir.path(), free_port()), opts).await;
    eventually("the file listener serves", kind, || async {
        backend_of(port).await.is_some()
    })
    .await;
    Setup {
        dir,
        proxy,
        a,
        b,
        port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lds_and_cds_files_route_and_follow_a_rename() {
    for_each_kind(|kind| async move {
        let s = start(kind, &[]).await;
        let adm = s.proxy.admin();
        assert_eq!(backend_of(s.port).await.as_deref(), Some("a"), "[{kind}]");
        assert_eq!(
            admin::stat(adm, "listener_manager.lds.update_success").await,
            Some(1),
            "[{kind}]"
        );
        assert_eq!(
            admin::stat(adm, "cluster_manager.cds.update_success").await,
            Some(1),
            "[{kind}]"
        );
        assert_eq!(
            admin::stat(adm, "listener_manager.total_listeners_active").await,
            Some(1),
            "[{kind}]"
        );
        assert_eq!(
            admin::stat(adm, "cluster_manager.active_clusters").await,
            Some(2),
            "[{kind}]"
        );

        publish(
            s.dir.path(),
            "lds.yaml",
            "l2",
            &[listener("main", s.port, "b")],
        );
        eventually("the route moves to b", kind, || async {
            backend_of(s.port).await.as_deref() == Some("b")
        })
        .await;
        assert_eq!(
            admin::stat(adm, "listener_manager.lds.update_success").await,
            Some(2),
            "[{kind}]"
        );
        let lm = admin::get(adm, "/stats?filter=listener_manager.listener_")
            .await
            .expect("stats")
            .text();
        // As Envoy counts a change of the filter chains only.
        for (name, value) in [
            ("listener_manager.listener_added", 1),
            ("listener_manager.listener_modified", 1),
            ("listener_manager.listener_in_place_updated", 1),
            ("listener_manager.listener_create_success", 2),
        ] {
            assert_eq!(
                admin::stat_in(&lm, name),
                Some(value),
                "[{kind}] {name}\n{lm}"
            );
        }
        let text = admin::get(adm, "/stats?filter=version_text")
            .await
            .expect("stats")
            .text();
        for line in [
            "cluster_manager.cds.version_text: \"c1\"",
            "listener_manager.lds.version_text: \"l2\"",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "[{kind}] {line} in\n{text}"
            );
        }

        let dump = admin::get(adm, "/config_dump")
            .await
            .expect("config_dump")
            .text();
        let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
        let listeners = dump["configs"]
            .as_array()
            .and_then(|c| {
                c.iter().find(|c| {
                    c["@type"] == "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"
                })
            })
            .expect("listeners dump");
        assert_eq!(listeners["version_info"], "l2", "[{kind}] {listeners}");
        assert_eq!(
            listeners["dynamic_listeners"][0]["name"], "main",
            "[{kind}]"
        );
        // Envoy 1.40 keeps the first version in `active_state` after an update that changes only
        // the filter chains; remora reports the version that last changed the listener.
        let active = &listeners["dynamic_listeners"][0]["active_state"];
        let expected = if kind == Kind::Envoy { "l1" } else { "l2" };
        assert_eq!(active["version_info"], expected, "[{kind}]");
        assert!(active["last_updated"].is_string(), "[{kind}]");
        let clusters = dump["configs"]
            .as_array()
            .and_then(|c| {
                c.iter()
                    .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.ClustersConfigDump")
            })
            .expect("clusters dump");
        assert_eq!(clusters["version_info"], "c1", "[{kind}]");
        assert_eq!(
            clusters["dynamic_active_clusters"].as_array().map(Vec::len),
            Some(2),
            "[{kind}] {clusters}"
        );
        drop(s.a);
        drop(s.b);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_rejected_and_the_good_config_keeps_serving() {
    for_each_kind(|kind| async move {
        let s = start(kind, &[]).await;
        let adm = s.proxy.admin();
        // A route to a cluster that does not exist: inline route configurations validate clusters.
        publish(
            s.dir.path(),
            "lds.yaml",
            "bad",
            &[listener("main", s.port, "nowhere")],
        );
        eventually("the listener update is rejected", kind, || async {
            admin::stat(adm, "listener_manager.lds.update_rejected").await == Some(1)
        })
        .await;
        // A STATIC cluster with a hostname.
        let bad =
            cluster("a", s.a.port(), "1s").replace("address: 127.0.0.1", "address: localhost");
        publish(
            s.dir.path(),
            "cds.yaml",
            "bad",
            &[bad, cluster("b", s.b.port(), "1s")],
        );
        eventually("the cluster update is rejected", kind, || async {
            admin::stat(adm, "cluster_manager.cds.update_rejected").await == Some(1)
        })
        .await;
        assert_eq!(
            backend_of(s.port).await.as_deref(),
            Some("a"),
            "[{kind}] the good config serves"
        );
        assert_eq!(
            admin::stat(adm, "listener_manager.lds.update_success").await,
            Some(1),
            "[{kind}]"
        );
        assert_eq!(
            admin::stat(adm, "cluster_manager.cds.update_success").await,
            Some(1),
            "[{kind}]"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_stops_accepting() {
    for_each_kind(|kind| async move {
        let other = free_port();
        let s = start(kind, &[listener("other", other, "b")]).await;
        eventually("the second listener serves", kind, || async {
            backend_of(other).await.as_deref() == Some("b")
        })
        .await;
        publish(
            s.dir.path(),
            "lds.yaml",
            "l2",
            &[listener("main", s.port, "a")],
        );
        eventually("the removed listener refuses connections", kind, || async {
            tokio::net::TcpStream::connect(loopback(other))
                .await
                .is_err()
        })
        .await;
        assert_eq!(backend_of(s.port).await.as_deref(), Some("a"), "[{kind}]");
        assert_eq!(
            admin::stat(s.proxy.admin(), "listener_manager.total_listeners_active").await,
            Some(1),
            "[{kind}]"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrelated_cluster_update_keeps_the_pooled_connection() {
    for_each_kind(|kind| async move {
        let s = start(kind, &[]).await;
        let adm = s.proxy.admin();
        let mut c = Client::new(loopback(s.port), Protocol::Http1);
        for _ in 0..3 {
            let r = c.send(&Request::get("/")).await.expect("request");
            assert_eq!(
                r.echo().map(|e| e.backend).as_deref(),
                Some("a"),
                "[{kind}]"
            );
        }
        let before = admin::stat(adm, "cluster.a.upstream_cx_total").await;
        assert_eq!(before, Some(1), "[{kind}] one pooled upstream connection");
        publish(
            s.dir.path(),
            "cds.yaml",
            "c2",
            &[
                cluster("a", s.a.port(), "1s"),
                cluster("b", s.b.port(), "2s"),
            ],
        );
        eventually("the cluster update applies", kind, || async {
            admin::stat(adm, "cluster_manager.cds.update_success").await == Some(2)
        })
        .await;
        let r = c.send(&Request::get("/")).await.expect("request");
        assert_eq!(
            r.echo().map(|e| e.backend).as_deref(),
            Some("a"),
            "[{kind}]"
        );
        assert_eq!(
            admin::stat(adm, "cluster.a.upstream_cx_total").await,
            before,
            "[{kind}] cluster a was untouched: no new upstream connection"
        );
        assert_eq!(s.a.connections(), 1, "[{kind}]");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_under_load_fail_no_request() {
    for_each_kind(|kind| async move {
        let s = start(kind, &[]).await;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let mut loops = Vec::new();
        for protocol in [Protocol::Http1, Protocol::Http1, Protocol::H2c] {
            let (stop, sent) = (stop.clone(), sent.clone());
            let addr = loopback(s.port);
            loops.push(tokio::spawn(async move {
                let mut c = Client::new(addr, protocol);
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match c.send(&Request::get("/")).await {
                        Ok(r) if r.status == 200 => {}
                        Ok(r) => failures.push(format!("{protocol:?}: status {}", r.status)),
                        Err(e) => failures.push(format!("{protocol:?}: {e:#}")),
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                (failures, c.connections)
            }));
        }
        for (i, to) in ["b", "a", "b", "a"].iter().enumerate() {
            let version = format!("l{}", i + 2);
            publish(
                s.dir.path(),
                "lds.yaml",
                &version,
                &[listener("main", s.port, to)],
            );
            let target = i as u64 + 2;
            eventually("the listener update applies", kind, || async {
                admin::stat(s.proxy.admin(), "listener_manager.lds.update_success").await
                    == Some(target)
            })
            .await;
            // Let the load run on the new version for a moment.
            tokio::time::sleep(Duration::from_millis(300)).await;
            // CDS too: change b only.
            let timeout = format!("{}s", i + 2);
            publish(
                s.dir.path(),
                "cds.yaml",
                &format!("c{}", i + 2),
                &[
                    cluster("a", s.a.port(), "1s"),
                    cluster("b", s.b.port(), &timeout),
                ],
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        let mut connections = 0;
        for l in loops {
            let (f, c) = l.await.expect("load loop");
            failures.extend(f);
            connections += c;
        }
        let sent = sent.load(Ordering::Relaxed);
        println!(
            "[{kind}] {sent} requests over {connections} connections, {} failed",
            failures.len()
        );
        assert!(sent > 100, "[{kind}] the load loop ran ({sent} requests)");
        // Envoy 1.40 closes idle kept-alive connections when it drains a replaced listener, so a
        // request racing the close fails now and then; remora answers `Connection: close` on the
        // next request instead and must not fail any.
        if kind == Kind::Remora {
            assert!(
                failures.is_empty(),
                "[{kind}] failed requests: {failures:?}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_cannot_bind_is_rejected_and_the_others_serve() {
    for_each_kind(|kind| async move {
        let s = start(kind, &[]).await;
        let adm = s.proxy.admin();
        // Held by someone else, without SO_REUSEPORT.
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = held.local_addr().expect("addr").port();
        let fresh = free_port();
        publish(
            s.dir.path(),
            "lds.yaml",
            "l2",
            &[
                listener("main", s.port, "a"),
                listener("taken", taken, "b"),
                listener("fresh", fresh, "b"),
            ],
        );
        eventually("the listener that binds serves", kind, || async {
            backend_of(fresh).await.as_deref() == Some("b")
        })
        .await;
        assert_eq!(backend_of(s.port).await.as_deref(), Some("a"), "[{kind}]");
        let stats = admin::get(adm, "/stats?filter=listener_manager")
            .await
            .expect("stats")
            .text();
        // Envoy 1.40 counts the same: the update is rejected, the two others are added.
        for (name, value) in [
            ("listener_manager.lds.update_rejected", 1),
            ("listener_manager.lds.update_success", 1),
            ("listener_manager.listener_added", 2),
            ("listener_manager.listener_create_failure", 1),
            ("listener_manager.total_listeners_active", 2),
        ] {
            assert_eq!(
                admin::stat_in(&stats, name),
                Some(value),
                "[{kind}] {name}\n{stats}"
            );
        }
        drop(held);
    })
    .await;
}

fn rds_listener(name: &str, port: u16, dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: {name}
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: {name}
        http_filters: [{{ name: envoy.filters.http.router, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}]
        rds:
          route_config_name: routes
          config_source:
            resource_api_version: V3
            path_config_source: {{ path: {d}/rds/rds.yaml, watched_directory: {{ path: {d}/rds }} }}
"#
    )
}

fn route_config(cluster: &str) -> String {
    format!(
        r#"- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: routes
  virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
    - {{ match: {{ prefix: "/missing" }}, route: {{ cluster: nowhere }} }}
    - {{ match: {{ prefix: "/" }}, route: {{ cluster: {cluster} }} }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rds_from_a_file_routes_and_follows_a_rename() {
    for_each_kind(|kind| async move {
        let s = start(kind, &[]).await;
        let rds_port = free_port();
        publish(s.dir.path(), "rds.yaml", "r1", &[route_config("a")]);
        publish(
            s.dir.path(),
            "lds.yaml",
            "l2",
            &[
                listener("main", s.port, "a"),
                rds_listener("rds", rds_port, s.dir.path()),
            ],
        );
        eventually("the RDS listener serves", kind, || async {
            backend_of(rds_port).await.as_deref() == Some("a")
        })
        .await;
        // RDS does not validate clusters by default: a route to a missing cluster is accepted and
        // answers 503 (NC) at request time.
        let r = remora_tests::client::get(loopback(rds_port), "/missing/x")
            .await
            .expect("response");
        assert_eq!(r.status, 503, "[{kind}]");

        publish(s.dir.path(), "rds.yaml", "r2", &[route_config("b")]);
        eventually("the route moves to b", kind, || async {
            backend_of(rds_port).await.as_deref() == Some("b")
        })
        .await;
        assert_eq!(
            backend_of(s.port).await.as_deref(),
            Some("a"),
            "[{kind}] the other listener is untouched"
        );
    })
    .await;
}

fn eds_cluster(name: &str, dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: {name}
  connect_timeout: 1s
  type: EDS
  eds_cluster_config:
    service_name: svc
    eds_config:
      resource_api_version: V3
      path_config_source: {{ path: {d}/eds/eds.yaml, watched_directory: {{ path: {d}/eds }} }}
"#
    )
}

fn assignment(endpoints: &[(u16, &str)]) -> String {
    let eps: String = endpoints
        .iter()
        .map(|(port, health)| {
            format!(
                "    - {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}, health_status: {health} }}\n"
            )
        })
        .collect();
    format!(
        "- \"@type\": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment\n  cluster_name: svc\n  endpoints:\n  - lb_endpoints:\n{eps}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eds_from_a_file_sets_the_endpoints_and_follows_a_rename() {
    for_each_kind(|kind| async move {
        let s = start(kind, &[]).await;
        let adm = s.proxy.admin();
        publish(
            s.dir.path(),
            "eds.yaml",
            "e1",
            &[assignment(&[(s.a.port(), "HEALTHY")])],
        );
        publish(
            s.dir.path(),
            "cds.yaml",
            "c2",
            &[
                cluster("a", s.a.port(), "1s"),
                cluster("b", s.b.port(), "1s"),
                eds_cluster("e", s.dir.path()),
            ],
        );
        eventually("the EDS cluster is active", kind, || async {
            admin::stat(adm, "cluster_manager.active_clusters").await == Some(3)
        })
        .await;
        publish(
            s.dir.path(),
            "lds.yaml",
            "l2",
            &[listener("main", s.port, "e")],
        );
        eventually("the listener routes to the EDS cluster", kind, || async {
            backend_of(s.port).await.as_deref() == Some("a")
        })
        .await;
        assert_eq!(
            admin::stat(adm, "cluster_manager.warming_clusters").await,
            Some(0),
            "[{kind}]"
        );

        // A draining endpoint takes no traffic.
        publish(
            s.dir.path(),
            "eds.yaml",
            "e2",
            &[assignment(&[
                (s.a.port(), "DRAINING"),
                (s.b.port(), "HEALTHY"),
            ])],
        );
        eventually("traffic moves to b", kind, || async {
            backend_of(s.port).await.as_deref() == Some("b")
        })
        .await;
        for _ in 0..10 {
            assert_eq!(backend_of(s.port).await.as_deref(), Some("b"), "[{kind}]");
        }
    })
    .await;
}
