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
    /// `request_timeout`: the whole request did not arrive in time.
    RequestTimeout,
    /// `stream_idle_timeout` while the request was still arriving (408) or after it (504).
    StreamIdle,
    StreamIdleComplete,
}

impl LocalReason {
    pub fn status(self) -> StatusCode {
        match self {
            LocalReason::NoRoute => StatusCode::NOT_FOUND,
            LocalReason::Timeout | LocalReason::StreamIdleComplete => StatusCode::GATEWAY_TIMEOUT,
            LocalReason::RequestTimeout | LocalReason::StreamIdle => StatusCode::REQUEST_TIMEOUT,
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
            LocalReason::RequestTimeout
            | LocalReason::StreamIdle
            | LocalReason::StreamIdleComplete => "SI",
            LocalReason::WebSocketNotAllowed | LocalReason::BadRequest => "",
        }
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%` for the reply.
    pub fn details(self) -> &'static str {
        match self {
            LocalReason::NoRoute => "route_not_found",
            LocalReason::NoCluster => "cluster_not_found",
            LocalReason::Timeout => "upstream_response_timeout",
            LocalReason::WebSocketNotAllowed => "upgrade_failed",
            LocalReason::BadRequest => "bad_request",
            LocalReason::RequestTimeout => "request_overall_timeout",
            LocalReason::StreamIdle | LocalReason::StreamIdleComplete => "stream_idle_timeout",
        }
    }

    fn body(self) -> &'static str {
        match self {
            LocalReason::NoRoute | LocalReason::NoCluster | LocalReason::WebSocketNotAllowed => "",
            LocalReason::Timeout => "upstream request timeout",
            LocalReason::BadRequest => "Bad Request",
            LocalReason::RequestTimeout => "request timeout",
            LocalReason::StreamIdle | LocalReason::StreamIdleComplete => "stream timeout",
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
