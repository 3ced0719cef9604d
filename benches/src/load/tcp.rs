//! TCP bulk load: connections that write as fast as the path takes; the backend's sink counts the
//! bytes that arrived.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::AsyncWriteExt;

use super::{join, Outcome, Window};

const CHUNK: usize = 64 * 1024;

pub async fn bulk(addr: SocketAddr, conns: usize, w: Window) -> Outcome {
    let tasks = (0..conns)
        .map(|_| {
            tokio::spawn(async move {
                let mut out = Outcome::default();
                let mut s = match super::http::tcp(addr).await {
                    Ok(s) => s,
                    Err(e) => {
                        out.fail(e);
                        return out;
                    }
                };
                let buf = vec![0x5au8; CHUNK];
                while Instant::now() < w.end {
                    if let Err(e) = s.write_all(&buf).await {
                        out.fail(e);
                        break;
                    }
                }
                let _ = s.shutdown().await;
                out
            })
        })
        .collect();
    join(tasks).await
}
