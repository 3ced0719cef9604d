//! Header preparation: the connection manager's request-side policy (`prepare_request`) on a
//! typical request, with Envoy's defaults and at an edge (`use_remote_address`).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use http::{HeaderMap, HeaderValue};
use remora_proxy::access_log::Writers;
use remora_proxy::config::hcm::{self, HcmConfig};
use remora_proxy::config::parse::from_yaml;
use remora_proxy::config::rds::RouteRegistry;
use remora_proxy::config::{BuildContext, ParseOptions, Path};
use remora_proxy::http::headers::prepare_request;
use remora_proxy::http::stats::ClusterHttpStats;
use remora_proxy::secrets::SecretStore;
use remora_proxy::stats::Store;
use remora_proxy::upstream::ClusterManager;

fn hcm_config(extra: &str) -> HcmConfig {
    let store = Store::new();
    let cluster: Cluster = from_yaml(
        "name: backend\ntype: STATIC\nload_assignment:\n  cluster_name: backend\n  endpoints:\n  - lb_endpoints:\n    - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 8080 } } }\n",
        ParseOptions::default(),
    )
    .expect("cluster");
    let clusters = Arc::new(
        ClusterManager::from_protos(&[cluster], &Path::root("clusters"), &store).expect("clusters"),
    );
    let cluster_stats = Arc::new(ClusterHttpStats::new(&store, ["backend"]));
    let writers = Writers::new(&store, Duration::from_secs(1));
    let secrets = SecretStore::new(&store);
    let routes = RouteRegistry::new((*clusters).clone());
    let istio = Arc::new(remora_proxy::istio::LocalNode::default());
    let ctx = BuildContext {
        routes: &routes,
        secrets: &secrets,
        clusters: &clusters,
        cluster_stats: &cluster_stats,
        stats: &store,
        opts: ParseOptions::default(),
        log_writers: &writers,
        direction: 0,
        istio: &istio,
    };
    let yaml = format!(
        "stat_prefix: bench\n{extra}route_config:\n  virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    routes:\n    - match: {{ prefix: \"/\" }}\n      route: {{ cluster: backend }}\nhttp_filters:\n- name: envoy.filters.http.router\n  typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}\n"
    );
    let proto: HttpConnectionManager = from_yaml(&yaml, ParseOptions::default()).expect("hcm");
    hcm::build(&proto, &Path::root("hcm"), &ctx).expect("valid hcm")
}

fn typical_request() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "reviews.default.svc.cluster.local:9080"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "application/json"),
        ("x-forwarded-for", "10.1.2.3"),
        ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("x-b3-spanid", "e457b5a2e4d86bd1"),
        ("x-envoy-decorator-operation", "reviews:9080/*"),
    ] {
        h.append(k, HeaderValue::from_static(v));
    }
    h
}

fn prepare(c: &mut Criterion) {
    let peer = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 4));
    let headers = typical_request();
    let mut g = c.benchmark_group("prepare_request");
    for (name, extra) in [
        ("defaults", ""),
        ("edge_remote_address", "use_remote_address: true\n"),
        ("no_request_id", "generate_request_id: false\n"),
    ] {
        let cfg = hcm_config(extra);
        g.bench_function(name, |b| {
            b.iter_batched(
                || headers.clone(),
                |mut h| {
                    prepare_request(&mut h, peer, "http", &cfg, &[]);
                    black_box(h)
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, prepare);
criterion_main!(benches);
