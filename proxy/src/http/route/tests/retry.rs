//! Retry policies: parsing, retry decisions, back-off bounds, request header overrides.

use std::time::Duration;

use http::HeaderMap;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::http::route::{RetryOn, RetryPolicy};

fn policy(yaml: &str) -> RetryPolicy {
    let t = routes(&format!(
        "  - name: r\n    match: {{prefix: /}}\n    route: {{cluster: c, retry_policy: {yaml}}}\n"
    ));
    let s = t.select(&get("/", "h")).expect("selected");
    forward(&s).retry_policy().expect("policy").clone()
}

#[test]
fn defaults() {
    let p = policy("{retry_on: 5xx}");
    assert_eq!(p.num_retries(), 1);
    assert_eq!(p.per_try_timeout(), None);
    assert_eq!(p.base_interval(), Duration::from_millis(25));
    assert_eq!(p.max_interval(), Duration::from_millis(250));
}

#[test]
fn parses_every_field() {
    let p = policy(
        "{retry_on: 'gateway-error,retriable-status-codes,retriable-4xx, reset,bogus', num_retries: 3, per_try_timeout: 0.5s, per_try_idle_timeout: 2s, retriable_status_codes: [418], retry_back_off: {base_interval: 0.1s}}",
    );
    assert!(p
        .retry_on()
        .contains(RetryOn::GATEWAY_ERROR | RetryOn::RETRIABLE_STATUS_CODES | RetryOn::RESET));
    assert_eq!(p.num_retries(), 3);
    assert_eq!(p.per_try_timeout(), Some(Duration::from_millis(500)));
    assert_eq!(p.per_try_idle_timeout(), Some(Duration::from_secs(2)));
    assert_eq!(p.retriable_status_codes(), &[418]);
    assert_eq!(p.base_interval(), Duration::from_millis(100));
    assert_eq!(p.max_interval(), Duration::from_secs(1));
}

#[test]
fn status_decisions() {
    let five = policy("{retry_on: 5xx}");
    assert!(
        five.should_retry_status(500)
            && five.should_retry_status(503)
            && five.should_retry_status(599)
    );
    assert!(!five.should_retry_status(404) && !five.should_retry_status(409));
    let gw = policy("{retry_on: gateway-error}");
    assert!(
        gw.should_retry_status(502) && gw.should_retry_status(503) && gw.should_retry_status(504)
    );
    assert!(!gw.should_retry_status(500));
    let four = policy("{retry_on: retriable-4xx}");
    assert!(four.should_retry_status(409) && !four.should_retry_status(400));
    let codes = policy("{retry_on: retriable-status-codes, retriable_status_codes: [418, 429]}");
    assert!(codes.should_retry_status(429) && !codes.should_retry_status(500));
    // Codes alone do nothing without the retriable-status-codes condition.
    let inert = policy("{retry_on: 5xx, retriable_status_codes: [418]}");
    assert!(!inert.should_retry_status(418));
}

#[test]
fn response_headers_decisions() {
    let p = policy("{retry_on: '5xx,envoy-ratelimited,retriable-headers', retriable_headers: [{name: x-retry, string_match: {exact: 'yes'}}]}");
    let mut h = HeaderMap::new();
    assert!(p.should_retry_response(503, &h));
    h.insert("x-envoy-overloaded", "true".parse().expect("value"));
    assert!(!p.should_retry_response(503, &h));
    let mut h = HeaderMap::new();
    h.insert("x-envoy-ratelimited", "true".parse().expect("value"));
    assert!(p.should_retry_response(429, &h));
    let mut h = HeaderMap::new();
    h.insert("x-retry", "yes".parse().expect("value"));
    assert!(p.should_retry_response(200, &h));
    assert!(!p.should_retry_response(200, &HeaderMap::new()));
}

#[test]
fn reset_and_connect_failure_decisions() {
    let five = policy("{retry_on: 5xx}");
    assert!(
        five.should_retry_reset()
            && five.should_retry_connect_failure()
            && five.should_retry_refused_stream()
    );
    let cf = policy("{retry_on: connect-failure}");
    assert!(
        cf.should_retry_connect_failure() && !cf.should_retry_reset() && !cf.should_retry_timeout()
    );
    let rs = policy("{retry_on: refused-stream}");
    assert!(rs.should_retry_refused_stream() && !rs.should_retry_reset());
    let before = policy("{retry_on: reset-before-request}");
    assert!(before.should_retry_reset_before_request() && !before.should_retry_reset());
    let reset = policy("{retry_on: reset}");
    assert!(
        reset.should_retry_reset()
            && reset.should_retry_timeout()
            && !reset.should_retry_status(503)
    );
}

#[test]
fn retriable_request_headers_gate_retries() {
    let p = policy("{retry_on: 5xx, retriable_request_headers: [{name: ':method', string_match: {exact: GET}}]}");
    assert!(p.request_is_retriable(&get("/", "h")));
    assert!(!p.request_is_retriable(&req("POST", "/", "h", &[])));
}

#[test]
fn backoff_is_fully_jittered_and_exponentially_capped() {
    let p = policy("{retry_on: 5xx, retry_back_off: {base_interval: 0.025s, max_interval: 0.1s}}");
    let mut rng = StdRng::seed_from_u64(3);
    for (attempt, ceiling_ms) in [
        (1, 25),
        (2, 50),
        (3, 100),
        (4, 100),
        (30, 100),
        (u32::MAX, 100),
    ] {
        let mut max_seen = Duration::ZERO;
        for _ in 0..2000 {
            let d = p.backoff(attempt, &mut rng);
            assert!(
                d < Duration::from_millis(ceiling_ms),
                "attempt {attempt}: {d:?}"
            );
            max_seen = max_seen.max(d);
        }
        // The whole range is used, not just its start.
        assert!(
            max_seen >= Duration::from_millis(ceiling_ms * 8 / 10),
            "attempt {attempt}: max {max_seen:?}"
        );
    }
}

#[test]
fn request_headers_extend_the_policy() {
    let p = policy("{retry_on: connect-failure, num_retries: 2}");
    let mut h = HeaderMap::new();
    assert!(matches!(
        RetryPolicy::with_request_headers(Some(&p), &h),
        Some(std::borrow::Cow::Borrowed(_))
    ));
    h.insert("x-envoy-retry-on", "5xx".parse().expect("value"));
    h.insert("x-envoy-max-retries", "5".parse().expect("value"));
    let q = RetryPolicy::with_request_headers(Some(&p), &h).expect("policy");
    assert!(q.should_retry_status(500) && q.should_retry_connect_failure());
    assert_eq!(q.num_retries(), 5);
    let none = RetryPolicy::with_request_headers(None, &h).expect("policy from headers");
    assert!(none.should_retry_status(500));
    assert!(RetryPolicy::with_request_headers(None, &HeaderMap::new()).is_none());
}
