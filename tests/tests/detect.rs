//! Detect: filter chains chosen by `tls_inspector` and `http_inspector`, on Envoy and remora alike.
//!
//! The backends greet each connection with their name, so a client learns which chain took it, and
//! record every byte they receive, so TLS passthrough can be shown to deliver the ClientHello
//! unmodified.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use remora_tests::admin;
use remora_tests::ports;
use remora_tests::proxy::{Kind, Proxy};
use remora_tests::select::for_each_kind;
use remora_tests::template::{render, Vars};

const FIXTURE: &str = "detect/chains.yaml";
const BACKENDS: [&str; 6] = ["a", "b", "default", "mtls", "plain", "h2c"];
const WAIT: Duration = Duration::from_secs(10);

/// A TCP backend that says its name, then records what it receives until EOF.
struct Recorder {
    port: u16,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(name: &'static str) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = conn.write_all(format!("{name}\n").as_bytes()).await;
                    let mut bytes = Vec::new();
                    let _ = conn.read_to_end(&mut bytes).await;
                    log.lock().expect("log").push(bytes);
                });
            }
        });
        Recorder {
            port,
            received,
            task,
        }
    }

    /// The bytes of the `n`th connection (from 0) once it has ended.
    async fn connection(&self, n: usize) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(b) = self.received.lock().expect("log").get(n) {
                return b.clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "no connection {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Setup {
    proxy: Proxy,
    backends: Vec<(&'static str, Recorder)>,
    sni: SocketAddr,
    permissive: SocketAddr,
}

impl Setup {
    async fn start(kind: Kind) -> Setup {
        let mut vars = Vars::new();
        let mut backends = Vec::new();
        for name in BACKENDS {
            let r = Recorder::start(name).await;
            vars.set(&format!("rec_{name}"), r.port);
            backends.push((name, r));
        }
        let (sni, permissive) = (ports::free_port(), ports::free_port());
        vars.set("listener_port", sni)
            .set("listener_port2", permissive)
            .set("admin_port", ports::free_port());
        let proxy = Proxy::start(kind, &render(&remora_tests::fixture(FIXTURE), &vars)).await;
        Setup {
            proxy,
            backends,
            sni: ports::loopback(sni),
            permissive: ports::loopback(permissive),
        }
    }

    fn backend(&self, name: &str) -> &Recorder {
        &self
            .backends
            .iter()
            .find(|(n, _)| *n == name)
            .expect("backend")
            .1
    }

    async fn stat(&self, name: &str) -> u64 {
        admin::stat(self.proxy.admin(), name).await.unwrap_or(0)
    }
}

/// Sends `bytes`, then returns the greeting of the backend that got the connection ("" when the
/// proxy closed it instead), and ends the connection.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(bytes).await.expect("write");
    let mut line = String::new();
    let mut reader = BufReader::new(&mut conn);
    let read = tokio::time::timeout(WAIT, reader.read_line(&mut line)).await;
    assert!(read.is_ok(), "no greeting and no close within {WAIT:?}");
    let _ = conn.shutdown().await;
    line.trim_end().to_string()
}

