//! Internal listeners end to end, on Envoy and remora with one bootstrap: outer TCP listeners whose
//! tcp_proxy reaches the internal listener `inner` through a cluster with an
//! `envoy_internal_address` endpoint and the internal_upstream transport socket, and `inner`'s
//! tcp_proxy reaching a TCP echo backend. Filter state set on an outer connection and shared with
//! the upstream picks the inner tcp_proxy's cluster (configs/internal/tcp.yaml).

use std::time::Duration;

use remora_tests::access_log::wait_for_lines;
use remora_tests::admin;
use remora_tests::client::{Client, Protocol, Request};
use remora_tests::proxy::StartOptions;
use remora_tests::select::for_each_kind;
use remora_tests::stack::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `msg` through `addr` and reads the echo back, then closes.
async fn echo(addr: std::net::SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(msg).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap_or_else(|e| panic!("echo through {addr}: {e}"));
    conn.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
    back
}

/// A counter once it reaches `want` (connections close asynchronously), or its last value.
async fn counter(port: u16, name: &str, want: u64) -> u64 {
    let mut last = 0;
    for _ in 0..100 {
        last = admin::stat(port, name).await.unwrap_or(0);
        if last >= want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

fn tcp_port(s: &Stack, name: &str) -> usize {
    s.env
        .tcp
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, e)| e.connections())
        .unwrap_or_else(|| panic!("no tcp_{name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outer_listeners_reach_the_internal_listener_and_filter_state_picks_its_cluster() {
    for_each_kind(|kind| async move {
        let opts = StartOptions {
            args: vec!["--file-flush-interval-msec".into(), "100".into()],
            ..StartOptions::default()
        };
        let s = Stack::start_with(kind, "internal/tcp.yaml", opts).await;
        let admin_port = s.admin();
        // The readiness probes opened (and closed) one connection per outer listener: count from
        // where they left things.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let outer_cx = format!("listener.127.0.0.1_{}.downstream_cx_total", s.addr().port());
        let names = [
            "listener.envoy_internal_inner.downstream_cx_total",
            "cluster.to_inner.upstream_cx_total",
            "cluster.b.upstream_cx_total",
            "tcp.direct.downstream_cx_total",
            outer_cx.as_str(),
        ];
        let mut before = Vec::new();
        for n in names {
            before.push(admin::stat(admin_port, n).await.unwrap_or(0));
        }
        let (a0, b0) = (tcp_port(&s, "a"), tcp_port(&s, "b"));

        assert_eq!(
            echo(s.addr(), b"through inner").await,
            b"through inner",
            "[{kind}]"
        );
        assert_eq!(
            echo(s.env.addr("listener_port_pick"), b"picked").await,
            b"picked",
            "[{kind}]"
        );
        assert_eq!(
            echo(s.env.addr("listener_port_direct"), b"direct").await,
            b"direct",
            "[{kind}]"
        );

        assert_eq!(tcp_port(&s, "a") - a0, 1, "[{kind}] plain went to a");
        assert_eq!(
            tcp_port(&s, "b") - b0,
            2,
            "[{kind}] pick and direct went to b"
        );

        // Stats on both listeners and the tcp_proxies: 13 + 6 bytes went through inner.
        for (n, (name, added)) in names.iter().zip([2, 2, 2, 1, 1]).enumerate() {
            let want = before[n] + added;
            assert_eq!(
                counter(admin_port, name, want).await,
                want,
                "[{kind}] {name}"
            );
        }
        let inner_destroyed = counter(
            admin_port,
            "listener.envoy_internal_inner.downstream_cx_destroy",
            before[0] + 2,
        )
        .await;
        assert_eq!(
            inner_destroyed,
            before[0] + 2,
            "[{kind}] inner's connections closed"
        );
        for (name, want) in [
            ("tcp.inner.downstream_cx_rx_bytes_total", 19),
            ("tcp.inner.downstream_cx_tx_bytes_total", 19),
            ("tcp.plain.downstream_cx_rx_bytes_total", 13),
            ("tcp.pick.downstream_cx_tx_bytes_total", 6),
            ("tcp.direct.downstream_cx_rx_bytes_total", 6),
        ] {
            assert_eq!(
                counter(admin_port, name, want).await,
                want,
                "[{kind}] {name}"
            );
        }

        // What each side logged; the probes' lines (no bytes) are left out.
        let with_bytes = |lines: Vec<String>| -> Vec<String> {
            let mut l: Vec<String> = lines.into_iter().filter(|l| !l.contains(" 0 0")).collect();
            l.sort();
            l
        };
        let outer = with_bytes(wait_for_lines(&s.env.file("outer.log"), 4).await);
        assert_eq!(
            outer,
            [
                "pick envoy://inner/ to_inner 6 6 \"b\" 127.0.0.1",
                "plain envoy://inner/ to_inner 13 13",
            ],
            "[{kind}]"
        );
        let inner = with_bytes(wait_for_lines(&s.env.file("inner.log"), 4).await);
        assert_eq!(
            inner,
            [
                "envoy://internal_client_address/ envoy://inner/ a 13 13 - -",
                "envoy://internal_client_address/ envoy://inner/ b 6 6 b -",
            ],
            "[{kind}]"
        );

        let cx = admin::stat(admin_port, "cluster.to_inner.upstream_cx_total").await;
        let no_metadata =
            admin::stat(admin_port, "cluster.to_inner.internal_upstream.no_metadata").await;
        assert_eq!(
            no_metadata,
            cx.map(|n| 2 * n),
            "[{kind}] two missing entries per connection"
        );

        let text = |r: remora_tests::Response| String::from_utf8_lossy(&r.body).into_owned();
        let listeners = text(
            admin::get(admin_port, "/listeners")
                .await
                .expect("/listeners"),
        );
        assert!(
            listeners.contains("inner::envoy://inner/"),
            "[{kind}] {listeners}"
        );
        let clusters = text(
            admin::get(admin_port, "/clusters")
                .await
                .expect("/clusters"),
        );
        let host = format!("to_inner::envoy://inner/::cx_total::{}", before[1] + 2);
        assert!(clusters.contains(&host), "[{kind}] {clusters}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reaches_an_internal_connection_manager_and_set_filter_state_picks_the_original_dst() {
    for_each_kind(|kind| async move {
        let opts = StartOptions {
            args: vec!["--file-flush-interval-msec".into(), "100".into()],
            ..StartOptions::default()
        };
        let s = Stack::start_with(kind, "internal/http.yaml", opts).await;
        let admin_port = s.admin();
        let backend_b = remora_tests::HttpBackend::start("b").await;
        let mut client = Client::new(s.addr(), Protocol::Http1);
        // The readiness probe of `tcp_front` reached the internal listener too.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cx = "cluster.to_inner.upstream_cx_total";
        let cx0 = admin::stat(admin_port, cx).await.unwrap_or(0);

        // HTTP/1.1 pooled over an in-process connection to the internal connection manager.
        for _ in 0..3 {
            let r = client
                .send(&Request::get("/inner/x"))
                .await
                .expect("response");
            assert_eq!(r.status, 200, "[{kind}] {}", r.text());
            assert_eq!(r.echo().map(|e| e.backend), Some("a".into()), "[{kind}]");
        }
        // Keep-alive: the three requests shared one connection to the internal listener.
        assert_eq!(admin::stat(admin_port, cx).await, Some(cx0 + 1), "[{kind}]");
        // The request's filter state names the ORIGINAL_DST host.
        let target = backend_b.addr.to_string();
        let r = client
            .send(&Request::get("/dst/y").header("x-target", &target))
            .await
            .expect("response");
        assert_eq!(r.status, 200, "[{kind}] {}", r.text());
        assert_eq!(r.echo().map(|e| e.backend), Some("b".into()), "[{kind}]");

        // A request's shared objects reach the internal listener; connections are pooled by them.
        for (i, tag) in ["t1", "t2", "t1", "t2"].iter().enumerate() {
            let path = format!("/tagged/{}", i + 1);
            let r = client
                .send(&Request::get(&path).header("x-tag", tag))
                .await
                .expect("response");
            assert_eq!(r.status, 200, "[{kind}] {}", r.text());
        }
        let shared = admin::stat(admin_port, "cluster.to_inner_shared.upstream_cx_total").await;
        assert_eq!(shared, Some(2), "[{kind}] one connection per tag");

        // A tcp_proxy into the same internal listener.
        let mut tcp_client = Client::new(s.env.addr("listener_port_tcp"), Protocol::Http1);
        let r = tcp_client
            .send(&Request::get("/via/tcp"))
            .await
            .expect("response");
        assert_eq!(r.status, 200, "[{kind}] {}", r.text());
        assert_eq!(r.echo().map(|e| e.backend), Some("a".into()), "[{kind}]");

        assert_eq!(
            counter(admin_port, "http.inner_http.downstream_rq_2xx", 8).await,
            8,
            "[{kind}]"
        );
        assert_eq!(
            counter(admin_port, "cluster.orig.upstream_rq_200", 1).await,
            1,
            "[{kind}]"
        );
        assert_eq!(
            counter(admin_port, "cluster.to_inner.upstream_rq_200", 3).await,
            3,
            "[{kind}]"
        );
        assert_eq!(admin::stat(admin_port, cx).await, Some(cx0 + 2), "[{kind}]");

        let front = wait_for_lines(&s.env.file("front.log"), 8).await;
        assert_eq!(
            front[..4],
            [
                "/inner/x 200 to_inner envoy://inner_http/ -".to_string(),
                "/inner/x 200 to_inner envoy://inner_http/ -".to_string(),
                "/inner/x 200 to_inner envoy://inner_http/ -".to_string(),
                format!("/dst/y 200 orig {target} {target}"),
            ],
            "[{kind}]"
        );
        let mut inner = wait_for_lines(&s.env.file("inner.log"), 8).await;
        inner.sort();
        assert_eq!(
            inner,
            [
                "/inner/x 200 envoy://internal_client_address/ envoy://inner_http/ -",
                "/inner/x 200 envoy://internal_client_address/ envoy://inner_http/ -",
                "/inner/x 200 envoy://internal_client_address/ envoy://inner_http/ -",
                "/tagged/1 200 envoy://internal_client_address/ envoy://inner_http/ t1",
                "/tagged/2 200 envoy://internal_client_address/ envoy://inner_http/ t2",
                "/tagged/3 200 envoy://internal_client_address/ envoy://inner_http/ t1",
                "/tagged/4 200 envoy://internal_client_address/ envoy://inner_http/ t2",
                "/via/tcp 200 envoy://internal_client_address/ envoy://inner_http/ -",
            ],
            "[{kind}]"
        );
    })
    .await;
}

/// An LDS file's resource: the internal listener `inner`, a connection manager routing to `cluster`.
fn lds_inner(cluster: &str) -> String {
    format!(
        r#"- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: inner
  internal_listener: {{}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: inner
        http_filters: [{{ name: envoy.filters.http.router, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}]
        route_config:
          virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: {cluster} }} }}] }}]
"#
    )
}

