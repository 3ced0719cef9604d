//! HTTP CONNECT end to end, on Envoy and remora with the same configs: termination (a
//! connect_matcher route with `connect_config` answers 200 and the stream becomes a TCP
//! connection), over HTTP/1.1 and h2, and POST tunnels (`allow_post`); origination (tcp_proxy
//! `tunneling_config`: h2 CONNECT, HTTP/1.1 CONNECT, h2 POST), each originator against each
//! terminator; and HBONE, h2 CONNECT inside mTLS with ALPN h2.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use remora_tests::admin;
use remora_tests::peers::MeshStack;
use remora_tests::pki::{istio_id, Pki};
use remora_tests::proxy::Kind;
use remora_tests::select::{for_each_kind, kinds};
use remora_tests::template::Vars;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(5);

/// Writes `msg` and reads back as many bytes (the tunnel ends at a TCP echo backend).
async fn echoes<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).await.expect("write through the tunnel");
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo read");
    back
}

/// Sends `head` and reads the response head (up to the blank line); the stream is left just after.
async fn h1_exchange(addr: SocketAddr, head: &str) -> (String, TcpStream) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write head");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut byte))
            .await
            .expect("response head in time")
            .expect("read");
        if n == 0 {
            break;
        }
        got.push(byte[0]);
    }
    (String::from_utf8_lossy(&got).into_owned(), s)
}

fn status_line(head: &str) -> &str {
    head.lines().next().unwrap_or("")
}

/// An h2 CONNECT to `authority` on a prior-knowledge h2c connection: the response status and the
/// stream's two halves.
async fn h2_connect(
    addr: SocketAddr,
    authority: &str,
) -> (u16, h2::SendStream<Bytes>, h2::RecvStream) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.expect("h2 ready");
    let req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(authority)
        .body(())
        .expect("request");
    let (resp, send) = client.send_request(req, false).expect("send CONNECT");
    let resp = tokio::time::timeout(DEADLINE, resp)
        .await
        .expect("response in time")
        .expect("response");
    let status = resp.status().as_u16();
    (status, send, resp.into_body())
}

async fn h2_echo(
    send: &mut h2::SendStream<Bytes>,
    recv: &mut h2::RecvStream,
    msg: &[u8],
) -> Vec<u8> {
    send.send_data(Bytes::copy_from_slice(msg), false)
        .expect("send data");
    let mut back = Vec::new();
    while back.len() < msg.len() {
        let chunk = tokio::time::timeout(DEADLINE, recv.data())
            .await
            .expect("data in time")
            .expect("stream open")
            .expect("data");
        let _ = recv.flow_control().release_capacity(chunk.len());
        back.extend_from_slice(&chunk);
    }
    back
}

