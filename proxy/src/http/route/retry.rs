//! Route retry policy: when an upstream attempt may be retried, how often, and how long to back off.

use std::borrow::Cow;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::RetryPolicy as RetryPolicyProto;
use http::header::HeaderMap;
use rand::Rng;

use super::matcher::HeaderMatcher;
use super::request::HeaderSource;
use super::to_duration;
use crate::config::{ConfigErrors, Path};

/// The `retry_on` conditions, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const FIVE_XX: RetryOn = RetryOn(1);
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    pub const RESET: RetryOn = RetryOn(1 << 2);
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 3);
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 4);
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 5);
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 6);
    pub const RETRIABLE_HEADERS: RetryOn = RetryOn(1 << 7);
    pub const ENVOY_RATELIMITED: RetryOn = RetryOn(1 << 8);
    pub const RESET_BEFORE_REQUEST: RetryOn = RetryOn(1 << 9);
    pub const HTTP3_POST_CONNECT_FAILURE: RetryOn = RetryOn(1 << 10);
    pub const GRPC_CANCELLED: RetryOn = RetryOn(1 << 11);
    pub const GRPC_DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 12);
    pub const GRPC_RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 13);
    pub const GRPC_UNAVAILABLE: RetryOn = RetryOn(1 << 14);
    pub const GRPC_INTERNAL: RetryOn = RetryOn(1 << 15);

    pub fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0
    }

    fn any(self, other: RetryOn) -> bool {
        self.0 & other.0 != 0
    }

    /// Parses a comma-separated `retry_on` (or `x-envoy-retry-on`) list; unknown tokens are returned
    /// so the caller can report them. Envoy accepts and ignores them.
    pub fn parse(list: &str) -> (RetryOn, Vec<&str>) {
        let mut bits = 0;
        let mut unknown = Vec::new();
        for tok in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let b = match tok {
                "5xx" => Self::FIVE_XX,
                "gateway-error" => Self::GATEWAY_ERROR,
                "reset" => Self::RESET,
                "reset-before-request" => Self::RESET_BEFORE_REQUEST,
                "connect-failure" => Self::CONNECT_FAILURE,
                "retriable-4xx" => Self::RETRIABLE_4XX,
                "refused-stream" => Self::REFUSED_STREAM,
                "retriable-status-codes" => Self::RETRIABLE_STATUS_CODES,
                "retriable-headers" => Self::RETRIABLE_HEADERS,
                "envoy-ratelimited" => Self::ENVOY_RATELIMITED,
                "http3-post-connect-failure" => Self::HTTP3_POST_CONNECT_FAILURE,
                "cancelled" => Self::GRPC_CANCELLED,
                "deadline-exceeded" => Self::GRPC_DEADLINE_EXCEEDED,
                "resource-exhausted" => Self::GRPC_RESOURCE_EXHAUSTED,
                "unavailable" => Self::GRPC_UNAVAILABLE,
                "internal" => Self::GRPC_INTERNAL,
                other => {
                    unknown.push(other);
                    continue;
                }
            };
            bits |= b.0;
        }
        (RetryOn(bits), unknown)
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = RetryOn;
    fn bitor(self, rhs: RetryOn) -> RetryOn {
        RetryOn(self.0 | rhs.0)
    }
}

const DEFAULT_BASE_INTERVAL: Duration = Duration::from_millis(25);

/// A validated `RetryPolicy` (route level, or the virtual host's when the route has none).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    retry_on: RetryOn,
    num_retries: u32,
    per_try_timeout: Option<Duration>,
    per_try_idle_timeout: Option<Duration>,
    retriable_status_codes: Vec<u16>,
    base_interval: Duration,
    max_interval: Duration,
    retriable_headers: Vec<HeaderMatcher>,
    retriable_request_headers: Vec<HeaderMatcher>,
    host_selection_retry_max_attempts: u32,
}

impl Default for RetryPolicy {
    /// What Envoy uses when only request headers ask for retries.
    fn default() -> Self {
        RetryPolicy {
            retry_on: RetryOn::default(),
            num_retries: 1,
            per_try_timeout: None,
            per_try_idle_timeout: None,
            retriable_status_codes: Vec::new(),
            base_interval: DEFAULT_BASE_INTERVAL,
            max_interval: DEFAULT_BASE_INTERVAL * 10,
            retriable_headers: Vec::new(),
            retriable_request_headers: Vec::new(),
            host_selection_retry_max_attempts: 1,
        }
    }
}

