//! Command line and configuration errors: bad bootstraps are rejected before serving, naming the
//! field path the way Envoy does; `--mode validate` checks without serving.
//!
//! Each bad config is also given to Envoy (exit status only), so the suite documents where remora
//! agrees with Envoy and where it is deliberately stricter.

use std::time::Duration;

use remora_tests::exec::{self, Outcome};
use remora_tests::tempdir::TempDir;
use remora_tests::template::{render, Vars};
use remora_tests::{fixture, ports, select, Kind};

const DEADLINE: Duration = Duration::from_secs(20);

/// A bad bootstrap and what remora's stderr must name.
struct Bad {
    fixture: &'static str,
    /// Fragments remora's stderr must contain (Envoy's spelling of the field path).
    fragments: &'static [&'static str],
    /// Envoy 1.40 rejects it too (false: Envoy accepts; remora is stricter on purpose).
    envoy_rejects: bool,
}

const BAD: &[Bad] = &[
    Bad {
        fixture: "malformed.yaml",
        fragments: &["malformed.yaml"],
        envoy_rejects: true,
    },
    Bad {
        fixture: "unknown_field.yaml",
        fragments: &["static_resources.clusters[0].bogus"],
        envoy_rejects: true,
    },
    Bad {
        fixture: "wrong_type.yaml",
        fragments: &["static_resources.clusters[0].per_connection_buffer_limit_bytes"],
        envoy_rejects: true,
    },
    Bad {
        fixture: "undefined_cluster.yaml",
        fragments: &[
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route.cluster",
            "missing",
        ],
        envoy_rejects: true,
    },
    Bad {
        // Envoy 1.40 accepts this and serves only the first listener; silently dropping a
        // listener is a trap, so remora rejects it.
        fixture: "duplicate_listener.yaml",
        fragments: &["static_resources.listeners[1].name", "ingress"],
        envoy_rejects: false,
    },
    Bad {
        fixture: "unknown_filter.yaml",
        fragments: &[
            r#"static_resources.listeners[0].filter_chains[0].filters[0]: unknown filter "envoy.filters.network.foo""#,
        ],
        envoy_rejects: true,
    },
    Bad {
        fixture: "port_range.yaml",
        fragments: &["static_resources.listeners[0].address.socket_address.port_value"],
        envoy_rejects: true,
    },
];

/// Render a cli fixture with fresh ports into `dir`; the written path.
fn write_config(dir: &TempDir, name: &str) -> String {
    let vars = Vars::new()
        .with("listener_port", ports::free_port())
        .with("listener_port_2", ports::free_port())
        .with("backend_port", ports::free_port());
    let path = dir.join(name);
    std::fs::write(&path, render(&fixture(&format!("cli/{name}")), &vars)).expect("write config");
    path.to_string_lossy().into_owned()
}

fn run(kind: Kind, args: &[&str]) -> Outcome {
    let binary = kind.binary().expect("binary");
    let base_id = (std::process::id() % 20_000 + 30_000).to_string();
    let mut full: Vec<&str> = args.to_vec();
    full.extend([
        "--disable-hot-restart",
        "-l",
        "warning",
        "--concurrency",
        "1",
    ]);
    if kind == Kind::Envoy {
        full.extend(["--base-id", &base_id]);
    }
    exec::run(&binary, &full, DEADLINE)
}

fn explain(o: &Outcome) -> String {
    format!(
        "exit {:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
        o.code, o.stderr, o.stdout
    )
}

