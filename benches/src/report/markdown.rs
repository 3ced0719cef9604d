//! Markdown rendering of the report.

use std::fmt::Write;

use super::{Report, Status, Table};
use crate::stats::Spread;

/// A figure with as many digits as it deserves: three significant ones, no exponent.
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        return "–".into();
    }
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn cell(s: Option<Spread>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.is_spread() => format!(
            "{} ({}–{})",
            fmt_value(s.median),
            fmt_value(s.min),
            fmt_value(s.max)
        ),
        Some(s) => fmt_value(s.median),
    }
}

pub fn table(t: &Table) -> String {
    let mut out = format!(
        "### {}\n\n| peer | {} |\n|---|",
        t.title,
        t.columns.join(" | ")
    );
    out.push_str(&"---|".repeat(t.columns.len()));
    out.push('\n');
    for r in &t.rows {
        let _ = write!(out, "| {} |", r.peer);
        match &r.status {
            Status::Ok => {
                for v in &r.values {
                    let _ = write!(out, " {} |", cell(*v));
                }
            }
            Status::Unsupported(why) | Status::Failed(why) => {
                let word = if matches!(r.status, Status::Unsupported(_)) {
                    "unsupported"
                } else {
                    "failed"
                };
                let _ = write!(out, " {word}: {} |", why.replace('|', "/"));
                out.push_str(&" |".repeat(t.columns.len().saturating_sub(1)));
            }
        }
        out.push('\n');
    }
    for n in &t.notes {
        let _ = write!(out, "\n{n}\n");
    }
    out
}

/// The whole report as Markdown.
pub fn render(r: &Report) -> String {
    let m = &r.machine;
    let mut out = format!(
        "## remora-bench ({} profile, {} run{} each, medians with min–max)\n\n\
         Machine: {} CPUs, {}, Linux {}{}.\n\n",
        r.profile,
        r.runs,
        if r.runs == 1 { "" } else { "s" },
        m.cpus,
        m.cpu_model,
        m.kernel,
        if m.pinned {
            "; proxy on core 0, backend and load generator on core 1"
        } else {
            "; not pinned"
        }
    );
    for (peer, why) in &r.skipped {
        let _ = writeln!(out, "- skipped {peer}: {why}");
    }
    if !r.skipped.is_empty() {
        out.push('\n');
    }
    for t in &r.tables {
        out.push_str(&table(t));
        out.push('\n');
    }
    if !r.targets.is_empty() {
        out.push_str("### remora against the targets\n\n| target | remora | goal | met |\n|---|---|---|---|\n");
        for v in &r.targets {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                v.target,
                v.value.map(fmt_value).unwrap_or_else(|| "–".into()),
                v.goal,
                match v.met {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "–",
                }
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Row, Table};

    #[test]
    fn figures_keep_three_significant_digits() {
        assert_eq!(fmt_value(17.234), "17.2");
        assert_eq!(fmt_value(0.04567), "0.046");
        assert_eq!(fmt_value(1234.5), "1234");
        assert_eq!(fmt_value(2.5), "2.50");
        assert_eq!(fmt_value(f64::NAN), "–");
    }

    #[test]
    fn a_table_shows_ranges_and_unsupported_peers() {
        let mut t = Table::new("x", "HTTP/1.1", &["req/s", "CPU µs/req"]);
        t.rows.push(Row::measured(
            "nginx",
            vec![vec![1000.0, 17.0], vec![1100.0, 18.0], vec![900.0, 17.5]],
            2,
        ));
        t.rows.push(Row::not_run(
            "remora",
            Status::Unsupported("no TLS".into()),
            2,
        ));
        let md = table(&t);
        assert!(md.contains("| peer | req/s | CPU µs/req |"), "{md}");
        assert!(
            md.contains("| nginx | 1000 (900–1100) | 17.5 (17.0–18.0) |"),
            "{md}"
        );
        assert!(md.contains("| remora | unsupported: no TLS | |"), "{md}");
    }
}
