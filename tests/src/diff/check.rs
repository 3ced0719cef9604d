//! Verdicts: a run against the encoded expectations, and two runs against each other.

use super::case::{Expect, HttpCase, TcpCase};
use super::observe::{Observation, TcpObservation};
use super::{Fixture, FixtureRun};

const DEFAULT_TOLERANCE: f64 = 0.05;

/// Expected values may name facts of the machine: `{{local_ip}}`.
fn expand(value: &str) -> String {
    if value.contains("{{local_ip}}") {
        let ip = crate::ports::local_ipv4()
            .map(|i| i.to_string())
            .unwrap_or_default();
        value.replace("{{local_ip}}", &ip)
    } else {
        value.to_string()
    }
}

/// Every way `run` departs from the fixture's expectations, one line each.
pub fn check_expectations(fixture: &Fixture, run: &FixtureRun) -> Vec<String> {
    let mut out = Vec::new();
    for (case, obs) in fixture.cases.cases.iter().zip(&run.http) {
        for problem in check_http(case, obs) {
            out.push(format!(
                "[{}] {} / {}: {problem}",
                run.kind, fixture.name, case.name
            ));
        }
    }
    for (case, obs) in fixture.cases.tcp_cases.iter().zip(&run.tcp) {
        for problem in check_tcp(case, obs) {
            out.push(format!(
                "[{}] {} / {}: {problem}",
                run.kind, fixture.name, case.name
            ));
        }
    }
    out
}

fn check_http(case: &HttpCase, obs: &Observation) -> Vec<String> {
    let mut p = Vec::new();
    if let Some(e) = &obs.error {
        p.push(format!("request failed: {e}"));
        return p;
    }
    let x: &Expect = &case.expect;
    if obs.status != x.status {
        p.push(format!(
            "status {} (expected {}), body {:?}",
            obs.status,
            x.status,
            clip(&obs.body)
        ));
    }
    match (&x.backend, &obs.echo) {
        (Some(b), Some(e)) if b == "none" => {
            p.push(format!("reached backend {} (expected none)", e.backend))
        }
        (Some(b), Some(e)) if *b != e.backend => {
            p.push(format!("backend {} (expected {b})", e.backend))
        }
        (Some(b), None) if b != "none" => p.push(format!("no backend answered (expected {b})")),
        _ => {}
    }
    let needs_echo = x.path.is_some()
        || x.host.is_some()
        || !x.request_headers.is_empty()
        || !x.request_headers_absent.is_empty()
        || !x.request_headers_not.is_empty();
    if let Some(echo) = &obs.echo {
        if let Some(path) = &x.path {
            if *path != echo.path {
                p.push(format!("upstream path {:?} (expected {path:?})", echo.path));
            }
        }
        if let Some(host) = &x.host {
            if *host != echo.host {
                p.push(format!("upstream host {:?} (expected {host:?})", echo.host));
            }
        }
        for (n, want) in &x.request_headers {
            let want = &expand(want);
            match echo.header(n) {
                None => p.push(format!("upstream header {n} missing (expected {want:?})")),
                Some(got) if want != "*" && got != want => {
                    p.push(format!("upstream header {n}: {got:?} (expected {want:?})"))
                }
                _ => {}
            }
        }
        for (n, not) in &x.request_headers_not {
            if echo.header(n) == Some(not.as_str()) {
                p.push(format!(
                    "upstream header {n} is {not:?}, expected another value"
                ));
            }
        }
        for n in &x.request_headers_absent {
            if let Some(v) = echo.header(n) {
                p.push(format!(
                    "upstream header {n} present ({v:?}), expected absent"
                ));
            }
        }
    } else if needs_echo {
        p.push("no echo body to check upstream path/host/headers".to_string());
    }
    for (n, want) in &x.response_headers {
        let want = &expand(want);
        let got = obs.response_headers.get(n).map(|v| v.join(","));
        match got {
            None => p.push(format!("response header {n} missing (expected {want:?})")),
            Some(got) if want != "*" && got != *want => {
                p.push(format!("response header {n}: {got:?} (expected {want:?})"))
            }
            _ => {}
        }
    }
    for n in &x.response_headers_absent {
        if let Some(v) = obs.response_headers.get(n) {
            p.push(format!(
                "response header {n} present ({v:?}), expected absent"
            ));
        }
    }
    if let Some(body) = &x.body {
        if obs.body != *body {
            p.push(format!("body {:?} (expected {body:?})", clip(&obs.body)));
        }
    }
    if let Some(part) = &x.body_contains {
        if !obs.body.contains(part.as_str()) {
            p.push(format!(
                "body {:?} does not contain {part:?}",
                clip(&obs.body)
            ));
        }
    }
    if let Some(loc) = &x.location {
        match obs.response_header("location") {
            Some(got) if got == loc => {}
            got => p.push(format!("location {got:?} (expected {loc:?})")),
        }
    }
    p.extend(check_shares(
        &case.expect_share,
        case.tolerance,
        &obs.shares,
        obs.sent,
    ));
    if let (Some(h), n @ 1..) = (&case.header_names_backend, obs.backend_header_mismatches) {
        p.push(format!(
            "{n} of {} responses had an upstream {h} not naming their backend",
            obs.sent
        ));
    }
    p
}

