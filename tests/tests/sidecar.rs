//! Sidecar mode in network namespaces: two pods, each an app with a remora sidecar running as uid
//! 1337 behind Istio's iptables capture rules. Traffic goes app → sidecar (15001, original_dst,
//! `use_original_dst` hand-off to the per-port listener from LDS) → mTLS with SPIFFE identities →
//! sidecar (15006, original_dst + tls_inspector) → app, as in an Istio mesh; plaintext to the
//! STRICT port is refused. Outside the mesh, the per-port listeners route by host and by address
//! (exact beats wildcard), and a port without one falls back to virtualOutbound's passthrough.
//! Needs root (CI runs as root); says so and skips otherwise.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use remora_tests::netns::{self, Netns};
use remora_tests::pki::{istio_id, Pki};
use remora_tests::tempdir::TempDir;
use remora_tests::template::render;
use remora_tests::{bins, fixture, select, Kind};

const CLIENT_IP: &str = "10.199.0.1";
const APP_IP: &str = "10.199.0.2";
const CLIENT_EXT_IP: &str = "10.199.1.1";
const OUTSIDE_IP: &str = "10.199.1.2";
const READY: Duration = Duration::from_secs(30);

/// One pod: its namespace and the scratch directory of its processes.
struct Pod {
    ns: Netns,
    dir: TempDir,
    seq: u32,
}

