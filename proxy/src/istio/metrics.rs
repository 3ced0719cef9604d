//! Istio's standard metrics: counters and histograms keyed by label values, rendered in Envoy's
//! Prometheus exposition. The number of series per metric is bounded; past the bound, new label
//! sets are counted in one overflow series whose labels are all `unknown` (totals stay right).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use super::labels::{Values, HTTP_LABELS, TCP_LABELS};

/// Envoy's default histogram buckets, which Istio's metrics use.
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Series per metric before new label sets go to the overflow series.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn record(&mut self, value: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if value <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += value;
    }
}

#[derive(Debug, Default)]
struct HttpSeries {
    requests: u64,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

#[derive(Debug, Default)]
struct TcpSeries {
    opened: u64,
    closed: u64,
    sent: u64,
    received: u64,
}

type HistogramOf = fn(&HttpSeries) -> &Histogram;
type TcpValue = fn(&TcpSeries) -> u64;

#[derive(Debug, Default)]
struct Families {
    http: HashMap<Values, HttpSeries>,
    tcp: HashMap<Values, TcpSeries>,
}

/// The process's Istio metrics. Cloning shares them.
#[derive(Debug, Clone)]
pub struct IstioMetrics {
    inner: Arc<Mutex<Families>>,
    max_series: usize,
}

impl Default for IstioMetrics {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_SERIES)
    }
}

fn overflow_key(len: usize, reporter: &Arc<str>) -> Values {
    let mut v: Vec<Arc<str>> = vec![Arc::from("unknown"); len];
    v[0] = reporter.clone();
    v.into_boxed_slice()
}

fn series<T: Default>(map: &mut HashMap<Values, T>, key: Values, max: usize) -> &mut T {
    if !map.contains_key(&key) && map.len() >= max {
        let k = overflow_key(key.len(), &key[0]);
        return map.entry(k).or_default();
    }
    map.entry(key).or_default()
}

