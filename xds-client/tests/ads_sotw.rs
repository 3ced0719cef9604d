//! State-of-the-world ADS against an in-process control plane, over TCP and a Unix socket.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use remora_xds_client::{TypeUrl, XdsClient, XdsEndpoint};
use support::{any, node, serve_tcp, serve_unix, temp_dir, Offer, Recorder};
use tokio::time::Instant;

/// Reconnect backoff base of the tests.
const BASE: Duration = Duration::from_millis(300);
/// Allowance for a busy test machine.
// Generous: the assertion is that the client comes back promptly, not at the 30 s cap, even on a
// loaded 2-core CI machine.
const SLACK: Duration = Duration::from_secs(5);

fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        ..Default::default()
    }
}

fn push(type_url: &str, version: &str, nonce: &str, resources: Vec<Any>) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        nonce: nonce.into(),
        type_url: type_url.into(),
        resources,
        ..Default::default()
    }
}

#[tokio::test]
async fn tcp_ads_acks_nacks_removes_and_resumes_after_the_stream_dies() {
    support::init_tracing();
    let (uri, mut plane) = serve_tcp(Offer::Ads).await;
    let builder = XdsClient::builder(XdsEndpoint::tcp(&uri).expect("uri"), node())
        .backoff(BASE, Duration::from_secs(2));
    let mut clusters = Recorder::new(TypeUrl::CLUSTER);
    clusters.follow = Some((builder.subscriptions(), TypeUrl::ENDPOINT));
    let endpoints = Recorder::new(TypeUrl::ENDPOINT);
    let client = builder
        .handler(clusters.clone())
        .handler(endpoints.clone())
        .build()
        .expect("client");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .run(async {
                    let _ = stopped.await;
                })
                .await
        })
    };

    let mut s = plane.sotw_stream().await;
    let first = s.recv().await;
    assert_eq!(first.type_url, TypeUrl::CLUSTER, "CDS goes first");
    assert!(first.resource_names.is_empty(), "CDS is a wildcard");
    assert_eq!(
        first.node.as_ref().map(|n| n.id.as_str()),
        Some(node().id.as_str())
    );
    assert!(first.version_info.is_empty() && first.response_nonce.is_empty());

    s.send(push(
        TypeUrl::CLUSTER,
        "v1",
        "n1",
        vec![any(&cluster("a")), any(&cluster("b"))],
    ));
    let ack = s.recv().await;
    assert_eq!(
        (ack.type_url.as_str(), ack.version_info.as_str()),
        (TypeUrl::CLUSTER, "v1")
    );
    assert_eq!(ack.response_nonce, "n1");
    assert!(
        ack.error_detail.is_none() && ack.node.is_none(),
        "node only on the first request"
    );
    // The CDS handler subscribed EDS to its clusters: the request follows the ACK.
    let eds = s.recv().await;
    assert_eq!(eds.type_url, TypeUrl::ENDPOINT);
    assert_eq!(eds.resource_names, ["a", "b"]);
    assert!(eds.node.is_none() && eds.version_info.is_empty());

    clusters.reject("bad");
    s.send(push(
        TypeUrl::CLUSTER,
        "v2",
        "n2",
        vec![any(&cluster("a")), any(&cluster("bad"))],
    ));
    let nack = s.recv().await;
    assert_eq!(
        (nack.version_info.as_str(), nack.response_nonce.as_str()),
        ("v1", "n2")
    );
    let detail = nack.error_detail.expect("NACK");
    assert_eq!(detail.code, 3, "INVALID_ARGUMENT");
    assert_eq!(detail.message, "cluster \"bad\": lb_policy: unsupported");

    s.send(push(TypeUrl::CLUSTER, "v3", "n3", vec![any(&cluster("a"))]));
    let ack = s.recv().await;
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("v3", "n3")
    );
    let last = clusters.updates().pop().expect("update");
    assert_eq!(
        last.removed,
        ["b"],
        "absent from a CDS response means removed"
    );
    assert_eq!(
        s.recv().await.resource_names,
        ["a"],
        "EDS follows the clusters"
    );

    let cla = ClusterLoadAssignment {
        cluster_name: "a".into(),
        ..Default::default()
    };
    s.send(push(TypeUrl::ENDPOINT, "e1", "n4", vec![any(&cla)]));
    let ack = s.recv().await;
    assert_eq!(
        (ack.type_url.as_str(), ack.version_info.as_str()),
        (TypeUrl::ENDPOINT, "e1")
    );
    assert_eq!(ack.resource_names, ["a"]);
    assert_eq!(endpoints.updates().len(), 1);

    let stats = client.stats();
    assert!(stats.connected());
    let cds = stats.type_stats(TypeUrl::CLUSTER).expect("cds stats");
    assert_eq!(cds.update_attempt.load(Ordering::Relaxed), 3);
    assert_eq!(cds.update_success.load(Ordering::Relaxed), 2);
    assert_eq!(cds.update_rejected.load(Ordering::Relaxed), 1);
    assert_eq!(cds.version_text().as_str(), "v3");

    // The server drops the stream: the client backs off and resubscribes with the
    // versions it runs, node first again.
    let killed = Instant::now();
    drop(s);
    let mut s = plane.sotw_stream().await;
    let waited = killed.elapsed();
    // Full jitter below the 300 ms base (the stream had delivered, so the backoff was reset), plus
    // scheduling slack on a loaded machine.
    assert!(waited < BASE + SLACK, "{waited:?}");
    let cds = s.recv().await;
    assert_eq!(
        (cds.type_url.as_str(), cds.version_info.as_str()),
        (TypeUrl::CLUSTER, "v3")
    );
    assert!(cds.node.is_some() && cds.response_nonce.is_empty());
    let eds = s.recv().await;
    assert_eq!(
        (eds.type_url.as_str(), eds.version_info.as_str()),
        (TypeUrl::ENDPOINT, "e1")
    );
    assert_eq!(eds.resource_names, ["a"]);
    assert!(eds.node.is_none());
    assert_eq!(client.stats().stream_attempts.load(Ordering::Relaxed), 2);

    stop.send(()).expect("runner alive");
    runner.await.expect("run ends on shutdown");
    assert!(!client.stats().connected());
}

