//! CDS and EDS updates through the cluster manager: what is kept, built, warmed and dropped.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster as ClusterProto;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use prost::Name;

use super::{backend, fetch, parse};
use crate::config::parse::{from_yaml, ParseOptions};
use crate::secrets::SecretStore;
use crate::stats::Store;
use crate::upstream::ClusterManager;
use crate::xds::{Decoded, Named};

fn update<T: Name>(version: &str, resources: Vec<T>, name_of: impl Fn(&T) -> String) -> Decoded<T> {
    Decoded {
        version: version.into(),
        resources: resources
            .into_iter()
            .map(|r| Named {
                name: name_of(&r),
                version: version.into(),
                resource: r,
            })
            .collect(),
        removed: Vec::new(),
        full_state: true,
    }
}

fn cds(version: &str, yaml: &str) -> Decoded<ClusterProto> {
    update(version, parse(yaml), |c: &ClusterProto| c.name.clone())
}

fn eds(version: &str, yaml: &str) -> Decoded<ClusterLoadAssignment> {
    let la: ClusterLoadAssignment = from_yaml(yaml, ParseOptions::default()).expect("assignment");
    update(version, vec![la], |l: &ClusterLoadAssignment| {
        l.cluster_name.clone()
    })
}

fn static_cluster(name: &str, addr: std::net::SocketAddr, timeout: &str) -> String {
    format!(
        "  - name: {name}\n    connect_timeout: {timeout}\n    load_assignment:\n      cluster_name: {name}\n      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }} }}] }}]\n",
        addr.ip(),
        addr.port()
    )
}

fn clusters(entries: &[String]) -> String {
    format!("static_resources:\n  clusters:\n{}", entries.concat())
}

fn manager() -> (ClusterManager, Store) {
    let store = Store::new();
    let m = ClusterManager::new(&store, &SecretStore::new(&store));
    (m, store)
}

#[tokio::test]
async fn unchanged_clusters_keep_their_pool_and_removed_ones_go() {
    let b = backend("b", false, Duration::ZERO).await;
    let (m, store) = manager();
    let c = static_cluster("c", b.addr, "1s");
    let other = static_cluster("other", b.addr, "1s");
    let applied = m
        .apply_clusters(&cds("1", &clusters(&[c.clone(), other.clone()])))
        .expect("accepted");
    assert_eq!(applied.added, ["c", "other"]);
    fetch(&m, "h").await;
    // The connection returns to the pool once the response has been read.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = m.get("c").expect("c");

    // Only `other` changes: `c` is the same cluster with the same pooled connection.
    let other2 = static_cluster("other", b.addr, "2s");
    let applied = m
        .apply_clusters(&cds("2", &clusters(&[c.clone(), other2])))
        .expect("accepted");
    assert_eq!(
        (applied.updated.as_slice(), applied.unchanged),
        (&["other".to_string()][..], 1)
    );
    assert!(Arc::ptr_eq(&before, &m.get("c").expect("c")));
    fetch(&m, "h").await;
    assert_eq!(b.seen.accepts.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(store.counter("cluster.c.upstream_cx_total").get(), 1);

    // State of the world without `other`: removed.
    let applied = m
        .apply_clusters(&cds("3", &clusters(&[c])))
        .expect("accepted");
    assert_eq!(applied.removed, ["other"]);
    assert!(m.get("other").is_none());
    assert_eq!(store.gauge("cluster_manager.active_clusters").get(), 1);
}

#[tokio::test]
async fn a_removed_cluster_finishes_its_request_and_does_not_pool_the_connection() {
    use http_body_util::BodyExt;
    let b = backend("b", false, Duration::from_millis(100)).await;
    let (m, _) = manager();
    let c = static_cluster("c", b.addr, "1s");
    m.apply_clusters(&cds("1", &clusters(&[c])))
        .expect("accepted");
    // The router holds the cluster for as long as its request lasts.
    let cluster = m.get("c").expect("c");
    let in_flight = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let sent = cluster
                .send(super::get("h"), &crate::upstream::SendContext::default())
                .await
                .expect("response");
            sent.response.into_body().collect().await.expect("body");
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    let applied = m
        .apply_clusters(&cds("2", &clusters(&[])))
        .expect("accepted");
    assert_eq!(applied.removed, ["c"]);
    in_flight.await.expect("the in-flight request finishes");
    // Its connection would go back to the pool now; the removed cluster closes it instead.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let hosts = cluster.host_set();
    assert_eq!(
        hosts.hosts[0].pool.default.h1.len(),
        0,
        "nothing pooled after removal"
    );
}

#[tokio::test]
async fn an_invalid_cluster_rejects_the_update_and_names_the_field() {
    let b = backend("b", false, Duration::ZERO).await;
    let (m, _) = manager();
    m.apply_clusters(&cds("1", &clusters(&[static_cluster("c", b.addr, "1s")])))
        .expect("accepted");
    let bad = static_cluster("bad", b.addr, "0s");
    let errors = m
        .apply_clusters(&cds(
            "2",
            &clusters(&[static_cluster("c", b.addr, "3s"), bad]),
        ))
        .expect_err("rejected");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].name, "bad");
    assert_eq!(
        errors[0].message,
        "connect_timeout: connect_timeout must be greater than 0s"
    );
    // Nothing of the update applied: `c` keeps its old proto.
    let entry = m
        .entries()
        .into_iter()
        .find(|e| e.proto.name == "c")
        .expect("c");
    assert_eq!(entry.version, "1");
}

