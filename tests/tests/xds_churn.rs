//! Churn under load: 1000 ADS pushes of routes, weights, endpoints and secrets while clients keep
//! sending requests, in plaintext and over mTLS with the pushed certificates. No request fails on
//! either proxy, and at the end the last pushed certificates are the ones in use.
//!
//! ```text
//!  plain loops ──▶ main (RDS routes) ──▶ a | b | c          (weights, endpoints churn)
//!  /via-tls    ──▶ main ──▶ cluster loop (client cert SDS "client") ──┐
//!  TLS loops   ──────────────────────────────▶ tls (server cert SDS "server", roots "ca")
//!                                               └─▶ RDS routes ──▶ a | b | c
//! ```

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use remora_tests::client::{Client, Protocol, Request, Tls};
use remora_tests::control_plane::{
    resource, ControlPlane, Outcome, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET,
};
use remora_tests::pki::{cert_sha256, istio_id, Identity, Pki};
use remora_tests::ports::{free_port, loopback};
use remora_tests::proxy::StartOptions;
use remora_tests::select::for_each_kind;
use remora_tests::tempdir::TempDir;
use remora_tests::xds::{
    bootstrap, certificate_secret, eds_cluster, endpoints, mtls_cluster, rds_listener,
    static_cluster, tls_rds_listener, validation_secret, Ads,
};
use remora_tests::{HttpBackend, Kind, Proxy};

const SETTLE: Duration = Duration::from_secs(20);
const SNI: &str = "server.mesh";
const PUSHES: u32 = 1000;

/// The route table: `/via-tls` through the mTLS `loop` cluster (to the proxy's own TLS listener,
/// as `/`), everything else by `split`: weights over a and b, or b alone when a weight is 0.
fn routes(split: (u32, u32)) -> (String, Any) {
    let default = match split {
        (0, _) => "{ cluster: b }".to_string(),
        (a, b) => format!(
            "{{ weighted_clusters: {{ clusters: [{{ name: a, weight: {a} }}, {{ name: b, weight: {b} }}] }} }}"
        ),
    };
    resource::<RouteConfiguration>(
        "routes",
        &format!(
            r#"name: routes
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - {{ match: {{ prefix: "/via-tls" }}, route: {{ cluster: loop, prefix_rewrite: "/" }} }}
  - {{ match: {{ prefix: "/" }}, route: {default} }}
"#
        ),
    )
}

/// The certificates the proxy holds, as the control plane serves them.
struct Certs {
    pki: Pki,
    server: Identity,
    client: Identity,
}

impl Certs {
    fn new() -> Certs {
        let mut pki = Pki::new();
        let server = pki.issue("server", &istio_id("server"), &[SNI]);
        let client = pki.issue("client", &istio_id("client"), &[]);
        pki.issue("direct", &istio_id("direct"), &[]);
        Certs {
            pki,
            server,
            client,
        }
    }

    /// Issues a new listener certificate (`server`) or cluster client certificate (`client`).
    fn rotate(&mut self, server: bool) {
        if server {
            self.server = self.pki.issue("server", &istio_id("server"), &[SNI]);
        } else {
            self.client = self.pki.issue("client", &istio_id("client"), &[]);
        }
    }

    fn secrets(&self) -> Vec<(String, Any)> {
        vec![
            certificate_secret("server", &self.server),
            certificate_secret("client", &self.client),
            validation_secret("ca", self.pki.ca_pem()),
        ]
    }

    /// How a direct TLS client connects: verifying `server.mesh`, presenting `direct`.
    fn tls(&self) -> Tls {
        Tls::new(SNI, self.pki.ca_pem(), Some(self.pki.get("direct")))
    }
}

struct World {
    _dir: TempDir,
    cp: ControlPlane,
    proxy: Proxy,
    plain: u16,
    tls: u16,
    a: HttpBackend,
    _b: HttpBackend,
    c: HttpBackend,
}

