//! The `remora` binary's own command line: version and help (also makes `cargo test` build it).

use std::process::Command;

fn remora(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_remora"))
        .args(args)
        .output()
        .expect("run remora")
}

#[test]
fn version_names_the_binary_and_crate_version() {
    let out = remora(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), format!("remora {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_lists_envoy_flags() {
    let out = remora(&["--help"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config-path",
        "--mode",
        "--concurrency",
        "--drain-time-s",
        "--base-id",
        "--log-level",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}
