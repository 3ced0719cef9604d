//! Process accounting from /proc: CPU time (utime + stime) and resident memory of a process tree.
//!
//! `/proc/<pid>/stat` already sums every thread of a process; nginx's worker is a child process, so
//! a peer's figure is the sum over the process and its descendants.

use std::fs;
use std::sync::OnceLock;

/// utime and stime (in clock ticks) and the parent pid, from the text of `/proc/<pid>/stat`.
///
/// The command name is in parentheses and may itself hold spaces or parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15), numbered as in proc(5).
    Some(Stat {
        ppid: f.get(1)?.parse().ok()?,
        utime: f.get(11)?.parse().ok()?,
        stime: f.get(12)?.parse().ok()?,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    pub utime: u64,
    pub stime: u64,
}

/// `VmRSS` in bytes from the text of `/proc/<pid>/status`.
pub fn parse_vm_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut it = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") | None => Some(n * 1024),
        Some(_) => None,
    }
}

fn stat_of(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `pid` and every live descendant.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(s) = stat_of(p) {
                all.push((p, s.ppid));
            }
        }
    }
    descendants(pid, &all)
}

/// `root` and the pids below it in a (pid, ppid) list.
pub fn descendants(root: u32, all: &[(u32, u32)]) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// Clock ticks per second (`getconf CLK_TCK`; Linux's USER_HZ is 100 everywhere it runs).
pub fn clock_ticks() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The processes of the trees of `roots`: take it before a measurement so that the samples at its
/// edges read a few files instead of walking /proc.
pub fn trees(roots: &[u32]) -> Vec<u32> {
    roots.iter().flat_map(|r| tree(*r)).collect()
}

/// CPU seconds (user + system) used so far by `pids`.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|p| stat_of(*p))
        .map(|s| s.utime + s.stime)
        .sum();
    ticks as f64 / clock_ticks()
}

/// Resident set size in bytes of `pids` (nginx: master and worker).
pub fn rss_bytes(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| parse_vm_rss(&fs::read_to_string(format!("/proc/{p}/status")).ok()?))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let line = "4242 (nginx: worker (x) y) S 4241 4241 4241 0 -1 4194624 1301 0 0 0 \
                    1234 567 0 0 20 0 1 0 98765 12345678 900 18446744073709551615";
        let s = parse_stat(line).expect("parses");
        assert_eq!(
            s,
            Stat {
                ppid: 4241,
                utime: 1234,
                stime: 567
            }
        );
        assert_eq!(parse_stat("12 (short) S 1"), None);
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tremora\nVmPeak:\t  99999 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(5120 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn a_tree_holds_children_and_grandchildren_only() {
        let all = [(10, 1), (11, 10), (12, 11), (13, 1), (14, 10)];
        let mut t = descendants(10, &all);
        t.sort();
        assert_eq!(t, vec![10, 11, 12, 14]);
    }

    #[test]
    fn this_process_uses_cpu_and_memory() {
        let me = std::process::id();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_seconds(&[me]) > 0.0);
        assert!(rss_bytes(&[me]) > 1024 * 1024);
    }
}
