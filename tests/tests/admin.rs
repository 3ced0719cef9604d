//! Admin interface: readiness, stats in text and Prometheus form, clusters, config dump, quit.

use std::time::Duration;

use remora_tests::admin::{self, stat_in};
use remora_tests::client::{Client, Protocol, Request};
use remora_tests::select::for_each_kind;
use remora_tests::stack::Stack;

const BASIC: &str = "http/basic.yaml";
const N: u64 = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_stats_after_n_requests() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, BASIC).await;
        let ready = admin::get(s.admin(), "/ready").await.expect("ready");
        assert_eq!(
            (ready.status, ready.text().as_str()),
            (200, "LIVE\n"),
            "[{kind}]"
        );

        // The harness's readiness probe already connected once; count from here.
        let cx_before = admin::stat(s.admin(), "http.ingress.downstream_cx_total")
            .await
            .unwrap_or(0);
        let mut c = Client::new(s.addr(), Protocol::Http1);
        for i in 0..N {
            let r = c
                .send(&Request::get(&format!("/n/{i}")))
                .await
                .expect("request");
            assert_eq!(r.status, 200);
        }
        let text = admin::get(s.admin(), "/stats").await.expect("stats").text();
        for (name, want) in [
            ("http.ingress.downstream_rq_total", N),
            ("http.ingress.downstream_rq_2xx", N),
            ("http.ingress.downstream_cx_total", cx_before + 1),
            ("cluster.app.upstream_rq_total", N),
            ("cluster.app.upstream_rq_200", N),
            ("cluster.app.upstream_cx_total", 1),
            ("cluster.a.upstream_rq_total", 0),
        ] {
            assert_eq!(
                stat_in(&text, name),
                Some(want),
                "[{kind}] {name} in /stats"
            );
        }
        // Counters and gauges come as `name: value` lines sorted by name; histograms (quantiles
        // or "No recorded values") follow in a second sorted block.
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(_, v)| v.parse::<u64>().is_ok())
            .map(|(n, _)| n)
            .collect();
        if let Some(w) = names.windows(2).find(|w| w[0] > w[1]) {
            panic!(
                "[{kind}] /stats counters not sorted: {:?} before {:?}",
                w[0], w[1]
            );
        }

        let filtered = admin::get(s.admin(), "/stats?filter=upstream_rq_total")
            .await
            .expect("stats")
            .text();
        assert!(!filtered.is_empty());
        assert!(
            filtered.lines().all(|l| l.contains("upstream_rq_total")),
            "[{kind}] filter:\n{filtered}"
        );
        assert_eq!(
            stat_in(&filtered, "cluster.app.upstream_rq_total"),
            Some(N),
            "[{kind}]"
        );

        let used = admin::get(s.admin(), "/stats?usedonly")
            .await
            .expect("stats")
            .text();
        assert_eq!(
            stat_in(&used, "cluster.app.upstream_rq_total"),
            Some(N),
            "[{kind}] usedonly keeps used stats"
        );
        assert_eq!(
            stat_in(&used, "cluster.a.upstream_rq_total"),
            None,
            "[{kind}] usedonly drops unused stats"
        );
        assert_eq!(
            stat_in(&used, "cluster.app.upstream_rq_timeout"),
            None,
            "[{kind}]"
        );

        let both = admin::get(s.admin(), "/stats?usedonly&filter=^cluster%5C.app%5C.")
            .await
            .expect("stats")
            .text();
        assert!(
            both.lines().all(|l| l.starts_with("cluster.app.")),
            "[{kind}] usedonly+filter:\n{both}"
        );
        assert_eq!(
            stat_in(&both, "cluster.app.upstream_rq_total"),
            Some(N),
            "[{kind}]"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_clusters_and_config_dump() {
    for_each_kind(|kind| async move {
        let s = Stack::start(kind, BASIC).await;
        let mut c = Client::new(s.addr(), Protocol::Http1);
        for _ in 0..3 {
            c.send(&Request::get("/p")).await.expect("request");
        }
        let prom = admin::get(s.admin(), "/stats/prometheus")
            .await
            .expect("prometheus");
        assert_eq!(prom.status, 200);
        let text = prom.text();
        assert!(
            text.lines()
                .any(|l| l == r#"envoy_cluster_upstream_rq_total{envoy_cluster_name="app"} 3"#),
            "[{kind}] prometheus lacks the app counter:\n{}",
            text.lines()
                .filter(|l| l.contains("upstream_rq_total"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            text.contains("# TYPE envoy_cluster_upstream_rq_total counter"),
            "[{kind}]"
        );
        assert!(
            text.lines().any(|l| l
                == r#"envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="ingress"} 3"#),
            "[{kind}] prometheus lacks the ingress counter"
        );

        let clusters = admin::get(s.admin(), "/clusters")
            .await
            .expect("clusters")
            .text();
        let port = s.env.backend("app").port();
        for line in [
            format!("app::127.0.0.1:{port}::health_flags::healthy"),
            format!("app::127.0.0.1:{port}::rq_total::3"),
            format!("app::127.0.0.1:{port}::cx_active::1"),
        ] {
            assert!(
                clusters.lines().any(|l| l == line),
                "[{kind}] /clusters lacks {line}:\n{clusters}"
            );
        }
        assert!(
            clusters
                .lines()
                .any(|l| l.starts_with("guarded::default_priority::max_requests::1")),
            "[{kind}]"
        );

        let dump = admin::get(s.admin(), "/config_dump")
            .await
            .expect("config_dump");
        assert_eq!(dump.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&dump.body).expect("config_dump is JSON");
        let types: Vec<&str> = v["configs"]
            .as_array()
            .expect("configs array")
            .iter()
            .filter_map(|c| c["@type"].as_str())
            .collect();
        for t in [
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
        ] {
            assert!(
                types.contains(&t),
                "[{kind}] config_dump lacks {t}: {types:?}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitquitquit_exits() {
    for_each_kind(|kind| async move {
        let mut s = Stack::start(kind, BASIC).await;
        let get = admin::get(s.admin(), "/quitquitquit")
            .await
            .expect("GET quitquitquit");
        assert_eq!(
            get.status,
            405,
            "[{kind}] quitquitquit needs POST: {}",
            get.text()
        );
        let r = admin::post(s.admin(), "/quitquitquit")
            .await
            .expect("POST quitquitquit");
        assert_eq!((r.status, r.text().as_str()), (200, "OK\n"), "[{kind}]");
        let status = s.proxy.wait_exit(Duration::from_secs(10)).await;
        assert!(
            status.is_some_and(|st| st.success()),
            "[{kind}] exit after quitquitquit: {status:?}"
        );
    })
    .await;
}
