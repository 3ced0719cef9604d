//! Istio's standard metrics from the data path: a sidecar bootstrap with Istio's node metadata,
//! `istio.metadata_exchange` and `istio.stats` on an inbound and an outbound listener and the
//! network `istio.stats` on a TCP one; requests carry `x-envoy-peer-metadata` as a client sidecar
//! sends it, and `/stats/prometheus` (on the admin port and through the 15090-style listener)
//! reports `istio_*` series with Istio's labels.
//!
//! remora only: the Envoy under test is a stock build without Istio's filters, so it rejects this
//! configuration.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use envoy_types::pb::google::protobuf::{value::Kind as ValueKind, Struct, Value};
use prost::Message;
use remora_tests::client::{self, Protocol, Request};
use remora_tests::stack::Stack;
use remora_tests::{admin, Kind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FIXTURE: &str = "istio/stats.yaml";

fn text(v: &str) -> Value {
    Value {
        kind: Some(ValueKind::StringValue(v.into())),
    }
}

/// `x-envoy-peer-metadata` as productpage's sidecar sends it: base64 of a serialized Struct.
fn productpage_metadata() -> String {
    let labels: HashMap<String, Value> = [
        ("app", "productpage"),
        ("version", "v1"),
        ("service.istio.io/canonical-name", "productpage"),
        ("service.istio.io/canonical-revision", "v1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), text(v)))
    .collect();
    let mut fields: HashMap<String, Value> = [
        ("NAME", "productpage-v1-6b746f74dc-9stvs"),
        ("NAMESPACE", "bookinfo"),
        ("WORKLOAD_NAME", "productpage-v1"),
        ("CLUSTER_ID", "Kubernetes"),
        (
            "OWNER",
            "kubernetes://apis/apps/v1/namespaces/bookinfo/deployments/productpage-v1",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), text(v)))
    .collect();
    fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(ValueKind::StructValue(Struct { fields: labels })),
        },
    );
    base64::engine::general_purpose::STANDARD.encode(Struct { fields }.encode_to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_requests_are_labelled_with_the_exchanged_peer() {
    let s = Stack::start(Kind::Remora, FIXTURE).await;
    let peer = productpage_metadata();
    for _ in 0..3 {
        let req = Request::get("/reviews/0")
            .host("reviews:9080")
            .header("x-envoy-peer-metadata", &peer)
            .header(
                "x-envoy-peer-metadata-id",
                "sidecar~10.1.0.7~productpage-v1",
            );
        let r = client::send(s.addr(), Protocol::Http1, &req)
            .await
            .expect("request");
        assert_eq!(r.status, 200);
        let echo = r.echo().expect("an echo");
        assert!(
            !echo.headers.contains_key("x-envoy-peer-metadata")
                && !echo.headers.contains_key("x-envoy-peer-metadata-id"),
            "the exchange headers stop at the sidecar: {:?}",
            echo.headers
        );
        assert!(
            r.header("x-envoy-peer-metadata").is_some(),
            "the response introduces the server's workload"
        );
    }
    let labels = [
        "reporter=\"destination\"",
        "source_workload=\"productpage-v1\"",
        "source_workload_namespace=\"bookinfo\"",
        "source_app=\"productpage\"",
        "source_canonical_service=\"productpage\"",
        "source_cluster=\"Kubernetes\"",
        "source_principal=\"unknown\"",
        "destination_workload=\"reviews-v1\"",
        "destination_workload_namespace=\"bookinfo\"",
        "destination_app=\"reviews\"",
        "destination_version=\"v1\"",
        "destination_canonical_service=\"reviews\"",
        "destination_canonical_revision=\"v1\"",
        "destination_service_name=\"reviews\"",
        "destination_cluster=\"Kubernetes\"",
        "request_protocol=\"http\"",
        "response_code=\"200\"",
        "grpc_response_status=\"\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"none\"",
    ];
    let text = admin::wait_for_sample(s.admin(), "istio_requests_total", &labels, 3.0).await;
    assert_eq!(
        admin::sample(&text, "istio_requests_total", &labels),
        Some(3.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE istio_requests_total counter\n"),
        "{text}"
    );
    assert!(
        text.find("envoy_").expect("Envoy's stats") < text.find("istio_").expect("Istio's"),
        "Envoy's stats come first"
    );
    for histogram in [
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
    ] {
        assert!(
            text.contains(&format!("# TYPE {histogram} histogram\n")),
            "{histogram}: {text}"
        );
        let mut inf = labels.to_vec();
        inf.push("le=\"+Inf\"");
        assert_eq!(
            admin::sample(&text, &format!("{histogram}_bucket"), &inf),
            Some(3.0),
            "{histogram}: {text}"
        );
        assert_eq!(
            admin::sample(&text, &format!("{histogram}_count"), &labels),
            Some(3.0),
            "{histogram}: {text}"
        );
    }
    // Every request is bigger than a byte and smaller than 10 kB.
    let mut small = labels.to_vec();
    small.push("le=\"10000\"");
    assert_eq!(
        admin::sample(&text, "istio_request_bytes_bucket", &small),
        Some(3.0)
    );
    small.pop();
    small.push("le=\"1\"");
    assert_eq!(
        admin::sample(&text, "istio_request_bytes_bucket", &small),
        Some(0.0)
    );

    // Istio's Prometheus scrape goes through the 15090 listener to the admin API.
    let via = client::send(
        s.env.addr("listener_port4"),
        Protocol::Http1,
        &Request::get("/stats/prometheus"),
    )
    .await
    .expect("scrape");
    assert_eq!(via.status, 200);
    assert!(
        admin::sample(&via.text(), "istio_requests_total", &labels).is_some(),
        "{}",
        via.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_requests_learn_the_server_from_its_response() {
    let s = Stack::start(Kind::Remora, FIXTURE).await;
    // app → outbound listener → (x-envoy-peer-metadata) → inbound listener → backend, and back.
    let r = client::send(
        s.env.addr("listener_port2"),
        Protocol::Http1,
        &Request::get("/reviews/1").host("reviews:9080"),
    )
    .await
    .expect("request");
    assert_eq!(r.status, 200);
    assert!(
        r.header("x-envoy-peer-metadata").is_none(),
        "the upstream's metadata stops at the client sidecar"
    );
    let source = [
        "reporter=\"source\"",
        "source_workload=\"reviews-v1\"",
        "destination_workload=\"reviews-v1\"",
        "destination_service=\"reviews.bookinfo.svc.cluster.local\"",
        "destination_service_name=\"reviews\"",
        "destination_service_namespace=\"bookinfo\"",
        "response_code=\"200\"",
        "connection_security_policy=\"unknown\"",
    ];
    let text = admin::wait_for_sample(s.admin(), "istio_requests_total", &source, 1.0).await;
    assert_eq!(
        admin::sample(&text, "istio_requests_total", &source),
        Some(1.0),
        "{text}"
    );
    // The inbound side learnt the client from the request the outbound side sent.
    let destination = ["reporter=\"destination\"", "source_workload=\"reviews-v1\""];
    assert_eq!(
        admin::sample(&text, "istio_requests_total", &destination),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_report_opens_closes_and_bytes() {
    let s = Stack::start(Kind::Remora, FIXTURE).await;
    let mut conn = tokio::net::TcpStream::connect(s.env.addr("listener_port3"))
        .await
        .expect("connect");
    conn.write_all(b"hello istio").await.expect("write");
    let mut buf = [0u8; 11];
    conn.read_exact(&mut buf).await.expect("echo");
    assert_eq!(&buf, b"hello istio");
    drop(conn);
    let labels = [
        "reporter=\"destination\"",
        "destination_workload=\"reviews-v1\"",
        "request_protocol=\"tcp\"",
        "connection_security_policy=\"none\"",
    ];
    // The harness's readiness probe connected too, so count ours by its bytes and require every
    // opened connection to have closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let settled = |text: &str| {
        let get = |m: &str| admin::sample(text, m, &labels);
        get("istio_tcp_sent_bytes_total") == Some(11.0)
            && get("istio_tcp_received_bytes_total") == Some(11.0)
            && get("istio_tcp_connections_opened_total")
                == get("istio_tcp_connections_closed_total")
    };
    let mut text = admin::prometheus(s.admin()).await;
    while !settled(&text) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = admin::prometheus(s.admin()).await;
    }
    assert!(settled(&text), "{text}");
    assert!(
        admin::sample(&text, "istio_tcp_connections_closed_total", &labels)
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

/// The same inbound sidecar configured as istiod up to 1.17 does (and many EnvoyFilters still
/// do): Istio's stats and metadata exchange as Wasm filters on the null VM. The metrics and the
/// exchange are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_vm_wasm_plugins_work_as_the_native_filters() {
    let native = remora_tests::fixture(FIXTURE);
    let exchange = r#"          - name: istio.metadata_exchange
            typed_config:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/io.istio.http.peer_metadata.Config
              value:
                downstream_discovery:
                - istio_headers: {}
                - workload_discovery: {}
                downstream_propagation:
                - istio_headers: {}
          - name: istio.stats
            typed_config:
              "@type": type.googleapis.com/stats.PluginConfig
              disableHostHeaderFallback: true
"#;
    let wasm = r#"          - name: istio.metadata_exchange
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: "{}"
                vm_config:
                  runtime: envoy.wasm.runtime.null
                  code: { local: { inline_string: envoy.wasm.metadata_exchange } }
          - name: istio.stats
            typed_config:
              "@type": type.googleapis.com/udpa.type.v1.TypedStruct
              type_url: type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              value:
                config:
                  root_id: stats_inbound
                  configuration:
                    "@type": type.googleapis.com/google.protobuf.StringValue
                    value: '{"debug": "false", "stat_prefix": "istio", "disable_host_header_fallback": true}'
                  vm_config:
                    vm_id: stats_inbound
                    runtime: envoy.wasm.runtime.null
                    code: { local: { inline_string: envoy.wasm.stats } }
"#;
    assert!(native.contains(exchange), "the fixture's inbound filters");
    let template = native.replacen(exchange, wasm, 1);
    let s = Stack::start_text(Kind::Remora, &template, Default::default()).await;
    let req = Request::get("/reviews/0")
        .host("reviews:9080")
        .header("x-envoy-peer-metadata", &productpage_metadata())
        .header(
            "x-envoy-peer-metadata-id",
            "sidecar~10.1.0.7~productpage-v1",
        );
    let r = client::send(s.addr(), Protocol::Http1, &req)
        .await
        .expect("request");
    assert_eq!(r.status, 200);
    assert!(
        r.header("x-envoy-peer-metadata").is_some(),
        "the response introduces the server's workload"
    );
    let labels = [
        "reporter=\"destination\"",
        "source_workload=\"productpage-v1\"",
        "destination_workload=\"reviews-v1\"",
        "response_code=\"200\"",
    ];
    let text = admin::wait_for_sample(s.admin(), "istio_requests_total", &labels, 1.0).await;
    assert_eq!(
        admin::sample(&text, "istio_requests_total", &labels),
        Some(1.0),
        "{text}"
    );
}
