//! TLS, what a finished handshake established: version, cipher, SNI, ALPN and the peer's
//! certificate identity, for access logs, headers and codec selection.

use remora_certs::CertInfo;
use rustls::CommonState;

use super::params::cipher_name;
use super::stats::version_name;

/// The peer certificate's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub subject: String,
    pub serial: String,
    /// The SPIFFE ID, when the certificate is an X.509-SVID.
    pub spiffe_id: Option<String>,
    /// Lowercase hex SHA-256 of the certificate's DER (XFCC `Hash=`).
    pub sha256: String,
    /// The TLS 1.3 signature scheme of the certificate's key (`ssl.sigalgs.*`).
    pub signature_scheme: Option<&'static str>,
    /// The certificate itself (ext_authz's `include_peer_certificate`).
    pub der: std::sync::Arc<[u8]>,
}

impl From<&CertInfo> for PeerCert {
    fn from(c: &CertInfo) -> Self {
        Self {
            sha256: String::new(),
            der: std::sync::Arc::default(),
            signature_scheme: c.signature_scheme(),
            uri_sans: c.uri_sans().to_vec(),
            dns_sans: c.dns_sans().to_vec(),
            subject: c.subject().to_string(),
            serial: c.serial().to_string(),
            spiffe_id: c.spiffe_id().map(|id| id.to_string()),
        }
    }
}

/// One TLS connection's negotiated facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// Envoy's cipher name (`TLS_AES_128_GCM_SHA256`).
    pub cipher: &'static str,
    /// The SNI the client sent (server side only).
    pub sni: Option<String>,
    pub alpn: Option<Vec<u8>>,
    /// The peer's leaf certificate, when it presented one.
    pub peer: Option<PeerCert>,
    /// The URI SANs of the certificate this side presented (`%DOWNSTREAM_LOCAL_URI_SAN%`, XFCC `By=`).
    pub local_uri_sans: Vec<String>,
}

impl TlsInfo {
    pub(crate) fn from_state(state: &CommonState, sni: Option<&str>) -> Self {
        let peer = state
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| {
                let info = CertInfo::parse("peer certificate", 0, leaf).ok()?;
                let mut cert = PeerCert::from(&info);
                cert.sha256 =
                    hex(ring::digest::digest(&ring::digest::SHA256, leaf.as_ref()).as_ref());
                cert.der = std::sync::Arc::from(leaf.as_ref());
                Some(cert)
            });
        Self {
            version: version_name(state.protocol_version()),
            cipher: state
                .negotiated_cipher_suite()
                .map_or("unknown", |s| cipher_name(s.suite())),
            sni: sni.map(str::to_string),
            alpn: state.alpn_protocol().map(<[u8]>::to_vec),
            peer,
            local_uri_sans: Vec::new(),
        }
    }

    /// Whether ALPN chose HTTP/2.
    pub fn is_h2(&self) -> bool {
        self.alpn.as_deref() == Some(b"h2")
    }

    /// `%DOWNSTREAM_PEER_URI_SAN%`: the peer's URI SANs, comma separated.
    pub fn peer_uri_san(&self) -> Option<String> {
        self.peer
            .as_ref()
            .filter(|p| !p.uri_sans.is_empty())
            .map(|p| p.uri_sans.join(","))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
