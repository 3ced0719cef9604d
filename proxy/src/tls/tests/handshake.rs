//! Downstream handshakes through `ServerTls::accept` over loopback sockets: who gets in, who does
//! not, and which Envoy stat says why.

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
use remora_certs::{DevCa, IssuedCert, VerifyFailure};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use super::{ca, client, expired, issue, issue_with, q};
use crate::config::parse::{from_yaml, ParseOptions};
use crate::config::Path;
use crate::secrets::SecretStore;
use crate::stats::Store;
use crate::tls::{AcceptError, ServerTls, TlsInfo};

const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
const CLIENT_ID: &str = "spiffe://td/ns/a/sa/client";

struct Fixture {
    ca: DevCa,
    tls: Arc<ServerTls>,
    store: Store,
}

impl Fixture {
    /// A listener context requiring a client certificate from `ca` with SPIFFE ID `CLIENT_ID`,
    /// TLS 1.3 only, ALPN h2 and http/1.1.
    fn new() -> Self {
        let ca = ca("td");
        let server = issue(&ca, "spiffe://td/ns/a/sa/server");
        let yaml = format!(
            "common_tls_context:\n  tls_certificates:\n  - certificate_chain: {{ inline_string: {} }}\n    private_key: {{ inline_string: {} }}\n  validation_context:\n    trusted_ca: {{ inline_string: {} }}\n    match_typed_subject_alt_names: [ {{ san_type: URI, matcher: {{ exact: \"{CLIENT_ID}\" }} }} ]\n  tls_params: {{ tls_minimum_protocol_version: TLSv1_3 }}\n  alpn_protocols: [h2, http/1.1]\nrequire_client_certificate: true\n",
            q(&server.chain_pem),
            q(&server.key_pem),
            q(ca.cert_pem())
        );
        let ctx: DownstreamTlsContext = from_yaml(&yaml, ParseOptions::default()).expect("yaml");
        let store = Store::new();
        let tls = ServerTls::from_proto(&ctx, &Path::root("ctx"), &SecretStore::new(&store), None)
            .expect("context");
        tls.bind_stats(&store, "listener.test");
        Self { ca, tls, store }
    }

    fn stat(&self, name: &str) -> u64 {
        self.store
            .counter(format!("listener.test.ssl.{name}"))
            .get()
    }

    /// Accepts one connection, answers `ok` on success, and returns what the server side saw.
    async fn exchange(
        &self,
        cfg: Option<Arc<ClientConfig>>,
    ) -> (Result<TlsInfo, AcceptError>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tls = self.tls.clone();
        let server = tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.expect("accept");
            let (mut s, info) = tls.accept(stream, peer).await?;
            let _ = s.write_all(b"ok").await;
            let _ = s.shutdown().await;
            Ok(info)
        });
        let got = dial(addr, cfg).await;
        (server.await.expect("join"), got)
    }
}

async fn dial(addr: SocketAddr, cfg: Option<Arc<ClientConfig>>) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut out = Vec::new();
    match cfg {
        Some(cfg) => {
            let name = ServerName::try_from("server.td").expect("name");
            if let Ok(mut s) = TlsConnector::from(cfg).connect(name, tcp).await {
                let _ = s.read_to_end(&mut out).await;
            }
        }
        None => {
            let _ = tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
            let _ = tcp.read_to_end(&mut out).await;
        }
    }
    out
}

fn failure(r: &Result<TlsInfo, AcceptError>) -> Option<VerifyFailure> {
    match r {
        Err(AcceptError::Handshake { reason, .. }) => Some(*reason),
        _ => None,
    }
}

fn cert(f: &Fixture, id: &str) -> IssuedCert {
    issue(&f.ca, id)
}

#[tokio::test]
async fn the_right_client_gets_in_with_its_identity() {
    let f = Fixture::new();
    let c = cert(&f, CLIENT_ID);
    let (res, body) = f
        .exchange(Some(client(&f.ca, Some(&c), TLS13, &[b"h2"])))
        .await;
    let info = res.expect("handshake");
    assert_eq!(body, b"ok");
    assert_eq!(info.version, "TLSv1.3");
    assert!(info.is_h2());
    let peer = info.peer.as_ref().expect("peer cert");
    assert_eq!(peer.spiffe_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(info.peer_uri_san().as_deref(), Some(CLIENT_ID));
    let serial = c.leaf_info().expect("leaf").serial().to_string();
    assert_eq!(peer.serial, serial);
    assert_eq!(f.stat("handshake"), 1);
    assert_eq!(f.stat("versions.TLSv1.3"), 1);
    assert_eq!(f.stat("connection_error"), 0);
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let f = Fixture::new();
    let (res, body) = f.exchange(Some(client(&f.ca, None, TLS13, &[]))).await;
    assert_eq!(failure(&res), Some(VerifyFailure::NoCertificate), "{res:?}");
    assert!(body.is_empty());
    assert_eq!(f.stat("fail_verify_no_cert"), 1);
    // As Envoy: a verification failure moves only its own counter.
    assert_eq!(f.stat("connection_error"), 0);
    assert_eq!(f.stat("handshake"), 0);
}

#[tokio::test]
async fn another_identity_of_the_same_ca_is_refused() {
    let f = Fixture::new();
    let c = cert(&f, "spiffe://td/ns/a/sa/intruder");
    let (res, _) = f.exchange(Some(client(&f.ca, Some(&c), TLS13, &[]))).await;
    assert_eq!(failure(&res), Some(VerifyFailure::SanMismatch), "{res:?}");
    assert_eq!(f.stat("fail_verify_san"), 1);
}

#[tokio::test]
async fn certificates_of_another_ca_or_expired_are_refused() {
    let f = Fixture::new();
    let other = ca("td");
    let foreign = issue(&other, CLIENT_ID);
    let (res, _) = f
        .exchange(Some(client(&f.ca, Some(&foreign), TLS13, &[])))
        .await;
    assert_eq!(
        failure(&res),
        Some(VerifyFailure::UntrustedChain),
        "{res:?}"
    );
    let old = issue_with(&f.ca, CLIENT_ID, &expired());
    let (res, _) = f
        .exchange(Some(client(&f.ca, Some(&old), TLS13, &[])))
        .await;
    assert_eq!(failure(&res), Some(VerifyFailure::Expired), "{res:?}");
    assert_eq!(f.stat("fail_verify_error"), 2);
}

#[tokio::test]
async fn tls12_below_the_minimum_and_plaintext_are_connection_errors() {
    let f = Fixture::new();
    let c = cert(&f, CLIENT_ID);
    let (res, body) = f.exchange(Some(client(&f.ca, Some(&c), TLS12, &[]))).await;
    assert_eq!(failure(&res), Some(VerifyFailure::Other), "{res:?}");
    assert!(body.is_empty());
    let (res, body) = f.exchange(None).await;
    assert_eq!(failure(&res), Some(VerifyFailure::Other), "{res:?}");
    // At most a TLS alert record comes back, never an HTTP response.
    assert!(!body.starts_with(b"HTTP"), "plaintext got {body:?}");
    assert_eq!(f.stat("connection_error"), 2);
    assert_eq!(f.stat("handshake"), 0);
}
