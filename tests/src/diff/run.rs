//! Run one fixture on one proxy: start its backends, render, start the proxy, send every case.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::case::{HttpCase, TcpCase};
use super::observe::{Observation, TcpObservation};
use super::Fixture;
use crate::client::{Client, Protocol, Request};
use crate::ports;
use crate::proxy::{Kind, Proxy};
use crate::stack::Env;
use crate::template::render;

/// Everything one proxy answered for one fixture, case by case.
#[derive(Debug)]
pub struct FixtureRun {
    pub kind: Kind,
    pub http: Vec<Observation>,
    pub tcp: Vec<TcpObservation>,
}

/// Start `kind` on the fixture and observe every case, in order.
pub async fn run_fixture(kind: Kind, fixture: &Fixture) -> FixtureRun {
    let env = Env::for_template(&fixture.template).await;
    let config = render(&fixture.template, &env.vars);
    let proxy = Proxy::start(kind, &config).await;
    let mut http = Vec::new();
    for case in &fixture.cases.cases {
        http.push(http_case(&env, case).await);
    }
    let mut tcp = Vec::new();
    for case in &fixture.cases.tcp_cases {
        tcp.push(tcp_case(&env, case).await);
    }
    drop(proxy);
    FixtureRun { kind, http, tcp }
}

fn listener(env: &Env, name: Option<&str>) -> std::net::SocketAddr {
    let name = name.unwrap_or("listener_port");
    let port: u16 = env
        .vars
        .get(name)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("case names listener {name} that the fixture does not use"));
    ports::loopback(port)
}

async fn http_case(env: &Env, case: &HttpCase) -> Observation {
    let spec = &case.request;
    let protocol = match spec.protocol.as_deref() {
        None | Some("h1") => Protocol::Http1,
        Some("h2c") => Protocol::H2c,
        Some(other) => panic!("case {}: unknown protocol {other}", case.name),
    };
    let mut req = Request::new(&spec.method, &spec.path)
        .host(&spec.host)
        .body(spec.body.clone());
    for (n, v) in &spec.headers {
        req = req.header(n, v);
    }
    let mut client = Client::new(listener(env, spec.listener.as_deref()), protocol);
    let repeat = case.repeat.unwrap_or(1);
    let mut first: Option<Observation> = None;
    let mut shares: BTreeMap<String, usize> = BTreeMap::new();
    let mut mismatches = 0;
    for _ in 0..repeat {
        let obs = match client.send(&req).await {
            Ok(r) => Observation::from_response(&r),
            Err(e) => Observation::failed(&e),
        };
        if let Some(echo) = &obs.echo {
            *shares.entry(echo.backend.clone()).or_default() += 1;
            if let Some(h) = &case.header_names_backend {
                if echo.header(h) != Some(echo.backend.as_str()) {
                    mismatches += 1;
                }
            }
        }
        first.get_or_insert(obs);
    }
    let mut obs = first.unwrap_or_default();
    obs.shares = shares;
    obs.sent = repeat;
    obs.backend_header_mismatches = mismatches;
    obs
}

async fn tcp_case(env: &Env, case: &TcpCase) -> TcpObservation {
    let addr = listener(env, Some(&case.listener));
    let before: Vec<usize> = env.tcp.iter().map(|(_, e)| e.connections()).collect();
    let mut obs = TcpObservation::default();
    for _ in 0..case.connections {
        match tcp_exchange(addr, case.send.as_bytes()).await {
            Some(true) => obs.echoed += 1,
            _ => obs.closed += 1,
        }
    }
    for ((name, echo), b) in env.tcp.iter().zip(before) {
        let n = echo.connections() - b;
        if n > 0 {
            obs.shares.insert(name.clone(), n);
        }
    }
    obs
}

/// `Some(true)` when the bytes came back, `Some(false)` when the proxy closed instead.
async fn tcp_exchange(addr: std::net::SocketAddr, data: &[u8]) -> Option<bool> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    if s.write_all(data).await.is_err() {
        return Some(false);
    }
    let mut got = vec![0u8; data.len()];
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got)).await;
    Some(matches!(read, Ok(Ok(_))) && got == data)
}
