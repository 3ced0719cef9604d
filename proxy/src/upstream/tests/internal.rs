//! Internal listener endpoints: in-process connections, what an internal upstream carries along,
//! and the configurations that are refused.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::manager;
use crate::filter_state::{FilterState, Object, Sharing, Value};
use crate::upstream::ConnectContext;

fn cluster(transport_socket: &str) -> String {
    format!(
        "static_resources:\n  clusters:\n  - name: c\n{transport_socket}    load_assignment:\n      cluster_name: c\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ envoy_internal_address: {{ server_listener_name: inner, endpoint_id: e1 }} }} }}\n"
    )
}

const INTERNAL_UPSTREAM: &str = "    transport_socket:\n      name: envoy.transport_sockets.internal_upstream\n      typed_config:\n        '@type': type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport\n        passthrough_metadata: [{ kind: { host: {} }, name: istio }]\n        transport_socket: { name: envoy.transport_sockets.raw_buffer, typed_config: { '@type': type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer } }\n";

fn state() -> FilterState {
    let mut s = FilterState::default();
    for (key, sharing) in [("kept", Sharing::None), ("shared", Sharing::Once)] {
        s.set(Object {
            key: key.into(),
            value: Value::String(key.into()),
            read_only: false,
            sharing,
        });
    }
    s
}

/// Connects through cluster `c` to a registered listener `inner`; returns what it received.
async fn connect(yaml: &str) -> (FilterState, String) {
    let (m, store) = manager(yaml).expect("valid");
    let (tx, mut rx) = mpsc::unbounded_channel();
    m.internal().register("inner", move |conn| {
        let _ = tx.send(conn);
    });
    let c = m.get("c").expect("c");
    let mut conn = c
        .connect_tcp(&ConnectContext {
            filter_state: state(),
            ..Default::default()
        })
        .await
        .expect("connected");
    assert_eq!(conn.internal.as_deref(), Some("envoy://inner/e1"));
    let mut accepted = rx.recv().await.expect("accepted");
    conn.stream.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    accepted.stream.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"ping");
    assert_eq!(store.counter("cluster.c.upstream_cx_total").get(), 1);
    if yaml.contains("internal_upstream") {
        // The host entry (`istio`) is missing from the endpoint's metadata.
        assert_eq!(
            store
                .counter("cluster.c.internal_upstream.no_metadata")
                .get(),
            1
        );
    }
    (
        accepted.filter_state,
        String::from_utf8_lossy(&buf).into_owned(),
    )
}

#[tokio::test]
async fn internal_upstream_carries_the_objects_shared_with_the_upstream() {
    let (s, _) = connect(&cluster(INTERNAL_UPSTREAM)).await;
    assert!(s.get("kept").is_none());
    assert_eq!(s.get("shared").map(|o| o.sharing), Some(Sharing::None));
}

#[tokio::test]
async fn without_internal_upstream_nothing_is_carried() {
    let (s, _) = connect(&cluster("")).await;
    assert!(s.is_empty());
}

#[tokio::test]
async fn no_such_internal_listener_is_a_connect_failure() {
    let (m, store) = manager(&cluster("")).expect("valid");
    let c = m.get("c").expect("c");
    let e = c
        .connect_tcp(&ConnectContext::default())
        .await
        .expect_err("refused");
    assert_eq!(e.response_flag(), "UF");
    assert_eq!(store.counter("cluster.c.upstream_cx_connect_fail").get(), 1);
}

#[test]
fn wrapped_sockets_are_validated_as_a_clusters_own() {
    let tls = "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config: { '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, sni: inner.mesh }\n";
    let (m, _) = manager(&cluster(tls)).expect("TLS to an internal endpoint");
    assert!(m.get("c").expect("c").spec().tls.is_some());
    let wrapped = INTERNAL_UPSTREAM.replace(
        "transport_socket: { name: envoy.transport_sockets.raw_buffer, typed_config: { '@type': type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer } }",
        "transport_socket: { name: envoy.transport_sockets.tls, typed_config: { '@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext } }",
    );
    let (m, _) = manager(&cluster(&wrapped)).expect("TLS inside internal_upstream");
    let spec = m.get("c").expect("c").spec().clone();
    assert!(spec.tls.is_some() && spec.internal_upstream.is_some());
    let tap = INTERNAL_UPSTREAM.replace(
        "transport_socket: { name: envoy.transport_sockets.raw_buffer, typed_config: { '@type': type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer } }",
        "transport_socket: { name: envoy.transport_sockets.tap }",
    );
    let e = manager(&cluster(&tap)).expect_err("tap").to_string();
    assert!(
        e.contains(
            "static_resources.clusters[0].transport_socket.typed_config.transport_socket.name"
        ),
        "{e}"
    );
    let bare = "    transport_socket:\n      name: envoy.transport_sockets.internal_upstream\n      typed_config: { '@type': type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport }\n";
    let e = manager(&cluster(bare))
        .expect_err("no wrapped socket")
        .to_string();
    assert!(
        e.contains("transport_socket.typed_config.transport_socket: transport_socket is required"),
        "{e}"
    );
    let dns = cluster("    type: STRICT_DNS\n");
    let e = manager(&dns).expect_err("dns").to_string();
    assert!(
        e.contains(
            "envoy_internal_address: internal listener endpoints need a STATIC or EDS cluster"
        ),
        "{e}"
    );
}

#[test]
fn http_pools_are_keyed_by_the_objects_a_request_shares() {
    use crate::upstream::pool::HostPool;
    use std::sync::Arc;
    let pools = HostPool::default();
    let tagged = |v: &str| {
        let mut s = FilterState::default();
        s.set(Object {
            key: "tag".into(),
            value: Value::String(v.into()),
            read_only: false,
            sharing: Sharing::Once,
        });
        s
    };
    let none = pools.for_key(None, &FilterState::default());
    assert!(Arc::ptr_eq(&none, &pools.default));
    let a = pools.for_key(None, &tagged("a"));
    assert!(!Arc::ptr_eq(&a, &none));
    assert!(Arc::ptr_eq(&a, &pools.for_key(None, &tagged("a"))));
    assert!(!Arc::ptr_eq(&a, &pools.for_key(None, &tagged("b"))));
    // Keys from requests do not pile up: unused pools are forgotten.
    for i in 0..200 {
        pools.for_key(None, &tagged(&i.to_string()));
    }
    assert!(
        Arc::ptr_eq(&a, &pools.for_key(None, &tagged("a"))),
        "a held pool stays"
    );
}
