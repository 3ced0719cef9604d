//! The HTTP service: the original request's method and `path_prefix` + path, with the allowed
//! headers and no body unless buffered, sent to the service's cluster; 200 allows, a 5xx is an
//! error, any other status denies with the service's status, body and allowed headers.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;

use super::config::{ExtAuthzConfig, HttpService, KeyMatcher};
use super::decision::{Action, Allowed, Decision, Mutation, Reply};
use crate::http::body;
use crate::upstream::{ClusterManager, SendContext};

/// Hop-by-hop and framing headers never copied from the service's response.
fn framing(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-length" | "transfer-encoding" | "connection" | "keep-alive" | "upgrade" | "te"
    )
}

/// The check request: everything but the body.
pub fn check_request(
    cfg: &ExtAuthzConfig,
    svc: &HttpService,
    parts: &Parts,
    body_len: usize,
) -> Request<()> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    match format!("{}{path}", svc.path_prefix).parse() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => *req.uri_mut() = parts.uri.clone(),
    }
    let h = req.headers_mut();
    if let Some(host) = parts.headers.get(HOST) {
        h.insert(HOST, host.clone());
    }
    for (k, v) in &parts.headers {
        if k == HOST || k == CONTENT_LENGTH {
            continue;
        }
        let wanted = k == AUTHORIZATION
            || svc.allowed_headers.matches(k.as_str())
            || cfg
                .allowed_headers
                .as_ref()
                .is_some_and(|m| m.matches(k.as_str()));
        let refused = cfg
            .disallowed_headers
            .as_ref()
            .is_some_and(|m| m.matches(k.as_str()));
        if wanted && !refused {
            h.append(k, v.clone());
        }
    }
    for (k, v) in &svc.headers_to_add {
        h.insert(k, v.clone());
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from(body_len));
    super::envoy_headers(h, svc.timeout);
    req
}

/// Calls the service.
pub async fn check(
    clusters: &ClusterManager,
    cfg: &ExtAuthzConfig,
    svc: &HttpService,
    parts: &Parts,
    body: Option<Bytes>,
) -> Decision {
    let Some(cluster) = clusters.get(&svc.cluster) else {
        return Decision::error(format!("cluster {} not found", svc.cluster));
    };
    let len = body.as_ref().map_or(0, Bytes::len);
    let req = check_request(cfg, svc, parts, len).map(|()| match body {
        Some(b) if !b.is_empty() => body::full(b),
        _ => body::empty(),
    });
    let ctx = SendContext {
        downstream_version: None,
        auto_host_rewrite: false,
        append_x_forwarded_host: false,
        // The check is its own request: the route's istio.alpn override is not for it.
        alpn: None,
        ..SendContext::default()
    };
    let exchange = async {
        let sent = cluster.send(req, &ctx).await.map_err(|e| e.to_string())?;
        let (parts, body) = sent.response.into_parts();
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>((parts.status, parts.headers, bytes))
    };
    match tokio::time::timeout(svc.timeout, exchange).await {
        Ok(Ok((status, headers, body))) => decide(svc, status, &headers, body),
        Ok(Err(why)) => Decision::error(why),
        Err(_) => Decision::error("timeout"),
    }
}

fn pick(headers: &HeaderMap, m: &KeyMatcher, action: Action) -> Vec<Mutation> {
    headers
        .iter()
        .filter(|(k, _)| !framing(k) && m.matches(k.as_str()))
        .map(|(k, v)| Mutation {
            name: k.clone(),
            value: v.clone(),
            action,
        })
        .collect()
}

/// The service's response as a decision.
pub fn decide(svc: &HttpService, status: StatusCode, headers: &HeaderMap, body: Bytes) -> Decision {
    if status == StatusCode::OK {
        let mut upstream = pick(headers, &svc.allowed_upstream_headers, Action::Set);
        upstream.extend(pick(
            headers,
            &svc.allowed_upstream_headers_to_append,
            Action::Add,
        ));
        return Decision::Allow(Allowed {
            upstream,
            response: pick(headers, &svc.allowed_client_headers_on_success, Action::Set),
            ..Allowed::default()
        });
    }
    // A failing service is an error (status_on_error, failure_mode_allow), not a denial.
    if status.is_server_error() {
        return Decision::error(format!("the service answered {status}"));
    }
    let to_client = headers
        .iter()
        .filter(|(k, _)| !framing(k) && *k != HOST)
        .filter(|(k, _)| {
            svc.allowed_client_headers.as_ref().is_none_or(|m| {
                m.matches(k.as_str()) || matches!(k.as_str(), "www-authenticate" | "location")
            })
        })
        .map(|(k, v)| Mutation {
            name: k.clone(),
            value: v.clone(),
            action: Action::Add,
        })
        .collect();
    Decision::Deny(Reply {
        status: Some(status),
        headers: to_client,
        body,
    })
}