/// The static part: a front listener whose tcp_proxy reaches `inner` (a new in-process connection
/// per client connection), and the clusters.
fn lds_bootstrap(dir: &std::path::Path, admin_port: u16, front: u16, a: u16, b: u16) -> String {
    let d = dir.display();
    let backend = |name: &str, port: u16| {
        format!("  - {{ name: {name}, connect_timeout: 1s, load_assignment: {{ cluster_name: {name}, endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }} }}] }}] }} }}\n")
    };
    format!(
        r#"node: {{ id: node1, cluster: test }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }} }}
bootstrap_extensions:
- name: envoy.bootstrap.internal_listener
  typed_config: {{ "@type": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener }}
dynamic_resources:
  lds_config:
    resource_api_version: V3
    path_config_source: {{ path: {d}/lds/lds.yaml, watched_directory: {{ path: {d}/lds }} }}
static_resources:
  listeners:
  - name: front
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {front} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: front
          cluster: to_inner
  clusters:
  - name: to_inner
    connect_timeout: 1s
    load_assignment:
      cluster_name: to_inner
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ envoy_internal_address: {{ server_listener_name: inner }} }} }} }}] }}]
{}{}"#,
        backend("a", a),
        backend("b", b)
    )
}

fn publish_lds(dir: &std::path::Path, version: &str, resources: &str) {
    let sub = dir.join("lds");
    std::fs::create_dir_all(&sub).expect("mkdir");
    let tmp = dir.join(".lds.tmp");
    let text = format!(
        "version_info: \"{version}\"\nresources:{}\n",
        if resources.is_empty() { " []" } else { "\n" }
    );
    std::fs::write(&tmp, format!("{text}{resources}")).expect("write");
    std::fs::rename(&tmp, sub.join("lds.yaml")).expect("rename");
}

