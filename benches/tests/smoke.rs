//! A `--quick` run of every workload against the peers installed here: each topology comes up,
//! every installed peer gets a row, and what ran completed requests without errors. No timing is
//! asserted; the quick profile measures nothing worth quoting.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn installed() -> Vec<&'static str> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_remora-bench"));
    let remora = bin.parent().map(|d| d.join("remora"));
    let envoy = std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/opt/envoy-venv/lib/python3.11/site-packages/envoy/_bin/envoy".into());
    let mut v = Vec::new();
    if remora.is_some_and(|p| p.is_file()) || std::env::var_os("REMORA_BIN").is_some() {
        v.push("remora");
    }
    if envoy.is_file() {
        v.push("envoy");
    }
    if Path::new("/usr/sbin/nginx").is_file() {
        v.push("nginx");
    }
    if Path::new("/usr/sbin/haproxy").is_file() {
        v.push("haproxy");
    }
    v
}

fn col(table: &Value, name: &str) -> usize {
    table["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("{} has no column {name}", table["id"]))
}

fn median(row: &Value, i: usize) -> Option<f64> {
    row["values"][i]["median"].as_f64()
}

#[test]
fn a_quick_run_covers_every_topology_and_installed_peer() {
    let peers = installed();
    let dir = std::env::temp_dir().join(format!("remora-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let json = dir.join("out.json");
    let svg = dir.join("out.svg");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_remora-bench"));
    cmd.args(["--quick", "--runs", "1", "--json"])
        .arg(&json)
        .arg("--plot")
        .arg(&svg);
    if !peers.is_empty() {
        cmd.arg("--peers").arg(peers.join(","));
    }
    let out = cmd.output().expect("run remora-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| direct |"), "{stdout}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("valid json");
    let svg_text = std::fs::read_to_string(&svg).expect("svg written");
    assert!(svg_text.contains("<svg"));
    let tables = report["tables"].as_array().expect("tables");
    let ids: Vec<&str> = tables.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "http1",
            "h2c",
            "rate",
            "mesh",
            "tcp",
            "handshake",
            "memory",
            "scale",
            "xds"
        ]
    );

    for t in tables {
        let id = t["id"].as_str().expect("id");
        let rows = t["rows"].as_array().expect("rows");
        let names: Vec<&str> = rows.iter().filter_map(|r| r["peer"].as_str()).collect();
        for p in &peers {
            assert!(names.contains(p), "{id}: no row for {p}: {names:?}");
        }
        if ["http1", "h2c", "rate", "tcp"].contains(&id) {
            assert!(names.contains(&"direct"), "{id} lacks the direct floor");
        }
        for r in rows {
            let peer = r["peer"].as_str().expect("peer");
            match r["status"]["state"].as_str().expect("state") {
                "ok" => {}
                // remora without TLS yet, nginx without its stream module, no equivalent scale config.
                "unsupported" => continue,
                other => panic!("{id}/{peer}: {other}: {}", r["status"]["reason"]),
            }
            if let Some(e) = t["columns"]
                .as_array()
                .and_then(|c| c.iter().position(|c| c == "errors"))
            {
                assert_eq!(
                    median(r, e),
                    Some(0.0),
                    "{id}/{peer} had errors: {:?}",
                    t["notes"]
                );
            }
            let work = match id {
                "http1" | "h2c" => median(r, col(t, "req/s")),
                "rate" | "mesh" => median(r, col(t, "p50 ms")),
                "tcp" => median(r, col(t, "Gb/s")),
                "handshake" => median(r, col(t, "handshakes/s")),
                "memory" => median(r, col(t, "idle MB")),
                "scale" => median(r, col(t, "ready ms")),
                "xds" => median(r, col(t, "CDS ms")),
                _ => unreachable!(),
            };
            assert!(
                work.is_some_and(|v| v > 0.0),
                "{id}/{peer} measured nothing: {r}"
            );
        }
    }
    if peers.contains(&"remora") {
        assert!(!report["targets"].as_array().expect("targets").is_empty());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn in_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

#[test]
fn a_quick_callgrind_run_counts_instructions_per_request_for_remora() {
    if !in_path("valgrind") || !in_path("callgrind_control") {
        eprintln!("skipped: valgrind not installed (apt-get install valgrind)");
        return;
    }
    if !installed().contains(&"remora") {
        eprintln!("skipped: no remora binary next to remora-bench (cargo build -p remora-proxy)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("remora-bench-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let json = dir.join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_remora-bench"))
        .args([
            "--quick",
            "--runs",
            "1",
            "--peers",
            "remora",
            "--workloads",
            "callgrind",
        ])
        .args(["--callgrind-requests", "20", "--json"])
        .arg(&json)
        .output()
        .expect("run remora-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("valid json");
    let tables = report["tables"].as_array().expect("tables");
    let ids: Vec<&str> = tables.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, ["callgrind"]);
    let t = &tables[0];
    let r = t["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["peer"] == "remora")
        .unwrap_or_else(|| panic!("no remora row: {t}"));
    assert_eq!(r["status"]["state"], "ok", "{r}");
    assert_eq!(median(r, col(t, "errors")), Some(0.0), "{:?}", t["notes"]);
    for c in ["HTTP/1.1 Ir/request", "h2c Ir/request"] {
        let ir = median(r, col(t, c));
        assert!(ir.is_some_and(|v| v > 0.0), "{c}: {r}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
