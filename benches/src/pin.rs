//! CPU pinning: the proxy under test gets core 0, the backend and load generator core 1.
//!
//! `taskset` (util-linux) does the pinning, so the crate stays free of unsafe code; threads created
//! after the call inherit the mask, so the benchmark pins itself before it builds its runtime.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub fn have_taskset() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Number of CPUs of the machine (not of this process's mask, which pinning narrows).
pub fn cpus() -> usize {
    let n = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Pins every thread of this process to `core`; Err says why it could not.
pub fn pin_self(core: usize) -> Result<(), String> {
    if !have_taskset() {
        return Err("taskset not found (apt-get install util-linux)".into());
    }
    if cpus() <= core {
        return Err(format!("only {} CPU(s), cannot use core {core}", cpus()));
    }
    let ok = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err("taskset failed".into())
    }
}
