//! Stats rendering: Envoy's `/stats` text form and `/stats?format=json`.

use regex::Regex;

use super::{Stat, Store};

/// The value of a stat as Envoy prints it: text readouts quoted.
fn value(stat: &Stat) -> String {
    match stat {
        Stat::Counter(c) => c.get().to_string(),
        Stat::Gauge(g) => g.get().to_string(),
        Stat::Text(t) => format!("{:?}", t.get()),
    }
}

/// The stats that `/stats` shows for the query, in Envoy's order: counters and gauges merged, sorted by
/// name (Envoy prints histograms after them; remora has none yet).
fn selected(store: &Store, filter: Option<&Regex>, used_only: bool) -> Vec<(String, Stat)> {
    // Sorted by name (byte order, as Envoy's std::string compare).
    store.snapshot_where(|name, stat| {
        (!used_only || stat.used()) && filter.is_none_or(|re| re.is_match(name))
    })
}

/// `/stats`: one `name: value` line per stat.
pub fn text(store: &Store, filter: Option<&Regex>, used_only: bool) -> String {
    let mut out = String::new();
    for (name, stat) in selected(store, filter, used_only) {
        out.push_str(&name);
        out.push_str(": ");
        out.push_str(&value(&stat));
        out.push('\n');
    }
    out
}

/// `/stats?format=json`: `{"stats":[{"name":"...","value":N},...]}` on one line, as Envoy writes it.
pub fn json(store: &Store, filter: Option<&Regex>, used_only: bool) -> String {
    let stats: Vec<serde_json::Value> = selected(store, filter, used_only)
        .into_iter()
        .map(|(name, stat)| {
            let v = match stat {
                Stat::Counter(c) => serde_json::Value::from(c.get()),
                Stat::Gauge(g) => serde_json::Value::from(g.get()),
                Stat::Text(t) => serde_json::Value::from(t.get()),
            };
            serde_json::json!({ "name": name, "value": v })
        })
        .collect();
    serde_json::json!({ "stats": stats }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let s = Store::new();
        s.counter("cluster.web.upstream_rq_total").add(3);
        s.counter("cluster.web.upstream_rq_2xx").add(1);
        s.counter("cluster.web.upstream_rq_200").add(1);
        s.counter("cluster.web.upstream_rq_timeout");
        s.gauge("cluster.web.upstream_cx_active").set(0);
        s.gauge("server.live").set(1);
        s.gauge("server.never_set");
        s
    }

    #[test]
    fn text_sorts_counters_and_gauges_together_by_name() {
        assert_eq!(
            text(&store(), None, false),
            "cluster.web.upstream_cx_active: 0\n\
             cluster.web.upstream_rq_200: 1\n\
             cluster.web.upstream_rq_2xx: 1\n\
             cluster.web.upstream_rq_timeout: 0\n\
             cluster.web.upstream_rq_total: 3\n\
             server.live: 1\n\
             server.never_set: 0\n"
        );
    }

    #[test]
    fn usedonly_keeps_written_stats_and_set_gauges() {
        // A gauge set to zero has been written; a counter still at zero has not.
        assert_eq!(
            text(&store(), None, true),
            "cluster.web.upstream_cx_active: 0\n\
             cluster.web.upstream_rq_200: 1\n\
             cluster.web.upstream_rq_2xx: 1\n\
             cluster.web.upstream_rq_total: 3\n\
             server.live: 1\n"
        );
    }

    #[test]
    fn filter_is_a_partial_match() {
        let re = Regex::new(r"rq_(2|to)").expect("regex");
        assert_eq!(
            json(&store(), Some(&re), false),
            r#"{"stats":[{"name":"cluster.web.upstream_rq_200","value":1},{"name":"cluster.web.upstream_rq_2xx","value":1},{"name":"cluster.web.upstream_rq_total","value":3}]}"#
        );
        let none = Regex::new("xyz").expect("regex");
        assert_eq!(json(&store(), Some(&none), true), r#"{"stats":[]}"#);
    }
}
