//! The detector on real loopback connections: slow clients, silent clients, early closes, limits,
//! and the bytes left in place for the chain.

use std::time::Duration;

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{alpn_ext, hello_message, records, rustls_hello, sni_ext};
use crate::config::parse::{from_yaml, ParseOptions};
use crate::config::Path;
use crate::detect::{DetectError, Detected, Detector, RAW_BUFFER, TLS};
use crate::listener::from_proto;
use crate::stats::Store;

const TLS_INSPECTOR: &str = "{name: envoy.filters.listener.tls_inspector, typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}";
const HTTP_INSPECTOR: &str = "{name: envoy.filters.listener.http_inspector, typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}}";

/// A detector for a listener with `filters` and extra listener fields.
fn detector(filters: &[&str], extra: &str, store: &Store) -> Detector {
    let yaml = format!(
        "name: l0\naddress: {{socket_address: {{address: 127.0.0.1, port_value: 10000}}}}\n\
         filter_chains: [{{name: c0}}]\nlistener_filters: [{}]\n{extra}",
        filters.join(", ")
    );
    let l: Listener = from_yaml(&yaml, ParseOptions::default()).expect("listener yaml");
    let cfg = from_proto(&l, &Path::root("l"), &mut |fc: &FilterChain, _: &Path| {
        Ok(fc.name.clone())
    })
    .expect("valid listener");
    Detector::new(&cfg, store)
}

/// A connected pair: (client side, accepted side).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    (client, server)
}

async fn detect(d: &Detector, server: &TcpStream) -> Result<Detected, DetectError> {
    d.run(server, server.local_addr().expect("local")).await
}

fn count(store: &Store, name: &str) -> u64 {
    store.counter(name).get()
}

