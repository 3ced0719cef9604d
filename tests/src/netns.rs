//! Network namespaces for sidecar tests: pods made of `ip netns`, veth links between them, Istio's
//! iptables capture rules, and processes started inside (optionally as uid 1337, the proxy's uid,
//! which the rules exempt from capture). Needs root; [`skip_reason`] says why a test cannot run.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The uid (and gid) Istio runs the proxy as; its own traffic is not captured.
pub const PROXY_UID: u32 = 1337;

/// Why namespace tests cannot run here, or `None` when they can.
pub fn skip_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root: network namespace tests need root (CI runs as root)".into());
    }
    for tool in ["ip", "iptables-restore", "setpriv", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!(
                "{tool} is not installed (apt-get install iproute2 iptables util-linux curl)"
            ));
        }
    }
    let probe = Netns::try_new("probe");
    match probe {
        Ok(_) => None,
        Err(e) => Some(format!("cannot create a network namespace: {e}")),
    }
}

/// Prints the skip line and returns true when the test must not run.
pub fn skip(test: &str) -> bool {
    match skip_reason() {
        Some(why) => {
            println!("skipping {test}: {why}");
            true
        }
        None => false,
    }
}

/// One network namespace; deleted on drop (after the processes started in it are killed).
#[derive(Debug)]
pub struct Netns {
    name: String,
    children: std::sync::Mutex<Vec<Child>>,
}

impl Netns {
    /// A fresh namespace with loopback up. Panics when it cannot be created.
    pub fn new(label: &str) -> Netns {
        Self::try_new(label).unwrap_or_else(|e| panic!("creating namespace {label}: {e}"))
    }

    fn try_new(label: &str) -> Result<Netns, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "rm-{label}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let out = run_ip(&["netns", "add", &name])?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let ns = Netns {
            name,
            children: Default::default(),
        };
        ns.sh("ip link set lo up");
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program args...` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// `program args...` inside the namespace as uid/gid 1337.
    pub fn command_as_proxy(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, "setpriv"])
            .arg(format!("--reuid={PROXY_UID}"))
            .arg(format!("--regid={PROXY_UID}"))
            .arg("--clear-groups")
            .arg(program);
        c
    }

    /// Runs a shell script inside; panics with its output when it fails.
    pub fn sh(&self, script: &str) -> String {
        let out = self
            .command("sh")
            .args(["-c", script])
            .output()
            .unwrap_or_else(|e| panic!("running in {}: {e}", self.name));
        assert!(
            out.status.success(),
            "in {}: {script}\nstdout: {}\nstderr: {}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command inside and returns its output, whatever its status.
    pub fn output(&self, mut cmd: Command) -> Output {
        cmd.stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running in {}: {e}", self.name))
    }

    /// Starts a long-running process inside; killed when the namespace is dropped.
    pub fn spawn(&self, mut cmd: Command, log: &Path) -> u32 {
        let file = std::fs::File::create(log).expect("create log");
        let err = file.try_clone().expect("clone log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning in {}: {e}", self.name));
        let pid = child.id();
        self.children.lock().expect("children").push(child);
        pid
    }

    /// `program args...` inside the namespace as uid/gid 1337 with CAP_NET_ADMIN, as Istio runs
    /// the proxy in TPROXY mode (transparent listeners need it).
    pub fn command_as_proxy_with_net_admin(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, "setpriv"])
            .arg(format!("--reuid={PROXY_UID}"))
            .arg(format!("--regid={PROXY_UID}"))
            .arg("--clear-groups")
            .args(["--inh-caps=+net_admin", "--ambient-caps=+net_admin"])
            .arg(program);
        c
    }

    /// Installs Istio's capture rules: outbound TCP to 15001 except uid 1337 and loopback, inbound
    /// TCP to 15006 except the excluded ports 15008, 15090, 15021, 15020.
    pub fn install_istio_iptables(&self) {
        self.iptables_restore(ISTIO_IPTABLES);
    }

    /// Istio's TPROXY interception mode: inbound TCP goes to 15006 by `TPROXY` in the mangle
    /// table (the connection keeps its original destination as its local address, and the
    /// listener must be `transparent`), marked 1337 and routed locally by table 133; outbound is
    /// redirected as in REDIRECT mode.
    pub fn install_istio_iptables_tproxy(&self) {
        self.iptables_restore(ISTIO_IPTABLES_TPROXY);
        self.sh(
            "ip rule add fwmark 1337 lookup 133 && ip route add local default dev lo table 133",
        );
    }

    fn iptables_restore(&self, rules: &str) {
        let out = self
            .command("iptables-restore")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                if let Some(mut stdin) = c.stdin.take() {
                    stdin.write_all(rules.as_bytes())?;
                }
                c.wait_with_output()
            })
            .expect("iptables-restore");
        assert!(
            out.status.success(),
            "iptables-restore in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Polls `check` (a command run inside) until it succeeds or `timeout` passes.
    pub fn wait_until(&self, what: &str, timeout: Duration, check: impl Fn() -> Command) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output(check());
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "in {}: {what} did not happen within {timeout:?}: {}",
                    self.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(mut children) = self.children.lock() {
            for c in children.iter_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = run_ip(&["netns", "del", &self.name]);
    }
}

/// A veth pair between `a` (address `a_ip/24`) and `b` (`b_ip/24`).
pub fn link(a: &Netns, a_ip: &str, b: &Netns, b_ip: &str) {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let (va, vb) = (
        format!("va{}x{n}", std::process::id() % 100_000),
        format!("vb{}x{n}", std::process::id() % 100_000),
    );
    let out = run_ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]).expect("ip link");
    assert!(
        out.status.success(),
        "veth: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (dev, ns) in [(&va, a), (&vb, b)] {
        let out = run_ip(&["link", "set", dev, "netns", ns.name()]).expect("ip link set");
        assert!(
            out.status.success(),
            "move veth: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    a.sh(&format!(
        "ip addr add {a_ip}/24 dev {va} && ip link set {va} up"
    ));
    b.sh(&format!(
        "ip addr add {b_ip}/24 dev {vb} && ip link set {vb} up"
    ));
}

fn run_ip(args: &[&str]) -> Result<Output, String> {
    Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))
}

/// The nat rules istio-iptables writes for a sidecar (REDIRECT mode), as `iptables-restore` input.
pub const ISTIO_IPTABLES: &str = "\
*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
";

/// The rules istio-iptables writes in TPROXY mode (`-m TPROXY`, DNS capture off), as
/// `iptables-restore` input: mangle for inbound, nat for outbound.
pub const ISTIO_IPTABLES_TPROXY: &str = "\
*mangle
:ISTIO_DIVERT - [0:0]
:ISTIO_TPROXY - [0:0]
:ISTIO_INBOUND - [0:0]
-A ISTIO_DIVERT -j MARK --set-mark 1337
-A ISTIO_DIVERT -j ACCEPT
-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp -m mark --mark 1337 -j RETURN
-A ISTIO_INBOUND -p tcp -s 127.0.0.6/32 -i lo -j RETURN
-A ISTIO_INBOUND -p tcp -i lo -m mark ! --mark 1338 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT
-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY
-A PREROUTING -p tcp -m mark --mark 1337 -j CONNMARK --save-mark
-A OUTPUT -p tcp -o lo -m mark --mark 1337 -j RETURN
-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338
-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --gid-owner 1337 -j MARK --set-mark 1338
-A OUTPUT -p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark
COMMIT
*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_REDIRECT - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -p tcp -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -p tcp -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";
