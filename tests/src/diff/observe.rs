//! What one proxy did with one case, reduced to the parts Envoy and remora must agree on.

use std::collections::BTreeMap;

use crate::backend::Echo;
use crate::client::Response;

/// Response headers that legitimately differ between two proxies (or two runs).
pub const RESPONSE_IGNORED: &[&str] = &[
    "date",
    "server",
    "x-envoy-upstream-service-time",
    "transfer-encoding",
    "connection",
    "keep-alive",
];

/// Request headers at the backend whose value differs run to run (presence is still compared).
pub const REQUEST_VALUE_IGNORED: &[&str] = &["x-request-id"];

/// Request headers at the backend not compared at all (framing).
pub const REQUEST_IGNORED: &[&str] = &["transfer-encoding", "connection", "keep-alive"];

#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub status: u16,
    /// Lowercased names; every value in arrival order.
    pub response_headers: BTreeMap<String, Vec<String>>,
    pub body: String,
    pub echo: Option<Echo>,
    /// The exchange failed below HTTP (reset, timeout).
    pub error: Option<String>,
    /// Requests per backend, for repeated cases.
    pub shares: BTreeMap<String, usize>,
    pub sent: usize,
    /// Responses whose `header_names_backend` header did not name their backend.
    pub backend_header_mismatches: usize,
}

impl Observation {
    pub fn from_response(r: &Response) -> Observation {
        let mut response_headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (n, v) in &r.headers {
            response_headers
                .entry(n.clone())
                .or_default()
                .push(v.clone());
        }
        Observation {
            status: r.status,
            response_headers,
            body: r.text(),
            echo: r.echo(),
            error: None,
            shares: BTreeMap::new(),
            sent: 1,
            backend_header_mismatches: 0,
        }
    }

    pub fn failed(e: &anyhow::Error) -> Observation {
        Observation {
            error: Some(format!("{e:#}")),
            ..Observation::default()
        }
    }

    pub fn response_header(&self, name: &str) -> Option<&str> {
        self.response_headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// Response headers as compared between proxies.
    pub fn comparable_response_headers(&self) -> BTreeMap<String, Vec<String>> {
        self.response_headers
            .iter()
            .filter(|(n, _)| !RESPONSE_IGNORED.contains(&n.as_str()))
            // An echo body embeds request headers, so its length follows them; those are
            // compared on their own.
            .filter(|(n, _)| !(self.echo.is_some() && n.as_str() == "content-length"))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    /// Request headers at the backend as compared between proxies.
    pub fn comparable_request_headers(&self) -> BTreeMap<String, String> {
        let Some(echo) = &self.echo else {
            return BTreeMap::new();
        };
        echo.headers
            .iter()
            .filter(|(n, _)| !REQUEST_IGNORED.contains(&n.as_str()))
            .map(|(n, v)| {
                let v = if REQUEST_VALUE_IGNORED.contains(&n.as_str()) {
                    "<present>".to_string()
                } else {
                    v.clone()
                };
                (n.clone(), v)
            })
            .collect()
    }
}

/// What one proxy did with one TCP case.
#[derive(Debug, Clone, Default)]
pub struct TcpObservation {
    /// Connections whose bytes came back unchanged.
    pub echoed: usize,
    /// Connections closed without an echo.
    pub closed: usize,
    pub shares: BTreeMap<String, usize>,
}
