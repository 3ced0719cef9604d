//! New-connection mTLS load: every request is a fresh TCP connection with a full handshake (session
//! resumption is off) presenting the outbound sidecar's certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::http::{h1_get, h1_over, tcp, timed};
use super::{join, Outcome, Window};

async fn one(
    addr: SocketAddr,
    connector: &TlsConnector,
    name: &ServerName<'static>,
) -> anyhow::Result<()> {
    let stream =
        timed(async { Ok(connector.connect(name.clone(), tcp(addr).await?).await?) }).await?;
    let mut send = h1_over(stream).await?;
    h1_get(&mut send, true).await
}

/// `concurrency` clients in closed loop, each connecting, requesting once and closing.
pub async fn handshakes(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    server_name: &'static str,
    concurrency: usize,
    w: Window,
) -> Outcome {
    let name = match ServerName::try_from(server_name) {
        Ok(n) => n,
        Err(e) => {
            let mut out = Outcome::default();
            out.fail(e);
            return out;
        }
    };
    let connector = TlsConnector::from(cfg);
    let tasks = (0..concurrency)
        .map(|_| {
            let connector = connector.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let mut out = Outcome::default();
                while Instant::now() < w.end {
                    let t0 = Instant::now();
                    match one(addr, &connector, &name).await {
                        Ok(()) => out.record(&w, t0, Instant::now()),
                        Err(e) => out.fail(e),
                    }
                }
                out
            })
        })
        .collect();
    join(tasks).await
}
