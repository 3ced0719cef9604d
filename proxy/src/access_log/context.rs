//! What an access log line is made from: one finished request (HTTP) or connection (TCP).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http::HeaderMap;

use crate::tls::TlsInfo;

/// The facts about one stream that command operators read. Both the HTTP connection manager and
/// tcp_proxy fill it; fields a side does not have stay `None` and print as `-`.
#[derive(Debug, Clone)]
pub struct LogContext<'a> {
    /// When the first byte of the request (or the connection) arrived.
    pub start_time: SystemTime,
    pub request_headers: Option<&'a HeaderMap>,
    pub response_headers: Option<&'a HeaderMap>,
    pub response_trailers: Option<&'a HeaderMap>,
    /// `:method`, `:path` (with query), `:authority` and `:scheme`, which `HeaderMap` does not hold.
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub authority: Option<&'a str>,
    pub scheme: Option<&'a str>,
    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`; `None` for TCP.
    pub protocol: Option<&'a str>,
    /// `None` when no response was sent, and for TCP; `%RESPONSE_CODE%` prints 0 then, as Envoy does.
    pub response_code: Option<u16>,
    pub response_code_details: Option<&'a str>,
    /// Short response flags, comma separated (`UH,UF`); empty when none.
    pub response_flags: &'a str,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// From start to the last byte sent downstream.
    pub duration: Option<Duration>,
    /// From start to the last byte of the request received.
    pub request_duration: Option<Duration>,
    /// From start to the first byte of the response from upstream.
    pub response_duration: Option<Duration>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<&'a str>,
    /// The upstream connection's local address: set only once a connection was made, so it also
    /// tells `%UPSTREAM_REMOTE_ADDRESS%` (the connection's peer) apart from `%UPSTREAM_HOST%`
    /// (the host picked, also known when connecting to it failed).
    pub upstream_local_address: Option<SocketAddr>,
    pub upstream_transport_failure_reason: Option<&'a str>,
    /// After PROXY protocol / `x-forwarded-for` trust; the peer itself is `downstream_direct_remote_address`.
    pub downstream_remote_address: Option<SocketAddr>,
    pub downstream_local_address: Option<SocketAddr>,
    pub downstream_direct_remote_address: Option<SocketAddr>,
    pub requested_server_name: Option<&'a str>,
    pub route_name: Option<&'a str>,
    pub upstream_request_attempt_count: Option<u32>,
    pub connection_id: Option<u64>,
    pub connection_termination_details: Option<&'a str>,
    /// The downstream connection's TLS, `None` for plaintext.
    pub downstream_tls: Option<&'a TlsInfo>,
    /// The TLS of the upstream connection that carried the request, `None` for plaintext or when
    /// no connection was made.
    pub upstream_tls: Option<&'a TlsInfo>,
    /// The request was answered by the health_check filter (for `not_health_check_filter`).
    pub is_health_check: bool,
    /// On an internal listener's connection, the listener's name: Envoy prints its addresses as
    /// `envoy://<name>/` (local) and `envoy://internal_client_address/` (remote).
    pub downstream_internal: Option<&'a str>,
    /// The upstream host, when it is an internal listener (`envoy://<name>/<endpoint_id>`).
    pub upstream_internal: Option<&'a str>,
    /// The connection's (or request's) filter state, for `%FILTER_STATE%`.
    pub filter_state: Option<&'a crate::filter_state::FilterState>,
}

impl<'a> LogContext<'a> {
    /// A context with only the start time; fill the rest with struct update syntax.
    pub fn new(start_time: SystemTime) -> Self {
        Self {
            start_time,
            request_headers: None,
            response_headers: None,
            response_trailers: None,
            method: None,
            path: None,
            authority: None,
            scheme: None,
            protocol: None,
            response_code: None,
            response_code_details: None,
            response_flags: "",
            bytes_received: 0,
            bytes_sent: 0,
            duration: None,
            request_duration: None,
            response_duration: None,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local_address: None,
            upstream_transport_failure_reason: None,
            downstream_remote_address: None,
            downstream_local_address: None,
            downstream_direct_remote_address: None,
            requested_server_name: None,
            route_name: None,
            upstream_request_attempt_count: None,
            connection_id: None,
            connection_termination_details: None,
            downstream_tls: None,
            upstream_tls: None,
            is_health_check: false,
            downstream_internal: None,
            upstream_internal: None,
            filter_state: None,
        }
    }

    /// A request header by lower-case name, pseudo-headers included; repeated headers join with `,`.
    pub fn request_header(&self, name: &str) -> Option<String> {
        match name {
            ":method" => self.method.map(str::to_string),
            ":path" => self.path.map(str::to_string),
            ":scheme" => self.scheme.map(str::to_string),
            ":authority" => self
                .authority
                .map(str::to_string)
                .or_else(|| header(self.request_headers, "host")),
            _ => header(self.request_headers, name),
        }
    }

    pub fn response_header(&self, name: &str) -> Option<String> {
        match name {
            ":status" => self.response_code.map(|c| c.to_string()),
            _ => header(self.response_headers, name),
        }
    }

    pub fn response_trailer(&self, name: &str) -> Option<String> {
        header(self.response_trailers, name)
    }
}

fn header(map: Option<&HeaderMap>, name: &str) -> Option<String> {
    let map = map?;
    let mut values = map.get_all(name).iter();
    let first = values.next()?;
    let mut out = String::from_utf8_lossy(first.as_bytes()).into_owned();
    for v in values {
        out.push(',');
        out.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(out)
}
