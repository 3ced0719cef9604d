//! Route matching: `RouteTable::select` with 10, 1k and 10k routes, in the two shapes tables come
//! in: one virtual host with every route (a linear scan, the request matching the last route) and
//! a mesh's outbound table, one virtual host per service with ten routes each.

use std::fmt::Write;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use remora_proxy::config::parse::from_yaml;
use remora_proxy::config::{ParseOptions, Path};
use remora_proxy::http::route::{RouteContext, RouteTable};

fn table(vhosts: usize, per_vhost: usize) -> RouteTable {
    let mut y = String::from("name: bench\nvirtual_hosts:\n");
    for v in 0..vhosts {
        let _ = write!(
            y,
            "- name: svc-{v}\n  domains: [\"svc-{v}.bench.local\", \"svc-{v}\"]\n  routes:\n"
        );
        for r in 0..per_vhost {
            let _ = write!(
                y,
                "  - match: {{ prefix: \"/api/v{r}/\" }}\n    route: {{ cluster: svc-{v} }}\n"
            );
        }
    }
    let rc: RouteConfiguration =
        from_yaml(&y, ParseOptions::default()).expect("route configuration");
    let ctx = RouteContext {
        cluster_exists: &|_| true,
        validate_clusters: false,
        filter_config_known: &|_| false,
    };
    RouteTable::from_proto(&rc, &Path::root("route_config"), &ctx).expect("valid table")
}

fn request(vhost: usize, route: usize) -> http::request::Parts {
    http::Request::get(format!("/api/v{route}/items?id=7"))
        .header(http::header::HOST, format!("svc-{vhost}.bench.local"))
        .body(())
        .expect("request")
        .into_parts()
        .0
}

fn select(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_select");
    for n in [10usize, 1_000, 10_000] {
        let t = table(1, n);
        let req = request(0, n - 1);
        assert!(t.select(&req).is_some());
        g.bench_with_input(BenchmarkId::new("one_vhost_last_route", n), &n, |b, _| {
            b.iter(|| black_box(t.select(black_box(&req)).is_some()))
        });
        let vhosts = (n / 10).max(1);
        let t = table(vhosts, n / vhosts);
        let req = request(vhosts - 1, n / vhosts - 1);
        assert!(t.select(&req).is_some());
        g.bench_with_input(BenchmarkId::new("vhost_per_service", n), &n, |b, _| {
            b.iter(|| black_box(t.select(black_box(&req)).is_some()))
        });
    }
    g.finish();
}

criterion_group!(benches, select);
criterion_main!(benches);