#[test]
fn bad_configs_are_rejected_naming_the_path() {
    if !select::kinds().contains(&Kind::Remora) {
        return;
    }
    let dir = TempDir::new("cli");
    let mut problems = Vec::new();
    for bad in BAD {
        let path = write_config(&dir, bad.fixture);
        for mode in ["serve", "validate"] {
            let o = run(Kind::Remora, &["-c", &path, "--mode", mode]);
            let want_code = if mode == "validate" { Some(1) } else { None };
            let code_ok = match want_code {
                Some(c) => o.code == Some(c),
                None => o.failed(),
            };
            if !code_ok {
                problems.push(format!(
                    "{} ({mode}): expected a failing exit, {}",
                    bad.fixture,
                    explain(&o)
                ));
                continue;
            }
            for f in bad.fragments {
                if !o.stderr.contains(f) {
                    problems.push(format!(
                        "{} ({mode}): stderr lacks {f:?}: {}",
                        bad.fixture,
                        explain(&o)
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn envoy_agrees_on_which_configs_are_bad() {
    if !select::kinds().contains(&Kind::Envoy) {
        return;
    }
    let dir = TempDir::new("cli-envoy");
    for bad in BAD {
        let path = write_config(&dir, bad.fixture);
        let o = run(Kind::Envoy, &["-c", &path, "--mode", "validate"]);
        if bad.envoy_rejects {
            assert_eq!(
                o.code,
                Some(1),
                "envoy should reject {}: {}",
                bad.fixture,
                explain(&o)
            );
            let served = run(Kind::Envoy, &["-c", &path]);
            assert!(
                served.failed(),
                "envoy should not serve {}: {}",
                bad.fixture,
                explain(&served)
            );
        } else {
            assert_eq!(
                o.code,
                Some(0),
                "envoy 1.40 accepts {}: {}",
                bad.fixture,
                explain(&o)
            );
        }
    }
}

#[test]
fn validate_accepts_a_good_config_without_binding() {
    let dir = TempDir::new("cli-good");
    let path = write_config(&dir, "good.yaml");
    // Validation must not bind: hold the listener port while it runs.
    let text = std::fs::read_to_string(&path).expect("read");
    let (listeners, _) = remora_tests::proxy::ports_of(&text);
    let _held = std::net::TcpListener::bind(("127.0.0.1", listeners[0])).expect("hold port");
    for kind in select::kinds() {
        let o = run(kind, &["-c", &path, "--mode", "validate"]);
        assert_eq!(
            o.code,
            Some(0),
            "{kind} --mode validate on a good config: {}",
            explain(&o)
        );
    }
}

#[test]
fn missing_config_file_names_the_file() {
    let path = "/nonexistent/remora-tests/bootstrap.yaml";
    for kind in select::kinds() {
        let o = run(kind, &["-c", path]);
        assert!(o.failed(), "{kind} with a missing config: {}", explain(&o));
        assert!(
            o.stderr.contains(path),
            "{kind} stderr should name {path}: {}",
            explain(&o)
        );
    }
}

#[test]
fn unknown_flag_is_an_error() {
    for kind in select::kinds() {
        let o = run(kind, &["--no-such-flag"]);
        assert!(o.failed(), "{kind} --no-such-flag: {}", explain(&o));
        assert!(
            o.stderr.contains("--no-such-flag") || o.stdout.contains("--no-such-flag"),
            "{kind} should name the flag: {}",
            explain(&o)
        );
    }
}

/// `remora probe` is the container health check: exit 0 on a 2xx answer, 1 with the status or the
/// connection error otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_reports_readiness_by_exit_status() {
    let admin = ports::free_port();
    let config = render(
        &fixture("cli/good.yaml"),
        &Vars::new()
            .with("listener_port", ports::free_port())
            .with("backend_port", ports::free_port()),
    ) + &format!(
        "admin:\n  address:\n    socket_address: {{ address: 127.0.0.1, port_value: {admin} }}\n"
    );
    let _proxy = remora_tests::Proxy::start(Kind::Remora, &config).await;
    let remora = Kind::Remora.binary().expect("binary");
    let probe = |path: &str| {
        exec::run(
            &remora,
            &[
                "probe",
                &format!("http://127.0.0.1:{admin}{path}"),
                "--timeout",
                "5",
            ],
            DEADLINE,
        )
    };
    let ready = probe("/ready");
    assert_eq!(ready.code, Some(0), "probe /ready: {}", explain(&ready));
    let missing = probe("/no-such-page");
    assert_eq!(
        missing.code,
        Some(1),
        "probe of a 404: {}",
        explain(&missing)
    );
    assert!(
        missing.stderr.contains("answered 404"),
        "{}",
        explain(&missing)
    );
    let closed = exec::run(
        &remora,
        &[
            "probe",
            &format!("http://127.0.0.1:{}/ready", ports::free_port()),
        ],
        DEADLINE,
    );
    assert_eq!(
        closed.code,
        Some(1),
        "probe of a closed port: {}",
        explain(&closed)
    );
    assert!(
        closed.stderr.contains("connecting to 127.0.0.1:"),
        "{}",
        explain(&closed)
    );
}

/// `--config-yaml` is merged over `-c`: the cluster the file's route needs comes from the overlay,
/// and a request through the listener reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_yaml_is_merged_over_the_file() {
    select::for_each_kind(|kind| async move {
        let backend = remora_tests::HttpBackend::start("overlay").await;
        let config = render(
            &fixture("cli/overlay_base.yaml"),
            &Vars::new().with("listener_port", ports::free_port()),
        );
        let overlay = format!(
            "static_resources: {{ clusters: [ {{ name: app, type: STATIC, connect_timeout: 1s, \
             load_assignment: {{ cluster_name: app, endpoints: [ {{ lb_endpoints: [ {{ endpoint: \
             {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }} ] }} ] }} }} ] }}",
            backend.port()
        );
        let opts = remora_tests::proxy::StartOptions {
            args: vec!["--config-yaml".into(), overlay],
            ..Default::default()
        };
        let proxy = remora_tests::Proxy::start_with(kind, &config, opts).await;
        let r = remora_tests::client::get(proxy.addr(), "/merged")
            .await
            .expect("request");
        assert_eq!(r.status, 200, "[{kind}] {}", r.text());
        assert_eq!(
            r.echo().map(|e| e.backend),
            Some("overlay".to_string()),
            "[{kind}]"
        );
    })
    .await;
}