impl World {
    async fn start(kind: Kind, certs: &Certs) -> World {
        let dir = TempDir::new("xds-churn");
        let cp = ControlPlane::uds(&dir.join("XDS")).await;
        let (a, b, c) = (
            HttpBackend::start("a").await,
            HttpBackend::start("b").await,
            HttpBackend::start("c").await,
        );
        let (plain, tls) = (free_port(), free_port());
        cp.set(SECRET, certs.secrets());
        cp.set(
            CLUSTER,
            vec![
                eds_cluster("a"),
                static_cluster("b", "127.0.0.1", b.port()),
                mtls_cluster("loop", tls, SNI, "client", "ca", 10),
            ],
        );
        cp.set(ENDPOINT, vec![endpoints("a", &[a.port()])]);
        cp.set(
            LISTENER,
            vec![
                rds_listener("main", plain, "main", "routes"),
                tls_rds_listener("tls", tls, "server", "ca"),
            ],
        );
        cp.set(ROUTE, vec![routes((1, 1))]);
        let admin = free_port();
        let opts = StartOptions {
            args: vec!["--drain-time-s".into(), "1".into()],
            ..StartOptions::default()
        };
        let proxy = Proxy::start_with(kind, &bootstrap(&cp, Ads::Sotw, admin), opts).await;
        let w = World {
            _dir: dir,
            cp,
            proxy,
            plain,
            tls,
            a,
            _b: b,
            c,
        };
        // Envoy warms the TLS listener and the loop cluster until their secrets arrive.
        let deadline = Instant::now() + SETTLE;
        loop {
            let mut direct = Client::new(loopback(w.tls), Protocol::Http1).tls(certs.tls());
            let direct = status(&direct.send(&Request::get("/")).await);
            let via = status(&remora_tests::client::get(loopback(w.plain), "/via-tls").await);
            if (direct, via) == (Some(200), Some(200)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "[{kind}] TLS and /via-tls serve after the initial push (last: {direct:?} {via:?})\n{}",
                w.proxy.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        w
    }

    async fn outcome(&self, kind: Kind, type_url: &str, version: u64) -> Outcome {
        let stderr = || self.proxy.stderr();
        self.cp
            .answer(kind, type_url, version, SETTLE, stderr)
            .await
    }
}

fn status(r: &anyhow::Result<remora_tests::Response>) -> Option<u16> {
    r.as_ref().ok().map(|r| r.status)
}

/// One client loop's tally.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: Mutex<Vec<String>>,
}

/// Sends `path` until `stop`, on one kept-alive connection (reopened when the proxy closes it), or
/// on a new connection per request when `fresh`.
fn load(
    name: &'static str,
    make: impl Fn() -> Client + Send + 'static,
    path: &'static str,
    fresh: bool,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(&'static str, Tally)> {
    tokio::spawn(async move {
        let tally = Tally::default();
        let mut client = make();
        while !stop.load(Ordering::Relaxed) {
            if fresh {
                client = make();
            }
            match client.send(&Request::get(path)).await {
                Ok(r) if r.status == 200 => {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r) => {
                    tally
                        .failed
                        .lock()
                        .expect("tally")
                        .push(format!("{} {}", r.status, r.text()))
                }
                Err(e) => tally.failed.lock().expect("tally").push(format!("{e:#}")),
            }
        }
        (name, tally)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_under_load_fails_no_request() {
    for_each_kind(|kind| async move {
        let mut certs = Certs::new();
        let w = World::start(kind, &certs).await;
        let stop = Arc::new(AtomicBool::new(false));
        let (plain, tls) = (loopback(w.plain), loopback(w.tls));
        let direct = certs.tls();
        let keep = direct.clone();
        let loops = vec![
            load(
                "plain 1",
                move || Client::new(plain, Protocol::Http1),
                "/",
                false,
                stop.clone(),
            ),
            load(
                "plain 2",
                move || Client::new(plain, Protocol::Http1),
                "/",
                false,
                stop.clone(),
            ),
            load(
                "via mTLS",
                move || Client::new(plain, Protocol::Http1),
                "/via-tls",
                false,
                stop.clone(),
            ),
            load(
                "TLS kept alive",
                move || Client::new(tls, Protocol::Http1).tls(keep.clone()),
                "/",
                false,
                stop.clone(),
            ),
            load(
                "TLS per request",
                move || Client::new(tls, Protocol::Http1).tls(direct.clone()),
                "/",
                true,
                stop.clone(),
            ),
        ];

        let started = Instant::now();
        let ports = [w.a.port(), w.c.port()];
        let mut last = std::collections::HashMap::new();
        for i in 0..PUSHES {
            let (t, v) = match i % 5 {
                0 | 2 => {
                    let split = if i % 15 == 0 {
                        (0, 1)
                    } else {
                        (1 + i % 7, 1 + i % 5)
                    };
                    (ROUTE, w.cp.set(ROUTE, vec![routes(split)]))
                }
                1 | 3 => {
                    let pick: Vec<u16> = if i % 3 == 0 {
                        ports.to_vec()
                    } else {
                        vec![ports[(i as usize / 2) % 2]]
                    };
                    (ENDPOINT, w.cp.set(ENDPOINT, vec![endpoints("a", &pick)]))
                }
                _ => {
                    certs.rotate((i / 5) % 2 == 0);
                    (SECRET, w.cp.set(SECRET, certs.secrets()))
                }
            };
            last.insert(t, v);
            // Pace by the proxy's answers, as a control plane does with ACKs.
            if i % 10 == 9 {
                assert_eq!(
                    w.outcome(kind, t, v).await,
                    Outcome::Ack,
                    "[{kind}] push {i}"
                );
            }
        }
        for (t, v) in &last {
            assert_eq!(
                w.outcome(kind, t, *v).await,
                Outcome::Ack,
                "[{kind}] last {t}"
            );
        }
        let took = started.elapsed();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let mut failed = Vec::new();
        for l in loops {
            let (name, tally) = l.await.expect("join");
            let ok = tally.ok.load(Ordering::Relaxed);
            let f = tally.failed.into_inner().expect("tally");
            eprintln!("[{kind}] {name}: {ok} ok, {} failed", f.len());
            assert!(ok > 20, "[{kind}] the {name} loop ran: {ok}");
            failed.extend(f.into_iter().take(5).map(|e| format!("{name}: {e}")));
        }
        eprintln!("[{kind}] {PUSHES} pushes in {took:?}");
        assert!(failed.is_empty(), "[{kind}] no request failed: {failed:#?}");

        // The last certificates serve: the listener's on a new handshake, the cluster's once its
        // connection reached max_requests_per_connection and a new one shook hands.
        let mut probe = Client::new(tls, Protocol::Http1).tls(certs.tls());
        let r = probe.send(&Request::get("/")).await.expect("TLS request");
        assert_eq!(r.status, 200, "[{kind}]");
        assert_eq!(
            probe.server_serial.as_deref(),
            Some(certs.server.serial.as_str()),
            "[{kind}] the listener presents the last pushed certificate"
        );
        let hash = format!("Hash={}", cert_sha256(&certs.client.cert()));
        let mut via = Client::new(plain, Protocol::Http1);
        let mut xfcc = Vec::new();
        for _ in 0..30 {
            let r = via.send(&Request::get("/via-tls")).await.expect("via-tls");
            let seen = r
                .echo()
                .and_then(|e| e.header("x-forwarded-client-cert").map(str::to_string))
                .unwrap_or_default();
            if seen.contains(&hash) {
                break;
            }
            xfcc.push(seen);
        }
        assert!(
            xfcc.len() < 30,
            "[{kind}] the cluster presents the last pushed client certificate ({hash}): {:?}",
            &xfcc[xfcc.len().saturating_sub(3)..]
        );
    })
    .await;
}
