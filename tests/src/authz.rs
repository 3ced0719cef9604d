//! Authorization services for the ext_authz suite, as a mesh's would answer: a gRPC
//! `envoy.service.auth.v3.Authorization` server (allows `x-allow: yes`, adding headers; denies the
//! rest with its own status, headers and body; `x-slow` makes it answer after 3 s) and a plain
//! HTTP one, both remembering every check.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption, QueryParameter,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// gRPC PERMISSION_DENIED.
pub const PERMISSION_DENIED: i32 = 7;

pub fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with_action(mut h: HeaderValueOption, a: HeaderAppendAction) -> HeaderValueOption {
    h.append_action = a as i32;
    h
}

/// Every kind of change an OK response can ask for.
fn mutations() -> CheckResponse {
    let mut legacy = header("x-legacy", "b");
    let mut legacy_absent = header("x-legacy-absent", "c");
    #[allow(deprecated)]
    {
        legacy.append = Some(BoolValue { value: true });
        legacy_absent.append = Some(BoolValue { value: true });
    }
    CheckResponse {
        status: Some(RpcStatus::default()),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: vec![
                header("x-authz", "grpc"),
                with_action(
                    header("x-set", "new"),
                    HeaderAppendAction::OverwriteIfExistsOrAdd,
                ),
                legacy,
                legacy_absent,
                with_action(header("x-ifabsent", "v"), HeaderAppendAction::AddIfAbsent),
                with_action(
                    header("x-overwrite", "v"),
                    HeaderAppendAction::OverwriteIfExists,
                ),
            ],
            query_parameters_to_set: vec![
                QueryParameter {
                    key: "q".into(),
                    value: "2".into(),
                },
                QueryParameter {
                    key: "n".into(),
                    value: "new".into(),
                },
            ],
            query_parameters_to_remove: vec!["r".into()],
            response_headers_to_add: vec![header("x-resp", "1"), header("x-resp", "2")],
            headers_to_remove: vec!["host".into(), ":path".into()],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The gRPC service: remembers every check and its metadata.
#[derive(Clone, Default)]
pub struct GrpcAuthz {
    pub seen: Arc<Mutex<Vec<CheckRequest>>>,
    /// The gRPC metadata of each check.
    pub metadata: Arc<Mutex<Vec<http::HeaderMap>>>,
}

#[tonic::async_trait]
impl Authorization for GrpcAuthz {
    async fn check(
        &self,
        req: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        if let Ok(mut m) = self.metadata.lock() {
            m.push(req.metadata().clone().into_headers());
        }
        let check = req.into_inner();
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(check.clone());
        }
        let attrs = check.attributes.unwrap_or_default();
        let mut http = attrs.request.and_then(|r| r.http).unwrap_or_default();
        // encode_raw_headers sends header_map instead.
        for h in http
            .header_map
            .take()
            .map(|m| m.headers)
            .unwrap_or_default()
        {
            let v = String::from_utf8_lossy(&h.raw_value).into_owned();
            http.headers.insert(h.key, v);
        }
        let allow = http.headers.get("x-allow").map(String::as_str) == Some("yes");
        if http.headers.contains_key("x-slow") {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        }
        let resp = if allow && http.headers.contains_key("x-mut") {
            mutations()
        } else if allow {
            let mut headers = vec![header("x-authz", "grpc")];
            if http.headers.contains_key("x-want-reroute") {
                headers.push(header("x-authz-route", "b"));
            }
            if let Some(c) = attrs.context_extensions.get("route") {
                headers.push(header("x-ctx", c));
            }
            if !http.body.is_empty() {
                headers.push(header("x-body-seen", &http.body));
            }
            CheckResponse {
                status: Some(RpcStatus::default()),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers,
                    headers_to_remove: vec!["x-remove-me".into()],
                    response_headers_to_add: vec![header("x-authz-resp", "yes")],
                    ..Default::default()
                })),
                ..Default::default()
            }
        } else if http.headers.contains_key("x-json") {
            CheckResponse {
                status: Some(RpcStatus {
                    code: PERMISSION_DENIED,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    headers: vec![
                        header("content-type", "application/json"),
                        header("x-a", "1"),
                        header("x-a", "2"),
                    ],
                    body: "{}".into(),
                    ..Default::default()
                })),
                ..Default::default()
            }
        } else if http.headers.contains_key("x-bare") {
            CheckResponse {
                status: Some(RpcStatus {
                    code: PERMISSION_DENIED,
                    ..Default::default()
                }),
                ..Default::default()
            }
        } else {
            CheckResponse {
                status: Some(RpcStatus {
                    code: PERMISSION_DENIED,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    // Unauthorized.
                    status: Some(HttpStatus { code: 401 }),
                    headers: vec![header("x-denied", "grpc")],
                    body: "denied by grpc".into(),
                })),
                ..Default::default()
            }
        };
        Ok(tonic::Response::new(resp))
    }
}

pub async fn start_grpc(authz: GrpcAuthz) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(authz))
            .serve_with_incoming(incoming)
            .await;
    });
    addr
}

/// What the HTTP service saw: path and headers of each check.
pub type HttpSeen = Arc<Mutex<Vec<(String, String, BTreeMap<String, String>)>>>;

pub async fn start_http(seen: HttpSeen) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let headers: BTreeMap<String, String> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                            })
                            .collect();
                        let allow = headers.get("x-allow").map(String::as_str) == Some("yes");
                        let path = req.uri().to_string();
                        let boom = path.contains("boom");
                        let no_content = path.contains("nocontent");
                        let method = req.method().to_string();
                        if let Ok(mut s) = seen.lock() {
                            s.push((method, path, headers));
                        }
                        let _ = req.into_body().collect().await;
                        let resp = if boom {
                            http::Response::builder()
                                .status(500)
                                .body(Full::new(Bytes::from_static(b"boom")))
                        } else if no_content {
                            http::Response::builder()
                                .status(204)
                                .header("x-authz", "nc")
                                .body(Full::new(Bytes::new()))
                        } else if allow {
                            http::Response::builder()
                                .status(200)
                                .header("x-authz", "http")
                                .header("x-more", "m2")
                                .header("x-not-upstream", "no")
                                .header("x-authz-resp", "http")
                                .body(Full::new(Bytes::new()))
                        } else {
                            http::Response::builder()
                                .status(403)
                                .header("x-denied", "http")
                                .header("x-hidden", "no")
                                .body(Full::new(Bytes::from_static(b"denied by http")))
                        };
                        Ok::<_, Infallible>(resp.expect("response"))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// `%XX` escapes back to bytes.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
