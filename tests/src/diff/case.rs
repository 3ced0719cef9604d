//! Differential case model: the sidecar `NN_name.cases.yaml` next to each bootstrap fixture.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The requests of one fixture and what each must produce.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    #[serde(default)]
    pub cases: Vec<HttpCase>,
    #[serde(default)]
    pub tcp_cases: Vec<TcpCase>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCase {
    pub name: String,
    pub request: RequestSpec,
    pub expect: Expect,
    /// Send the request this many times on one keep-alive connection (for shares).
    #[serde(default)]
    pub repeat: Option<usize>,
    /// With `repeat`: the share of requests each backend must receive, ± `tolerance`.
    #[serde(default)]
    pub expect_share: BTreeMap<String, f64>,
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// On every response, this upstream request header must equal the backend's name (headers
    /// added per weighted cluster follow the pick).
    #[serde(default)]
    pub header_names_backend: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(default = "get")]
    pub method: String,
    pub path: String,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
    /// `h1` (default) or `h2c`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Which listener placeholder to send to (default `listener_port`).
    #[serde(default)]
    pub listener: Option<String>,
}

fn get() -> String {
    "GET".into()
}

fn default_host() -> String {
    "example.com".into()
}

/// Expected values; absent fields are not checked against the expectation (but still compared
/// between Envoy and remora).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub status: u16,
    /// The echo backend's name; `none` means the response must not come from a backend.
    pub backend: Option<String>,
    /// Path with query as the backend saw it.
    pub path: Option<String>,
    pub host: Option<String>,
    /// Request headers at the backend; value `"*"` means present with any value, `{{local_ip}}`
    /// stands for the host's first non-loopback IPv4 address.
    #[serde(default)]
    pub request_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub request_headers_absent: Vec<String>,
    /// Request headers at the backend that must not have these values (regenerated ids).
    #[serde(default)]
    pub request_headers_not: BTreeMap<String, String>,
    /// Response headers at the client; `"*"` means present.
    #[serde(default)]
    pub response_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub response_headers_absent: Vec<String>,
    /// Exact body (for direct responses, redirects, local replies).
    pub body: Option<String>,
    pub body_contains: Option<String>,
    pub location: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCase {
    pub name: String,
    #[serde(default = "default_listener")]
    pub listener: String,
    /// Bytes to send on each connection; the echo must come back unchanged.
    pub send: String,
    #[serde(default = "one")]
    pub connections: usize,
    /// The share of connections each `tcp_NAME` backend must accept, ± `tolerance`.
    #[serde(default)]
    pub expect_share: BTreeMap<String, f64>,
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// The connection must be closed without an echo (no healthy upstream).
    #[serde(default)]
    pub expect_closed: bool,
}

fn default_listener() -> String {
    "listener_port".into()
}

fn one() -> usize {
    1
}
