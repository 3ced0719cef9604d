//! Host selection: policies, weights, priorities, panic and localities.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use super::manager;
use crate::upstream::{ClusterManager, UpstreamError};

fn picks(m: &ClusterManager, n: usize) -> HashMap<u16, usize> {
    let c = m.get("c").expect("c");
    let set = c.host_set();
    let mut out = HashMap::new();
    for _ in 0..n {
        let h = set.choose(&c.spec().lb).expect("a host");
        *out.entry(h.address().port()).or_default() += 1;
    }
    out
}

fn order(m: &ClusterManager, n: usize) -> Vec<u16> {
    let c = m.get("c").expect("c");
    let set = c.host_set();
    (0..n)
        .map(|_| set.choose(&c.spec().lb).expect("host").address().port())
        .collect()
}

/// One `endpoints` entry: (priority, locality weight, [(port, weight, health)]).
type Loc<'a> = (u32, Option<u32>, &'a [(u16, u32, &'a str)]);

fn cluster(extra: &str, localities: &[Loc<'_>]) -> ClusterManager {
    let mut y = format!(
        "static_resources:\n  clusters:\n  - name: c\n{extra}    load_assignment:\n      cluster_name: c\n      endpoints:\n"
    );
    for (prio, lw, eps) in localities {
        y.push_str(&format!("      - priority: {prio}\n"));
        if let Some(w) = lw {
            y.push_str(&format!("        load_balancing_weight: {w}\n"));
        }
        y.push_str("        lb_endpoints:\n");
        for (port, w, health) in eps.iter() {
            y.push_str(&format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}\n          load_balancing_weight: {w}\n          health_status: {health}\n"
            ));
        }
    }
    manager(&y).expect("valid").0
}

#[test]
fn round_robin_cycles_in_order() {
    let m = cluster(
        "",
        &[(
            0,
            None,
            &[(1, 1, "HEALTHY"), (2, 1, "UNKNOWN"), (3, 1, "HEALTHY")],
        )],
    );
    assert_eq!(order(&m, 6), vec![1, 2, 3, 1, 2, 3]);
}

#[test]
fn weighted_round_robin_gives_each_its_share_interleaved() {
    let m = cluster("", &[(0, None, &[(1, 3, "HEALTHY"), (2, 1, "HEALTHY")])]);
    let o = order(&m, 8);
    assert_eq!(o.iter().filter(|p| **p == 1).count(), 6);
    // Smooth: the light host is not starved for a whole cycle at a time.
    assert_eq!(o, vec![1, 1, 2, 1, 1, 1, 2, 1]);
}

#[test]
fn unhealthy_and_draining_hosts_get_nothing() {
    let m = cluster(
        "",
        &[(
            0,
            None,
            &[
                (1, 1, "HEALTHY"),
                (2, 1, "HEALTHY"),
                (3, 1, "HEALTHY"),
                (4, 1, "DRAINING"),
                (5, 1, "UNHEALTHY"),
            ],
        )],
    );
    let p = picks(&m, 300);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(!p.contains_key(&4) && !p.contains_key(&5));
}

#[test]
fn random_spreads_evenly() {
    let m = cluster(
        "    lb_policy: RANDOM\n",
        &[(
            0,
            None,
            &[(1, 1, "HEALTHY"), (2, 1, "HEALTHY"), (3, 1, "HEALTHY")],
        )],
    );
    let p = picks(&m, 3000);
    for port in [1, 2, 3] {
        let n = p.get(&port).copied().unwrap_or(0);
        assert!((850..1150).contains(&n), "{p:?}");
    }
}

#[test]
fn least_request_prefers_the_idle_host() {
    let m = cluster(
        "    lb_policy: LEAST_REQUEST\n",
        &[(0, None, &[(1, 1, "HEALTHY"), (2, 1, "HEALTHY")])],
    );
    let c = m.get("c").expect("c");
    let busy = c.host_set().hosts[0].clone();
    busy.stats.rq_active.store(5, Ordering::Relaxed);
    let p = picks(&m, 4000);
    // Two choices with replacement: the busy host wins only when drawn twice (1/4).
    let idle = p.get(&2).copied().unwrap_or(0) as f64 / 4000.0;
    assert!((0.70..0.80).contains(&idle), "{p:?}");

    let m = cluster(
        "    lb_policy: LEAST_REQUEST\n    least_request_lb_config: { choice_count: 8 }\n",
        &[(0, None, &[(1, 1, "HEALTHY"), (2, 1, "HEALTHY")])],
    );
    m.get("c").expect("c").host_set().hosts[0]
        .stats
        .rq_active
        .store(5, Ordering::Relaxed);
    let p = picks(&m, 2000);
    assert!(p.get(&1).copied().unwrap_or(0) < 40, "{p:?}");
}

#[test]
fn lower_priority_takes_over_when_the_first_has_no_healthy_host() {
    let m = cluster(
        "",
        &[
            (0, None, &[(1, 1, "UNHEALTHY"), (2, 1, "UNHEALTHY")]),
            (1, None, &[(3, 1, "HEALTHY")]),
        ],
    );
    assert_eq!(picks(&m, 100).get(&3), Some(&100));
}

#[test]
fn priority_spill_over_follows_the_overprovisioning_factor() {
    // Priority 0 is half healthy: 1.4 × 50% = 70% of the traffic stays there.
    let m = cluster(
        "",
        &[
            (0, None, &[(1, 1, "HEALTHY"), (2, 1, "UNHEALTHY")]),
            (1, None, &[(3, 1, "HEALTHY")]),
        ],
    );
    let p = picks(&m, 4000);
    let p0 = p.get(&1).copied().unwrap_or(0) as f64 / 4000.0;
    assert!((0.66..0.74).contains(&p0), "{p:?}");
    assert!(!p.contains_key(&2));
}

#[test]
fn panic_routes_to_all_hosts_unless_disabled() {
    let m = cluster(
        "",
        &[(0, None, &[(1, 1, "UNHEALTHY"), (2, 1, "UNHEALTHY")])],
    );
    let p = picks(&m, 100);
    assert_eq!(p.values().sum::<usize>(), 100);
    assert_eq!(p.len(), 2);

    let m = cluster(
        "    common_lb_config: { healthy_panic_threshold: { value: 0 } }\n",
        &[(0, None, &[(1, 1, "UNHEALTHY")])],
    );
    assert!(m
        .get("c")
        .expect("c")
        .host_set()
        .choose(&m.get("c").expect("c").spec().lb)
        .is_none());
}

#[tokio::test]
async fn no_host_is_a_503_with_uh() {
    let m = cluster(
        "    common_lb_config: { healthy_panic_threshold: { value: 0 } }\n",
        &[(0, None, &[(1, 1, "UNHEALTHY")])],
    );
    let c = m.get("c").expect("c");
    let e = c
        .send(super::get("x"), &Default::default())
        .await
        .expect_err("no healthy host");
    assert!(matches!(e, UpstreamError::NoHealthyUpstream { .. }));
    assert_eq!(e.response_flag(), "UH");
    assert_eq!(e.status(), 503);
    assert!(e.to_string().contains("cluster c"), "{e}");
    assert_eq!(c.stats().upstream_cx_none_healthy.get(), 1);
}

#[test]
fn locality_weights_apply_with_locality_weighted_lb() {
    let locs: &[Loc<'_>] = &[
        (0, Some(1), &[(1, 1, "HEALTHY")]),
        (0, Some(3), &[(2, 1, "HEALTHY"), (3, 1, "HEALTHY")]),
    ];
    let m = cluster(
        "    common_lb_config: { locality_weighted_lb_config: {} }\n",
        locs,
    );
    let p = picks(&m, 400);
    assert_eq!(p.get(&1), Some(&100), "{p:?}");
    assert_eq!(p.get(&2), Some(&150), "{p:?}");
    // Without locality_weighted_lb_config Envoy ignores locality weights.
    let m = cluster("", locs);
    let p = picks(&m, 300);
    assert_eq!(p.get(&1), Some(&100), "{p:?}");
}

#[test]
fn hosts_keep_their_configured_address() {
    let m = cluster("", &[(0, None, &[(8080, 1, "HEALTHY")])]);
    let h = m.get("c").expect("c").host_set().hosts[0].clone();
    assert_eq!(
        h.address(),
        "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
    );
}
