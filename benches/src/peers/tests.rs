use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use remora_proxy::access_log::Writers;
use remora_proxy::config::parse::from_yaml;
use remora_proxy::config::{bootstrap, ParseOptions};
use remora_proxy::stats::Store;

use super::*;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("remora-bench-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn with_setup<T>(name: &str, f: impl FnOnce(&Setup<'_>, &Path) -> T) -> T {
    let dir = scratch(name);
    let pki = MeshPki::mint(&dir.join("pki")).expect("mint");
    let setup = Setup {
        backend_http: loopback(18080),
        backend_tcp: loopback(18081),
        pki: &pki,
        ready_timeout: Duration::from_secs(5),
        nofile: 20_000,
    };
    let out = f(&setup, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn roles() -> Vec<(&'static str, Role)> {
    vec![
        (
            "single",
            Role::Single {
                http1: 18100,
                h2c: 18101,
                tcp: 18102,
            },
        ),
        (
            "outbound",
            Role::MeshOutbound {
                listen: 18103,
                inbound: 18104,
            },
        ),
        ("inbound", Role::MeshInbound { listen: 18104 }),
        (
            "scale",
            Role::Scale {
                listen: 18105,
                routes: 100,
                clusters: 7,
            },
        ),
    ]
}

fn remora_translates(yaml: &str) -> Result<(), String> {
    let b: Bootstrap = from_yaml(yaml, ParseOptions::default()).map_err(|e| e.to_string())?;
    let store = Store::new();
    let writers = Writers::new(&store, Duration::from_secs(1));
    bootstrap::build(b, &store, ParseOptions::default(), &writers)
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

#[test]
fn the_plain_bootstraps_are_valid_remora_configuration() {
    with_setup("remora", |setup, _| {
        for (name, role) in roles() {
            let yaml = envoy::bootstrap(&role, setup, 18099);
            if matches!(role, Role::Single { .. } | Role::Scale { .. }) {
                remora_translates(&yaml).unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
            } else {
                // The mesh roles need TLS transport sockets; they must at least parse as protos.
                let parsed: Result<Bootstrap, _> = from_yaml(&yaml, ParseOptions::default());
                parsed.unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
            }
        }
    });
}

#[test]
fn the_scaled_bootstrap_has_the_asked_routes_and_clusters() {
    with_setup("scale", |setup, _| {
        let role = Role::Scale {
            listen: 1,
            routes: 1000,
            clusters: 30,
        };
        let yaml = envoy::bootstrap(&role, setup, 2);
        let b: Bootstrap = from_yaml(&yaml, ParseOptions::default()).expect("parses");
        let res = b.static_resources.expect("static resources");
        assert_eq!(res.clusters.len(), 30);
        assert_eq!(yaml.matches("route: { cluster: svc-").count(), 1000);
        assert_eq!(
            yaml.matches("- name: svc-").count(),
            30 + 30,
            "one vhost and one cluster per service"
        );
    });
}

#[test]
fn envoy_accepts_every_bootstrap() {
    let Ok(envoy) = Kind::Envoy.locate() else {
        eprintln!("envoy not installed; skipped");
        return;
    };
    with_setup("envoy", |setup, dir| {
        for (name, role) in roles() {
            let path = dir.join(format!("{name}.yaml"));
            std::fs::write(&path, envoy::bootstrap(&role, setup, 18099)).expect("write");
            let out = Command::new(&envoy)
                .args([
                    "--mode",
                    "validate",
                    "--disable-hot-restart",
                    "-l",
                    "error",
                    "-c",
                ])
                .arg(&path)
                .output()
                .expect("run envoy");
            assert!(
                out.status.success(),
                "{name}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
}

#[test]
fn nginx_and_haproxy_accept_their_configurations() {
    with_setup("nginx-haproxy", |setup, dir| {
        for (name, role) in roles() {
            if let Ok(nginx) = Kind::Nginx.locate() {
                match nginx::config(&role, setup, dir) {
                    Some((text, _)) => {
                        let path = dir.join(format!("{name}.conf"));
                        std::fs::write(&path, text).expect("write");
                        let out = Command::new(&nginx)
                            .arg("-t")
                            .arg("-p")
                            .arg(dir)
                            .arg("-c")
                            .arg(&path)
                            .arg("-e")
                            .arg(dir.join("error.log"))
                            .output()
                            .expect("run nginx");
                        assert!(
                            out.status.success(),
                            "nginx {name}: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    None => assert!(matches!(role, Role::Scale { .. })),
                }
            }
            if let Ok(haproxy) = Kind::Haproxy.locate() {
                match haproxy::config(&role, setup) {
                    Some(text) => {
                        let path = dir.join(format!("{name}.cfg"));
                        std::fs::write(&path, text).expect("write");
                        let out = Command::new(&haproxy)
                            .arg("-c")
                            .arg("-f")
                            .arg(&path)
                            .output()
                            .expect("run haproxy");
                        assert!(
                            out.status.success(),
                            "haproxy {name}: {}{}",
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    None => assert!(matches!(role, Role::Scale { .. })),
                }
            }
        }
    });
}

#[test]
fn peers_are_named_and_located_or_explained() {
    assert_eq!(Kind::parse(" HAProxy"), Some(Kind::Haproxy));
    assert_eq!(Kind::parse("traefik"), None);
    for k in ALL {
        match k.locate() {
            Ok(p) => assert!(p.is_file()),
            Err(hint) => assert!(hint.contains("install") || hint.contains("build"), "{hint}"),
        }
    }
    assert_eq!(haproxy::max_connections(20_000), 9950);
    assert!(max_idle_connections(20_000) < 10_000);
}

#[test]
fn a_wrapper_runs_inside_the_pinning_in_front_of_the_binary() {
    let wrap = ["valgrind".to_string(), "--tool=callgrind".to_string()];
    let args = ["-c".to_string(), "b.yaml".to_string()];
    let c = pinned(0, &wrap, Path::new("/bin/remora"), &args);
    let got: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // sh -c SCRIPT $0 $@: the script execs "$0" "$@", the wrapper first.
    assert_eq!(
        got[2..],
        [
            "valgrind",
            "--tool=callgrind",
            "/bin/remora",
            "-c",
            "b.yaml"
        ]
    );
    assert!(got[1].contains("exec "), "{}", got[1]);
    let plain = pinned(0, &[], Path::new("/bin/remora"), &args);
    assert_eq!(plain.get_args().count(), 5);
}