#[tokio::test]
async fn uds_client_waits_for_the_server_follows_name_changes_and_survives_errors() {
    let dir = temp_dir("sotw-uds");
    let path = dir.join("XDS");
    let listeners = Recorder::new(TypeUrl::LISTENER);
    let routes = Recorder::new(TypeUrl::ROUTE);
    let client = XdsClient::builder(XdsEndpoint::unix(&path), node())
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .handler(listeners.clone())
        .handler(routes.clone())
        .build()
        .expect("client");
    let runner = {
        let client = client.clone();
        tokio::spawn(async move { client.run(std::future::pending()).await })
    };
    // No server yet: connecting fails and is retried with backoff.
    while client.stats().stream_attempts.load(Ordering::Relaxed) < 3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!client.stats().connected());
    let mut plane = serve_unix(&path);

    let mut s = plane.sotw_stream().await;
    let lds = s.recv().await;
    assert_eq!(lds.type_url, TypeUrl::LISTENER);
    assert!(lds.node.is_some());
    let l = Listener {
        name: "l1".into(),
        ..Default::default()
    };
    s.send(push(TypeUrl::LISTENER, "1", "a", vec![any(&l)]));
    assert_eq!(s.recv().await.version_info, "1");

    client.subscribe(TypeUrl::ROUTE, ["r1"]);
    let rds = s.recv().await;
    assert_eq!(
        (rds.type_url.as_str(), rds.resource_names.as_slice()),
        (TypeUrl::ROUTE, &["r1".to_string()][..])
    );
    client.subscribe(TypeUrl::ROUTE, ["r1", "r2"]);
    assert_eq!(s.recv().await.resource_names, ["r1", "r2"]);
    // An RDS response without r2 removes nothing (absence is not removal for RDS).
    let r1 = envoy_types::pb::envoy::config::route::v3::RouteConfiguration {
        name: "r1".into(),
        ..Default::default()
    };
    s.send(push(TypeUrl::ROUTE, "7", "b", vec![any(&r1)]));
    assert_eq!(s.recv().await.version_info, "7");
    assert!(routes.updates()[0].removed.is_empty());

    s.fail(tonic::Status::unavailable("control plane restarting"));
    let mut s = plane.sotw_stream().await;
    let again: Vec<_> = [s.recv().await, s.recv().await]
        .into_iter()
        .map(|r| (r.type_url, r.version_info, r.resource_names))
        .collect();
    assert_eq!(
        again,
        [
            (TypeUrl::LISTENER.to_string(), "1".to_string(), vec![]),
            (
                TypeUrl::ROUTE.to_string(),
                "7".to_string(),
                vec!["r1".to_string(), "r2".to_string()]
            ),
        ]
    );
    runner.abort();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sds_client_uses_stream_secrets() {
    let (uri, mut plane) = serve_tcp(Offer::Sds).await;
    let secrets = Recorder::new(TypeUrl::SECRET);
    let client = XdsClient::sds(
        XdsEndpoint::tcp(&uri).expect("uri"),
        node(),
        secrets.clone(),
    )
    .build()
    .expect("client");
    client.subscribe(TypeUrl::SECRET, ["default", "ROOTCA"]);
    let runner = {
        let client = client.clone();
        tokio::spawn(async move { client.run(std::future::pending()).await })
    };
    let mut s = plane.sotw_stream().await;
    let first = s.recv().await;
    assert_eq!(first.type_url, TypeUrl::SECRET);
    assert_eq!(first.resource_names, ["ROOTCA", "default"]);
    let secret = Secret {
        name: "default".into(),
        ..Default::default()
    };
    s.send(push(TypeUrl::SECRET, "s1", "x", vec![any(&secret)]));
    let ack = s.recv().await;
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("s1", "x")
    );
    assert_eq!(secrets.updates()[0].resources[0].name, "default");
    runner.abort();
}