impl Pod {
    fn new(label: &str) -> Pod {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = TempDir::new(label);
        world_readable(dir.path());
        Pod {
            ns: Netns::new(label),
            dir,
            seq: SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Starts `kind` on `config` as uid 1337 and waits for its admin `/ready`.
    fn start_sidecar(&self, kind: Kind, config: &str) {
        self.start_sidecar_as(kind, config, false);
    }

    /// As [`Pod::start_sidecar`]; `net_admin` gives it CAP_NET_ADMIN, as Istio's TPROXY mode does.
    fn start_sidecar_as(&self, kind: Kind, config: &str, net_admin: bool) {
        let path = self.dir.join("envoy.yaml");
        std::fs::write(&path, config).expect("write sidecar config");
        world_readable(self.dir.path());
        let remora = bins::remora();
        let binary = kind.binary().expect("proxy binary");
        let mut cmd = if net_admin {
            self.ns.command_as_proxy_with_net_admin(&binary)
        } else {
            self.ns.command_as_proxy(&binary)
        };
        cmd.arg("-c")
            .arg(&path)
            .args(["--concurrency", "1", "-l", "info", "--drain-time-s", "1"]);
        if kind == Kind::Envoy {
            // Hot restart state lives in shared memory, which namespaces do not separate.
            cmd.args(["--disable-hot-restart", "--base-id"])
                .arg((std::process::id() % 10_000 * 10 + self.seq).to_string());
        }
        self.ns.spawn(cmd, &self.dir.join("sidecar.log"));
        self.ns.wait_until("the sidecar to be ready", READY, || {
            let mut c = self.ns.command(&remora.to_string_lossy());
            c.args(["probe", "http://127.0.0.1:15000/ready"]);
            c
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sidecar.log")).unwrap_or_default()
    }

    /// One admin counter of the pod's sidecar.
    fn stat(&self, name: &str) -> u64 {
        let out = self.ns.sh("curl -sS http://127.0.0.1:15000/stats");
        remora_tests::admin::stat_in(&out, name).unwrap_or(0)
    }

    /// curl inside the pod, captured; the response's headers (lower-case names) and JSON body.
    fn get(&self, url: &str) -> (BTreeMap<String, String>, serde_json::Value) {
        let mut c = self.ns.command("curl");
        c.args(["-sS", "-i", "--max-time", "10", url]);
        let out = self.ns.output(c);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "curl {url}: {text}{}\nsidecar:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let headers = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{url}: {e}: {text}"));
        (headers, body)
    }

    /// curl as uid 1337, which the capture rules let through untouched.
    fn curl_uncaptured(&self, url: &str) -> (bool, String) {
        let mut c = self.ns.command("setpriv");
        c.args([
            "--reuid=1337",
            "--regid=1337",
            "--clear-groups",
            "curl",
            "-sS",
            "--max-time",
            "10",
            url,
        ]);
        let out = self.ns.output(c);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn world_readable(dir: &Path) {
    let _ = std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status();
}

#[test]
fn app_to_app_through_two_sidecars_with_mtls() {
    if netns::skip("app_to_app_through_two_sidecars_with_mtls") {
        return;
    }
    // Envoy runs the same pods first when selected: it checks the fixtures, remora must agree.
    let mut seen: Vec<(Kind, BTreeMap<&str, u64>)> = Vec::new();
    for kind in select::kinds() {
        let stats = two_pods(kind);
        if let Some((first, expected)) = seen.first() {
            assert_eq!(&stats, expected, "{kind} counts differently from {first}");
        }
        seen.push((kind, stats));
    }
}

/// A client pod and an app pod linked together, the mesh identities of both, the client's LDS
/// file and the fixtures' variables; the app's echo server (not uid 1337, so its own traffic
/// would be captured) listens on 8080. `prefix` names the namespaces.
struct Mesh {
    /// Owns the certificate files the sidecars read.
    pki: Pki,
    client: Pod,
    app: Pod,
    vars: remora_tests::template::Vars,
    lds: String,
    lds_dir: std::path::PathBuf,
}

fn mesh(prefix: &str) -> Mesh {
    let mut pki = Pki::new();
    pki.issue("client", &istio_id("client"), &[]);
    pki.issue("app", &istio_id("app"), &[]);
    world_readable(&pki.path(""));
    let client = Pod::new(&format!("{prefix}client"));
    let app = Pod::new(&format!("{prefix}app"));
    netns::link(&client.ns, CLIENT_IP, &app.ns, APP_IP);
    let lds_dir = client.dir.join("lds");
    std::fs::create_dir(&lds_dir).expect("lds dir");
    let vars = pki
        .vars()
        .with("app_ip", APP_IP)
        .with("outside_ip", OUTSIDE_IP)
        .with("lds_dir", lds_dir.display());
    let lds = render(&fixture("sidecar/outbound-lds.yaml"), &vars);
    std::fs::write(lds_dir.join("lds.yaml"), &lds).expect("lds");
    let remora = bins::remora();
    let mut echo = app.ns.command(&remora.to_string_lossy());
    echo.args(["echo", "--listen", "0.0.0.0:8080", "--name", "app"]);
    app.ns.spawn(echo, &app.dir.join("echo.log"));
    Mesh {
        pki,
        client,
        app,
        vars,
        lds,
        lds_dir,
    }
}

/// Istio's TPROXY interception mode on the app pod: inbound connections reach the `transparent`
/// virtualInbound by TPROXY (no NAT: the accepted socket's local address is the original
/// destination), and are served exactly as in REDIRECT mode.
#[test]
fn tproxy_inbound_capture_serves_the_app() {
    if netns::skip("tproxy_inbound_capture_serves_the_app") {
        return;
    }
    for kind in select::kinds() {
        let Mesh {
            pki: _pki,
            client,
            app,
            vars,
            ..
        } = mesh("tp");
        client.ns.install_istio_iptables();
        app.ns.install_istio_iptables_tproxy();
        let inbound = render(&fixture("sidecar/inbound.yaml"), &vars).replacen(
            "  - name: virtualInbound\n",
            "  - name: virtualInbound\n    transparent: true\n",
            1,
        );
        assert!(
            inbound.contains("transparent: true"),
            "the fixture's virtualInbound"
        );
        client.start_sidecar(kind, &render(&fixture("sidecar/outbound.yaml"), &vars));
        app.start_sidecar_as(kind, &inbound, true);

        let (_, echo) = client.get(&format!("http://{APP_IP}:8080/tproxy"));
        assert_eq!(echo["backend"], "app", "{kind}: {echo}\n{}", app.log());
        assert_eq!(echo["path"], "/tproxy");
        let xfcc = echo["headers"]["x-forwarded-client-cert"]
            .as_str()
            .unwrap_or_default();
        assert!(
            xfcc.contains(&format!("URI={}", istio_id("client"))),
            "{kind}: the app sees the caller's identity: {echo}"
        );
        assert!(
            echo["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.6:")),
            "{kind}: the inbound sidecar reached the app: {echo}"
        );
        assert_eq!(
            app.stat("listener.0.0.0.0_15006.ssl.handshake"),
            1,
            "{kind}"
        );
        // Plaintext that bypasses the client's sidecar is captured by TPROXY and refused there.
        let (ok, err) = client.curl_uncaptured(&format!("http://{APP_IP}:8080/hello"));
        assert!(!ok, "{kind}: plaintext reached the app: {err}");
        assert!(
            app.stat("listener.0.0.0.0_15006.no_filter_chain_match") >= 1,
            "{kind}"
        );
        // Excluded ports are not captured.
        let (ok, err) = client.curl_uncaptured(&format!("http://{APP_IP}:15021/healthz/ready"));
        assert!(
            !ok && err.contains("Failed to connect"),
            "{kind}: 15021: {err}"
        );
        println!("{kind}: TPROXY inbound capture ok");
    }
}

/// The client sidecar's counters that show which listener served each connection.
const HANDOFF_STATS: &[&str] = &[
    "listener.0.0.0.0_15001.downstream_cx_total",
    "listener.0.0.0.0_15001.downstream_cx_active",
    "listener.0.0.0.0_15001.downstream_pre_cx_active",
    "listener.0.0.0.0_15001.no_filter_chain_match",
    "listener.0.0.0.0_8080.downstream_cx_total",
    "listener.0.0.0.0_8080.downstream_cx_destroy",
    "listener.0.0.0.0_8080.no_filter_chain_match",
    "listener.10.199.1.2_9090.downstream_cx_total",
    "listener.0.0.0.0_9090.downstream_cx_total",
    "http.outbound_0.0.0.0_8080.downstream_rq_completed",
    "cluster.outbound|8080||app.default.svc.cluster.local.upstream_cx_total",
    "cluster.outbound|9090||outside.external.upstream_cx_total",
    "cluster.PassthroughCluster.upstream_cx_total",
    "listener_manager.total_listeners_active",
];

fn two_pods(kind: Kind) -> BTreeMap<&'static str, u64> {
    let Mesh {
        pki: _pki,
        client,
        app,
        vars,
        lds,
        lds_dir,
    } = mesh("");
    // A server outside the mesh, reachable from the client pod only.
    let outside = Pod::new("outside");
    netns::link(&client.ns, CLIENT_EXT_IP, &outside.ns, OUTSIDE_IP);
    let remora = bins::remora();
    for port in [8080, 9090, 9191] {
        let mut ext = outside.ns.command(&remora.to_string_lossy());
        ext.args(["echo", "--listen", &format!("0.0.0.0:{port}")])
            .args(["--name", &format!("outside-{port}")]);
        outside
            .ns
            .spawn(ext, &outside.dir.join(&format!("echo-{port}.log")));
    }

    for pod in [&client, &app] {
        pod.ns.install_istio_iptables();
    }
    client.start_sidecar(kind, &render(&fixture("sidecar/outbound.yaml"), &vars));
    app.start_sidecar(kind, &render(&fixture("sidecar/inbound.yaml"), &vars));

    // The client app calls the app's pod IP as if there were no mesh; virtualOutbound hands the
    // connection to 0.0.0.0_8080, whose route for the app's host originates mTLS.
    let (headers, echo) = client.get(&format!("http://{APP_IP}:8080/hello"));
    assert_eq!(echo["backend"], "app", "{kind}: {echo}\n{}", app.log());
    assert_eq!(echo["path"], "/hello");
    assert_eq!(
        headers.get("x-outbound-route").map(String::as_str),
        Some("app.default.svc.cluster.local:8080"),
        "{kind}: the per-port listener's route answered: {headers:?}"
    );
    let xfcc = echo["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default();
    assert!(
        xfcc.contains(&format!("URI={}", istio_id("client"))),
        "the app sees the caller's SPIFFE identity: {echo}"
    );
    // The inbound sidecar reached the app at its pod IP from 127.0.0.6 (InboundPassthrough).
    assert!(
        echo["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.6:")),
        "{kind}: {echo}"
    );
    assert_eq!(app.stat("listener.0.0.0.0_15006.ssl.handshake"), 1);
    assert_eq!(
        app.stat("http.inbound_0.0.0.0_8080.downstream_rq_completed"),
        1,
        "{}",
        app.log()
    );

    // Another host on 8080 is outside the mesh: the same listener's allow_any route passes it
    // through in plaintext to where the app was going.
    let (headers, echo) = client.get(&format!("http://{OUTSIDE_IP}:8080/out"));
    assert_eq!(echo["backend"], "outside-8080", "{kind}: {echo}");
    assert_eq!(
        headers.get("x-outbound-route").map(String::as_str),
        Some("allow_any"),
        "{kind}: {headers:?}"
    );
    assert!(
        echo["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("{CLIENT_EXT_IP}:"))),
        "{echo}"
    );

    // Port 9090: the listener on the outside server's own address, not the blackholing wildcard.
    let (_, echo) = client.get(&format!("http://{OUTSIDE_IP}:9090/tcp"));
    assert_eq!(echo["backend"], "outside-9090", "{kind}: {echo}");

    // No listener for 9191: virtualOutbound keeps the connection and its default chain's
    // tcp_proxy passes the bytes to the original destination.
    let (_, echo) = client.get(&format!("http://{OUTSIDE_IP}:9191/out"));
    assert_eq!(echo["backend"], "outside-9191", "{kind}: {echo}");

    // STRICT: plaintext that bypasses the client's sidecar is captured by the app's rules and
    // refused by its sidecar (no chain for raw_buffer on 8080).
    let (ok, err) = client.curl_uncaptured(&format!("http://{APP_IP}:8080/hello"));
    assert!(!ok, "plaintext reached the app: {err}");
    assert!(app.stat("listener.0.0.0.0_15006.no_filter_chain_match") >= 1);

    // Ports the rules exclude are not captured: nothing listens on 15021 in the app pod, so the
    // connection is refused rather than answered by the sidecar.
    let (ok, err) = client.curl_uncaptured(&format!("http://{APP_IP}:15021/healthz/ready"));
    assert!(
        !ok && err.contains("Failed to connect"),
        "15021 must bypass capture (refused by the kernel, not accepted by the sidecar): {err}"
    );

    // Closed connections are counted when the sidecar sees the close; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    let all = client.ns.sh("curl -sS http://127.0.0.1:15000/stats");
    let stats: BTreeMap<&str, u64> = HANDOFF_STATS
        .iter()
        .map(|&n| (n, remora_tests::admin::stat_in(&all, n).unwrap_or(0)))
        .collect();
    println!("{kind}: client sidecar {stats:#?}");

    // LDS takes the 9090 listeners away and changes 0.0.0.0_8080: the hand-off follows the set
    // now in place.
    let (head, _) = lds.split_once("# Port 9090").expect("the 9090 listeners");
    let v2 = head
        .replace("version_info: \"1\"", "version_info: \"2\"")
        .replace("value: allow_any }", "value: allow_any-v2 }");
    let staged = client.dir.join("lds.yaml.next");
    std::fs::write(&staged, v2).expect("lds v2");
    std::fs::rename(&staged, lds_dir.join("lds.yaml")).expect("rename lds");
    client.ns.wait_until("the second LDS version", READY, || {
        let mut c = client.ns.command("sh");
        c.args([
            "-c",
            "curl -sS http://127.0.0.1:15000/stats | grep -qx 'listener_manager.total_listeners_active: 2'",
        ]);
        c
    });
    let (headers, echo) = client.get(&format!("http://{OUTSIDE_IP}:8080/out"));
    assert_eq!(echo["backend"], "outside-8080", "{kind}: {echo}");
    assert_eq!(
        headers.get("x-outbound-route").map(String::as_str),
        Some("allow_any-v2"),
        "{kind}: the new version of 0.0.0.0_8080 answered: {headers:?}"
    );
    let (_, echo) = client.get(&format!("http://{OUTSIDE_IP}:9090/tcp"));
    assert_eq!(echo["backend"], "outside-9090", "{kind}: {echo}");
    assert_eq!(
        client.stat("tcp.PassthroughCluster.downstream_cx_total"),
        2,
        "{kind}: 9090 passes through virtualOutbound now, as 9191 did"
    );
    assert_eq!(
        client.stat("cluster.outbound|9090||outside.external.upstream_cx_total"),
        1
    );
    assert_eq!(client.stat("listener.0.0.0.0_15001.downstream_cx_total"), 2);
    println!(
        "{kind}: app → sidecar → mTLS → sidecar → app ok; hand-off by address; plaintext refused"
    );
    stats
}
