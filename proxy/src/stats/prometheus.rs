//! Stats rendering for `/stats/prometheus`: Envoy's default tag extraction over the flat names.
//!
//! The exposition is written by hand rather than through prometheus-client's encoder because Envoy's
//! output differs from OpenMetrics in ways scrapers and dashboards depend on: counters keep their own
//! name (no `_total` suffix is added, and `upstream_rq_total` is not stripped), there is no `# HELP`
//! line and no `# EOF` trailer, and unlabelled samples print `{}`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;

use super::{Stat, Store};

/// How one default tag specifier finds its value in a stat name.
enum Matcher {
    /// Capture group 1 is cut from the name; group 2 (or 1 when there is no 2) is the value.
    Regex(Regex),
    /// Dot-separated tokens: a literal, `*` (one token), `$` (one token: the value, cut with its dot) or
    /// `**` (every remaining token).
    Tokens(Vec<&'static str>),
}

struct Extractor {
    tag: &'static str,
    matcher: Matcher,
    /// A value that never becomes a tag (`listener.admin.` stays part of the name).
    negative: Option<&'static str>,
}

impl Extractor {
    /// The range of `name` to cut and the tag value, when the specifier applies.
    fn extract(&self, name: &str) -> Option<((usize, usize), String)> {
        match &self.matcher {
            Matcher::Regex(re) => {
                let caps = re.captures(name)?;
                let cut = caps.get(1)?;
                let value = caps.get(2).unwrap_or(cut).as_str();
                if self.negative == Some(value) {
                    return None;
                }
                Some(((cut.start(), cut.end()), value.to_string()))
            }
            Matcher::Tokens(pattern) => {
                let mut offset = 0;
                let mut found = None;
                let mut tokens = name.split('.').peekable();
                for (i, want) in pattern.iter().enumerate() {
                    if *want == "**" {
                        // `**` is always last and needs at least one token after a capture.
                        tokens.peek()?;
                        return found;
                    }
                    let token = tokens.next()?;
                    let end = offset + token.len();
                    match *want {
                        "*" => {}
                        "$" => {
                            // The value goes with the dot after it; a value ending the name is no tag.
                            if end >= name.len() {
                                return None;
                            }
                            found = Some(((offset, end + 1), token.to_string()));
                        }
                        lit if lit == token => {}
                        _ => return None,
                    }
                    offset = end + 1;
                    if i + 1 == pattern.len() && tokens.peek().is_some() {
                        return None;
                    }
                }
                found
            }
        }
    }
}

const ADDRESS: &str = r"(?:(?:\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[[a-fA-F_\d]+\])_\d+)";

/// Envoy's default tag specifiers (`source/common/config/well_known_names.cc`) that apply to stats remora
/// produces or may soon produce, in the order Envoy applies them: first those not tied to the name's first
/// token, then those that are, each group in declaration order. That order is also the label order.
fn extractors() -> &'static [Extractor] {
    static EXTRACTORS: OnceLock<Vec<Extractor>> = OnceLock::new();
    EXTRACTORS.get_or_init(|| {
        let re = |tag, pattern: &str| Extractor {
            tag,
            // The patterns are constants; a failure here is a defect caught by the tests.
            #[allow(clippy::expect_used)]
            matcher: Matcher::Regex(Regex::new(pattern).expect("default tag regex compiles")),
            negative: None,
        };
        let tok = |tag, pattern: &'static str| Extractor {
            tag,
            matcher: Matcher::Tokens(pattern.split('.').collect()),
            negative: None,
        };
        let listener_or_cluster = r"^(?:listener|cluster)\..*?";
        let mut listener_address = re(
            "envoy.listener_address",
            &format!(r"^listener\.(({ADDRESS}|[^\.]+)\.)"),
        );
        listener_address.negative = Some("admin");
        vec![
            // Not tied to the first token.
            re("envoy.response_code", r"_rq(_(\d{3}))$"),
            re("envoy.response_code_class", r"_rq_((\d))xx$"),
            re(
                "envoy.ssl_curve",
                &format!(r"{listener_or_cluster}\.ssl\.curves(\.([\w-]+))$"),
            ),
            re(
                "envoy.ssl_sigalg",
                &format!(r"{listener_or_cluster}\.ssl\.sigalgs(\.([\w-]+))$"),
            ),
            re(
                "envoy.ssl_version",
                &format!(r"{listener_or_cluster}\.ssl\.versions(\.(TLSv\d\.\d))$"),
            ),
            re(
                "envoy.worker_id",
                &format!(
                    r"^(?:listener\.(?:{ADDRESS}|[^\.]+)\.|server\.|listener_manager\.)worker_((\d+)\.)"
                ),
            ),
            tok("envoy.local_http_ratelimit_prefix", "$.http_local_rate_limit.**"),
            // Tied to the first token.
            tok("envoy.grpc_bridge_method", "cluster.*.grpc.*.$.**"),
            tok("envoy.http_user_agent", "http.*.user_agent.$.**"),
            tok("envoy.virtual_cluster", "vhost.*.vcluster.$.**"),
            tok("envoy.fault_downstream_cluster", "http.*.fault.$.**"),
            re("envoy.ssl_cipher", r"^listener\..*?\.ssl\.ciphers(\.([\w-]+))$"),
            re(
                "envoy.ssl_cipher_suite",
                r"^cluster\.[^\.]+\.ssl\.ciphers(\.([\w-]+))$",
            ),
            tok("envoy.grpc_bridge_service", "cluster.*.grpc.$.**"),
            tok("envoy.tcp_prefix", "tcp.$.**"),
            tok("envoy.udp_prefix", "udp.$.**"),
            tok("envoy.ratelimit_prefix", "ratelimit.$.**"),
            tok("envoy.cluster_name", "cluster.$.**"),
            re(
                "envoy.http_conn_manager_prefix",
                r"^listener\..*?\.http\.(([^\.]+)\.)",
            ),
            tok("envoy.ext_authz_prefix", "cluster.*.ext_authz.$.**"),
            tok("envoy.ext_authz_prefix", "http.*.ext_authz.$.**"),
            tok("envoy.http_conn_manager_prefix", "http.$.**"),
            listener_address,
            tok("envoy.virtual_host", "vhost.$.**"),
            re(
                "envoy.rds_route_config",
                r"^http\.[^\.]+\.rds\.(([\w\-\.]+)\.)\w+?$",
            ),
            tok("envoy.route", "vhost.*.route.$.**"),
            tok("envoy.local_network_ratelimit_prefix", "local_rate_limit.$.**"),
            tok(
                "envoy.local_listener_ratelimit_prefix",
                "listener_local_ratelimit.$.**",
            ),
        ]
    })
}