#[tokio::test]
async fn a_hello_in_slow_pieces_is_detected_and_left_unread() {
    let store = Store::new();
    let d = detector(&[TLS_INSPECTOR], "", &store);
    let (mut client, mut server) = pair().await;
    let hello = rustls_hello("a.example", &["h2", "http/1.1"]);
    let sent = hello.clone();
    let writer = tokio::spawn(async move {
        for piece in sent.chunks(40) {
            client.write_all(piece).await.expect("write");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client
    });
    let detected = detect(&d, &server).await.expect("detected");
    assert_eq!(detected.transport_protocol, TLS);
    assert_eq!(detected.server_name.as_deref(), Some("a.example"));
    assert_eq!(detected.protocols(), ["h2", "http/1.1"]);
    let _client = writer.await.expect("writer");
    let mut got = vec![0; hello.len()];
    server.read_exact(&mut got).await.expect("read");
    assert_eq!(got, hello, "the chain sees every byte the client sent");
    for (stat, want) in [
        ("tls_found", 1),
        ("sni_found", 1),
        ("alpn_found", 1),
        ("tls_not_found", 0),
    ] {
        assert_eq!(
            count(&store, &format!("tls_inspector.{stat}")),
            want,
            "{stat}"
        );
    }
}

#[tokio::test]
async fn plaintext_goes_on_as_raw_buffer_and_http_inspector_names_it() {
    let store = Store::new();
    let d = detector(&[TLS_INSPECTOR, HTTP_INSPECTOR], "", &store);
    for (request, alpn, stat) in [
        (
            &b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"[..],
            Some("http/1.1"),
            "http11_found",
        ),
        (b"GET / HTTP/1.0\r\n\r\n", Some("http/1.0"), "http10_found"),
        (
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0",
            Some("h2c"),
            "http2_found",
        ),
        (b"\x00\x01binary\n", None, "http_not_found"),
    ] {
        let (mut client, server) = pair().await;
        client.write_all(request).await.expect("write");
        let detected = detect(&d, &server).await.expect("detected");
        assert_eq!(detected.transport_protocol, RAW_BUFFER);
        assert_eq!(detected.server_name, None);
        assert_eq!(detected.protocols(), alpn.into_iter().collect::<Vec<_>>());
        assert_eq!(
            count(&store, &format!("http_inspector.{stat}")),
            1,
            "{stat}"
        );
    }
    assert_eq!(count(&store, "tls_inspector.tls_not_found"), 4);
}

#[tokio::test]
async fn http_inspector_leaves_tls_alone() {
    let store = Store::new();
    let d = detector(&[TLS_INSPECTOR, HTTP_INSPECTOR], "", &store);
    let (mut client, server) = pair().await;
    client
        .write_all(&rustls_hello("a.example", &["h2"]))
        .await
        .expect("write");
    let detected = detect(&d, &server).await.expect("detected");
    assert_eq!(
        detected.protocols(),
        ["h2"],
        "the ClientHello's ALPN, not http_inspector's"
    );
    assert_eq!(count(&store, "http_inspector.http_not_found"), 0);
}

#[tokio::test]
async fn a_silent_client_waits_for_the_timeout_then_continues_when_asked() {
    let store = Store::new();
    let extra = "listener_filters_timeout: 0.1s\ncontinue_on_listener_filters_timeout: true";
    let d = detector(&[TLS_INSPECTOR], extra, &store);
    let (_client, server) = pair().await;
    let started = std::time::Instant::now();
    let detected = detect(&d, &server).await.expect("continues");
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(
        detected,
        Detected::default(),
        "server-first protocols go on as raw_buffer"
    );
    assert_eq!(
        count(&store, "listener.127.0.0.1_10000.downstream_pre_cx_timeout"),
        1
    );
}

#[tokio::test]
async fn the_timeout_keeps_what_finished_filters_found() {
    let store = Store::new();
    let extra = "listener_filters_timeout: 0.1s\ncontinue_on_listener_filters_timeout: true";
    let d = detector(&[TLS_INSPECTOR, HTTP_INSPECTOR], extra, &store);
    let (mut client, server) = pair().await;
    // Not TLS, and a request line that never ends.
    client.write_all(b"GET /slow").await.expect("write");
    let detected = detect(&d, &server).await.expect("continues");
    assert_eq!(detected, Detected::default());
    assert_eq!(count(&store, "tls_inspector.tls_not_found"), 1);
    assert_eq!(count(&store, "http_inspector.http_not_found"), 0);
}

#[tokio::test]
async fn without_continue_the_timeout_closes() {
    let store = Store::new();
    let d = detector(&[TLS_INSPECTOR], "listener_filters_timeout: 0.05s", &store);
    let (mut client, server) = pair().await;
    client.write_all(&[22, 3, 1]).await.expect("write");
    let err = detect(&d, &server).await.expect_err("times out");
    assert!(matches!(err, DetectError::Timeout(_)), "{err}");
    assert_eq!(
        count(&store, "listener.127.0.0.1_10000.downstream_pre_cx_timeout"),
        1
    );
}

#[tokio::test]
async fn a_peer_that_closes_midway_closes_the_connection() {
    let store = Store::new();
    let d = detector(&[TLS_INSPECTOR], "", &store);
    let (mut client, server) = pair().await;
    let hello = rustls_hello("a.example", &[]);
    client.write_all(&hello[..20]).await.expect("write");
    drop(client);
    let err = detect(&d, &server).await.expect_err("closed");
    assert!(matches!(err, DetectError::Closed), "{err}");
    assert_eq!(
        count(
            &store,
            "listener.127.0.0.1_10000.downstream_listener_filter_remote_close"
        ),
        1
    );
}

#[tokio::test]
async fn a_hello_over_max_client_hello_size_closes() {
    let store = Store::new();
    let small = "{name: envoy.filters.listener.tls_inspector, typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector, max_client_hello_size: 100}}";
    let d = detector(&[small], "", &store);
    let (mut client, server) = pair().await;
    client
        .write_all(&rustls_hello("a.example", &["h2"]))
        .await
        .expect("write");
    let err = detect(&d, &server).await.expect_err("too large");
    assert!(
        matches!(err, DetectError::ClientHelloTooLarge(100)),
        "{err}"
    );
    assert_eq!(count(&store, "tls_inspector.client_hello_too_large"), 1);
}

#[tokio::test]
async fn close_on_parsing_errors_closes_plaintext() {
    let store = Store::new();
    let strict = "{name: envoy.filters.listener.tls_inspector, typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector, close_connection_on_client_hello_parsing_errors: true}}";
    let d = detector(&[strict], "", &store);
    let (mut client, server) = pair().await;
    client
        .write_all(b"GET / HTTP/1.1\r\n")
        .await
        .expect("write");
    let err = detect(&d, &server).await.expect_err("closed");
    assert!(matches!(err, DetectError::NotTls), "{err}");
    assert_eq!(count(&store, "tls_inspector.tls_not_found"), 0);
}

#[tokio::test]
async fn a_disabled_filter_reads_nothing() {
    let store = Store::new();
    let disabled = "{name: envoy.filters.listener.tls_inspector, typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}, filter_disabled: {destination_port_range: {start: 1, end: 65535}}}";
    let d = detector(&[disabled], "", &store);
    // The client sends nothing; a filter that ran would wait for the 15 s default timeout.
    let (_client, server) = pair().await;
    let detected = tokio::time::timeout(Duration::from_secs(2), detect(&d, &server))
        .await
        .expect("no waiting")
        .expect("detected");
    assert_eq!(detected, Detected::default());
}

#[tokio::test]
async fn a_large_hello_in_many_records_grows_the_peek_buffer() {
    let store = Store::new();
    let d = detector(&[TLS_INSPECTOR], "", &store);
    let (mut client, server) = pair().await;
    // A 12 KB padding extension (RFC 7685) pushes the hello past the first peek buffer.
    let padding = (21u16, vec![0u8; 12_000]);
    let message = hello_message(&[padding, sni_ext("big.example"), alpn_ext(&["h2"])]);
    let bytes = records(&message, 3_000);
    let writer = tokio::spawn(async move {
        for piece in bytes.chunks(1_500) {
            client.write_all(piece).await.expect("write");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        client
    });
    let detected = detect(&d, &server).await.expect("detected");
    assert_eq!(detected.server_name.as_deref(), Some("big.example"));
    assert_eq!(detected.protocols(), ["h2"]);
    drop(writer.await.expect("writer"));
}
