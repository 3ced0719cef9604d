//! Backend behaviour knobs read from a request's path and headers.

use std::time::Duration;

use hyper::HeaderMap;

/// What the backend should do with one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Knobs {
    pub status: Option<u16>,
    pub delay: Option<Duration>,
    pub reset: bool,
    /// Fail this many times for `fail_key`, then succeed.
    pub fail_times: u32,
    pub fail_status: u16,
    pub fail_reset: bool,
    pub fail_key: String,
    pub response_headers: Vec<(String, String)>,
}

impl Knobs {
    pub fn read(path_and_query: &str, headers: &HeaderMap) -> Knobs {
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let path = path_and_query.split('?').next().unwrap_or("");
        let segs: Vec<&str> = path.split('/').collect();
        let after = |name: &str| -> Option<&str> {
            segs.iter()
                .position(|s| *s == name)
                .and_then(|i| segs.get(i + 1).copied())
        };
        let mut k = Knobs {
            fail_status: 503,
            fail_key: path_and_query.to_string(),
            ..Knobs::default()
        };
        k.status = after("status")
            .or(header("x-echo-status"))
            .and_then(|s| s.parse().ok());
        k.delay = after("delay")
            .or(header("x-echo-delay-ms"))
            .and_then(|s| s.parse().ok())
            .map(Duration::from_millis);
        k.reset = segs.contains(&"reset");
        if let Some(n) = after("fail").and_then(|s| s.parse().ok()) {
            k.fail_times = n;
        }
        if let Some(n) = header("x-echo-fail-times").and_then(|s| s.parse().ok()) {
            k.fail_times = n;
            if let Some(s) = header("x-echo-fail-status").and_then(|s| s.parse().ok()) {
                k.fail_status = s;
            }
            k.fail_reset = header("x-echo-fail-reset").is_some();
            if let Some(key) = header("x-echo-fail-key") {
                k.fail_key = format!("{path_and_query}#{key}");
            }
        }
        k.response_headers = headers
            .get_all("x-echo-response-header")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split_once('='))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_knobs_are_found_after_a_prefix() {
        let k = Knobs::read("/api/status/503/delay/20?x=1", &HeaderMap::new());
        assert_eq!(k.status, Some(503));
        assert_eq!(k.delay, Some(Duration::from_millis(20)));
        assert!(!k.reset);
        let k = Knobs::read("/retry/fail/2", &HeaderMap::new());
        assert_eq!((k.fail_times, k.fail_status), (2, 503));
    }

    #[test]
    fn header_knobs() {
        let mut h = HeaderMap::new();
        h.insert("x-echo-fail-times", "1".parse().expect("value"));
        h.insert("x-echo-fail-status", "409".parse().expect("value"));
        h.append("x-echo-response-header", "x-a=1".parse().expect("value"));
        h.append("x-echo-response-header", "x-b = 2".parse().expect("value"));
        let k = Knobs::read("/p", &h);
        assert_eq!((k.fail_times, k.fail_status), (1, 409));
        assert_eq!(
            k.response_headers,
            [("x-a".into(), "1".into()), ("x-b".into(), "2".into())]
        );
    }
}