/// Envoy's tag extraction: the tag-extracted name (`cluster.upstream_rq`) and the tags, in label order
/// (`[("envoy.response_code", "200"), ("envoy.cluster_name", "web")]`).
pub fn extract_tags(name: &str) -> (String, Vec<(&'static str, String)>) {
    let mut cuts = Vec::new();
    let mut tags = Vec::new();
    // Every specifier looks at the full name; the cuts are applied together at the end, as Envoy does.
    for ex in extractors() {
        if let Some((cut, value)) = ex.extract(name) {
            cuts.push(cut);
            tags.push((ex.tag, value));
        }
    }
    cuts.sort_unstable();
    let mut out = String::with_capacity(name.len());
    let mut pos = 0;
    for (start, end) in cuts {
        if start > pos {
            out.push_str(&name[pos..start]);
        }
        pos = pos.max(end);
    }
    out.push_str(&name[pos.min(name.len())..]);
    (out, tags)
}

/// Prometheus metric and label names allow `[a-zA-Z0-9_]` (Envoy also replaces `:`).
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str(r"\n"),
            c => out.push(c),
        }
    }
}

/// One sample line without its value: `envoy_cluster_upstream_rq{envoy_response_code="200",...}`.
struct Sample {
    labels: String,
    value: i128,
}

