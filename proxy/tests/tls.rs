//! Mutual TLS through the real binary: a client with a SPIFFE certificate → remora's TLS listener
//! (certificate from an SDS file) → remora's mTLS cluster → an in-process rustls upstream that
//! checks remora's identity. Also: refused clients are counted, and an SDS file rotation reaches
//! new handshakes while a kept-alive connection keeps working.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use remora_certs::{
    CertInfo, DevCa, DevCaOptions, DownstreamCertVerifier, IssueOptions, IssuedCert,
    RotatingCertResolver, SanMatcher, SpiffeId, TrustBundleSet, TrustDomain, UpstreamCertVerifier,
};
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const CLIENT_ID: &str = "spiffe://td/ns/app/sa/client";
const REMORA_ID: &str = "spiffe://td/ns/mesh/sa/remora";
const UPSTREAM_ID: &str = "spiffe://td/ns/app/sa/upstream";
const ANY: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn issue(ca: &DevCa, id: &str) -> IssuedCert {
    ca.issue(&SpiffeId::parse(id).expect("id"), &IssueOptions::default())
        .expect("issue")
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("json")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn replace(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn write_server_cert(dir: &Path, c: &IssuedCert) {
    replace(&dir.join("key.pem"), c.key_pem.as_bytes());
    replace(&dir.join("cert.pem"), c.chain_pem.as_bytes());
}

/// An upstream over mTLS that requires `REMORA_ID` and answers `<peer URI SAN>|<SNI>|<version>`;
/// HTTP/1.1 only, or (`alpn_h2`) offering h2 and http/1.1 over ALPN.
async fn upstream(ca: &DevCa, alpn_h2: bool) -> SocketAddr {
    let cert = issue(ca, UPSTREAM_ID);
    let verifier =
        DownstreamCertVerifier::builder(TrustBundleSet::single(ca.trust_bundle().expect("bundle")))
            .san_matchers(vec![SanMatcher::SpiffeId(
                SpiffeId::parse(REMORA_ID).expect("id"),
            )])
            .require_client_certificate(true)
            .build()
            .expect("verifier");
    let resolver = Arc::new(RotatingCertResolver::new(Arc::new(
        cert.certified_key().expect("key"),
    )));
    let mut cfg = remora_certs::server_config(ANY, verifier, resolver).expect("server config");
    if alpn_h2 {
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    let acceptor = TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let peer = conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| CertInfo::parse("peer", 0, c).ok())
                    .and_then(|c| c.uri_sans().first().cloned())
                    .unwrap_or_default();
                let answer = format!("{peer}|{}", conn.server_name().unwrap_or(""));
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let body = Full::new(Bytes::from(format!("{answer}|{:?}", req.version())));
                        async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(body)) }
                    },
                );
                let io = TokioIo::new(tls);
                if alpn_h2 {
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, svc)
                    .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    addr
}

struct Remora {
    child: Child,
    port: u16,
    admin: u16,
    dir: PathBuf,
}

