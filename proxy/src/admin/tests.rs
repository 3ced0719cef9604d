//! Endpoint tests: a real admin server on 127.0.0.1:0, requested with a hyper client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use super::*;
use crate::logging::Level;

#[derive(Default)]
struct Hooks {
    drains: Mutex<Vec<DrainListeners>>,
    dumps: AtomicUsize,
}

impl AdminHooks for Hooks {
    fn config_dump(&self) -> serde_json::Value {
        self.dumps.fetch_add(1, Ordering::Relaxed);
        json!({"configs": [{
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "static_clusters": [{"cluster": {
                "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                "name": "web", "connect_timeout": "1s"}}]}]})
    }
    fn clusters(&self, json: bool) -> String {
        if json {
            r#"{"cluster_statuses":[{"name":"web"}]}"#.into()
        } else {
            "web::default_priority::max_connections::1024\n".into()
        }
    }
    fn listeners(&self, json: bool) -> String {
        if json {
            r#"{"listener_statuses":[]}"#.into()
        } else {
            "l1::127.0.0.1:10000\n".into()
        }
    }
    fn drain_listeners(&self, request: DrainListeners) {
        self.drains.lock().expect("lock").push(request);
    }
}

struct Harness {
    addr: SocketAddr,
    state: Arc<AdminState>,
    hooks: Arc<Hooks>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(state: ServerState) -> Harness {
    let store = Store::new();
    store.counter("cluster.web.upstream_rq_total").add(3);
    store.counter("cluster.web.upstream_rq_200").add(3);
    store.counter("cluster.web.upstream_rq_timeout");
    let hooks = Arc::new(Hooks::default());
    let info = ServerInfo {
        version: "abcdef0123/0.1.0/Clean/DEBUG".into(),
        state: ServerStateCell::new(state),
        started: Instant::now(),
        command_line_options: json!({"concurrency": 2, "log_level": "info"}),
        node: json!({"id": "node-1", "cluster": "c"}),
    };
    let server_stats = register_server_stats(&store, 2, &info.version);
    let admin = Arc::new(
        AdminState::new(
            store,
            info,
            hooks.clone(),
            LogControl::detached(Level::Info),
        )
        .with_server_stats(server_stats),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, admin.clone(), async move {
        let _ = stopped.await;
    }));
    Harness {
        addr,
        state: admin,
        hooks,
        _stop: stop,
    }
}

impl Harness {
    async fn call(&self, method: Method, path: &str) -> (StatusCode, String, String) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path))
            .body(Empty::new())
            .expect("request");
        let resp = client.request(req).await.expect("response");
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, ct, String::from_utf8_lossy(&body).into_owned())
    }
    async fn get(&self, path: &str) -> (StatusCode, String, String) {
        self.call(Method::GET, path).await
    }
    async fn post(&self, path: &str) -> (StatusCode, String, String) {
        self.call(Method::POST, path).await
    }
}

#[tokio::test]
async fn ready_follows_state_and_health_check() {
    let h = start(ServerState::PreInitializing).await;
    assert_eq!(
        h.get("/ready").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT_CT.into(),
            "PRE_INITIALIZING\n".into()
        )
    );
    h.state.server.state.set(ServerState::Live);
    assert_eq!(h.get("/ready").await.0, StatusCode::OK);
    assert_eq!(h.get("/ready").await.2, "LIVE\n");

    assert_eq!(h.post("/healthcheck/fail").await.2, "OK\n");
    assert!(h.state.health_failed());
    assert_eq!(
        h.get("/ready").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT_CT.into(),
            "DRAINING\n".into()
        )
    );
    assert_eq!(
        h.get("/stats?filter=server.live").await.2,
        "server.live: 0\n"
    );
    assert_eq!(h.post("/healthcheck/ok").await.2, "OK\n");
    assert!(!h.state.health_failed());
    assert_eq!(
        h.get("/stats?filter=server.live").await.2,
        "server.live: 1\n"
    );
}

const TEXT_CT: &str = "text/plain; charset=UTF-8";

#[tokio::test]
async fn mutating_endpoints_require_post() {
    let h = start(ServerState::Live).await;
    for path in [
        "/quitquitquit",
        "/healthcheck/fail",
        "/healthcheck/ok",
        "/logging",
        "/drain_listeners",
    ] {
        let (status, _, body) = h.get(path).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(body, "Method GET not allowed, POST required.");
    }
    assert!(!h.state.health_failed());
    assert!(!*h.state.shutdown_requested().borrow());
}

#[tokio::test]
async fn unknown_path_is_404_with_help() {
    let h = start(ServerState::Live).await;
    let (status, _, body) = h.get("/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.starts_with("invalid path. admin commands are:\n  /: Admin home page\n"));
    assert!(body.contains("  /quitquitquit (POST): exit the server\n"));
    let (status, _, help) = h.get("/help").await;
    assert_eq!(status, StatusCode::OK);
    assert!(help.contains("  /stats/prometheus: print server stats in prometheus format\n"));
}

#[tokio::test]
async fn stats_formats_and_filters() {
    let h = start(ServerState::Live).await;
    let (status, ct, body) = h
        .get("/stats?filter=%5Ecluster%5C.web%5C.upstream_rq_(2%7Ctotal)")
        .await;
    assert_eq!((status, ct.as_str()), (StatusCode::OK, TEXT_CT));
    assert_eq!(
        body,
        "cluster.web.upstream_rq_200: 3\ncluster.web.upstream_rq_total: 3\n"
    );

    let (_, ct, body) = h.get("/stats?format=json&usedonly&filter=^cluster").await;
    assert_eq!(ct, "application/json");
    assert_eq!(
        body,
        r#"{"stats":[{"name":"cluster.web.upstream_rq_200","value":3},{"name":"cluster.web.upstream_rq_total","value":3}]}"#
    );

    let server = h.get("/stats?filter=^server%5C.").await.2;
    assert!(server.contains("server.concurrency: 2\n"), "{server}");
    assert!(server.contains("server.state: 0\n"));
    assert!(server.contains("server.version: 11259375\n"));

    let (status, _, body) = h.get("/stats?filter=(bad").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.starts_with("Invalid re2 regex"));
    assert_eq!(h.get("/stats?format=xml").await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn prometheus_endpoint_and_format_param_agree() {
    let h = start(ServerState::Live).await;
    let (status, _, body) = h.get("/stats/prometheus?usedonly&filter=upstream_rq").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        "# TYPE envoy_cluster_upstream_rq counter\n\
         envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"web\"} 3\n\
         # TYPE envoy_cluster_upstream_rq_total counter\n\
         envoy_cluster_upstream_rq_total{envoy_cluster_name=\"web\"} 3\n"
    );
    assert_eq!(
        h.get("/stats?format=prometheus&usedonly&filter=upstream_rq")
            .await
            .2,
        body
    );
}

#[tokio::test]
async fn server_info_reports_envoy_fields() {
    let h = start(ServerState::Live).await;
    let (status, ct, body) = h.get("/server_info").await;
    assert_eq!((status, ct.as_str()), (StatusCode::OK, "application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["state"], "LIVE");
    assert_eq!(v["hot_restart_version"], "disabled");
    assert_eq!(v["uptime_current_epoch"], "0s");
    assert_eq!(v["command_line_options"]["concurrency"], 2);
    assert_eq!(v["node"]["id"], "node-1");
    assert_eq!(v["version"], "abcdef0123/0.1.0/Clean/DEBUG");
    assert!(
        body.starts_with("{\n \"command_line_options\""),
        "one-space indent: {body}"
    );
}

#[tokio::test]
async fn config_dump_resource_and_mask() {
    let h = start(ServerState::Live).await;
    let (status, _, body) = h
        .get("/config_dump?resource=static_clusters&mask=cluster.name")
        .await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        v,
        json!({"configs": [{
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster",
            "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "web"}}]})
    );
    let (status, _, body) = h.get("/config_dump?resource=dynamic_listeners").await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::NOT_FOUND,
            "dynamic_listeners not found in config dump"
        )
    );
    assert_eq!(
        h.get("/config_dump?resource=static_clusters&mask=nope")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let full: serde_json::Value =
        serde_json::from_str(&h.get("/config_dump").await.2).expect("json");
    assert_eq!(
        full["configs"][0]["static_clusters"][0]["cluster"]["connect_timeout"],
        "1s"
    );
    assert_eq!(h.hooks.dumps.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn clusters_and_listeners_come_from_hooks() {
    let h = start(ServerState::Live).await;
    assert_eq!(
        h.get("/clusters").await.2,
        "web::default_priority::max_connections::1024\n"
    );
    let (_, ct, body) = h.get("/clusters?format=json").await;
    assert_eq!(
        (ct.as_str(), body.as_str()),
        (
            "application/json",
            r#"{"cluster_statuses":[{"name":"web"}]}"#
        )
    );
    assert_eq!(h.get("/listeners").await.2, "l1::127.0.0.1:10000\n");
    assert_eq!(
        h.get("/listeners?format=json").await.2,
        r#"{"listener_statuses":[]}"#
    );
}

#[tokio::test]
async fn logging_changes_levels_and_reports_them() {
    let h = start(ServerState::Live).await;
    let (status, _, body) = h.post("/logging?upstream=debug").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("active loggers:\n"));
    assert!(body.contains("  upstream: debug\n"));
    assert!(body.contains("  http: info\n"));

    let body = h.post("/logging?paths=http:trace,router:warning").await.2;
    assert!(
        body.contains("  http: trace\n") && body.contains("  router: warning\n"),
        "{body}"
    );

    let body = h.post("/logging?level=error").await.2;
    assert!(body.contains("  upstream: error\n"));
    assert_eq!(h.state.log.component_level("http"), Some(Level::Error));

    let (status, _, body) = h.post("/logging?bogus=trace").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.starts_with("error: unknown logger name\n\nusage: /logging?<name>=<level>"));
    let (status, _, body) = h.post("/logging?level=loud").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.starts_with("error: unknown logger level\n"));
    assert_eq!(
        h.post("/logging?a=debug&b=info").await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn drain_and_quit_reach_the_application() {
    let h = start(ServerState::Live).await;
    assert_eq!(
        h.post("/drain_listeners?inboundonly&graceful").await.2,
        "OK\n"
    );
    assert_eq!(
        *h.hooks.drains.lock().expect("lock"),
        vec![DrainListeners {
            inbound_only: true,
            graceful: true,
            skip_exit: false
        }]
    );
    let mut quit = h.state.shutdown_requested();
    let (status, _, body) = h.post("/quitquitquit").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "OK\n"));
    tokio::time::timeout(std::time::Duration::from_secs(1), quit.wait_for(|q| *q))
        .await
        .expect("shutdown signalled")
        .expect("sender alive");
}

#[tokio::test]
async fn serve_returns_when_shutdown_completes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let state = Arc::new(AdminState::new(
        Store::new(),
        ServerInfo {
            version: String::new(),
            state: ServerStateCell::default(),
            started: Instant::now(),
            command_line_options: json!({}),
            node: json!({}),
        },
        Arc::new(NoHooks),
        LogControl::detached(Level::Info),
    ));
    tokio::time::timeout(
        std::time::Duration::from_secs(1),
        serve(listener, state, async {}),
    )
    .await
    .expect("serve stops");
}

#[test]
fn istio_metrics_follow_envoys_stats_and_honour_the_filter() {
    use crate::istio::labels::{http, Facts, Protocol, Reporter};
    let store = Store::new();
    store.counter("cluster.web.upstream_rq_total").inc();
    let info = ServerInfo {
        version: "v".into(),
        state: ServerStateCell::new(ServerState::Live),
        started: Instant::now(),
        command_line_options: json!({}),
        node: json!({}),
    };
    let metrics = crate::istio::IstioMetrics::default();
    let labels = http(
        Reporter::ServerSidecar,
        &Default::default(),
        &Facts::default(),
        Protocol::Http,
        200,
        None,
    );
    metrics.record_request(labels, 1.0, 10, 20);
    let state = AdminState::new(
        store,
        info,
        Arc::new(NoHooks),
        LogControl::detached(Level::Info),
    )
    .with_istio(metrics);
    let all = state.prometheus(false, None);
    let envoy = all
        .find("envoy_cluster_upstream_rq_total")
        .expect("envoy's");
    let istio = all.find("istio_requests_total{").expect("istio's");
    assert!(envoy < istio, "{all}");
    assert!(all.contains("# TYPE istio_request_duration_milliseconds histogram"));
    let only = state.prometheus(false, regex::Regex::new("istio_requests").ok().as_ref());
    assert!(only.contains("istio_requests_total{"), "{only}");
    assert!(
        !only.contains("istio_request_bytes") && !only.contains("envoy_"),
        "{only}"
    );
}
