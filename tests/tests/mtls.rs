//! Inbound mutual TLS with SPIFFE identities (Istio's PeerAuthentication STRICT in Envoy form):
//! the right workload gets through, and every wrong client is refused with the handshake failure
//! and the listener `ssl.*` counter Envoy gives, while the proxy keeps serving good clients.
//!
//! Certificates are minted per test with the dev CA. Every test runs on each selected proxy kind.

use std::collections::BTreeMap;

use remora_tests::access_log::wait_for_lines;
use remora_tests::backend::Echo;
use remora_tests::peers::{delta, line_value, stats_with_prefix, MeshStack, Run, TlsClient};
use remora_tests::pki::{cert_sha256, istio_id, Pki};
use remora_tests::proxy::Kind;
use remora_tests::select::for_each_kind;
use remora_tests::template::Vars;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STRICT: &str = "mtls/strict.yaml";

/// The STRICT fixture's PKI: the server and the one client identity it accepts.
fn strict_pki() -> Pki {
    let mut pki = Pki::new();
    pki.issue("server", &istio_id("server"), &["server.mesh"]);
    pki.issue("client", &istio_id("client"), &[]);
    pki
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("join")
}

/// The good client: the accepted identity, verifying the server against the mesh root.
fn good_client(pki: &Pki) -> TlsClient {
    TlsClient::new("server.mesh")
        .cert(pki.get("client"))
        .ca(pki.ca_pem())
}