/// The first flight of a rustls client: its ClientHello.
fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_passthrough_picks_the_chain_by_sni() {
    for_each_kind(|kind| async move {
        let s = Setup::start(kind).await;
        let istio = ["istio-peer-exchange", "istio", "h2", "http/1.1"];
        let cases = [
            ("a.example", "a", 0),
            ("b.example", "b", 0),
            ("c.example", "default", 0),
            ("A.EXAMPLE", "a", 1),
        ];
        for (sni, backend, nth) in cases {
            let hello = client_hello(sni, &istio);
            assert_eq!(exchange(s.sni, &hello).await, backend, "[{kind}] SNI {sni}");
            let got = s.backend(backend).connection(nth).await;
            assert!(
                got == hello,
                "[{kind}] {backend} got the ClientHello modified"
            );
        }
        assert_eq!(exchange(s.sni, b"GET / HTTP/1.1\r\n\r\n").await, "default");
        assert_eq!(s.stat("tls_inspector.tls_found").await, 4, "[{kind}]");
        assert_eq!(s.stat("tls_inspector.sni_found").await, 4, "[{kind}]");
        assert_eq!(s.stat("tls_inspector.alpn_found").await, 4, "[{kind}]");
        assert_eq!(s.stat("tls_inspector.tls_not_found").await, 1, "[{kind}]");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_reaches_the_default_chain_after_the_timeout() {
    for_each_kind(|kind| async move {
        let s = Setup::start(kind).await;
        let started = std::time::Instant::now();
        assert_eq!(exchange(s.sni, b"").await, "default", "[{kind}]");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "[{kind}] waited for the filters"
        );
        let timeouts = format!("listener.{}.downstream_pre_cx_timeout", s.sni).replace(':', "_");
        assert_eq!(s.stat(&timeouts).await, 1, "[{kind}] {timeouts}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_listener_splits_tls_from_plaintext() {
    for_each_kind(|kind| async move {
        let s = Setup::start(kind).await;
        let hello = client_hello(
            "web.default.svc.cluster.local",
            &["istio-peer-exchange", "istio"],
        );
        assert_eq!(exchange(s.permissive, &hello).await, "mtls", "[{kind}]");
        let h11 = b"GET / HTTP/1.1\r\nhost: web\r\n\r\n";
        assert_eq!(exchange(s.permissive, h11).await, "plain", "[{kind}]");
        assert_eq!(s.backend("plain").connection(0).await, h11, "[{kind}]");
        assert_eq!(
            exchange(s.permissive, b"GET / HTTP/1.0\r\n\r\n").await,
            "plain"
        );
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(exchange(s.permissive, preface).await, "h2c", "[{kind}]");
        assert_eq!(exchange(s.permissive, b"\x00\x00binary\n").await, "plain");
        for (stat, want) in [
            ("tls_inspector.tls_found", 1),
            ("tls_inspector.tls_not_found", 4),
            ("http_inspector.http11_found", 1),
            ("http_inspector.http10_found", 1),
            ("http_inspector.http2_found", 1),
            ("http_inspector.http_not_found", 1),
        ] {
            assert_eq!(s.stat(stat).await, want, "[{kind}] {stat}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_reach_the_default_chain_unmodified() {
    for_each_kind(|kind| async move {
        let s = Setup::start(kind).await;
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..24 {
            let len = 1 + (next() % 200) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Some look like the start of a TLS record, so the inspector has to dig deeper.
            if i % 3 == 0 && len >= 3 {
                bytes[..3].copy_from_slice(&[22, 3, 1]);
            }
            assert_eq!(
                exchange(s.sni, &bytes).await,
                "default",
                "[{kind}] input {i}: {bytes:?}"
            );
            assert_eq!(
                s.backend("default").connection(i).await,
                bytes,
                "[{kind}] input {i}"
            );
        }
        // Still serving.
        assert_eq!(
            exchange(s.sni, &client_hello("a.example", &[])).await,
            "a",
            "[{kind}]"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_reaches_its_sni_chain() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        println!("SKIP: openssl not installed");
        return;
    }
    for_each_kind(|kind| async move {
        let s = Setup::start(kind).await;
        let connect = s.sni.to_string();
        // The backend's greeting is no ServerHello: openssl waits for a record that never comes,
        // so it is stopped once its hello has had time to pass; its close ends the recording.
        let mut openssl = tokio::process::Command::new("openssl")
            .args(["s_client", "-connect", &connect, "-servername", "b.example"])
            .args(["-alpn", "h2,http/1.1"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn openssl");
        let _ = tokio::time::timeout(Duration::from_secs(2), openssl.wait()).await;
        drop(openssl);
        let got = s.backend("b").connection(0).await;
        assert!(
            got.starts_with(&[22, 3]),
            "[{kind}] b got a TLS record: {got:?}"
        );
        assert!(
            got.windows(9).any(|w| w == b"b.example"),
            "[{kind}] the ClientHello names b.example"
        );
    })
    .await;
}
