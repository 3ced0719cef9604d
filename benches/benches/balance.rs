//! Load-balancer pick: `Cluster::pick_host` for each `lb_policy`, with equal and unequal weights.

use std::fmt::Write;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use remora_proxy::config::parse::from_yaml;
use remora_proxy::config::{ParseOptions, Path};
use remora_proxy::stats::Store;
use remora_proxy::upstream::ClusterManager;

fn cluster(
    policy: &str,
    hosts: usize,
    weighted: bool,
) -> std::sync::Arc<remora_proxy::upstream::Cluster> {
    let mut y = format!(
        "name: c\ntype: STATIC\nlb_policy: {policy}\nload_assignment:\n  cluster_name: c\n  endpoints:\n  - lb_endpoints:\n"
    );
    for i in 0..hosts {
        let weight = if weighted { 1 + i % 5 } else { 1 };
        let _ = write!(
            y,
            "    - endpoint: {{ address: {{ socket_address: {{ address: 10.0.{}.{}, port_value: 8080 }} }} }}\n      load_balancing_weight: {weight}\n",
            i / 250,
            i % 250 + 1
        );
    }
    let proto: Cluster = from_yaml(&y, ParseOptions::default()).expect("cluster");
    let mgr = ClusterManager::from_protos(&[proto], &Path::root("clusters"), &Store::new())
        .expect("valid");
    mgr.get("c").expect("cluster c")
}

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("lb_pick");
    for policy in ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"] {
        for hosts in [3usize, 100] {
            for weighted in [false, true] {
                let cl = cluster(policy, hosts, weighted);
                assert!(cl.pick_host().is_some());
                let id = format!(
                    "{}/{}",
                    policy.to_lowercase(),
                    if weighted { "weighted" } else { "equal" }
                );
                g.bench_with_input(BenchmarkId::new(id, hosts), &hosts, |b, _| {
                    b.iter(|| black_box(cl.pick_host()))
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