impl IstioMetrics {
    pub fn new(max_series: usize) -> Self {
        Self {
            inner: Arc::default(),
            max_series: max_series.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Families> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One finished HTTP request: `istio_requests_total`, the duration and the wire bytes each way.
    pub fn record_request(
        &self,
        labels: Values,
        duration_ms: f64,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let max = self.max_series;
        let mut f = self.lock();
        let s = series(&mut f.http, labels, max);
        s.requests += 1;
        s.duration.record(duration_ms);
        s.request_bytes.record(request_bytes as f64);
        s.response_bytes.record(response_bytes as f64);
    }

    /// A TCP connection opened (once its peer is known, or at close).
    pub fn tcp_opened(&self, labels: Values) {
        let max = self.max_series;
        series(&mut self.lock().tcp, labels, max).opened += 1;
    }

    /// Bytes moved on a TCP connection since the last report, and whether it closed.
    pub fn tcp_report(&self, labels: Values, sent: u64, received: u64, closed: bool) {
        let max = self.max_series;
        let mut f = self.lock();
        let s = series(&mut f.tcp, labels, max);
        s.sent += sent;
        s.received += received;
        if closed {
            s.closed += 1;
        }
    }

    /// Whether anything was recorded (the families are printed only then, as in Envoy).
    pub fn is_empty(&self) -> bool {
        let f = self.lock();
        f.http.is_empty() && f.tcp.is_empty()
    }

    /// Appends the Prometheus exposition of every family to `out`.
    pub fn render(&self, out: &mut String) {
        self.render_matching(out, |_| true);
    }

    /// Appends the families whose name `keep` accepts (the admin's `filter=`).
    pub fn render_matching(&self, out: &mut String, keep: impl Fn(&str) -> bool) {
        let f = self.lock();
        let mut http: Vec<(&Values, &HttpSeries)> = f.http.iter().collect();
        http.sort_by(|a, b| a.0.cmp(b.0));
        let mut tcp: Vec<(&Values, &TcpSeries)> = f.tcp.iter().collect();
        tcp.sort_by(|a, b| a.0.cmp(b.0));
        if !http.is_empty() {
            let requests = "istio_requests_total";
            if keep(requests) {
                counter(out, requests, &HTTP_LABELS, &http, |s| s.requests);
            }
            let histograms: [(&str, HistogramOf); 3] = [
                ("istio_request_duration_milliseconds", |s| &s.duration),
                ("istio_request_bytes", |s| &s.request_bytes),
                ("istio_response_bytes", |s| &s.response_bytes),
            ];
            for (name, h) in histograms {
                if keep(name) {
                    histogram(out, name, &http, h);
                }
            }
        }
        if !tcp.is_empty() {
            let counters: [(&str, TcpValue); 4] = [
                ("istio_tcp_connections_opened_total", |s| s.opened),
                ("istio_tcp_connections_closed_total", |s| s.closed),
                ("istio_tcp_sent_bytes_total", |s| s.sent),
                ("istio_tcp_received_bytes_total", |s| s.received),
            ];
            for (name, value) in counters {
                if keep(name) {
                    counter(out, name, &TCP_LABELS, &tcp, value);
                }
            }
        }
    }
}

fn labels(out: &mut String, names: &[&str], values: &Values, extra: Option<(&str, &str)>) {
    out.push('{');
    let mut first = true;
    for (n, v) in names.iter().zip(values.iter()) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(n);
        out.push_str("=\"");
        escape(v, out);
        out.push('"');
    }
    if let Some((n, v)) = extra {
        if !first {
            out.push(',');
        }
        let _ = write!(out, "{n}=\"{v}\"");
    }
    out.push('}');
}

fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn counter<T>(
    out: &mut String,
    name: &str,
    names: &[&str],
    series: &[(&Values, &T)],
    value: impl Fn(&T) -> u64,
) {
    let _ = writeln!(out, "# TYPE {name} counter");
    for (k, s) in series {
        out.push_str(name);
        labels(out, names, k, None);
        let _ = writeln!(out, " {}", value(s));
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    series: &[(&Values, &HttpSeries)],
    h: impl Fn(&HttpSeries) -> &Histogram,
) {
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (k, s) in series {
        let hist = h(s);
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = write!(out, "{name}_bucket");
            labels(out, &HTTP_LABELS, k, Some(("le", &number(*b))));
            let _ = writeln!(out, " {}", hist.counts[i]);
        }
        let _ = write!(out, "{name}_bucket");
        labels(out, &HTTP_LABELS, k, Some(("le", "+Inf")));
        let _ = writeln!(out, " {}", hist.count);
        let _ = write!(out, "{name}_sum");
        labels(out, &HTTP_LABELS, k, None);
        let _ = writeln!(out, " {}", number(hist.sum));
        let _ = write!(out, "{name}_count");
        labels(out, &HTTP_LABELS, k, None);
        let _ = writeln!(out, " {}", hist.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::istio::labels::{http, tcp, Facts, Protocol, Reporter};
    use crate::istio::metadata::WorkloadMetadata;

    fn local() -> WorkloadMetadata {
        WorkloadMetadata {
            workload: "web".into(),
            namespace: "default".into(),
            ..Default::default()
        }
    }

    #[test]
    fn exposition_has_istios_names_buckets_and_labels() {
        let m = IstioMetrics::default();
        assert!(m.is_empty());
        let f = Facts {
            cluster: Some("outbound|80||api.default.svc.cluster.local"),
            flags: "-",
            ..Default::default()
        };
        let l = http(
            Reporter::ClientSidecar,
            &local(),
            &f,
            Protocol::Http,
            200,
            None,
        );
        m.record_request(l.clone(), 3.0, 100, 2000);
        m.record_request(l, 7.0, 100, 2000);
        m.tcp_opened(tcp(Reporter::ClientSidecar, &local(), &f));
        m.tcp_report(tcp(Reporter::ClientSidecar, &local(), &f), 10, 20, true);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("# TYPE istio_requests_total counter\nistio_requests_total{reporter=\"source\",source_workload=\"web\","), "{out}");
        assert!(
            out.contains("destination_service=\"api.default.svc.cluster.local\""),
            "{out}"
        );
        assert!(out.contains(",response_code=\"200\",grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"unknown\"} 2\n"), "{out}");
        assert!(
            out.contains("# TYPE istio_request_duration_milliseconds histogram"),
            "{out}"
        );
        assert!(out.contains(",le=\"5\"} 1\n"), "{out}");
        assert!(out.contains(",le=\"10\"} 2\n"), "{out}");
        assert!(out.contains(",le=\"+Inf\"} 2\n"), "{out}");
        assert!(
            out.contains("connection_security_policy=\"unknown\"} 10\n"),
            "sum of durations: {out}"
        );
        assert!(
            out.contains("istio_tcp_sent_bytes_total{reporter=\"source\""),
            "{out}"
        );
        assert!(out.contains("istio_tcp_connections_closed_total{"), "{out}");
    }

    #[test]
    fn series_beyond_the_bound_go_to_the_overflow_series() {
        let m = IstioMetrics::new(2);
        for code in [200u16, 201, 202, 203] {
            let l = http(
                Reporter::ServerSidecar,
                &local(),
                &Facts::default(),
                Protocol::Http,
                code,
                None,
            );
            m.record_request(l, 1.0, 1, 1);
        }
        let f = m.lock();
        assert_eq!(f.http.len(), 3, "two real series and the overflow one");
        let overflow = overflow_key(HTTP_LABELS.len(), &Arc::from("destination"));
        assert_eq!(f.http.get(&overflow).map(|s| s.requests), Some(2));
    }
}