fn status_of(run: &Run) -> u16 {
    run.stdout
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

fn body_of(run: &Run) -> &str {
    run.stdout.rsplit_once('\n').map(|(b, _)| b).unwrap_or("")
}

async fn assert_good_client_served(kind: Kind, s: &MeshStack, pki: &Pki, after: &str) {
    let port = s.port("listener_port");
    let c = good_client(pki);
    let r = blocking(move || c.curl(port, "/after")).await;
    assert_eq!(
        status_of(&r),
        200,
        "[{kind}] good client after {after}: {r:?}"
    );
}

/// Runs `attempt`, then returns the listener's `ssl.*` counters that moved.
async fn ssl_delta<F>(s: &MeshStack, attempt: F) -> (Run, BTreeMap<String, u64>)
where
    F: FnOnce() -> Run + Send + 'static,
{
    let prefix = format!("{}ssl.", s.listener_prefix("listener_port"));
    let before = stats_with_prefix(s.admin(), &prefix).await;
    let run = blocking(attempt).await;
    // Envoy updates the counter as the connection closes, which can trail the client's exit.
    let mut d = BTreeMap::new();
    for _ in 0..40 {
        d = delta(&before, &stats_with_prefix(s.admin(), &prefix).await);
        if !d.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let d = d
        .into_iter()
        .map(|(n, v)| (n.trim_start_matches(&prefix).to_string(), v))
        .collect();
    (run, d)
}

fn counters(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
}

/// Counters that a successful TLS 1.3 handshake with the dev CA's ECDSA P-256 keys moves, for an
/// OpenSSL client (curl, s_client), whose first cipher choice the server follows.
fn handshake_counters() -> BTreeMap<String, u64> {
    counters(&[
        ("ciphers.TLS_AES_256_GCM_SHA384", 1),
        ("curves.X25519", 1),
        ("handshake", 1),
        ("sigalgs.ecdsa_secp256r1_sha256", 1),
        ("versions.TLSv1.3", 1),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_accepts_the_right_identity_with_curl_and_s_client() {
    for_each_kind(|kind| async move {
        let pki = strict_pki();
        let s = MeshStack::start(kind, STRICT, &pki, &Vars::new()).await;
        let port = s.port("listener_port");

        let c = good_client(&pki);
        let (r, d) = ssl_delta(&s, move || c.curl(port, "/hello")).await;
        assert_eq!(status_of(&r), 200, "[{kind}] {r:?}");
        let echo: Echo = serde_json::from_str(body_of(&r)).expect("echo body");
        assert_eq!(
            (echo.backend.as_str(), echo.path.as_str()),
            ("app", "/hello")
        );
        assert_eq!(
            d,
            handshake_counters(),
            "[{kind}] ssl counters of one good handshake"
        );

        // XFCC as Envoy builds it for SANITIZE_SET + uri: By (our URI SAN), Hash (SHA-256 of the
        // client's DER), URI (the client's SPIFFE ID).
        let hash = cert_sha256(&pki.get("client").cert());
        assert_eq!(
            echo.header("x-forwarded-client-cert"),
            Some(
                format!(
                    "By={};Hash={hash};URI={}",
                    istio_id("server"),
                    istio_id("client")
                )
                .as_str()
            ),
            "[{kind}] {:?}",
            echo.headers
        );

        // A client-sent XFCC is replaced, not appended to (SANITIZE_SET).
        let c = good_client(&pki)
            .arg("-H")
            .arg("x-forwarded-client-cert: By=spiffe://evil/x;URI=spiffe://evil/y");
        let r = blocking(move || c.curl(port, "/spoof")).await;
        let echo: Echo = serde_json::from_str(body_of(&r)).expect("echo body");
        let xfcc = echo.header("x-forwarded-client-cert").unwrap_or("");
        assert!(
            !xfcc.contains("evil") && xfcc.ends_with(&format!("URI={}", istio_id("client"))),
            "[{kind}] {xfcc}"
        );

        // The access log names the peer and local identities. %REQUESTED_SERVER_NAME% is set by
        // the tls_inspector only, so without one it is `-` even though curl sent SNI.
        let lines = wait_for_lines(&s.env.file("access.log"), 2).await;
        let serial = &pki.get("client").serial;
        assert_eq!(
            lines[0],
            format!(
                "peer={} local={} tls=TLSv1.3 sni=- serial={serial} code=200",
                istio_id("client"),
                istio_id("server")
            ),
            "[{kind}] access log"
        );

        // openssl s_client: handshake, verified server, HTTP over it.
        let c = good_client(&pki);
        let r = blocking(move || {
            c.s_client(
                port,
                &[],
                b"GET /s HTTP/1.1\r\nHost: server.mesh\r\nConnection: close\r\n\r\n",
            )
        })
        .await;
        assert!(r.stdout.contains("HTTP/1.1 200 OK"), "[{kind}] {}", r.all());
        assert_eq!(
            line_value(&r.stdout, "Verify return code:"),
            Some("0 (ok)"),
            "[{kind}] {}",
            r.all()
        );
        assert!(r.stdout.contains("TLSv1.3"), "[{kind}] {}", r.stdout);
    })
    .await;
}

/// What a refused client saw: the TLS alert the server sent (`SSL alert number N` in
/// s_client's error, `None` when the connection just closed) and the `ssl.*` counters that moved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    case: &'static str,
    got_200: bool,
    alert: Option<u32>,
    counters: BTreeMap<String, u64>,
}

fn alert_number(text: &str) -> Option<u32> {
    let at = text.find("SSL alert number ")?;
    text[at + 17..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: server.mesh\r\nConnection: close\r\n\r\n";

fn expect(case: &'static str, alert: Option<u32>, counter: &str) -> Refusal {
    Refusal {
        case,
        got_200: false,
        alert,
        counters: counters(&[(counter, 1)]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refuses_wrong_clients_and_keeps_serving() {
    for_each_kind(|kind| async move {
        let mut pki = strict_pki();
        pki.issue_expired("expired", &istio_id("client"));
        pki.issue("wrong_sa", &istio_id("intruder"), &[]);
        pki.add_ca("other_ca", "cluster.local");
        pki.issue_from(
            "other_ca",
            "foreign",
            &istio_id("client"),
            &Default::default(),
        );
        pki.add_ca("other_td", "other.domain");
        pki.issue_from(
            "other_td",
            "other_td_client",
            "spiffe://other.domain/ns/default/sa/client",
            &Default::default(),
        );
        let s = MeshStack::start(kind, STRICT, &pki, &Vars::new()).await;
        let port = s.port("listener_port");
        let ca = pki.ca_pem().to_path_buf();
        let anonymous = TlsClient::new("server.mesh").ca(&ca);
        let with = |name: &str| TlsClient::new("server.mesh").cert(pki.get(name)).ca(&ca);

        // (case, client, s_client flags). s_client sends a request and reads until the server
        // closes, so a TLS 1.3 server's post-handshake alert is always seen.
        let attempts: Vec<(&'static str, TlsClient, &'static [&'static str])> = vec![
            ("no client certificate", anonymous, &[]),
            ("expired certificate", with("expired"), &[]),
            ("certificate from another CA", with("foreign"), &[]),
            ("wrong SPIFFE identity", with("wrong_sa"), &[]),
            ("another trust domain", with("other_td_client"), &[]),
            ("TLS 1.2 below the minimum", with("client"), &["-tls1_2"]),
        ];
        let mut seen = Vec::new();
        for (case, client, flags) in attempts {
            let (run, d) = ssl_delta(&s, move || client.s_client(port, flags, REQUEST)).await;
            seen.push(Refusal {
                case,
                got_200: run.stdout.contains("HTTP/1.1 200"),
                alert: alert_number(&run.all()),
                counters: d,
            });
            assert_good_client_served(kind, &s, &pki, case).await;
        }

        let (run, d) = ssl_delta(&s, move || {
            remora_tests::peers::run(
                "curl",
                &[
                    "-sS".into(),
                    "--max-time".into(),
                    "10".into(),
                    format!("http://127.0.0.1:{port}/"),
                ],
                b"",
                std::time::Duration::from_secs(15),
            )
        })
        .await;
        assert!(
            matches!(run.code, Some(52) | Some(56)),
            "[{kind}] plaintext: curl should see an empty reply or a reset: {run:?}"
        );
        seen.push(Refusal {
            case: "plaintext HTTP",
            got_200: run.stdout.contains("200"),
            alert: None,
            counters: d,
        });
        assert_good_client_served(kind, &s, &pki, "plaintext HTTP").await;

        let prefix = format!("{}ssl.", s.listener_prefix("listener_port"));
        let before = stats_with_prefix(s.admin(), &prefix).await;
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let noise: Vec<u8> = (0..512u32).map(|i| (i * 7919 % 251) as u8).collect();
        tcp.write_all(&noise).await.expect("write noise");
        let mut reply = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tcp.read_to_end(&mut reply),
        )
        .await;
        assert!(
            read.is_ok(),
            "[{kind}] random bytes: the proxy did not close"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let after = stats_with_prefix(s.admin(), &prefix).await;
        seen.push(Refusal {
            case: "random bytes",
            got_200: false,
            // Whatever came back must not be HTTP; an alert record starts 0x15 0x03.
            alert: match reply.as_slice() {
                [0x15, 0x03, _, _, _, _level, desc, ..] => Some(u32::from(*desc)),
                _ => None,
            },
            counters: delta(&before, &after)
                .into_iter()
                .map(|(n, v)| (n.trim_start_matches(&prefix).to_string(), v))
                .collect(),
        });
        assert_good_client_served(kind, &s, &pki, "random bytes").await;

        // Envoy 1.40 (BoringSSL). Random bytes parse as a record of an unknown version, hence
        // protocol_version; plaintext HTTP gets no alert, just the close. TLS alerts: 116 certificate_required, 45 certificate_expired,
        // 48 unknown_ca, 46 certificate_unknown, 70 protocol_version.
        let want = vec![
            expect("no client certificate", Some(116), "fail_verify_no_cert"),
            expect("expired certificate", Some(45), "fail_verify_error"),
            expect("certificate from another CA", Some(48), "fail_verify_error"),
            expect("wrong SPIFFE identity", Some(46), "fail_verify_san"),
            expect("another trust domain", Some(48), "fail_verify_error"),
            expect("TLS 1.2 below the minimum", Some(70), "connection_error"),
            expect("plaintext HTTP", None, "connection_error"),
            expect("random bytes", Some(70), "connection_error"),
        ];
        assert_eq!(seen, want, "[{kind}] refusals");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_istio_peer_exchange_is_negotiated_when_offered() {
    for_each_kind(|kind| async move {
        let pki = strict_pki();
        let s = MeshStack::start(kind, STRICT, &pki, &Vars::new()).await;
        let port = s.port("listener_port");
        for (offer, want) in [
            ("istio-peer-exchange,istio", "istio-peer-exchange"),
            ("istio,h2", "h2"),
            ("http/1.1", "http/1.1"),
        ] {
            let c = good_client(&pki);
            let r = blocking(move || c.s_client(port, &["-alpn", offer], REQUEST)).await;
            assert_eq!(
                line_value(&r.stdout, "ALPN protocol:"),
                Some(want),
                "[{kind}] offered {offer}:\n{}",
                r.all()
            );
        }
        // Nothing in common: Envoy proceeds without ALPN rather than failing the handshake.
        let c = good_client(&pki);
        let r = blocking(move || c.s_client(port, &["-alpn", "istio"], REQUEST)).await;
        assert!(
            r.stdout.contains("No ALPN negotiated"),
            "[{kind}] offered only istio:\n{}",
            r.all()
        );
    })
    .await;
}