impl Drop for Remora {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Remora {
    fn start(ca: &DevCa, upstream: SocketAddr, auto_upstream: SocketAddr) -> Remora {
        let dir = std::env::temp_dir().join(format!(
            "remora-tls-it-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        write_server_cert(&dir, &issue(ca, "spiffe://td/ns/mesh/sa/listener"));
        std::fs::write(
            dir.join("sds.yaml"),
            format!(
                "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: listener-cert\n  tls_certificate:\n    certificate_chain: {{ filename: {} }}\n    private_key: {{ filename: {} }}\n",
                dir.join("cert.pem").display(),
                dir.join("key.pem").display()
            ),
        )
        .expect("sds");
        let (port, admin) = (free_port(), free_port());
        let remora = issue(ca, REMORA_ID);
        let root = q(ca.cert_pem());
        let config = format!(
            r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  secrets:
  - name: remora-client
    tls_certificate:
      certificate_chain: {{ inline_string: {chain} }}
      private_key: {{ inline_string: {key} }}
  listeners:
  - name: mtls
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: [http/1.1]
            tls_certificate_sds_secret_configs:
            - name: listener-cert
              sds_config: {{ path_config_source: {{ path: {sds} }} }}
            validation_context:
              trusted_ca: {{ inline_string: {root} }}
              match_typed_subject_alt_names: [ {{ san_type: URI, matcher: {{ exact: "{CLIENT_ID}" }} }} ]
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: mtls
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {log}
              log_format: {{ text_format_source: {{ inline_string: "%DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_TLS_VERSION% %REQUESTED_SERVER_NAME% %RESPONSE_CODE%\n" }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/auto" }}
                route: {{ cluster: auto }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: up }}
  clusters:
  - name: up
    connect_timeout: 2s
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {up_port} }} }} }}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: upstream.td
        common_tls_context:
          tls_certificate_sds_secret_configs: [ {{ name: remora-client }} ]
          validation_context:
            trusted_ca: {{ inline_string: {root} }}
            match_typed_subject_alt_names: [ {{ san_type: URI, matcher: {{ exact: "{UPSTREAM_ID}" }} }} ]
  - name: auto
    connect_timeout: 2s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        auto_config: {{}}
    load_assignment:
      cluster_name: auto
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {auto_port} }} }} }}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          tls_certificate_sds_secret_configs: [ {{ name: remora-client }} ]
          validation_context: {{ trusted_ca: {{ inline_string: {root} }} }}
"#,
            chain = q(&remora.chain_pem),
            key = q(&remora.key_pem),
            sds = dir.join("sds.yaml").display(),
            log = dir.join("access.log").display(),
            up_port = upstream.port(),
            auto_port = auto_upstream.port(),
        );
        let cfg_path = dir.join("remora.yaml");
        std::fs::write(&cfg_path, config).expect("config");
        let child = Command::new(env!("CARGO_BIN_EXE_remora"))
            .arg("-c")
            .arg(&cfg_path)
            .args([
                "--concurrency",
                "1",
                "--file-flush-interval-msec",
                "100",
                "-l",
                "debug",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("remora.log")).expect("log"))
            .spawn()
            .expect("spawn remora");
        let r = Remora {
            child,
            port,
            admin,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while StdTcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "remora did not start: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("remora.log")).unwrap_or_default()
    }

    fn stat(&self, name: &str) -> u64 {
        let mut s = StdTcpStream::connect(("127.0.0.1", self.admin)).expect("admin");
        let _ = s.write_all(b"GET /stats HTTP/1.0\r\nhost: admin\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn listener_stat(&self, name: &str) -> u64 {
        self.stat(&format!("listener.127.0.0.1_{}.{name}", self.port))
    }
}

fn client_config(ca: &DevCa, cert: Option<&IssuedCert>) -> Arc<rustls::ClientConfig> {
    let verifier =
        UpstreamCertVerifier::builder(TrustBundleSet::single(ca.trust_bundle().expect("bundle")))
            .build()
            .expect("verifier");
    let resolver = cert.map(|c| {
        Arc::new(RotatingCertResolver::new(Arc::new(
            c.certified_key().expect("key"),
        ))) as Arc<dyn rustls::client::ResolvesClientCert>
    });
    let mut cfg = remora_certs::client_config(ANY, verifier, resolver).expect("client");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A kept-alive HTTPS connection to remora, and the serial of the certificate remora presented.
async fn connect(port: u16, cfg: Arc<rustls::ClientConfig>) -> std::io::Result<(Sender, String)> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let tls = TlsConnector::from(cfg)
        .connect(ServerName::try_from("remora.td").expect("name"), tcp)
        .await?;
    let serial = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| CertInfo::parse("server", 0, c).ok())
        .map(|c| c.serial().to_string())
        .unwrap_or_default();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok((sender, serial))
}

async fn get(sender: &mut Sender) -> Result<(u16, String), hyper::Error> {
    get_path(sender, "/").await
}

