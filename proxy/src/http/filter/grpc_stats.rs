//! `envoy.filters.http.grpc_stats`: counts the gRPC calls (`content-type: application/grpc`,
//! `application/grpc+…`) routed to a cluster, in its scope: `cluster.<name>.grpc.` then
//! `<service>.<method>.` for the methods the filter lists (all of them with
//! `stats_for_all_methods`), then `success`, `failure`, `total`, the `grpc-status` value, and
//! `request_message_count` / `response_message_count` (gRPC frames seen in either body).
//!
//! As in Envoy, a call counts once its response carries `grpc-status` (trailers-only headers or
//! trailers), and a path that is not `/<service>/<method>` is not counted at all. Without a
//! specifier, v3 counts every method under `cluster.<name>.grpc.`. `emit_filter_state` only feeds
//! the access logs' `FILTER_STATE`, which remora does not expose, so it is accepted and changes
//! nothing; `enable_upstream_stats` (an `upstream_rq_time` histogram) is an error, as remora has
//! no histograms.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::extensions::filters::http::grpc_stats::v3::{
    filter_config::PerMethodStatSpecifier, FilterConfig,
};
use http::{HeaderMap, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;

use crate::config::{ConfigErrors, Path};
use crate::http::body::BoxBody;
use crate::http::completion::{Observed, Observer};
use crate::stats::Scope;

pub const TYPE: &str = "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig";

/// Which calls get stats named by their service and method.
#[derive(Debug)]
enum Methods {
    All {
        replace_dots: bool,
    },
    /// These (service, method) pairs; every other call counts without a method prefix.
    Listed(HashSet<(String, String)>),
}

/// The validated filter.
#[derive(Debug)]
pub struct GrpcStats {
    methods: Methods,
}

impl GrpcStats {
    /// `path` points at the filter's `typed_config`.
    pub fn from_proto(
        c: &FilterConfig,
        path: &Path,
        errs: &mut ConfigErrors,
    ) -> Option<Arc<GrpcStats>> {
        if c.enable_upstream_stats {
            errs.push(
                path.field("enable_upstream_stats"),
                "the upstream_rq_time histogram is not supported (remora has no histograms)",
            );
            return None;
        }
        let listed = |l: &[_]| Methods::Listed(l.iter().cloned().collect());
        let methods = match &c.per_method_stat_specifier {
            Some(PerMethodStatSpecifier::StatsForAllMethods(all)) if all.value => Methods::All {
                replace_dots: c.replace_dots_in_grpc_service_name,
            },
            Some(PerMethodStatSpecifier::IndividualMethodStatsAllowlist(list)) => {
                let pairs: Vec<(String, String)> = list
                    .services
                    .iter()
                    .flat_map(|s| s.method_names.iter().map(|m| (s.name.clone(), m.clone())))
                    .collect();
                listed(&pairs)
            }
            // v3's default, and `stats_for_all_methods: false`: one set of stats for every call.
            _ => listed(&[]),
        };
        Some(Arc::new(GrpcStats { methods }))
    }

    /// The stats of one request routed to the cluster of `scope`, if it is a gRPC call with a
    /// `/<service>/<method>` path.
    pub fn start(&self, headers: &HeaderMap, path: &str, scope: &Scope) -> Option<GrpcCall> {
        if !is_grpc(headers) {
            return None;
        }
        let (service, method) = service_and_method(path)?;
        let prefix = match &self.methods {
            Methods::All { replace_dots: true } => {
                format!("grpc.{}.{method}.", service.replace('.', "_"))
            }
            Methods::All { .. } => format!("grpc.{service}.{method}."),
            Methods::Listed(l) if l.contains(&(service.to_string(), method.to_string())) => {
                format!("grpc.{service}.{method}.")
            }
            Methods::Listed(_) => "grpc.".to_string(),
        };
        Some(GrpcCall(Arc::new(CallStats {
            scope: scope.clone(),
            prefix,
        })))
    }
}

/// `application/grpc`, or `application/grpc+<codec>` (not gRPC-Web).
fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    ct == "application/grpc"
        || ct
            .strip_prefix("application/grpc+")
            .is_some_and(|codec| !codec.is_empty())
}

/// `/<service>/<method>` (empty segments skipped, the query ignored), as Envoy resolves it.
fn service_and_method(path: &str) -> Option<(&str, &str)> {
    let path = path.split('?').next().unwrap_or_default();
    let mut parts = path.split('/').filter(|s| !s.is_empty());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(service), Some(method), None) => Some((service, method)),
        _ => None,
    }
}

#[derive(Debug)]
struct CallStats {
    scope: Scope,
    /// `grpc.` or `grpc.<service>.<method>.`, within the cluster's scope.
    prefix: String,
}

impl CallStats {
    fn add(&self, name: &str, n: u64) {
        self.scope.counter(&format!("{}{name}", self.prefix)).add(n);
    }

