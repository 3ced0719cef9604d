//! Route direct responses: a fixed status and body answered by the proxy itself.

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::route::v3::DirectResponseAction;
use http::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use http::request::Parts;
use http::{Response, StatusCode};

use super::build::Build;
use super::request;
use crate::config::Path;
use crate::http::body::{self, BoxBody};

/// A `direct_response` action.
#[derive(Debug, Clone)]
pub struct Direct {
    status: StatusCode,
    body: Bytes,
}

impl Direct {
    pub(crate) fn from_proto(
        d: &DirectResponseAction,
        path: &Path,
        b: &mut Build<'_>,
    ) -> Option<Direct> {
        let status = match u16::try_from(d.status)
            .ok()
            .filter(|s| (200..600).contains(s))
        {
            Some(s) => StatusCode::from_u16(s).ok()?,
            None => {
                b.errs.push(
                    path.field("status"),
                    format!("status {} is not in [200, 600)", d.status),
                );
                return None;
            }
        };
        if d.body_format.is_some() {
            b.errs
                .push(path.field("body_format"), "body_format is not supported");
        }
        let bpath = path.field("body");
        let body: Bytes = match d.body.as_ref().and_then(|ds| ds.specifier.as_ref()) {
            None => Bytes::new(),
            Some(Specifier::InlineString(s)) => Bytes::from(s.clone()),
            Some(Specifier::InlineBytes(v)) => Bytes::from(v.clone()),
            Some(Specifier::Filename(f)) => match std::fs::read(f) {
                Ok(v) => Bytes::from(v),
                Err(e) => {
                    b.errs
                        .push(bpath.field("filename"), format!("reading '{f}': {e}"));
                    return None;
                }
            },
            Some(Specifier::EnvironmentVariable(v)) => match std::env::var(v) {
                Ok(s) => Bytes::from(s),
                Err(_) => {
                    b.errs.push(
                        bpath.field("environment_variable"),
                        format!("environment variable '{v}' is not set"),
                    );
                    return None;
                }
            },
        };
        if body.len() > b.max_direct_body {
            b.errs.push(
                &bpath,
                format!("response body is {} bytes; the maximum is {} (max_direct_response_body_size_bytes)", body.len(), b.max_direct_body),
            );
            return None;
        }
        Some(Direct { status, body })
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The local response. As Envoy's local replies: a non-empty body gets `content-type: text/plain`;
    /// a 201 or 3xx status gets a `Location` of the request's own URL. Route response header
    /// mutations still apply: call `Selected::apply_response_headers` on it.
    pub fn response(&self, req: &Parts) -> Response<BoxBody> {
        let mut resp = Response::new(if self.body.is_empty() {
            body::empty()
        } else {
            body::full(self.body.clone())
        });
        *resp.status_mut() = self.status;
        if !self.body.is_empty() {
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        if self.status == StatusCode::CREATED || self.status.is_redirection() {
            let host = request::authority(req).unwrap_or("");
            let loc = format!(
                "{}://{host}{}",
                request::scheme(req),
                request::path_and_query(req)
            );
            if let Ok(v) = HeaderValue::try_from(loc) {
                resp.headers_mut().insert(LOCATION, v);
            }
        }
        resp
    }
}
