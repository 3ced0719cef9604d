//! Incremental (delta) ADS against an in-process control plane.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};
use remora_xds_client::{TypeUrl, XdsClient, XdsEndpoint};
use support::{any, node, serve_tcp, serve_unix, temp_dir, Offer, Recorder};

fn push(
    type_url: &str,
    nonce: &str,
    added: Vec<(String, &str, envoy_types::pb::google::protobuf::Any)>,
    removed: &[&str],
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: format!("sys-{nonce}"),
        type_url: type_url.into(),
        nonce: nonce.into(),
        resources: added
            .into_iter()
            .map(|(name, version, resource)| Resource {
                name,
                version: version.into(),
                resource: Some(resource),
                ..Default::default()
            })
            .collect(),
        removed_resources: removed.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    }
}

fn cluster(
    name: &str,
    version: &'static str,
) -> (String, &'static str, envoy_types::pb::google::protobuf::Any) {
    let c = Cluster {
        name: name.into(),
        ..Default::default()
    };
    (name.to_string(), version, any(&c))
}

#[tokio::test]
async fn delta_ads_over_uds_acks_nacks_removes_and_resumes_with_versions() {
    let dir = temp_dir("delta-uds");
    let path = dir.join("XDS");
    let mut plane = serve_unix(&path);
    let clusters = Recorder::new(TypeUrl::CLUSTER);
    let routes = Recorder::new(TypeUrl::ROUTE);
    let client = XdsClient::builder(XdsEndpoint::unix(&path), node())
        .delta(true)
        .node_on_every_request(true) // ignored by delta: node goes on the first request only
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .handler(clusters.clone())
        .handler(routes.clone())
        .build()
        .expect("client");
    let runner = {
        let client = client.clone();
        tokio::spawn(async move { client.run(std::future::pending()).await })
    };

    let mut s = plane.delta_stream().await;
    let first = s.recv().await;
    assert_eq!(first.type_url, TypeUrl::CLUSTER);
    assert!(first.node.is_some());
    assert!(first.resource_names_subscribe.is_empty(), "legacy wildcard");
    assert!(first.initial_resource_versions.is_empty());

    s.send(push(
        TypeUrl::CLUSTER,
        "1",
        vec![cluster("a", "v1"), cluster("b", "v1")],
        &[],
    ));
    let ack = s.recv().await;
    assert_eq!(ack.response_nonce, "1");
    assert!(ack.error_detail.is_none() && ack.node.is_none());

    clusters.reject("b");
    s.send(push(TypeUrl::CLUSTER, "2", vec![cluster("b", "v2")], &[]));
    let nack = s.recv().await;
    assert_eq!(nack.response_nonce, "2");
    let detail = nack.error_detail.expect("NACK");
    assert_eq!(
        (detail.code, detail.message.as_str()),
        (3, "cluster \"b\": lb_policy: unsupported")
    );

    s.send(push(TypeUrl::CLUSTER, "3", vec![], &["a"]));
    assert_eq!(s.recv().await.response_nonce, "3");
    assert_eq!(clusters.updates().last().expect("update").removed, ["a"]);

    client.subscribe(TypeUrl::ROUTE, ["r1"]);
    let rds = s.recv().await;
    assert_eq!(rds.type_url, TypeUrl::ROUTE);
    assert_eq!(rds.resource_names_subscribe, ["r1"]);
    assert!(rds.node.is_none() && rds.response_nonce.is_empty());
    client.subscribe(TypeUrl::ROUTE, ["r2"]);
    let change = s.recv().await;
    assert_eq!(
        (
            change.resource_names_subscribe,
            change.resource_names_unsubscribe
        ),
        (vec!["r2".to_string()], vec!["r1".to_string()])
    );

    let cds = client.stats().type_stats(TypeUrl::CLUSTER).expect("stats");
    assert_eq!(cds.update_rejected.load(Ordering::Relaxed), 1);
    assert_eq!(cds.version_text().as_str(), "sys-3");

    s.fail(tonic::Status::internal("boom"));
    let mut s = plane.delta_stream().await;
    let cds = s.recv().await;
    assert_eq!(cds.type_url, TypeUrl::CLUSTER);
    assert!(cds.node.is_some(), "node again on the new stream");
    // Only b at v1 survives: v2 was NACKed and a was removed.
    assert_eq!(cds.initial_resource_versions.len(), 1);
    assert_eq!(cds.initial_resource_versions["b"], "v1");
    let rds = s.recv().await;
    assert_eq!(rds.resource_names_subscribe, ["r2"]);
    assert!(rds.node.is_none());
    runner.abort();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn delta_sds_uses_delta_secrets() {
    let (uri, mut plane) = serve_tcp(Offer::Sds).await;
    let secrets = Recorder::new(TypeUrl::SECRET);
    let client = XdsClient::sds(
        XdsEndpoint::tcp(&uri).expect("uri"),
        node(),
        secrets.clone(),
    )
    .delta(true)
    .build()
    .expect("client");
    client.subscribe(TypeUrl::SECRET, ["default"]);
    let runner = {
        let client = client.clone();
        tokio::spawn(async move { client.run(std::future::pending()).await })
    };
    let mut s = plane.delta_stream().await;
    let first = s.recv().await;
    assert_eq!(first.resource_names_subscribe, ["default"]);
    let secret = Secret {
        name: "default".into(),
        ..Default::default()
    };
    s.send(push(
        TypeUrl::SECRET,
        "x",
        vec![("default".into(), "1", any(&secret))],
        &[],
    ));
    assert_eq!(s.recv().await.response_nonce, "x");
    assert_eq!(secrets.updates()[0].resources[0].version, "1");
    runner.abort();
}
