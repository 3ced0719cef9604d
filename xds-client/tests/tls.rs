//! ADS over TLS (rustls with ring): the client verifies the server certificate and speaks h2 via ALPN.

mod support;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use remora_xds_client::{TypeUrl, XdsClient, XdsEndpoint};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::{node, Recorder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// tonic's server wants `Connected`, which it implements for TLS streams only with its own TLS
/// features; the test wraps the stream instead.
struct Tls(TlsStream<TcpStream>);

impl tonic::transport::server::Connected for Tls {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for Tls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn ads_over_tls_verifies_the_server_and_negotiates_h2() {
    let issued = rcgen::generate_simple_self_signed(vec!["xds.test".to_string()]).expect("cert");
    let cert = CertificateDer::from(issued.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.signing_key.serialize_der()));

    let mut server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
    server.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let incoming =
        futures_util::stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
            let accepted = match listener.accept().await {
                Ok((tcp, _)) => acceptor.accept(tcp).await.map(Tls),
                Err(e) => Err(e),
            };
            Some((accepted, (listener, acceptor)))
        });
    let mut plane = support::serve_incoming(support::Offer::Ads, incoming);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let endpoint = XdsEndpoint::tls(&format!("https://127.0.0.1:{port}"), Arc::new(config))
        .expect("endpoint")
        .tls_server_name("xds.test")
        .expect("name");
    let listeners = Recorder::new(TypeUrl::LISTENER);
    let client = XdsClient::builder(endpoint, node())
        .handler(listeners)
        .build()
        .expect("client");
    let runner = {
        let client = client.clone();
        tokio::spawn(async move { client.run(std::future::pending()).await })
    };
    let mut s = plane.sotw_stream().await;
    let first = s.recv().await;
    assert_eq!(first.type_url, TypeUrl::LISTENER);
    s.send(
        envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse {
            version_info: "1".into(),
            nonce: "n".into(),
            type_url: TypeUrl::LISTENER.into(),
            ..Default::default()
        },
    );
    assert_eq!(s.recv().await.version_info, "1");
    assert!(client.stats().connected());
    runner.abort();
}
