//! `envoy.filters.http.fault`: delay and/or abort a share of requests before the router.
//!
//! The delay comes first, then the abort, as in Envoy. A route's `HTTPFault` in
//! `typed_per_filter_config` replaces the filter's faults for that route. `response_rate_limit`,
//! `upstream_cluster` and `downstream_nodes` are errors (they would change which requests fault).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort::ErrorType, HttpFault,
};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::config::{duration, ConfigErrors, Path};
use crate::http::body::BoxBody;
use crate::http::local_reply;
use crate::http::route::{HeaderMatcher, HeaderSource};
use crate::stats::{Counter, Gauge, Store};

pub const TYPE: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";

const ABORT_HEADER: &str = "x-envoy-fault-abort-request";
const ABORT_GRPC_HEADER: &str = "x-envoy-fault-abort-grpc-request";
const ABORT_PERCENT_HEADER: &str = "x-envoy-fault-abort-request-percentage";
const DELAY_HEADER: &str = "x-envoy-fault-delay-request";
const DELAY_PERCENT_HEADER: &str = "x-envoy-fault-delay-request-percentage";

/// A share of requests: `numerator` out of `denominator`.
#[derive(Debug, Clone, Copy)]
struct Share {
    numerator: u64,
    denominator: u64,
}

impl Share {
    fn from_proto(p: Option<&FractionalPercent>) -> Share {
        let p = p.cloned().unwrap_or_default();
        let denominator = match DenominatorType::try_from(p.denominator) {
            Ok(DenominatorType::TenThousand) => 10_000,
            Ok(DenominatorType::Million) => 1_000_000,
            _ => 100,
        };
        Share {
            numerator: u64::from(p.numerator).min(denominator),
            denominator,
        }
    }

    /// The header's percentage, capped by the configured share (Envoy's header faults).
    fn capped_by_header(self, headers: &HeaderMap, name: &str) -> Share {
        match header_u64(headers, name) {
            Some(n) => Share {
                numerator: n.min(self.numerator),
                ..self
            },
            None => self,
        }
    }

    fn roll(self) -> bool {
        self.numerator > 0 && rand::random_range(0..self.denominator) < self.numerator
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

#[derive(Debug)]
enum AbortKind {
    Http(StatusCode),
    Grpc(u32),
    Header,
}

#[derive(Debug)]
enum DelayKind {
    Fixed(Duration),
    Header,
}

/// The validated faults of a filter or of a route's `HTTPFault`.
#[derive(Debug)]
pub struct Faults {
    abort: Option<(AbortKind, Share, String)>,
    delay: Option<(DelayKind, Share)>,
    headers: Vec<HeaderMatcher>,
    max_active: Option<u64>,
}

impl Faults {
    pub fn from_proto(f: &HttpFault, path: &Path, errs: &mut ConfigErrors) -> Option<Arc<Self>> {
        let before = errs.0.len();
        if f.response_rate_limit.is_some() {
            errs.push(
                path.field("response_rate_limit"),
                "response rate limiting is not supported",
            );
        }
        if !f.upstream_cluster.is_empty() {
            errs.push(
                path.field("upstream_cluster"),
                "faults limited to an upstream cluster are not supported",
            );
        }
        if !f.downstream_nodes.is_empty() {
            errs.push(
                path.field("downstream_nodes"),
                "faults limited to downstream nodes are not supported",
            );
        }
        let abort = f.abort.as_ref().and_then(|a| {
            let p = path.field("abort");
            let kind = match &a.error_type {
                Some(ErrorType::HttpStatus(s)) => {
                    match u16::try_from(*s).ok().filter(|s| (200..600).contains(s)) {
                        Some(s) => AbortKind::Http(StatusCode::from_u16(s).ok()?),
                        None => {
                            errs.push(p.field("http_status"), "must be in [200, 600)");
                            return None;
                        }
                    }
                }
                Some(ErrorType::GrpcStatus(s)) => AbortKind::Grpc(*s),
                Some(ErrorType::HeaderAbort(_)) => AbortKind::Header,
                None => {
                    errs.push(
                        &p,
                        "one of http_status, grpc_status or header_abort is required",
                    );
                    return None;
                }
            };
            Some((
                kind,
                Share::from_proto(a.percentage.as_ref()),
                a.response_body.clone(),
            ))
        });
        let delay = f.delay.as_ref().and_then(|d| {
            let p = path.field("delay");
            let kind = match &d.fault_delay_secifier {
                Some(FaultDelaySecifier::FixedDelay(t)) => DelayKind::Fixed(duration(&Some(*t))?),
                Some(FaultDelaySecifier::HeaderDelay(_)) => DelayKind::Header,
                None => {
                    errs.push(&p, "one of fixed_delay or header_delay is required");
                    return None;
                }
            };
            Some((kind, Share::from_proto(d.percentage.as_ref())))
        });
        let headers = f
            .headers
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                HeaderMatcher::from_proto(h, &path.field("headers").index(i), errs)
            })
            .collect();
        let faults = Faults {
            abort,
            delay,
            headers,
            max_active: f.max_active_faults.map(|v| u64::from(v.value)),
        };
        (errs.0.len() == before).then(|| Arc::new(faults))
    }
}

/// The filter as one connection manager runs it.
#[derive(Debug)]
pub struct FaultFilter {
    faults: Arc<Faults>,
    active: Arc<AtomicU64>,
    active_gauge: Gauge,
    aborts_injected: Counter,
    delays_injected: Counter,
    faults_overflow: Counter,
}

