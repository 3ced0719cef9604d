//! Test harness: a dev PKI and in-memory rustls connection pairs (no sockets).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use remora_certs::{
    client_config, server_config, CertInfo, DevCa, DevCaOptions, DownstreamCertVerifier,
    IssueOptions, RotatingCertResolver, SanMatcher, SpiffeId, TrustBundleSet, TrustDomain,
    UpstreamCertVerifier,
};
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, ClientConnection, ServerConfig, ServerConnection, SupportedProtocolVersion,
};

pub const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
pub const ANY_TLS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

pub fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).expect("trust domain")
}

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).expect("spiffe id")
}

pub fn ca(trust_domain: &str) -> DevCa {
    DevCa::generate(&td(trust_domain), &DevCaOptions::default()).expect("dev CA")
}

pub fn bundle_of(ca: &DevCa) -> TrustBundleSet {
    TrustBundleSet::single(ca.trust_bundle().expect("bundle"))
}

pub fn leaf(ca: &DevCa, spiffe: &str) -> Arc<CertifiedKey> {
    leaf_with(ca, spiffe, &IssueOptions::default())
}

pub fn leaf_with(ca: &DevCa, spiffe: &str, opts: &IssueOptions) -> Arc<CertifiedKey> {
    let issued = ca.issue(&id(spiffe), opts).expect("issue");
    Arc::new(issued.certified_key().expect("certified key"))
}

/// Options for a certificate that expired yesterday.
pub fn expired() -> IssueOptions {
    let now = SystemTime::now();
    IssueOptions {
        not_before: Some(now - Duration::from_secs(2 * 86_400)),
        not_after: Some(now - Duration::from_secs(86_400)),
        ..IssueOptions::default()
    }
}

/// A listener side: verifies clients against `bundles` with `matchers`.
pub fn server(
    bundles: TrustBundleSet,
    matchers: Vec<SanMatcher>,
    require_client_certificate: bool,
    certs: Arc<RotatingCertResolver>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ServerConfig> {
    let verifier = DownstreamCertVerifier::builder(bundles)
        .san_matchers(matchers)
        .require_client_certificate(require_client_certificate)
        .build()
        .expect("downstream verifier");
    Arc::new(server_config(versions, verifier, certs).expect("server config"))
}

/// A cluster side: verifies servers against `bundles` with `matchers`, presenting `certs`.
pub fn client(
    bundles: TrustBundleSet,
    matchers: Vec<SanMatcher>,
    certs: Option<Arc<RotatingCertResolver>>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let verifier = UpstreamCertVerifier::builder(bundles)
        .san_matchers(matchers)
        .build()
        .expect("upstream verifier");
    let certs = certs.map(|c| c as Arc<dyn rustls::client::ResolvesClientCert>);
    Arc::new(client_config(versions, verifier, certs).expect("client config"))
}

pub fn resolver(key: Arc<CertifiedKey>) -> Arc<RotatingCertResolver> {
    Arc::new(RotatingCertResolver::new(key))
}

/// The result of driving a handshake to completion or failure on both sides.
pub struct Pair {
    pub client: ClientConnection,
    pub server: ServerConnection,
    pub client_error: Option<rustls::Error>,
    pub server_error: Option<rustls::Error>,
}

impl Pair {
    pub fn ok(&self) -> bool {
        self.client_error.is_none()
            && self.server_error.is_none()
            && !self.client.is_handshaking()
            && !self.server.is_handshaking()
    }

    pub fn server_error(&self) -> &rustls::Error {
        self.server_error.as_ref().expect("the server side failed")
    }

    pub fn client_error(&self) -> &rustls::Error {
        self.client_error.as_ref().expect("the client side failed")
    }

    /// What the server saw of the client certificate.
    pub fn client_cert_info(&self) -> Option<CertInfo> {
        self.server
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|der| CertInfo::parse("client", 0, der).expect("client cert"))
    }

    /// What the client saw of the server certificate.
    pub fn server_cert_info(&self) -> CertInfo {
        let der = self
            .client
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("server certificate");
        CertInfo::parse("server", 0, der).expect("server cert")
    }

    /// Sends application data both ways over the established connection.
    pub fn exchange(&mut self, ping: &[u8], pong: &[u8]) {
        self.client.writer().write_all(ping).expect("client write");
        pump(&mut self.client, &mut self.server).expect("to server");
        assert_eq!(read_all(&mut self.server.reader()), ping);
        self.server.writer().write_all(pong).expect("server write");
        pump(&mut self.client, &mut self.server).expect("to client");
        assert_eq!(read_all(&mut self.client.reader()), pong);
    }
}

fn read_all(reader: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    out
}

/// Which side a pump failure came from.
#[derive(Debug)]
pub enum Side {
    Client(rustls::Error),
    Server(rustls::Error),
}

/// Moves TLS records between the two ends until neither has anything to send.
pub fn pump(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), Side> {
    loop {
        let mut moved = false;
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client write_tls");
        }
        if !buf.is_empty() {
            moved = true;
            feed(&buf, server).map_err(Side::Server)?;
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server write_tls");
        }
        if !buf.is_empty() {
            moved = true;
            feed(&buf, client).map_err(Side::Client)?;
        }
        if !moved {
            return Ok(());
        }
    }
}

fn feed<D>(mut data: &[u8], conn: &mut rustls::ConnectionCommon<D>) -> Result<(), rustls::Error> {
    while !data.is_empty() {
        conn.read_tls(&mut data).expect("read_tls");
        conn.process_new_packets()?;
    }
    Ok(())
}

/// Runs a handshake; on failure, delivers the failing side's alert to the other side so both
/// errors are observable, as on a real socket.
pub fn handshake(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Pair {
    // The name is not in any test certificate: it must not matter when SANs are checked.
    let name = ServerName::try_from("upstream.example.invalid").expect("name");
    let mut pair = Pair {
        client: ClientConnection::new(client, name).expect("client connection"),
        server: ServerConnection::new(server).expect("server connection"),
        client_error: None,
        server_error: None,
    };
    match pump(&mut pair.client, &mut pair.server) {
        Ok(()) => {}
        Err(Side::Server(e)) => {
            pair.server_error = Some(e);
            if let Err(Side::Client(e)) = pump(&mut pair.client, &mut pair.server) {
                pair.client_error = Some(e);
            }
        }
        Err(Side::Client(e)) => {
            pair.client_error = Some(e);
            if let Err(Side::Server(e)) = pump(&mut pair.client, &mut pair.server) {
                pair.server_error = Some(e);
            }
        }
    }
    pair
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "remora-certs-{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

fn rand_suffix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
