//! Detect, tests: ClientHellos from a real TLS client and from a hand-rolled builder, cut and
//! mangled every way, and the detector on real sockets.

mod hello;
mod sockets;

use std::sync::Arc;

/// The first flight of a rustls client: the records holding its ClientHello.
pub(super) fn rustls_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write to a Vec");
    }
    out
}

/// A minimal ClientHello message (handshake header included) with the given extensions.
pub(super) fn hello_message(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend([7u8; 32]); // random
    body.push(0); // session id
    body.extend([0, 2, 0x13, 0x01]); // one cipher suite
    body.extend([1, 0]); // null compression
    let mut ext = Vec::new();
    for (kind, data) in extensions {
        ext.extend(kind.to_be_bytes());
        ext.extend(u16::try_from(data.len()).expect("small").to_be_bytes());
        ext.extend(data);
    }
    if !extensions.is_empty() {
        body.extend(u16::try_from(ext.len()).expect("small").to_be_bytes());
        body.extend(ext);
    }
    let len = u32::try_from(body.len()).expect("small").to_be_bytes();
    let mut msg = vec![1, len[1], len[2], len[3]];
    msg.extend(body);
    msg
}

/// `message` cut into handshake records of at most `fragment` bytes.
pub(super) fn records(message: &[u8], fragment: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in message.chunks(fragment) {
        out.extend([22, 3, 1]);
        out.extend(u16::try_from(chunk.len()).expect("small").to_be_bytes());
        out.extend(chunk);
    }
    out
}

pub(super) fn sni_ext(name: &str) -> (u16, Vec<u8>) {
    let n = name.len();
    let mut data = Vec::new();
    data.extend(u16::try_from(n + 3).expect("small").to_be_bytes());
    data.push(0);
    data.extend(u16::try_from(n).expect("small").to_be_bytes());
    data.extend(name.as_bytes());
    (0, data)
}

pub(super) fn alpn_ext(protocols: &[&str]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for p in protocols {
        list.push(u8::try_from(p.len()).expect("small"));
        list.extend(p.as_bytes());
    }
    let mut data = u16::try_from(list.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    data.extend(list);
    (16, data)
}