    /// The call ended with `status`: its own counter, then success or failure, and the total.
    fn status(&self, status: &str) {
        self.add(status, 1);
        self.add(if status == "0" { "success" } else { "failure" }, 1);
        self.add("total", 1);
    }
}

/// One gRPC call being counted.
#[derive(Debug, Clone)]
pub struct GrpcCall(Arc<CallStats>);

impl GrpcCall {
    /// The request body, counting its gRPC messages.
    pub fn request_body(&self, body: BoxBody) -> BoxBody {
        Observed::new(
            body,
            Messages::new(self.0.clone(), "request_message_count", false),
        )
        .boxed()
    }

    /// The response: its `grpc-status` if the headers carry one, and its body, counting messages
    /// (of a gRPC response) and the trailers' `grpc-status`.
    pub fn response(&self, resp: Response<BoxBody>) -> Response<BoxBody> {
        let (parts, body) = resp.into_parts();
        let status = grpc_status(&parts.headers);
        let grpc_response = if body.is_end_stream() {
            status.is_some()
        } else {
            parts.status == StatusCode::OK && is_grpc(&parts.headers)
        };
        if let Some(s) = status {
            self.0.status(s);
        }
        let observer = Messages::new(self.0.clone(), "response_message_count", true);
        let body = if grpc_response {
            Observed::new(body, observer).boxed()
        } else {
            Observed::new(body, observer.trailers_only()).boxed()
        };
        Response::from_parts(parts, body)
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<&str> {
    headers.get("grpc-status").and_then(|v| v.to_str().ok())
}

/// Counts the gRPC messages of a body (each starts with a flag byte and a 4-byte length) and,
/// on the response side, charges the trailers' `grpc-status`.
struct Messages {
    stats: Arc<CallStats>,
    counter: &'static str,
    count_messages: bool,
    trailers: bool,
    frames: FrameCounter,
}

impl Messages {
    fn new(stats: Arc<CallStats>, counter: &'static str, trailers: bool) -> Self {
        Self {
            stats,
            counter,
            count_messages: true,
            trailers,
            frames: FrameCounter::default(),
        }
    }

    /// Not a gRPC response body: only the trailers count.
    fn trailers_only(self) -> Self {
        Self {
            count_messages: false,
            ..self
        }
    }
}

impl Observer for Messages {
    fn data(&mut self, data: &Bytes) {
        if self.count_messages {
            let started = self.frames.feed(data);
            if started > 0 {
                self.stats.add(self.counter, started);
            }
        }
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        if self.trailers {
            if let Some(s) = grpc_status(trailers) {
                self.stats.status(s);
            }
        }
    }

    fn end(&mut self, _complete: bool) {}
}

/// Where a body is in its gRPC framing.
#[derive(Debug, Default)]
struct FrameCounter {
    /// Bytes of the 5-byte prefix read so far (0: at a message boundary, or in a payload).
    prefix_read: usize,
    length: u32,
    /// Payload bytes still to skip.
    payload_left: u64,
}

impl FrameCounter {
    /// Reads `data`; returns how many messages started in it.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut started = 0;
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.payload_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let byte = data[0];
            data = &data[1..];
            if self.prefix_read == 0 {
                started += 1;
                self.length = 0;
            } else {
                self.length = (self.length << 8) | u32::from(byte);
            }
            self.prefix_read += 1;
            if self.prefix_read == 5 {
                self.prefix_read = 0;
                self.payload_left = u64::from(self.length);
            }
        }
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_across_chunks() {
        let mut f = FrameCounter::default();
        let msg = |len: u8| {
            let mut v = vec![0, 0, 0, 0, len];
            v.extend(std::iter::repeat_n(7u8, usize::from(len)));
            v
        };
        let mut stream = msg(3);
        stream.extend(msg(0));
        stream.extend(msg(2));
        assert_eq!(f.feed(&stream), 3);
        // A message split inside its prefix and its payload counts once.
        let m = msg(4);
        assert_eq!(f.feed(&m[..2]), 1);
        assert_eq!(f.feed(&m[2..6]), 0);
        assert_eq!(f.feed(&m[6..]), 0);
        assert_eq!(f.feed(&msg(1)), 1);
    }

    #[test]
    fn only_service_and_method_paths_count() {
        assert_eq!(
            service_and_method("/helloworld.Greeter/SayHello"),
            Some(("helloworld.Greeter", "SayHello"))
        );
        assert_eq!(service_and_method("//a//b?x=1"), Some(("a", "b")));
        assert_eq!(service_and_method("/a"), None);
        assert_eq!(service_and_method("/a/b/c"), None);
    }

    #[test]
    fn grpc_content_types() {
        let h = |ct: &str| {
            let mut m = HeaderMap::new();
            m.insert(http::header::CONTENT_TYPE, ct.parse().expect("value"));
            is_grpc(&m)
        };
        assert!(h("application/grpc"));
        assert!(h("application/grpc+proto"));
        assert!(!h("application/grpc+"));
        assert!(!h("application/grpc-web"));
        assert!(!h("application/json"));
    }
}