async fn get_path(sender: &mut Sender, path: &str) -> Result<(u16, String), hyper::Error> {
    let req = hyper::Request::get(path)
        .header("host", "app")
        .body(Empty::new())
        .expect("request");
    // An HTTP/1.1 connection takes the next request only once the previous exchange is done.
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_both_ways_with_sds_rotation() {
    let ca = DevCa::generate(
        &TrustDomain::new("td").expect("td"),
        &DevCaOptions::default(),
    )
    .expect("ca");
    let up = upstream(&ca, false).await;
    let auto = upstream(&ca, true).await;
    let remora = Remora::start(&ca, up, auto);
    let client_cert = issue(&ca, CLIENT_ID);

    // The right client reaches the upstream, which saw remora's identity and SNI.
    let (mut kept, first_serial) = connect(remora.port, client_config(&ca, Some(&client_cert)))
        .await
        .expect("connect");
    let (status, body) = get(&mut kept).await.expect("request");
    assert_eq!(status, 200, "{}", remora.log());
    assert_eq!(body, format!("{REMORA_ID}|upstream.td|HTTP/1.1"));

    // auto_config: ALPN offers h2 and the upstream's choice (h2) is spoken, without SNI.
    for _ in 0..2 {
        let (status, body) = get_path(&mut kept, "/auto").await.expect("auto request");
        assert_eq!(status, 200, "{}", remora.log());
        assert_eq!(body, format!("{REMORA_ID}||HTTP/2.0"));
    }
    assert_eq!(remora.stat("cluster.auto.upstream_cx_http2_total"), 1);
    assert_eq!(remora.stat("cluster.auto.upstream_cx_http1_total"), 0);
    assert_eq!(remora.listener_stat("ssl.handshake"), 1);
    assert_eq!(remora.listener_stat("ssl.versions.TLSv1.3"), 1);
    assert_eq!(remora.stat("cluster.up.ssl.handshake"), 1);

    // No certificate, or another identity: refused and counted; remora keeps serving.
    let no_cert = connect(remora.port, client_config(&ca, None)).await;
    if let Ok((mut s, _)) = no_cert {
        assert!(
            get(&mut s).await.is_err(),
            "a client without a certificate got a response"
        );
    }
    let intruder = issue(&ca, "spiffe://td/ns/app/sa/intruder");
    if let Ok((mut s, _)) = connect(remora.port, client_config(&ca, Some(&intruder))).await {
        assert!(
            get(&mut s).await.is_err(),
            "the wrong identity got a response"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while remora.listener_stat("ssl.fail_verify_san") < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(remora.listener_stat("ssl.fail_verify_no_cert"), 1);
    assert_eq!(remora.listener_stat("ssl.fail_verify_san"), 1);

    // Rotate the listener certificate by renaming new files into place.
    let rotated = issue(&ca, "spiffe://td/ns/mesh/sa/listener");
    let rotated_serial = rotated.leaf_info().expect("leaf").serial().to_string();
    assert_ne!(rotated_serial, first_serial);
    write_server_cert(&remora.dir, &rotated);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fresh = loop {
        let (s, serial) = connect(remora.port, client_config(&ca, Some(&client_cert)))
            .await
            .expect("connect after rotation");
        if serial == rotated_serial {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was never presented: {}",
            remora.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(get(&mut fresh).await.expect("fresh").0, 200);
    // The connection opened before the rotation still works.
    let (status, _) = get(&mut kept)
        .await
        .expect("kept-alive request after rotation");
    assert_eq!(status, 200);
    assert!(
        remora.stat(
            "listener.127.0.0.1_{}.server_ssl_socket_factory.ssl_context_update_by_sds"
                .replace("{}", &remora.port.to_string())
                .as_str()
        ) >= 1
    );

    // The access log names the peer's identity and TLS version; %REQUESTED_SERVER_NAME% comes from
    // the tls_inspector only, which this listener lacks, so it prints `-` as in Envoy.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(remora.dir.join("access.log")).unwrap_or_default();
        if log
            .lines()
            .any(|l| l == format!("{CLIENT_ID} TLSv1.3 - 200"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "access log: {log:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