/// What the fault stage decided.
pub enum Injected {
    /// Delay the request, then continue (the abort, if any, follows the delay).
    Delay(Duration, Option<Response<BoxBody>>),
    Abort(Response<BoxBody>),
}

impl FaultFilter {
    pub fn new(faults: &Arc<Faults>, store: &Store, stat_prefix: &str) -> Self {
        let s = store.scope(format!("http.{stat_prefix}.fault."));
        FaultFilter {
            faults: faults.clone(),
            active: Arc::new(AtomicU64::new(0)),
            active_gauge: s.gauge("active_faults"),
            aborts_injected: s.counter("aborts_injected"),
            delays_injected: s.counter("delays_injected"),
            faults_overflow: s.counter("faults_overflow"),
        }
    }

    pub fn decode(&self, route: Option<&Faults>, req: &http::request::Parts) -> Option<Injected> {
        let f = route.unwrap_or(&self.faults);
        if !f
            .headers
            .iter()
            .all(|h| h.matches(HeaderSource::Request(req)))
        {
            return None;
        }
        let headers = &req.headers;
        let delay = f.delay.as_ref().and_then(|(kind, share)| {
            let (d, share) = match kind {
                DelayKind::Fixed(d) => (*d, *share),
                DelayKind::Header => (
                    Duration::from_millis(header_u64(headers, DELAY_HEADER)?),
                    share.capped_by_header(headers, DELAY_PERCENT_HEADER),
                ),
            };
            share.roll().then_some(d)
        });
        let abort = f.abort.as_ref().and_then(|(kind, share, body)| {
            let (resp, share) = match kind {
                AbortKind::Http(s) => (http_abort(*s, body), *share),
                AbortKind::Grpc(s) => (grpc_abort(*s), *share),
                AbortKind::Header => {
                    let resp = match (
                        header_u64(headers, ABORT_HEADER),
                        header_u64(headers, ABORT_GRPC_HEADER),
                    ) {
                        (Some(s), _) => http_abort(
                            u16::try_from(s)
                                .ok()
                                .filter(|s| (200..600).contains(s))
                                .and_then(|s| StatusCode::from_u16(s).ok())?,
                            body,
                        ),
                        (None, Some(g)) => grpc_abort(u32::try_from(g).ok()?),
                        (None, None) => return None,
                    };
                    (resp, share.capped_by_header(headers, ABORT_PERCENT_HEADER))
                }
            };
            share.roll().then_some(resp)
        });
        if delay.is_none() && abort.is_none() {
            return None;
        }
        if let Some(max) = f.max_active {
            if self.active.load(Ordering::Relaxed) >= max {
                self.faults_overflow.inc();
                return None;
            }
        }
        match delay {
            Some(d) => {
                self.delays_injected.inc();
                Some(Injected::Delay(d, abort))
            }
            None => {
                self.aborts_injected.inc();
                abort.map(Injected::Abort)
            }
        }
    }

    /// Counts an abort that follows a delay.
    pub fn count_abort(&self) {
        self.aborts_injected.inc();
    }

    /// Holds one active fault until dropped (`max_active_faults`, `active_faults`).
    pub fn active(&self) -> ActiveFault {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.active_gauge.inc();
        ActiveFault {
            count: self.active.clone(),
            gauge: self.active_gauge.clone(),
        }
    }
}

pub struct ActiveFault {
    count: Arc<AtomicU64>,
    gauge: Gauge,
}

impl Drop for ActiveFault {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

fn http_abort(status: StatusCode, body: &str) -> Response<BoxBody> {
    let text = if body.is_empty() {
        "fault filter abort".to_string()
    } else {
        body.to_string()
    };
    local_reply::text_response(status, text)
}

/// A gRPC abort is a trailers-only `200` carrying `grpc-status`, as Envoy sends it.
fn grpc_abort(status: u32) -> Response<BoxBody> {
    let mut resp = local_reply::text_response(StatusCode::OK, String::new());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(status));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse::{from_yaml, ParseOptions};

    fn errors(yaml: &str) -> String {
        let f: HttpFault = from_yaml(yaml, ParseOptions::default()).expect("parses");
        let mut errs = ConfigErrors::default();
        let built = Faults::from_proto(&f, &Path::root("fault"), &mut errs);
        assert_eq!(built.is_none(), !errs.is_empty());
        errs.to_string()
    }

    #[test]
    fn faults_remora_cannot_inject_are_errors_naming_the_field() {
        let e = errors("upstream_cluster: c\ndownstream_nodes: [n]\nabort: { http_status: 700 }");
        for field in [
            "fault.upstream_cluster",
            "fault.downstream_nodes",
            "fault.abort.http_status",
        ] {
            assert!(e.contains(field), "{field}: {e}");
        }
        assert_eq!(
            errors("abort: { http_status: 503 }\ndelay: { fixed_delay: 1s }"),
            ""
        );
    }

    #[test]
    fn header_percentages_are_capped_by_the_configured_share() {
        let share = Share::from_proto(Some(&FractionalPercent {
            numerator: 50,
            denominator: DenominatorType::TenThousand as i32,
        }));
        let mut h = HeaderMap::new();
        h.insert(ABORT_PERCENT_HEADER, HeaderValue::from_static("80"));
        let capped = share.capped_by_header(&h, ABORT_PERCENT_HEADER);
        assert_eq!((capped.numerator, capped.denominator), (50, 10_000));
        h.insert(ABORT_PERCENT_HEADER, HeaderValue::from_static("0"));
        assert!(!share.capped_by_header(&h, ABORT_PERCENT_HEADER).roll());
    }
}
