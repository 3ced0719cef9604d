//! Istio's filters on one HTTP request: the metadata exchange takes the peer's
//! `x-envoy-peer-metadata` off the request (from a client sidecar) or the response (from a server
//! sidecar) and sends this workload's on the other side; the stats filter records the request in
//! Istio's standard metrics once its response has finished.

use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName};

use super::labels::{self, Facts, Protocol, Reporter};
use super::metadata::{WorkloadMetadata, PEER_METADATA, PEER_METADATA_ID};
use super::node::LocalNode;
use crate::config::istio::{Discovery, HttpIstio};
use crate::tls::TlsInfo;

const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The Istio filters of one connection manager, with the local workload.
#[derive(Debug)]
pub struct HttpTelemetry {
    pub local: Arc<LocalNode>,
    pub cfg: HttpIstio,
}

/// What the request side learned, kept until the request finishes.
#[derive(Debug, Default)]
pub struct RequestSide {
    pub downstream_peer: Option<WorkloadMetadata>,
    pub host: Option<String>,
    pub grpc: bool,
    /// Header bytes as Envoy counts them (names and values), for `istio_request_bytes`.
    pub header_bytes: u64,
}

/// What the response headers carried.
#[derive(Debug, Default)]
pub struct ResponseSide {
    pub upstream_peer: Option<WorkloadMetadata>,
    /// A trailers-only gRPC response has its status in the headers.
    pub grpc_status: Option<u32>,
    pub header_bytes: u64,
}

/// How a request ended, for its labels and values.
#[derive(Debug, Default)]
pub struct Finished<'a> {
    pub status: u16,
    /// `grpc-status` from the response trailers.
    pub grpc_status: Option<u32>,
    pub flags: &'a str,
    pub cluster: Option<&'a str>,
    pub route_name: Option<&'a str>,
    pub downstream_tls: Option<&'a TlsInfo>,
    pub upstream_tls: Option<&'a TlsInfo>,
    pub duration: Duration,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
}

fn header_bytes(h: &HeaderMap) -> u64 {
    h.iter()
        .map(|(n, v)| (n.as_str().len() + v.len()) as u64)
        .sum()
}

fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get(GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// The peer from the first discovery method that finds one; Istio's headers are taken off the
/// message whether or not they decode, so the application never sees them.
fn discover(methods: &[Discovery], headers: &mut HeaderMap) -> Option<WorkloadMetadata> {
    let mut found = None;
    for m in methods {
        let peer = match m {
            Discovery::IstioHeaders => {
                let value = headers.remove(PEER_METADATA);
                headers.remove(PEER_METADATA_ID);
                value.and_then(|v| WorkloadMetadata::from_header(v.as_bytes()))
            }
            Discovery::Baggage => headers
                .get(BAGGAGE)
                .and_then(|v| v.to_str().ok())
                .map(WorkloadMetadata::from_baggage),
        };
        if found.is_none() {
            found = peer;
        }
    }
    found
}

fn propagate(local: &LocalNode, headers: &mut HeaderMap) {
    if let Some(v) = &local.header {
        headers.insert(PEER_METADATA, v.clone());
    }
    if let Some(id) = &local.id {
        headers.insert(PEER_METADATA_ID, id.clone());
    }
}

fn first_uri_san(sans: &[String]) -> Option<&str> {
    sans.first().map(String::as_str)
}

impl HttpTelemetry {
    /// The request side: learn the downstream peer and, toward the upstream, introduce ourselves.
    pub fn request(&self, headers: &mut HeaderMap) -> RequestSide {
        let mut side = RequestSide::default();
        if let Some(x) = &self.cfg.exchange {
            side.downstream_peer = discover(&x.downstream_discovery, headers);
            if x.upstream_propagation {
                propagate(&self.local, headers);
            }
        }
        if let Some(stats) = &self.cfg.stats {
            side.header_bytes = header_bytes(headers);
            side.grpc = headers
                .get(CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            if stats.host_header_fallback {
                side.host = headers
                    .get(HOST)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
            }
        }
        side
    }

    /// The response side: learn the upstream peer and, toward the downstream, introduce ourselves.
    pub fn response(&self, headers: &mut HeaderMap) -> ResponseSide {
        let mut side = ResponseSide::default();
        if let Some(x) = &self.cfg.exchange {
            side.upstream_peer = discover(&x.upstream_discovery, headers);
            if x.downstream_propagation {
                propagate(&self.local, headers);
            }
        }
        if self.cfg.stats.is_some() {
            side.grpc_status = grpc_status(headers);
            side.header_bytes = header_bytes(headers);
        }
        side
    }

    /// The request finished: one sample of every HTTP metric, when `istio.stats` is configured.
    pub fn record(&self, req: &RequestSide, resp: &ResponseSide, done: &Finished<'_>) {
        let Some(stats) = &self.cfg.stats else {
            return;
        };
        let values = self.labels(stats.reporter, req, resp, done);
        self.local.metrics.record_request(
            values,
            done.duration.as_secs_f64() * 1000.0,
            req.header_bytes + done.request_body_bytes,
            resp.header_bytes + done.response_body_bytes,
        );
    }

    fn labels(
        &self,
        reporter: Reporter,
        req: &RequestSide,
        resp: &ResponseSide,
        done: &Finished<'_>,
    ) -> labels::Values {
        // Servers label the downstream peer, clients the upstream one.
        let (peer, tls) = match reporter {
            Reporter::ClientSidecar => (resp.upstream_peer.as_ref(), done.upstream_tls),
            _ => (req.downstream_peer.as_ref(), done.downstream_tls),
        };
        let facts = Facts {
            peer,
            peer_san: tls
                .and_then(|t| t.peer.as_ref())
                .and_then(|c| first_uri_san(&c.uri_sans)),
            local_san: tls.and_then(|t| first_uri_san(&t.local_uri_sans)),
            host: req.host.as_deref(),
            cluster: done.cluster,
            route_name: done.route_name,
            flags: done.flags,
        };
        let protocol = if req.grpc {
            Protocol::Grpc
        } else {
            Protocol::Http
        };
        labels::http(
            reporter,
            &self.local.metadata,
            &facts,
            protocol,
            done.status,
            done.grpc_status.or(resp.grpc_status),
        )
    }
}

#[cfg(test)]
mod tests;
