//! One-shot runs of a binary with a deadline: for CLI checks that must exit on their own.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `None` when it had to be killed at the deadline.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        self.code.is_some_and(|c| c != 0)
    }
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    /// Standard output then standard error.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Run `binary args…`, killing it after `deadline`; output is captured through files so a chatty
/// process cannot block on a full pipe.
pub fn run(binary: &Path, args: &[&str], deadline: Duration) -> Outcome {
    run_with_input(binary.as_os_str(), args, b"", deadline)
}

/// [`run`] with `input` written to the process's standard input (then closed).
pub fn run_with_input<S: AsRef<std::ffi::OsStr>>(
    program: &std::ffi::OsStr,
    args: &[S],
    input: &[u8],
    deadline: Duration,
) -> Outcome {
    use std::io::Write;
    let dir = crate::tempdir::TempDir::new("exec");
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", program.to_string_lossy()));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let end = Instant::now() + deadline;
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code().or(Some(-1)),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    Outcome {
        code,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}
