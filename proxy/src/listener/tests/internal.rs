//! Internal listeners: connections by name, chains by the restored addresses, stats as for sockets.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::build_ok;
use crate::drain;
use crate::filter_state::{FilterState, Object, Sharing, Value};
use crate::listener::{internal, ActiveListener, InternalAccepted, InternalListeners, Serving};
use crate::stats::Store;

const LISTENER: &str = "name: inner\ninternal_listener: {}\nlistener_filters: [{name: envoy.filters.listener.original_dst, typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}}]\nfilter_chains: [{name: to_9090, filter_chain_match: {destination_port: 9090}}]\ndefault_filter_chain: {name: fallback}\n";

/// Registers `inner` and returns what its connections were served with: (chain, local, peer).
fn serve(
    store: &Store,
) -> (
    InternalListeners,
    mpsc::UnboundedReceiver<(String, String, String)>,
    drain::Signal,
) {
    let registry = InternalListeners::default();
    registry.enable(internal::DEFAULT_BUFFER_BYTES);
    let cfg = build_ok(LISTENER);
    let (signal, watch) = drain::channel();
    let serving = Arc::new(Serving {
        active: ActiveListener::new(cfg, store),
        with: (),
        drain: watch,
    });
    let (tx, rx) = mpsc::unbounded_channel();
    registry.register("inner", move |conn| {
        let tx = tx.clone();
        internal::admit(
            conn,
            &serving,
            &move |acc: InternalAccepted<String>, _: &()| {
                let tx = tx.clone();
                async move {
                    let chain = acc.chain().cloned().unwrap_or_default();
                    let mut stream = acc.stream;
                    let mut buf = [0u8; 4];
                    if stream.read_exact(&mut buf).await.is_ok() {
                        let _ = stream.write_all(&buf).await;
                    }
                    let _ = tx.send((chain, acc.local.to_string(), acc.peer.to_string()));
                }
            },
        );
    });
    (registry, rx, signal)
}

fn restoring(local: &str) -> FilterState {
    let mut s = FilterState::default();
    s.set(Object {
        key: crate::filter_state::ORIGINAL_DST_LOCAL.into(),
        value: Value::Address(local.parse().expect("addr")),
        read_only: false,
        sharing: Sharing::None,
    });
    s
}

#[tokio::test]
async fn connections_are_served_by_name_and_counted() {
    let store = Store::new();
    let (registry, mut rx, _signal) = serve(&store);
    let mut c = registry
        .connect("inner", restoring("10.0.0.1:9090"))
        .expect("connect");
    c.write_all(b"ping").await.expect("write");
    let mut back = [0u8; 4];
    c.read_exact(&mut back).await.expect("read");
    assert_eq!(&back, b"ping");
    drop(c);
    let (chain, local, peer) = rx.recv().await.expect("served");
    assert_eq!(
        (chain.as_str(), local.as_str(), peer.as_str()),
        ("to_9090", "10.0.0.1:9090", "0.0.0.0:0")
    );

    // Nothing restored: the internal address, and the default chain.
    let c = registry
        .connect("inner", FilterState::default())
        .expect("connect");
    drop(c);
    let (chain, local, _) = rx.recv().await.expect("served");
    assert_eq!((chain.as_str(), local.as_str()), ("fallback", "0.0.0.0:0"));

    let total = store
        .counter("listener.envoy_internal_inner.downstream_cx_total")
        .get();
    assert_eq!(total, 2);
    tokio::task::yield_now().await;

    let e = registry
        .connect("missing", FilterState::default())
        .expect_err("no listener");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    registry.remove("inner");
    assert!(registry.connect("inner", FilterState::default()).is_err());
}