fn check_tcp(case: &TcpCase, obs: &TcpObservation) -> Vec<String> {
    let mut p = Vec::new();
    if case.expect_closed {
        if obs.echoed > 0 {
            p.push(format!(
                "{} connections echoed (expected all closed)",
                obs.echoed
            ));
        }
    } else if obs.echoed != case.connections {
        p.push(format!(
            "{} of {} connections echoed",
            obs.echoed, case.connections
        ));
    }
    p.extend(check_shares(
        &case.expect_share,
        case.tolerance,
        &obs.shares,
        case.connections,
    ));
    p
}

fn check_shares(
    want: &std::collections::BTreeMap<String, f64>,
    tolerance: Option<f64>,
    got: &std::collections::BTreeMap<String, usize>,
    total: usize,
) -> Vec<String> {
    let tol = tolerance.unwrap_or(DEFAULT_TOLERANCE);
    let mut p = Vec::new();
    for (name, share) in want {
        let n = got.get(name).copied().unwrap_or(0);
        let actual = n as f64 / total.max(1) as f64;
        if (actual - share).abs() > tol {
            p.push(format!("backend {name} got {actual:.3} of traffic (expected {share} ± {tol}), all: {got:?}"));
        }
    }
    p
}

/// Every way two runs of the same fixture differ, one line each.
pub fn compare(fixture: &Fixture, a: &FixtureRun, b: &FixtureRun) -> Vec<String> {
    let mut out = Vec::new();
    for ((case, x), y) in fixture.cases.cases.iter().zip(&a.http).zip(&b.http) {
        let mut say = |what: String| {
            out.push(format!(
                "[{} vs {}] {} / {}: {what}",
                a.kind, b.kind, fixture.name, case.name
            ));
        };
        if x.error.is_some() != y.error.is_some() {
            say(format!("transport error {:?} vs {:?}", x.error, y.error));
            continue;
        }
        if x.status != y.status {
            say(format!("status {} vs {}", x.status, y.status));
        }
        // A weighted split picks at random: which backend one request reached (and what that pick
        // added) is not comparable across proxies; the shares are checked against the expectations.
        let random = case.repeat.unwrap_or(1) > 1
            && (!case.expect_share.is_empty() || case.header_names_backend.is_some());
        if random {
            continue;
        }
        let (ex, ey) = (x.echo.as_ref(), y.echo.as_ref());
        match (ex, ey) {
            (Some(ex), Some(ey)) => {
                for (field, l, r) in [
                    ("backend", &ex.backend, &ey.backend),
                    ("method", &ex.method, &ey.method),
                    ("path", &ex.path, &ey.path),
                    ("host", &ex.host, &ey.host),
                    ("body", &ex.body, &ey.body),
                    ("version", &ex.version, &ey.version),
                ] {
                    if l != r {
                        say(format!("upstream {field} {l:?} vs {r:?}"));
                    }
                }
                let (hx, hy) = (
                    x.comparable_request_headers(),
                    y.comparable_request_headers(),
                );
                for name in hx
                    .keys()
                    .chain(hy.keys())
                    .collect::<std::collections::BTreeSet<_>>()
                {
                    if hx.get(name) != hy.get(name)
                        && !within_timing_jitter(name, hx.get(name), hy.get(name))
                    {
                        say(format!(
                            "upstream header {name}: {:?} vs {:?}",
                            hx.get(name),
                            hy.get(name)
                        ));
                    }
                }
            }
            (None, None) => {
                if x.body != y.body {
                    say(format!("body {:?} vs {:?}", clip(&x.body), clip(&y.body)));
                }
            }
            _ => say(format!(
                "echo from backend {:?} vs {:?}",
                ex.map(|e| &e.backend),
                ey.map(|e| &e.backend)
            )),
        }
        let (rx, ry) = (
            x.comparable_response_headers(),
            y.comparable_response_headers(),
        );
        for name in rx
            .keys()
            .chain(ry.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            if rx.get(name) != ry.get(name) {
                say(format!(
                    "response header {name}: {:?} vs {:?}",
                    rx.get(name),
                    ry.get(name)
                ));
            }
        }
    }
    for ((case, x), y) in fixture.cases.tcp_cases.iter().zip(&a.tcp).zip(&b.tcp) {
        if (x.echoed, x.closed) != (y.echoed, y.closed) {
            out.push(format!(
                "[{} vs {}] {} / {}: echoed/closed {}/{} vs {}/{}",
                a.kind, b.kind, fixture.name, case.name, x.echoed, x.closed, y.echoed, y.closed
            ));
        }
    }
    out
}

fn clip(s: &str) -> String {
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}

/// `x-envoy-expected-rq-timeout-ms` on a retry is the remaining time, which depends on the jittered
/// backoff each proxy drew: equal within half a second is the same behaviour.
fn within_timing_jitter<T: AsRef<str>>(name: &str, a: Option<&T>, b: Option<&T>) -> bool {
    if name != "x-envoy-expected-rq-timeout-ms" {
        return false;
    }
    match (
        a.and_then(|v| v.as_ref().parse::<i64>().ok()),
        b.and_then(|v| v.as_ref().parse::<i64>().ok()),
    ) {
        (Some(x), Some(y)) => (x - y).abs() <= 500,
        _ => false,
    }
}