async fn terminator(kind: Kind) -> MeshStack {
    MeshStack::start(kind, "connect/terminate.yaml", &Pki::new(), &Vars::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_terminated_over_http1_and_h2() {
    for_each_kind(|kind| async move {
        let s = terminator(kind).await;
        let addr = s.env.addr("listener_port");

        // HTTP/1.1 CONNECT: 200, then the connection is the TCP stream to the echo backend.
        let (head, mut conn) = h1_exchange(
            addr,
            "CONNECT echo.example:443 HTTP/1.1\r\nHost: echo.example:443\r\n\r\n",
        )
        .await;
        assert_eq!(status_line(&head), "HTTP/1.1 200 OK", "[{kind}] {head}");
        assert_eq!(echoes(&mut conn, b"hello over h1").await, b"hello over h1", "[{kind}]");
        assert_eq!(echoes(&mut conn, b"and again").await, b"and again", "[{kind}]");
        drop(conn);

        // h2 CONNECT: the stream carries the bytes.
        let (status, mut send, mut recv) = h2_connect(addr, "echo.example:443").await;
        assert_eq!(status, 200, "[{kind}]");
        assert_eq!(h2_echo(&mut send, &mut recv, b"hello over h2").await, b"hello over h2", "[{kind}]");
        drop((send, recv));

        // Requests other than CONNECT take the other routes.
        let r = remora_tests::client::get(addr, "/").await.expect("GET");
        assert_eq!((r.status, r.text().as_str()), (200, "plain\n"), "[{kind}]");

        // POST to the allow_post route: the body goes to the echo backend, whose bytes come back
        // as the response body until it closes.
        let (head, mut conn) = h1_exchange(
            addr,
            "POST /tunnel-post HTTP/1.1\r\nHost: post.example\r\nContent-Length: 10\r\n\r\npost bytes",
        )
        .await;
        assert_eq!(status_line(&head), "HTTP/1.1 200 OK", "[{kind}] {head}");
        let mut body = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&body).contains("post bytes") {
            let n = tokio::time::timeout(DEADLINE, conn.read(&mut buf))
                .await
                .expect("body in time")
                .expect("read");
            assert!(n > 0, "[{kind}] body ended early: {:?}", String::from_utf8_lossy(&body));
            body.extend_from_slice(&buf[..n]);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_where_the_connection_manager_does_not_enable_it() {
    for_each_kind(|kind| async move {
        let s = terminator(kind).await;
        let (head, _conn) = h1_exchange(
            s.env.addr("listener_port2"),
            "CONNECT echo.example:443 HTTP/1.1\r\nHost: echo.example:443\r\n\r\n",
        )
        .await;
        assert_eq!(
            status_line(&head),
            "HTTP/1.1 403 Forbidden",
            "[{kind}] {head}"
        );
        let refused = remora_tests::admin::stat(
            s.admin(),
            "http.no_connect.downstream_rq_ws_on_non_ws_route",
        )
        .await;
        assert_eq!(refused, Some(1), "[{kind}]");
    })
    .await;
}

/// Every originator against every terminator: Envoy to Envoy is the oracle, the mixed pairs are
/// the interop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_tunnels_to_a_terminator() {
    let kinds = kinds();
    let mut failures = Vec::new();
    for &orig in &kinds {
        for &term in &kinds {
            let run = tokio::spawn(tunnel_pair(orig, term)).await;
            if let Err(e) = run {
                failures.push(format!("[{orig} -> {term}] {e:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

async fn tunnel_pair(orig: Kind, term: Kind) {
    let t = terminator(term).await;
    let extra = Vars::new()
        .with("peer_port", t.env.addr("listener_port").port())
        .with("peer_refusing_port", t.env.addr("listener_port2").port());
    let o = MeshStack::start(orig, "connect/originate.yaml", &Pki::new(), &extra).await;
    let tag = format!("[{orig} -> {term}]");
    let mut expected = Vec::new();
    for (listener, msg, line) in [
        (
            "listener_port",
            &b"through h2 CONNECT"[..],
            "CONNECT 127.0.0.1:{port} - HTTP/2 tunnel=h2-{port} 200 echo",
        ),
        (
            "listener_port2",
            &b"through h1 CONNECT"[..],
            "CONNECT h1.example:{port} - HTTP/1.1 tunnel=h1 200 echo",
        ),
        (
            "listener_port3",
            &b"through h2 POST"[..],
            "POST post.example /tunnel-post HTTP/2 tunnel=post 200 echo",
        ),
    ] {
        let addr = o.env.addr(listener);
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(echoes(&mut conn, msg).await, msg, "{tag} {listener}");
        drop(conn);
        expected.push(line.replace("{port}", &addr.port().to_string()));
    }
    // A tunnel answered 403: the downstream connection closes with nothing sent back.
    let mut conn = TcpStream::connect(o.env.addr("listener_port4"))
        .await
        .expect("connect");
    let _ = conn.write_all(b"never delivered").await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(DEADLINE, conn.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "{tag} the refused tunnel's connection stays open or got bytes: {read:?} {rest:?}"
    );
    // The harness's readiness probes open tunnels too (and log the same lines): compare the
    // distinct lines once every tunnel has ended.
    let lines = distinct_lines(&t.env.file("access.log"), expected.len()).await;
    expected.sort();
    assert_eq!(lines, expected, "{tag}");
}

/// The distinct lines of a log once it has `n` of them (or the wait gives up), sorted.
async fn distinct_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines.dedup();
        if lines.len() >= n || tokio::time::Instant::now() >= deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A CONNECT route without connect_config forwards the CONNECT upstream (to a terminator, over
/// h2); the client's HTTP/1.1 tunnel then runs through both proxies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_without_connect_config_is_forwarded() {
    for_each_kind(|kind| async move {
        let t = terminator(kind).await;
        let extra = Vars::new().with("peer_port", t.env.addr("listener_port").port());
        let f = MeshStack::start(kind, "connect/forward.yaml", &Pki::new(), &extra).await;
        let (head, mut conn) = h1_exchange(
            f.env.addr("listener_port"),
            "CONNECT echo.example:443 HTTP/1.1\r\nHost: echo.example:443\r\n\r\n",
        )
        .await;
        assert_eq!(status_line(&head), "HTTP/1.1 200 OK", "[{kind}] {head}");
        assert_eq!(
            echoes(&mut conn, b"two hops").await,
            b"two hops",
            "[{kind}]"
        );
        drop(conn);
        let lines = distinct_lines(&t.env.file("access.log"), 1).await;
        assert_eq!(
            lines,
            ["CONNECT echo.example:443 - HTTP/2 tunnel=- 200 echo"],
            "[{kind}] the terminator saw the forwarded CONNECT"
        );
    })
    .await;
}

fn mesh_pki() -> Pki {
    let mut pki = Pki::new();
    pki.issue("server", &istio_id("server"), &["server.mesh"]);
    pki.issue("client", &istio_id("client"), &[]);
    pki
}

/// HBONE: the originator's tunnel cluster speaks h2 over mTLS (ALPN h2, the peer's SPIFFE ID
/// checked); the terminator requires the client's certificate and terminates the CONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hbone_tunnels_over_mtls() {
    let kinds = kinds();
    let mut failures = Vec::new();
    for &orig in &kinds {
        for &term in &kinds {
            if let Err(e) = tokio::spawn(hbone_pair(orig, term)).await {
                failures.push(format!("[{orig} -> {term}] {e:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

async fn hbone_pair(orig: Kind, term: Kind) {
    let pki = mesh_pki();
    let t = MeshStack::start(term, "connect/hbone_in.yaml", &pki, &Vars::new()).await;
    let extra = Vars::new().with("peer_port", t.env.addr("listener_port").port());
    let o = MeshStack::start(orig, "connect/hbone_out.yaml", &pki, &extra).await;
    let tag = format!("[{orig} -> {term}]");
    let addr = o.env.addr("listener_port");
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(
        echoes(&mut conn, b"hbone bytes").await,
        b"hbone bytes",
        "{tag}"
    );
    drop(conn);
    let lines = distinct_lines(&t.env.file("access.log"), 1).await;
    assert_eq!(
        lines,
        [format!(
            "CONNECT 127.0.0.1:{} HTTP/2 peer={} tls=TLSv1.3 200",
            addr.port(),
            istio_id("client")
        )],
        "{tag}"
    );
}

/// Istio's filters (remora only: stock Envoy has neither): `io.istio.http.connect_authority` on
/// the CONNECT route and `istio.set_internal_dst_address` on the internal listener behind it
/// carry the CONNECT authority to the internal connection's local address, and its IP with the
/// configured tunnel port to the ORIGINAL_DST cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_authority_sets_the_internal_destination() {
    let s = MeshStack::start(
        Kind::Remora,
        "connect/istio_authority.yaml",
        &Pki::new(),
        &Vars::new(),
    )
    .await;
    let echo_port = s.env.tcp[0].1.port();
    let (head, mut conn) = h1_exchange(
        s.env.addr("listener_port"),
        "CONNECT 127.0.0.1:4444 HTTP/1.1\r\nHost: 127.0.0.1:4444\r\n\
         baggage: k8s.namespace.name=bookinfo,k8s.deployment.name=productpage-v1\r\n\
         baggage: service.name=productpage,service.version=v1\r\n\r\n",
    )
    .await;
    assert_eq!(status_line(&head), "HTTP/1.1 200 OK", "{head}");
    assert_eq!(
        echoes(&mut conn, b"to the authority").await,
        b"to the authority"
    );
    drop(conn);
    let lines = distinct_lines(&s.env.file("inner.log"), 1).await;
    assert_eq!(lines, [format!("127.0.0.1:4444 127.0.0.1:{echo_port} -")]);
    // connect_baggage: the internal listener's TCP stats know the downstream workload (counted
    // as the connection closes).
    let labels = [
        "reporter=\"destination\"",
        "source_workload=\"productpage-v1\"",
        "source_workload_namespace=\"bookinfo\"",
        "source_canonical_service=\"productpage\"",
        "source_canonical_revision=\"v1\"",
    ];
    let metric = "istio_tcp_received_bytes_total";
    let text = admin::wait_for_sample(s.admin(), metric, &labels, 16.0).await;
    assert_eq!(admin::sample(&text, metric, &labels), Some(16.0), "{text}");

    // Where the route does not enable the filter, the internal listener learns no destination:
    // the ORIGINAL_DST cluster has no host, and the tunnel closes without reaching the echo.
    let (head, mut conn) = h1_exchange(
        s.env.addr("listener_port2"),
        "CONNECT 127.0.0.1:4444 HTTP/1.1\r\nHost: 127.0.0.1:4444\r\n\r\n",
    )
    .await;
    assert_eq!(status_line(&head), "HTTP/1.1 200 OK", "{head}");
    let _ = conn.write_all(b"nowhere").await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(DEADLINE, conn.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the tunnel without a destination got bytes back: {read:?} {rest:?}"
    );
}

/// Istio's sidecar shape (remora originating, as stock Envoy lacks the listener filter): the
/// endpoint's `tunnel` metadata, passed through `internal_upstream`, gives the internal listener's
/// connection its destination (the CONNECT authority) and its ORIGINAL_DST target (the peer's
/// HBONE port), which each terminator sees over mTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_metadata_sets_the_internal_destination() {
    for_each_kind(|term| async move {
        let pki = mesh_pki();
        let t = MeshStack::start(term, "connect/hbone_in.yaml", &pki, &Vars::new()).await;
        let extra = Vars::new().with("peer_port", t.env.addr("listener_port").port());
        let o =
            MeshStack::start(Kind::Remora, "connect/sidecar_originate.yaml", &pki, &extra).await;
        let mut conn = TcpStream::connect(o.env.addr("listener_port"))
            .await
            .expect("connect");
        assert_eq!(
            echoes(&mut conn, b"sidecar bytes").await,
            b"sidecar bytes",
            "[{term}]"
        );
        drop(conn);
        let lines = distinct_lines(&t.env.file("access.log"), 1).await;
        assert_eq!(
            lines,
            [format!(
                "CONNECT 127.0.0.1:7777 HTTP/2 peer={} tls=TLSv1.3 200",
                istio_id("client")
            )],
            "[{term}]"
        );
    })
    .await;
}