impl RetryPolicy {
    pub(crate) fn from_proto(
        p: &RetryPolicyProto,
        path: &Path,
        errs: &mut ConfigErrors,
    ) -> Option<Self> {
        let (retry_on, unknown) = RetryOn::parse(&p.retry_on);
        if !unknown.is_empty() {
            tracing::warn!(path = %path.field("retry_on"), ?unknown, "ignoring unknown retry_on conditions, as Envoy does");
        }
        let per_try_timeout = to_duration(
            p.per_try_timeout.as_ref(),
            &path.field("per_try_timeout"),
            errs,
        );
        let per_try_idle_timeout = to_duration(
            p.per_try_idle_timeout.as_ref(),
            &path.field("per_try_idle_timeout"),
            errs,
        );
        let mut codes = Vec::with_capacity(p.retriable_status_codes.len());
        for (i, c) in p.retriable_status_codes.iter().enumerate() {
            match u16::try_from(*c) {
                Ok(c) if (100..=599).contains(&c) => codes.push(c),
                _ => errs.push(
                    path.field("retriable_status_codes").index(i),
                    format!("invalid status code {c}"),
                ),
            }
        }
        let (mut base, mut max) = (DEFAULT_BASE_INTERVAL, None);
        if let Some(b) = &p.retry_back_off {
            let bp = path.field("retry_back_off");
            match to_duration(b.base_interval.as_ref(), &bp.field("base_interval"), errs) {
                Some(d) if d >= Duration::from_millis(1) => base = d,
                Some(_) => errs.push(bp.field("base_interval"), "must be at least 1ms"),
                None => errs.push(bp.field("base_interval"), "is required"),
            }
            max = to_duration(b.max_interval.as_ref(), &bp.field("max_interval"), errs);
            if let Some(m) = max {
                if m < base {
                    errs.push(
                        bp.field("max_interval"),
                        "must be greater than or equal to base_interval",
                    );
                }
            }
        }
        let matchers = |list: &[_], field: &str, errs: &mut ConfigErrors| -> Vec<HeaderMatcher> {
            list.iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    HeaderMatcher::from_proto(h, &path.field(field).index(i), errs)
                })
                .collect()
        };
        let retriable_headers = matchers(&p.retriable_headers, "retriable_headers", errs);
        let retriable_request_headers = matchers(
            &p.retriable_request_headers,
            "retriable_request_headers",
            errs,
        );
        if p.rate_limited_retry_back_off.is_some() {
            tracing::warn!(path = %path, "rate_limited_retry_back_off is not supported; the regular back-off applies");
        }
        Some(RetryPolicy {
            retry_on,
            num_retries: p.num_retries.map(|n| n.value).unwrap_or(1),
            per_try_timeout: per_try_timeout.filter(|d| !d.is_zero()),
            per_try_idle_timeout: per_try_idle_timeout.filter(|d| !d.is_zero()),
            retriable_status_codes: codes,
            base_interval: base,
            max_interval: max.unwrap_or(base * 10),
            retriable_headers,
            retriable_request_headers,
            host_selection_retry_max_attempts: u32::try_from(
                p.host_selection_retry_max_attempts.max(1),
            )
            .unwrap_or(u32::MAX),
        })
    }

    pub fn retry_on(&self) -> RetryOn {
        self.retry_on
    }
    pub fn num_retries(&self) -> u32 {
        self.num_retries
    }
    pub fn per_try_timeout(&self) -> Option<Duration> {
        self.per_try_timeout
    }
    pub fn per_try_idle_timeout(&self) -> Option<Duration> {
        self.per_try_idle_timeout
    }
    pub fn retriable_status_codes(&self) -> &[u16] {
        &self.retriable_status_codes
    }
    pub fn base_interval(&self) -> Duration {
        self.base_interval
    }
    pub fn max_interval(&self) -> Duration {
        self.max_interval
    }
    pub fn host_selection_retry_max_attempts(&self) -> u32 {
        self.host_selection_retry_max_attempts
    }

    /// Whether an upstream response with this status asks for a retry (ignoring response headers).
    pub fn should_retry_status(&self, status: u16) -> bool {
        let on = self.retry_on;
        (on.contains(RetryOn::FIVE_XX) && (500..600).contains(&status))
            || (on.contains(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
            || (on.contains(RetryOn::RETRIABLE_4XX) && status == 409)
            || (on.contains(RetryOn::RETRIABLE_STATUS_CODES)
                && self.retriable_status_codes.contains(&status))
    }

    /// Whether an upstream response asks for a retry: status, `retriable_headers`,
    /// `x-envoy-ratelimited`; never when the upstream said `x-envoy-overloaded`.
    pub fn should_retry_response(&self, status: u16, headers: &HeaderMap) -> bool {
        if headers.contains_key("x-envoy-overloaded") {
            return false;
        }
        if self.should_retry_status(status) {
            return true;
        }
        if self.retry_on.contains(RetryOn::ENVOY_RATELIMITED)
            && headers.contains_key("x-envoy-ratelimited")
        {
            return true;
        }
        self.retry_on.contains(RetryOn::RETRIABLE_HEADERS)
            && self
                .retriable_headers
                .iter()
                .any(|m| m.matches(HeaderSource::Response { status, headers }))
    }

    /// After the upstream reset the stream or closed the connection (not a local reset).
    pub fn should_retry_reset(&self) -> bool {
        self.retry_on
            .any(RetryOn::RESET | RetryOn::FIVE_XX | RetryOn::GATEWAY_ERROR)
    }

    /// After a reset that happened before the request was sent upstream.
    pub fn should_retry_reset_before_request(&self) -> bool {
        self.should_retry_reset() || self.retry_on.contains(RetryOn::RESET_BEFORE_REQUEST)
    }

    /// After the upstream connection could not be established.
    pub fn should_retry_connect_failure(&self) -> bool {
        self.should_retry_reset_before_request() || self.retry_on.contains(RetryOn::CONNECT_FAILURE)
    }

    /// After an HTTP/2 REFUSED_STREAM reset.
    pub fn should_retry_refused_stream(&self) -> bool {
        self.should_retry_reset() || self.retry_on.contains(RetryOn::REFUSED_STREAM)
    }

    /// After a per-try timeout.
    pub fn should_retry_timeout(&self) -> bool {
        self.should_retry_reset()
    }

    /// `retriable_request_headers`: when set, only matching requests are retried at all.
    pub fn request_is_retriable(&self, req: &http::request::Parts) -> bool {
        self.retriable_request_headers.is_empty()
            || self
                .retriable_request_headers
                .iter()
                .any(|m| m.matches(HeaderSource::Request(req)))
    }

    /// Envoy's fully jittered exponential back-off before retry number `attempt` (1-based): a
    /// uniform value in `[0, min(base * 2^(attempt-1), max))`, in whole milliseconds.
    pub fn backoff<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let base = self.base_interval.as_millis().max(1) as u64;
        let max = (self.max_interval.as_millis() as u64).max(base);
        let shift = attempt.saturating_sub(1).min(63);
        let ceiling = base
            .checked_shl(shift)
            .filter(|c| *c >> shift == base)
            .unwrap_or(max)
            .min(max);
        Duration::from_millis(rng.random_range(0..ceiling))
    }

    /// This policy adjusted by the request's `x-envoy-retry-on`, `x-envoy-retry-grpc-on`,
    /// `x-envoy-max-retries` and `x-envoy-retriable-status-codes` headers, as Envoy honours them.
    pub fn with_request_headers<'a>(
        this: Option<&'a RetryPolicy>,
        headers: &HeaderMap,
    ) -> Option<Cow<'a, RetryPolicy>> {
        if !crate::http::headers::has_envoy_header(headers) {
            return this.map(Cow::Borrowed);
        }
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let on = [text("x-envoy-retry-on"), text("x-envoy-retry-grpc-on")]
            .into_iter()
            .flatten()
            .fold(RetryOn::default(), |acc, v| acc | RetryOn::parse(v).0);
        let max = text("x-envoy-max-retries").and_then(|v| v.trim().parse::<u32>().ok());
        let codes: Vec<u16> = text("x-envoy-retriable-status-codes")
            .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
            .unwrap_or_default();
        if on == RetryOn::default() && max.is_none() && codes.is_empty() {
            return this.map(Cow::Borrowed);
        }
        let mut p = this.cloned().unwrap_or_default();
        p.retry_on = p.retry_on | on;
        if let Some(m) = max {
            p.num_retries = m;
        }
        p.retriable_status_codes.extend(codes);
        Some(Cow::Owned(p))
    }
}