#[tokio::test]
async fn static_clusters_cannot_be_replaced_by_cds() {
    let b = backend("b", false, Duration::ZERO).await;
    let store = Store::new();
    let m = ClusterManager::from_protos(
        &parse(&clusters(&[static_cluster("c", b.addr, "1s")])),
        &crate::config::Path::default(),
        &store,
    )
    .expect("static");
    let errors = m
        .apply_clusters(&cds("1", &clusters(&[static_cluster("c", b.addr, "2s")])))
        .expect_err("rejected");
    assert!(errors[0].message.contains("static cluster"), "{errors:?}");
    // A state of the world without the static cluster leaves it alone.
    m.apply_clusters(&cds("2", &clusters(&[])))
        .expect("accepted");
    assert!(m.get("c").is_some());
}

#[tokio::test]
async fn eds_clusters_warm_until_their_first_assignment() {
    let b = backend("b", false, Duration::ZERO).await;
    let (m, store) = manager();
    let eds_cluster = "static_resources:\n  clusters:\n  - name: c\n    type: EDS\n    connect_timeout: 1s\n    eds_cluster_config: { service_name: svc, eds_config: { ads: {} } }\n";
    m.apply_clusters(&cds("1", eds_cluster)).expect("accepted");
    assert!(m.get("c").is_none(), "a warming cluster does not serve");
    assert_eq!(store.gauge("cluster_manager.warming_clusters").get(), 1);
    assert_eq!(m.eds_service_names(), ["svc"]);

    let assignment = format!(
        "cluster_name: svc\nendpoints:\n- lb_endpoints:\n  - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n    health_status: HEALTHY\n",
        b.addr.ip(),
        b.addr.port()
    );
    m.apply_endpoints(&eds("e1", &assignment))
        .expect("accepted");
    tokio::time::timeout(Duration::from_secs(5), m.initialized())
        .await
        .expect("warmed");
    assert_eq!(store.gauge("cluster_manager.warming_clusters").get(), 0);
    let got = fetch(&m, "h").await;
    assert_eq!(got.upstream, b.addr);
    tokio::time::sleep(Duration::from_millis(20)).await;

    // The same assignment again keeps the host and its pooled connection.
    m.apply_endpoints(&eds("e2", &assignment))
        .expect("accepted");
    fetch(&m, "h").await;
    assert_eq!(b.seen.accepts.load(std::sync::atomic::Ordering::SeqCst), 1);

    // An invalid assignment is rejected with the field.
    let bad = "cluster_name: svc\nendpoints:\n- lb_endpoints:\n  - endpoint: { address: { socket_address: { address: not-an-ip, port_value: 1 } } }\n";
    let errors = m.apply_endpoints(&eds("e3", bad)).expect_err("rejected");
    assert_eq!(errors[0].name, "svc");
    assert!(
        errors[0].message.starts_with("endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: malformed IP address"),
        "{errors:?}"
    );
}
