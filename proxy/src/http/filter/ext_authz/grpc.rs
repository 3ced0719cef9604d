//! The gRPC service: `envoy.service.auth.v3.Authorization/Check` over the cluster's own
//! connections (HTTP/2), and the `CheckResponse` read as a decision.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckRequest, CheckResponse, DeniedHttpResponse,
};
use http::{HeaderValue, Method, Request, StatusCode, Version};
use http_body_util::BodyExt;
use prost::Message;

use super::config::GrpcService;
use super::decision::{from_option, upstream_option, Allowed, Decision, Mutation, Reply};
use crate::http::body;
use crate::upstream::{ClusterManager, SendContext};
use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// A unary gRPC message: uncompressed flag, big-endian length, the message.
fn frame(msg: &impl Message) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Encoding into a buffer with the room reserved cannot fail.
    let _ = msg.encode(&mut buf);
    buf.freeze()
}

fn unframe(mut bytes: Bytes) -> Result<CheckResponse, String> {
    if bytes.len() < 5 {
        return Err("short gRPC message".into());
    }
    if bytes.get_u8() != 0 {
        return Err("compressed gRPC messages are not supported".into());
    }
    let len = bytes.get_u32() as usize;
    if bytes.len() < len {
        return Err("truncated gRPC message".into());
    }
    CheckResponse::decode(bytes.split_to(len)).map_err(|e| format!("decoding CheckResponse: {e}"))
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
}

/// Calls the service; any failure to get a `CheckResponse` is an error decision.
pub async fn check(
    clusters: &ClusterManager,
    svc: &GrpcService,
    request: &CheckRequest,
    validate: bool,
) -> Decision {
    let Some(cluster) = clusters.get(&svc.cluster) else {
        return Decision::error(format!("cluster {} not found", svc.cluster));
    };
    let mut req = Request::new(body::full(frame(request)));
    *req.method_mut() = Method::POST;
    *req.version_mut() = Version::HTTP_2;
    *req.uri_mut() = http::Uri::from_static(CHECK_PATH);
    let h = req.headers_mut();
    for (k, v) in &svc.initial_metadata {
        h.append(k, v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&svc.authority) {
        h.insert(http::header::HOST, v);
    }
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(http::header::TE, HeaderValue::from_static("trailers"));
    if !svc.skip_envoy_headers {
        super::envoy_headers(h, svc.timeout);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{}m", svc.timeout.as_millis())) {
        h.insert("grpc-timeout", v);
    }
    let ctx = SendContext {
        downstream_version: Some(Version::HTTP_2),
        auto_host_rewrite: false,
        append_x_forwarded_host: false,
        // The check is its own request: the route's istio.alpn override is not for it.
        alpn: None,
        ..SendContext::default()
    };
    let exchange = async {
        let sent = cluster.send(req, &ctx).await.map_err(|e| e.to_string())?;
        let (parts, body) = sent.response.into_parts();
        if parts.status != StatusCode::OK {
            return Err(format!("HTTP status {}", parts.status));
        }
        if let Some(code) = grpc_status(&parts.headers).filter(|c| *c != 0) {
            return Err(format!("gRPC status {code}"));
        }
        let collected = body.collect().await.map_err(|e| e.to_string())?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        match grpc_status(&trailers).or_else(|| grpc_status(&parts.headers)) {
            Some(0) => {}
            Some(code) => return Err(format!("gRPC status {code}")),
            None => return Err("no gRPC status".into()),
        }
        unframe(collected.to_bytes())
    };
    match tokio::time::timeout(svc.timeout, exchange).await {
        Ok(Ok(resp)) => decide(resp, validate),
        Ok(Err(why)) => Decision::error(why),
        Err(_) => Decision::error("timeout"),
    }
}

type Convert = fn(&HeaderValueOption) -> Result<Mutation, String>;

fn mutations(
    opts: &[HeaderValueOption],
    convert: Convert,
    validate: bool,
) -> Result<Vec<Mutation>, String> {
    let mut out = Vec::with_capacity(opts.len());
    for o in opts {
        match convert(o) {
            Ok(m) => out.push(m),
            Err(e) if validate => return Err(e),
            Err(e) => tracing::debug!("ext_authz: skipping a header: {e}"),
        }
    }
    Ok(out)
}

fn reply(d: &DeniedHttpResponse, validate: bool) -> Result<Reply, String> {
    let status = match d.status.as_ref().map(|s| s.code) {
        None | Some(0) => None,
        Some(c) => Some(
            StatusCode::from_u16(c as u16)
                .ok()
                .filter(|_| (100..1000).contains(&c))
                .ok_or_else(|| format!("invalid status {c}"))?,
        ),
    };
    Ok(Reply {
        status,
        headers: mutations(&d.headers, from_option, validate)?,
        body: Bytes::from(d.body.clone()),
    })
}

/// A `CheckResponse` as a decision: OK status allows, any other denies.
pub fn decide(resp: CheckResponse, validate: bool) -> Decision {
    let code = resp.status.as_ref().map_or(0, |s| s.code);
    let result = (|| match resp.http_response {
        Some(HttpResponse::ErrorResponse(e)) => Ok(Decision::Error {
            why: "the service answered with an error response".into(),
            reply: Some(reply(&e, validate)?),
        }),
        _ if code != 0 => {
            let r = match &resp.http_response {
                Some(HttpResponse::DeniedResponse(d)) => reply(d, validate)?,
                _ => Reply::default(),
            };
            Ok(Decision::Deny(r))
        }
        Some(HttpResponse::OkResponse(ok)) => {
            let mut remove = Vec::new();
            for name in &ok.headers_to_remove {
                match http::HeaderName::from_bytes(name.as_bytes()) {
                    Ok(n) => remove.push(n),
                    Err(_) if name.starts_with(':') => {}
                    Err(_) if validate => return Err(format!("invalid header name '{name}'")),
                    Err(_) => {}
                }
            }
            Ok(Decision::Allow(Allowed {
                upstream: mutations(&ok.headers, upstream_option, validate)?,
                remove,
                response: mutations(&ok.response_headers_to_add, from_option, validate)?,
                query_set: ok
                    .query_parameters_to_set
                    .iter()
                    .map(|q| (q.key.clone(), q.value.clone()))
                    .collect(),
                query_remove: ok.query_parameters_to_remove.clone(),
            }))
        }
        _ => Ok(Decision::Allow(Allowed::default())),
    })();
    result.unwrap_or_else(Decision::error)
}
