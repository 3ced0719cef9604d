//! Differential runner: the same bootstrap on Envoy and remora, the same requests, equal answers.
//!
//! A fixture is `tests/configs/diff/NN_name.yaml` (an Envoy v3 bootstrap with `{{placeholders}}`)
//! plus `NN_name.cases.yaml` ([`case::CaseFile`]). Placeholders decide what runs: `listener_port*`
//! and `admin_port` get free ports, `backend_X` an HTTP echo backend named `X`, `tcp_X` a TCP echo
//! backend named `X`, `dead_port*` a port nobody listens on.

pub mod case;
mod check;
pub mod observe;
mod run;

pub use check::{check_expectations, compare};
pub use run::{run_fixture, FixtureRun};

use std::path::Path;

/// One fixture: its name, raw bootstrap template and cases.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub template: String,
    pub cases: case::CaseFile,
}

impl Fixture {
    pub fn request_count(&self) -> usize {
        self.cases
            .cases
            .iter()
            .map(|c| c.repeat.unwrap_or(1))
            .sum::<usize>()
            + self
                .cases
                .tcp_cases
                .iter()
                .map(|c| c.connections)
                .sum::<usize>()
    }
}

/// Every fixture in `dir`, sorted by name; panics on a fixture without a valid sidecar.
pub fn load_all(dir: &Path) -> Vec<Fixture> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && !n.ends_with(".cases.yaml"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|file| {
            let name = file.trim_end_matches(".yaml").to_string();
            let template = std::fs::read_to_string(dir.join(&file)).expect("read fixture");
            let sidecar = dir.join(format!("{name}.cases.yaml"));
            let text = std::fs::read_to_string(&sidecar)
                .unwrap_or_else(|e| panic!("{}: {e}", sidecar.display()));
            let cases = serde_yaml_ng::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", sidecar.display()));
            Fixture {
                name,
                template,
                cases,
            }
        })
        .collect()
}
