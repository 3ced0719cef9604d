//! Istio's TCP metadata exchange on the wire: on a TLS connection that negotiated the exchange's
//! ALPN (`istio-peer-exchange`), each side first writes an 8-byte header (magic `0x3D230467`, then
//! the length, both big-endian) and a serialized `google.protobuf.Any` of a `Struct` holding its
//! node metadata under `x-envoy-peer-metadata` and its node id under `x-envoy-peer-metadata-id`,
//! and takes the peer's off the front of what it reads. The application's bytes follow.

use envoy_types::pb::google::protobuf::{value::Kind, Any, Struct, Value};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::metadata::WorkloadMetadata;
use crate::stats::{Counter, Store};

pub const MAGIC: u32 = 0x3D23_0467;
const HEADER_LEN: usize = 8;
const STRUCT_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Struct";
const METADATA_KEY: &str = "x-envoy-peer-metadata";
const METADATA_ID_KEY: &str = "x-envoy-peer-metadata-id";
/// A bound on the peer's metadata: node metadata is a few hundred bytes; a length past this is not
/// an exchange.
const MAX_DATA: usize = 64 * 1024;

/// The filter's counters, under `metadata_exchange.` as Istio's proxy names them (one set for the
/// listener and cluster filters, as there).
#[derive(Debug, Clone)]
pub struct ExchangeStats {
    pub alpn_protocol_found: Counter,
    pub alpn_protocol_not_found: Counter,
    pub initial_header_not_found: Counter,
    pub header_not_found: Counter,
    pub metadata_added: Counter,
}

impl ExchangeStats {
    pub fn new(store: &Store) -> Self {
        let s = store.scope("metadata_exchange.");
        Self {
            alpn_protocol_found: s.counter("alpn_protocol_found"),
            alpn_protocol_not_found: s.counter("alpn_protocol_not_found"),
            initial_header_not_found: s.counter("initial_header_not_found"),
            header_not_found: s.counter("header_not_found"),
            metadata_added: s.counter("metadata_added"),
        }
    }
}

/// What this side writes: the header and the packed struct, built once per process.
pub fn frame(local: &WorkloadMetadata, node_id: &str) -> Vec<u8> {
    let mut fields = std::collections::HashMap::new();
    fields.insert(
        METADATA_KEY.to_string(),
        Value {
            kind: Some(Kind::StructValue(local.to_struct())),
        },
    );
    if !node_id.is_empty() {
        fields.insert(
            METADATA_ID_KEY.to_string(),
            Value {
                kind: Some(Kind::StringValue(node_id.to_string())),
            },
        );
    }
    let any = Any {
        type_url: STRUCT_TYPE_URL.to_string(),
        value: Struct { fields }.encode_to_vec(),
    };
    let data = any.encode_to_vec();
    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&data);
    out
}

/// The peer's side of the exchange.
#[derive(Debug, Default)]
pub struct Exchanged {
    /// The peer's metadata; `None` when it sent no exchange (its labels stay "unknown").
    pub peer: Option<WorkloadMetadata>,
    /// Bytes read that were not an exchange: the application's, to pass on first.
    pub leftover: Vec<u8>,
}

/// Parses the packed struct after the header.
fn decode(data: &[u8]) -> Option<WorkloadMetadata> {
    let any = Any::decode(data).ok()?;
    let s = Struct::decode(any.value.as_slice()).ok()?;
    match s.fields.get(METADATA_KEY).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(m)) => Some(WorkloadMetadata::from_struct(m)),
        _ => Some(WorkloadMetadata::default()),
    }
}

/// Writes `frame` to `stream` and reads the peer's. The peer negotiated the exchange's ALPN, so it
/// runs the exchange too and answers ours with its own (Istio's proxy writes its header when it
/// first reads or writes); a peer whose first bytes are not the magic keeps them, as `leftover`.
pub async fn exchange<S>(stream: &mut S, frame: &[u8], stats: &ExchangeStats) -> Exchanged
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if stream.write_all(frame).await.is_err() || stream.flush().await.is_err() {
        return Exchanged::default();
    }
    stats.metadata_added.inc();
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match stream.read(&mut header[got..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if got < HEADER_LEN || magic != MAGIC {
        stats.initial_header_not_found.inc();
        tracing::debug!("peer sent no istio-peer-exchange header; its metadata is unknown");
        return Exchanged {
            peer: None,
            leftover: header[..got].to_vec(),
        };
    }
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > MAX_DATA {
        stats.header_not_found.inc();
        return Exchanged {
            peer: None,
            leftover: header.to_vec(),
        };
    }
    let mut data = vec![0u8; len];
    if stream.read_exact(&mut data).await.is_err() {
        stats.header_not_found.inc();
        return Exchanged::default();
    }
    let peer = decode(&data);
    if peer.is_none() {
        stats.header_not_found.inc();
    }
    Exchanged {
        peer,
        leftover: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> WorkloadMetadata {
        WorkloadMetadata {
            workload: "web-v1".into(),
            namespace: "default".into(),
            app: "web".into(),
            version: "v1".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn both_sides_learn_the_other_and_keep_the_payload() {
        let stats = ExchangeStats::new(&Store::new());
        let (mut a, mut b) = tokio::io::duplex(4096);
        let fa = frame(&web(), "sidecar~10.0.0.1~web");
        let db = WorkloadMetadata {
            workload: "db-v2".into(),
            ..Default::default()
        };
        let fb = frame(&db, "");
        let (sa, sb) = (stats.clone(), stats.clone());
        let left = tokio::spawn(async move {
            let got = exchange(&mut a, &fa, &sa).await;
            a.write_all(b"ping").await.expect("write");
            got
        });
        let right = exchange(&mut b, &fb, &sb).await;
        let left = left.await.expect("task");
        assert_eq!(
            left.peer.as_ref().map(|p| p.workload.as_str()),
            Some("db-v2")
        );
        assert_eq!(right.peer, Some(web()));
        assert!(right.leftover.is_empty());
        let mut buf = [0u8; 4];
        b.read_exact(&mut buf).await.expect("payload");
        assert_eq!(&buf, b"ping");
        assert_eq!(stats.metadata_added.get(), 2);
    }

    #[tokio::test]
    async fn a_peer_without_the_exchange_keeps_its_bytes() {
        let stats = ExchangeStats::new(&Store::new());
        let (mut a, mut b) = tokio::io::duplex(4096);
        b.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        let got = exchange(&mut a, &frame(&web(), ""), &stats).await;
        assert_eq!(got.peer, None);
        assert_eq!(got.leftover, b"GET / HT");
        assert_eq!(stats.initial_header_not_found.get(), 1);
        let mut header = [0u8; 4];
        b.read_exact(&mut header).await.expect("our frame");
        assert_eq!(u32::from_be_bytes(header), MAGIC);
    }
}
