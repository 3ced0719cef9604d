//! The targets for remora, checked against the measured tables.

use serde::Serialize;

use super::{fmt_value, Table};

/// nginx's HTTP/1.1 keep-alive CPU per request measured before the benchmark existed, the
/// reference when nginx is not installed.
const NGINX_H1_CPU_US: f64 = 17.2;

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub target: String,
    pub value: Option<f64>,
    pub goal: String,
    pub met: Option<bool>,
}

fn find<'a>(tables: &'a [Table], id: &str) -> Option<&'a Table> {
    tables.iter().find(|t| t.id == id)
}

fn remora(tables: &[Table], id: &str, col: &str) -> Option<f64> {
    find(tables, id)?
        .value("remora", col)
        .filter(|v| !v.is_nan())
}

fn verdict(
    target: &str,
    value: Option<f64>,
    goal: String,
    limit: Option<f64>,
    at_most: bool,
) -> Verdict {
    let met = match (value, limit) {
        (Some(v), Some(l)) => Some(if at_most { v <= l } else { v >= l }),
        _ => None,
    };
    Verdict {
        target: target.to_string(),
        value,
        goal,
        met,
    }
}

/// Every target whose workload ran with remora in it.
pub fn check(tables: &[Table]) -> Vec<Verdict> {
    let mut out = Vec::new();
    if let Some(t) = find(tables, "http1") {
        let (nginx, whence) = match t.value("nginx", "CPU µs/req") {
            Some(v) if !v.is_nan() => (v, "this run"),
            _ => (NGINX_H1_CPU_US, "measured before"),
        };
        out.push(verdict(
            "HTTP/1.1 keep-alive CPU µs/request",
            remora(tables, "http1", "CPU µs/req"),
            format!("≤ nginx's ({} µs, {whence})", fmt_value(nginx)),
            Some(nginx),
            true,
        ));
    }
    if let Some(t) = find(tables, "mesh") {
        let nginx = t.value("nginx", "CPU µs/req").filter(|v| !v.is_nan());
        out.push(verdict(
            "mesh pair CPU µs/request at the fixed rate",
            remora(tables, "mesh", "CPU µs/req"),
            match nginx {
                Some(n) => format!("≤ 0.6× nginx's pair ({} µs)", fmt_value(0.6 * n)),
                None => "≤ 0.6× nginx's pair (nginx not measured)".into(),
            },
            nginx.map(|n| 0.6 * n),
            true,
        ));
    }
    if find(tables, "memory").is_some() {
        out.push(verdict(
            "idle RSS (MB)",
            remora(tables, "memory", "idle MB"),
            "≤ 8 MB".into(),
            Some(8.0),
            true,
        ));
        out.push(verdict(
            "bytes per idle keep-alive connection",
            remora(tables, "memory", "B/conn"),
            "≤ 2048 B".into(),
            Some(2048.0),
            true,
        ));
    }
    if find(tables, "handshake").is_some() {
        out.push(verdict(
            "mTLS handshake CPU (ms) at the server-side proxy",
            remora(tables, "handshake", "CPU ms/handshake"),
            "≤ 0.35 ms".into(),
            Some(0.35),
            true,
        ));
    }
    if find(tables, "tcp").is_some() {
        out.push(verdict(
            "TCP throughput relative to direct",
            remora(tables, "tcp", "× direct"),
            "≥ 0.75× direct".into(),
            Some(0.75),
            false,
        ));
    }
    if find(tables, "scale").is_some() {
        out.push(verdict(
            "start to ready with the large bootstrap (ms)",
            remora(tables, "scale", "ready ms"),
            "≤ 100 ms".into(),
            Some(100.0),
            true,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Row;

    #[test]
    fn remora_is_held_to_nginx_of_the_same_run_or_the_earlier_figure() {
        let mut t = Table::new("http1", "h1", &["req/s", "CPU µs/req"]);
        t.rows
            .push(Row::measured("remora", vec![vec![1.0, 15.0]], 2));
        let v = &check(std::slice::from_ref(&t))[0];
        assert_eq!(v.met, Some(true), "15 ≤ 17.2 measured before");
        t.rows
            .push(Row::measured("nginx", vec![vec![1.0, 12.0]], 2));
        let v = &check(&[t])[0];
        assert_eq!(v.met, Some(false), "15 > nginx's 12 in this run");
        assert!(v.goal.contains("this run"));
    }

    #[test]
    fn the_mesh_target_is_a_ratio_of_nginx_s_pair() {
        let cols = ["p50 ms", "CPU µs/req"];
        let mut t = Table::new("mesh", "mesh", &cols);
        t.rows
            .push(Row::measured("remora", vec![vec![0.1, 50.0]], 2));
        t.rows
            .push(Row::measured("nginx", vec![vec![0.1, 100.0]], 2));
        let v = &check(&[t])[0];
        assert_eq!(v.met, Some(true));
        assert!(v.goal.contains("60"), "{}", v.goal);
    }

    #[test]
    fn throughput_is_a_floor_and_a_missing_remora_is_undecided() {
        let mut t = Table::new("tcp", "tcp", &["Gb/s", "× direct"]);
        t.rows
            .push(Row::measured("remora", vec![vec![10.0, 0.7]], 2));
        assert_eq!(check(std::slice::from_ref(&t))[0].met, Some(false));
        t.rows.clear();
        assert_eq!(check(&[t])[0].met, None);
    }
}
