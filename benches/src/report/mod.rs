//! The report: one table per workload (rows are peers, cells are medians with min–max over the
//! runs), the targets checked against remora's row, Markdown for people and JSON for tools.

mod markdown;
pub mod plot;
mod targets;

use serde::Serialize;

use crate::stats::Spread;

pub use markdown::{fmt_value, render};
pub use targets::{check, Verdict};

/// Whether a peer produced figures for a workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// The peer cannot run this workload (missing feature or module), with why.
    Unsupported(String),
    /// The peer started but the workload failed.
    Failed(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub peer: String,
    pub status: Status,
    /// One per column: the median and range over the runs (None: nothing measured).
    pub values: Vec<Option<Spread>>,
    /// The raw figures of every run, aligned with the columns.
    pub runs: Vec<Vec<f64>>,
}

impl Row {
    pub fn measured(peer: &str, runs: Vec<Vec<f64>>, columns: usize) -> Row {
        let values = (0..columns)
            .map(|i| {
                let col: Vec<f64> = runs.iter().filter_map(|r| r.get(i).copied()).collect();
                Spread::of(&col)
            })
            .collect();
        Row {
            peer: peer.to_string(),
            status: Status::Ok,
            values,
            runs,
        }
    }

    pub fn not_run(peer: &str, status: Status, columns: usize) -> Row {
        Row {
            peer: peer.to_string(),
            status,
            values: vec![None; columns],
            runs: Vec::new(),
        }
    }

    pub fn median(&self, col: usize) -> Option<f64> {
        self.values.get(col).copied().flatten().map(|s| s.median)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub id: &'static str,
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(id: &'static str, title: impl Into<String>, columns: &[&str]) -> Table {
        Table {
            id,
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn col(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    pub fn row(&self, peer: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.peer == peer)
    }

    /// The median of `column` in `peer`'s row.
    pub fn value(&self, peer: &str, column: &str) -> Option<f64> {
        self.row(peer)?.median(self.col(column)?)
    }
}

/// What the machine is, for reading the numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub pinned: bool,
}

impl Machine {
    pub fn describe(pinned: bool) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Machine {
            cpus: crate::pin::cpus(),
            cpu_model,
            kernel,
            pinned,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub profile: &'static str,
    pub runs: usize,
    pub skipped: Vec<(String, String)>,
    pub tables: Vec<Table>,
    pub targets: Vec<Verdict>,
}
