//! Responses the proxy generates itself (no route, no cluster, timeouts), with Envoy's codes,
//! bodies and response flags.

use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};

use super::body::{self, BoxBody};

/// Why the proxy answered itself; picks the status, body and access-log flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReason {
    NoRoute,
    NoCluster,
    Timeout,
    WebSocketNotAllowed,
    BadRequest,
}

impl LocalReason {
    pub fn status(self) -> StatusCode {
        match self {
            LocalReason::NoRoute => StatusCode::NOT_FOUND,
            LocalReason::Timeout => StatusCode::GATEWAY_TIMEOUT,
            LocalReason::WebSocketNotAllowed => StatusCode::FORBIDDEN,
            LocalReason::BadRequest => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Envoy's short response flag for the access log.
    pub fn flag(self) -> &'static str {
        match self {
            LocalReason::NoRoute => "NR",
            LocalReason::NoCluster => "NC",
            LocalReason::Timeout => "UT",
            LocalReason::WebSocketNotAllowed | LocalReason::BadRequest => "",
        }
    }

    fn body(self) -> &'static str {
        match self {
            LocalReason::NoRoute | LocalReason::NoCluster | LocalReason::WebSocketNotAllowed => "",
            LocalReason::Timeout => "upstream request timeout",
            LocalReason::BadRequest => "Bad Request",
        }
    }
}

/// The response for `reason`.
pub fn response(reason: LocalReason) -> Response<BoxBody> {
    text_response(reason.status(), reason.body().to_string())
}

/// A local reply with a plain-text body, as Envoy sends them.
pub fn text_response(status: StatusCode, text: String) -> Response<BoxBody> {
    let len = text.len();
    let empty = text.is_empty();
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    if !empty {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp
}