/// Which backend a new client connection through `front` reaches (`None`: no answer).
async fn reached(front: std::net::SocketAddr) -> Option<String> {
    let r = remora_tests::client::get(front, "/").await.ok()?;
    if r.status != 200 {
        return Some(format!("status {}", r.status));
    }
    r.echo().map(|e| e.backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_listener_from_lds_is_added_changed_and_removed() {
    for_each_kind(|kind| async move {
        let a = remora_tests::HttpBackend::start("a").await;
        let b = remora_tests::HttpBackend::start("b").await;
        let dir = remora_tests::tempdir::TempDir::new("internal-lds");
        let front = remora_tests::ports::free_port();
        let admin_port = remora_tests::ports::free_port();
        publish_lds(dir.path(), "1", &lds_inner("a"));
        let opts = StartOptions {
            args: vec!["--drain-time-s".into(), "1".into()],
            ..StartOptions::default()
        };
        let config = lds_bootstrap(dir.path(), admin_port, front, a.port(), b.port());
        let _proxy = remora_tests::Proxy::start_with(kind, &config, opts).await;
        let front = remora_tests::ports::loopback(front);
        let eventually = |want: Option<&'static str>| async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let got = reached(front).await;
                if got.as_deref() == want {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "[{kind}] wanted {want:?}, got {got:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        eventually(Some("a")).await;
        assert_eq!(
            admin::stat(admin_port, "listener_manager.lds.update_success").await,
            Some(1),
            "[{kind}]"
        );
        publish_lds(dir.path(), "2", &lds_inner("b"));
        eventually(Some("b")).await;
        // Without the internal listener the tcp_proxy's connect fails: the client sees a close.
        publish_lds(dir.path(), "3", "");
        eventually(None).await;
        assert_eq!(
            admin::stat(admin_port, "listener_manager.lds.update_success").await,
            Some(3),
            "[{kind}]"
        );
        let failed = admin::stat(admin_port, "cluster.to_inner.upstream_cx_connect_fail").await;
        assert!(
            failed.unwrap_or(0) >= 1,
            "[{kind}] connect failures: {failed:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_original_dst_filter_restores_addresses_from_the_filter_state() {
    for_each_kind(|kind| async move {
        let opts = StartOptions {
            args: vec!["--file-flush-interval-msec".into(), "100".into()],
            ..StartOptions::default()
        };
        let s = Stack::start_with(kind, "internal/original_dst.yaml", opts).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (a0, b0) = (tcp_port(&s, "a"), tcp_port(&s, "b"));
        assert_eq!(echo(s.addr(), b"to b").await, b"to b", "[{kind}]");
        assert_eq!(
            echo(s.env.addr("listener_port_plain"), b"to a!").await,
            b"to a!",
            "[{kind}]"
        );
        assert_eq!(
            tcp_port(&s, "b") - b0,
            1,
            "[{kind}] the restored destination"
        );
        assert_eq!(
            tcp_port(&s, "a") - a0,
            1,
            "[{kind}] no restored destination: the default chain"
        );
        let b = s
            .env
            .tcp
            .iter()
            .find(|(n, _)| n == "b")
            .map(|(_, e)| e.addr)
            .expect("tcp_b");
        let mut lines: Vec<String> = wait_for_lines(&s.env.file("inner.log"), 4)
            .await
            .into_iter()
            .filter(|l| !l.ends_with(" 0"))
            .collect();
        lines.sort();
        assert_eq!(
            lines,
            [
                "fallback envoy://dst_inner/ envoy://internal_client_address/ a 5".to_string(),
                format!("to_dst {b} 127.0.0.1 {b} 4"),
            ],
            "[{kind}]"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_and_on_an_internal_listener() {
    for_each_kind(|kind| async move {
        let mut pki = remora_tests::pki::Pki::new();
        pki.issue(
            "server",
            &remora_tests::pki::istio_id("server"),
            &["server.mesh"],
        );
        let s = remora_tests::peers::MeshStack::start(
            kind,
            "internal/tls.yaml",
            &pki,
            &remora_tests::template::Vars::new(),
        )
        .await;
        let port = s.port("listener_port");
        // The readiness probes may have handshaken already: count from where they left things.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let up_stat = "cluster.to_inner_tls.ssl.handshake";
        let down_stat = "listener.envoy_internal_tls_inner.ssl.handshake";
        let up0 = admin::stat(s.admin(), up_stat).await.unwrap_or(0);
        let down0 = admin::stat(s.admin(), down_stat).await.unwrap_or(0);
        let client = remora_tests::peers::TlsClient::new("server.mesh").ca(pki.ca_pem());
        let run = tokio::task::spawn_blocking(move || client.curl(port, "/x"))
            .await
            .expect("join");
        assert!(
            run.stdout.starts_with("inner tls\n") && run.stdout.trim_end().ends_with("200"),
            "[{kind}] {run:?}"
        );
        // TLS originated over the in-process connection, verified against the mesh root.
        let origin = s.env.addr("listener_port_origin");
        let r = Client::new(origin, Protocol::Http1)
            .send(&Request::get("/y"))
            .await
            .expect("response");
        assert_eq!(
            (r.status, r.text()),
            (200, "inner tls\n".to_string()),
            "[{kind}]"
        );
        // Both set_filter_state stages see the handshake's TLS version.
        let mut lines = wait_for_lines(&s.env.file("inner.log"), 2).await;
        lines.sort();
        let stages: Vec<(String, bool)> = lines
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let same = f.len() == 3 && f[1] == f[2] && f[1].starts_with("TLSv1.");
                (f[0].to_string(), same)
            })
            .collect();
        assert_eq!(
            stages,
            [("/x".to_string(), true), ("/y".to_string(), true)],
            "[{kind}] {lines:?}"
        );
        // The connection through `origin` is one handshake at each end; the TLS client's one
        // more at the internal listener.
        let up = counter(s.admin(), up_stat, up0 + 1).await;
        assert_eq!(up, up0 + 1, "[{kind}] upstream handshakes");
        let down = counter(s.admin(), down_stat, down0 + 2).await;
        assert_eq!(
            down,
            down0 + 2,
            "[{kind}] handshakes at the internal listener"
        );
    })
    .await;
}