/// `/stats/prometheus`: counters then gauges, each family once with its `# TYPE` line. Families are
/// ordered by tag-extracted name and samples by full stat name, matching Envoy's output.
pub fn render(store: &Store, used_only: bool, filter: Option<&Regex>) -> String {
    // family key: tag-extracted name; BTreeMap keeps Envoy's ordering.
    let mut counters: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    let mut gauges: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    let picked = store.snapshot_where(|name, stat| {
        !(used_only && !stat.used() || filter.is_some_and(|re| !re.is_match(name)))
    });
    for (name, stat) in picked {
        let (extracted, tags) = extract_tags(&name);
        let mut labels = String::new();
        for (i, (tag, value)) in tags.iter().enumerate() {
            if i > 0 {
                labels.push(',');
            }
            labels.push_str(&sanitize(tag));
            labels.push_str("=\"");
            escape_label_value(value, &mut labels);
            labels.push('"');
        }
        let (family, value) = match &stat {
            Stat::Counter(c) => (&mut counters, i128::from(c.get())),
            Stat::Gauge(g) => (&mut gauges, i128::from(g.get())),
            // Envoy leaves text readouts out of the Prometheus output by default.
            Stat::Text(_) => continue,
        };
        family
            .entry(extracted)
            .or_default()
            .push(Sample { labels, value });
    }
    let mut out = String::new();
    for (kind, families) in [("counter", counters), ("gauge", gauges)] {
        for (extracted, samples) in families {
            let metric = format!("envoy_{}", sanitize(&extracted));
            out.push_str(&format!("# TYPE {metric} {kind}\n"));
            for s in samples {
                out.push_str(&format!("{metric}{{{}}} {}\n", s.labels, s.value));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tags_match_envoy() {
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (
                "cluster.web.upstream_rq_200",
                "cluster.upstream_rq",
                &[
                    ("envoy.response_code", "200"),
                    ("envoy.cluster_name", "web"),
                ],
            ),
            (
                "http.ingress_http.downstream_rq_2xx",
                "http.downstream_rq_xx",
                &[
                    ("envoy.response_code_class", "2"),
                    ("envoy.http_conn_manager_prefix", "ingress_http"),
                ],
            ),
            (
                "listener.127.0.0.1_19902.http.ingress_http.downstream_rq_4xx",
                "listener.http.downstream_rq_xx",
                &[
                    ("envoy.response_code_class", "4"),
                    ("envoy.http_conn_manager_prefix", "ingress_http"),
                    ("envoy.listener_address", "127.0.0.1_19902"),
                ],
            ),
            (
                "listener.127.0.0.1_19902.worker_1.downstream_cx_total",
                "listener.worker_downstream_cx_total",
                &[
                    ("envoy.worker_id", "1"),
                    ("envoy.listener_address", "127.0.0.1_19902"),
                ],
            ),
            (
                "listener.[__1]_8080.downstream_cx_total",
                "listener.downstream_cx_total",
                &[("envoy.listener_address", "[__1]_8080")],
            ),
            (
                "listener.admin.downstream_cx_total",
                "listener.admin.downstream_cx_total",
                &[],
            ),
            (
                "tcp.tcpp.downstream_cx_total",
                "tcp.downstream_cx_total",
                &[("envoy.tcp_prefix", "tcpp")],
            ),
            (
                "vhost.vh.vcluster.other.upstream_rq_total",
                "vhost.vcluster.upstream_rq_total",
                &[
                    ("envoy.virtual_cluster", "other"),
                    ("envoy.virtual_host", "vh"),
                ],
            ),
            ("server.live", "server.live", &[]),
            (
                "cluster_manager.cluster_added",
                "cluster_manager.cluster_added",
                &[],
            ),
        ];
        for (name, extracted, tags) in cases {
            let (got_name, got_tags) = extract_tags(name);
            assert_eq!(&got_name, extracted, "{name}");
            let got: Vec<(&str, &str)> = got_tags.iter().map(|(t, v)| (*t, v.as_str())).collect();
            assert_eq!(&got, tags, "{name}");
        }
    }

    #[test]
    fn exposition_matches_envoy() {
        let s = Store::new();
        s.counter("cluster.web.upstream_rq_total").add(3);
        s.counter("cluster.web.upstream_rq_200").add(1);
        s.counter("cluster.web.upstream_rq_404").add(2);
        s.counter("cluster_manager.cluster_added").add(1);
        s.counter("listener.127.0.0.1_19902.worker_0.downstream_cx_total")
            .inc();
        s.counter("listener.127.0.0.1_19902.worker_1.downstream_cx_total")
            .inc();
        s.counter("listener.127.0.0.1_19903.worker_0.downstream_cx_total")
            .inc();
        s.counter("http.ingress_http.downstream_rq_2xx").inc();
        s.counter("http.admin.downstream_rq_2xx").add(5);
        s.gauge("server.live").set(1);
        s.gauge("cluster.web.upstream_cx_active").set(0);
        s.counter("cluster.web.upstream_rq_timeout");
        let expected = "\
# TYPE envoy_cluster_upstream_rq counter
envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"web\"} 1
envoy_cluster_upstream_rq{envoy_response_code=\"404\",envoy_cluster_name=\"web\"} 2
# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name=\"web\"} 3
# TYPE envoy_cluster_manager_cluster_added counter
envoy_cluster_manager_cluster_added{} 1
# TYPE envoy_http_downstream_rq_xx counter
envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"admin\"} 5
envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"ingress_http\"} 1
# TYPE envoy_listener_worker_downstream_cx_total counter
envoy_listener_worker_downstream_cx_total{envoy_worker_id=\"0\",envoy_listener_address=\"127.0.0.1_19902\"} 1
envoy_listener_worker_downstream_cx_total{envoy_worker_id=\"1\",envoy_listener_address=\"127.0.0.1_19902\"} 1
envoy_listener_worker_downstream_cx_total{envoy_worker_id=\"0\",envoy_listener_address=\"127.0.0.1_19903\"} 1
# TYPE envoy_cluster_upstream_cx_active gauge
envoy_cluster_upstream_cx_active{envoy_cluster_name=\"web\"} 0
# TYPE envoy_server_live gauge
envoy_server_live{} 1
";
        assert_eq!(render(&s, true, None), expected);
        let all = render(&s, false, None);
        assert!(all.contains(
            "# TYPE envoy_cluster_upstream_rq_timeout counter\n\
             envoy_cluster_upstream_rq_timeout{envoy_cluster_name=\"web\"} 0\n"
        ));
        let re = Regex::new("^server").expect("regex");
        assert_eq!(
            render(&s, false, Some(&re)),
            "# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n"
        );
    }

    #[test]
    fn names_and_values_are_sanitised() {
        let s = Store::new();
        s.counter("cluster.a-b:c.upstream_cx_total").inc();
        s.counter("weird-name.x").inc();
        let out = render(&s, false, None);
        assert!(out.contains("envoy_cluster_upstream_cx_total{envoy_cluster_name=\"a-b:c\"} 1\n"));
        assert!(out.contains("envoy_weird_name_x{} 1\n"));
    }
}
