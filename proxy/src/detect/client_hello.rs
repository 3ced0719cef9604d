//! Detect, TLS ClientHello: decide from peeked bytes whether a connection speaks TLS and, if so,
//! which server name (SNI) and application protocols (ALPN) the client asks for.
//!
//! The verdicts follow what Envoy's `tls_inspector` gets from BoringSSL: the hello may span several
//! handshake records; a record that is not a handshake record, a first message that is not a
//! ClientHello, a malformed hello or SNI extension, duplicate extensions, or no offered version
//! between TLS 1.0 and 1.3 all mean "not TLS" (the connection then goes on as `raw_buffer`). A
//! malformed ALPN extension only means "no ALPN", as Envoy leaves that error to the TLS stack.
//! Unlike BoringSSL, which waits for a whole record header, the first two bytes already settle a
//! plaintext connection.

use std::collections::HashSet;

use super::cursor::Cursor;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const RECORD_HEADER: usize = 5;
/// RFC 8446 §5.1: a plaintext fragment is at most 2^14 bytes.
const MAX_FRAGMENT: usize = 16 * 1024;
/// BoringSSL's cap on handshake messages that carry no certificate chain.
const MAX_HELLO_BODY: usize = 16 * 1024;

const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
const NAME_TYPE_HOST_NAME: u8 = 0;
const MAX_HOST_NAME: usize = 255;
const TLS1_0: u16 = 0x0301;
const TLS1_3: u16 = 0x0304;

/// What the ClientHello asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` of the server_name extension, lowercased.
    pub server_name: Option<String>,
    /// The ALPN protocol list in the client's order; `None` without a well-formed extension.
    pub alpn: Option<Vec<String>>,
}

/// The verdict on the bytes peeked so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Consistent with TLS so far; more bytes are needed.
    Incomplete,
    NotTls,
    Hello(ClientHello),
}

/// Judges `bytes`, the connection's first bytes, without consuming anything.
pub fn parse(bytes: &[u8]) -> Outcome {
    let mut records = Cursor::new(bytes);
    // The handshake stream reassembled from the fragments seen so far.
    let mut message: Vec<u8> = Vec::new();
    loop {
        if let Some(outcome) = judge_message(&message) {
            return outcome;
        }
        match next_fragment(&mut records) {
            Ok(fragment) => message.extend_from_slice(fragment),
            Err(outcome) => return outcome,
        }
    }
}

/// The next handshake record's fragment, or the verdict when there is none to take.
fn next_fragment<'a>(records: &mut Cursor<'a>) -> Result<&'a [u8], Outcome> {
    let head = records.rest();
    if head.first().is_some_and(|&t| t != CONTENT_HANDSHAKE) {
        return Err(Outcome::NotTls);
    }
    // Every TLS version so far is 3.x on the wire.
    if head.get(1).is_some_and(|&major| major != 3) {
        return Err(Outcome::NotTls);
    }
    let mut header = Cursor::new(head);
    let (Some(_), Some(len)) = (header.take(3), header.u16()) else {
        return Err(Outcome::Incomplete);
    };
    let len = usize::from(len);
    // Zero-length handshake fragments are forbidden (RFC 8446 §5.1), oversized ones overflow.
    if len == 0 || len > MAX_FRAGMENT {
        return Err(Outcome::NotTls);
    }
    let mut rest = *records;
    rest.take(RECORD_HEADER).ok_or(Outcome::Incomplete)?;
    let fragment = rest.take(len).ok_or(Outcome::Incomplete)?;
    *records = rest;
    Ok(fragment)
}

/// The verdict on the reassembled handshake bytes, or `None` while the ClientHello is unfinished.
fn judge_message(message: &[u8]) -> Option<Outcome> {
    let mut c = Cursor::new(message);
    let kind = c.u8()?;
    if kind != HANDSHAKE_CLIENT_HELLO {
        return Some(Outcome::NotTls);
    }
    let len = c.u24()?;
    if len > MAX_HELLO_BODY {
        return Some(Outcome::NotTls);
    }
    let body = c.take(len)?;
    Some(match client_hello(body) {
        Some(hello) => Outcome::Hello(hello),
        None => Outcome::NotTls,
    })
}

/// Parses a complete ClientHello body (RFC 8446 §4.1.2); `None` when it is malformed.
fn client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut c = Cursor::new(body);
    let legacy_version = c.u16()?;
    c.take(32)?; // random
    let session_id = c.vec8()?;
    if session_id.remaining() > 32 {
        return None;
    }
    let suites = c.vec16()?;
    if suites.remaining() < 2 || suites.remaining() % 2 != 0 {
        return None;
    }
    let compression = c.vec8()?;
    if compression.is_empty() {
        return None;
    }
    let mut hello = ClientHello::default();
    let mut supported_versions = None;
    // A hello may end after the compression methods (no extensions at all).
    if !c.is_empty() {
        let mut extensions = c.vec16()?;
        if !c.is_empty() {
            return None;
        }
        let mut seen = HashSet::new();
        while !extensions.is_empty() {
            let kind = extensions.u16()?;
            let data = extensions.vec16()?;
            if !seen.insert(kind) {
                return None;
            }
            match kind {
                EXT_SERVER_NAME => hello.server_name = Some(server_name(data)?),
                EXT_ALPN => hello.alpn = alpn(data),
                EXT_SUPPORTED_VERSIONS => supported_versions = Some(offers_tls(data)?),
                _ => {}
            }
        }
    }
    let negotiable = supported_versions.unwrap_or(legacy_version >= TLS1_0);
    negotiable.then_some(hello)
}

/// RFC 6066 §3, as strictly as BoringSSL reads it: exactly one non-empty `host_name` entry without
/// NUL bytes.
fn server_name(mut data: Cursor<'_>) -> Option<String> {
    let mut list = data.vec16()?;
    let name_type = list.u8()?;
    let name = list.vec16()?;
    if !data.is_empty() || !list.is_empty() || name_type != NAME_TYPE_HOST_NAME {
        return None;
    }
    let name = name.rest();
    if name.is_empty() || name.len() > MAX_HOST_NAME || name.contains(&0) {
        return None;
    }
    Some(String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// RFC 7301 §3.1: a non-empty list of non-empty names.
fn alpn(mut data: Cursor<'_>) -> Option<Vec<String>> {
    let mut list = data.vec16()?;
    if !data.is_empty() || list.remaining() < 2 {
        return None;
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let name = list.vec8()?;
        if name.is_empty() {
            return None;
        }
        protocols.push(String::from_utf8_lossy(name.rest()).into_owned());
    }
    Some(protocols)
}

/// Whether a supported_versions list offers a version between TLS 1.0 and 1.3; `None` when the
/// list is malformed.
fn offers_tls(mut data: Cursor<'_>) -> Option<bool> {
    let mut list = data.vec8()?;
    if !data.is_empty() || list.is_empty() || list.remaining() % 2 != 0 {
        return None;
    }
    let mut any = false;
    while let Some(v) = list.u16() {
        any |= (TLS1_0..=TLS1_3).contains(&v);
    }
    Some(any)
}
