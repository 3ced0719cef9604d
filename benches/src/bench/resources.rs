//! Resources: idle RSS and bytes per idle keep-alive connection on a fresh proxy, and the time to
//! ready and RSS with a large generated bootstrap.

use std::path::Path;

use super::{row, start_failure, Bench, Tables, Workload};
use crate::load::http;
use crate::peers::{Kind, Role};
use crate::ports::{free_port, loopback};
use crate::procfs;
use crate::report::{Row, Status};

const MB: f64 = 1024.0 * 1024.0;

impl Bench {
    pub(super) async fn memory(&self, kind: Kind, bin: &Path, t: &mut Tables) {
        if !self.wants(Workload::Memory) {
            return;
        }
        let p = &self.profile;
        let [n1, n2] = p.idle_conns;
        let mut runs = Vec::new();
        let mut first = None;
        for _ in 0..self.runs {
            let (http1, h2c, tcp) = (free_port(), free_port(), free_port());
            let proxy = match self.start(kind, bin, &Role::Single { http1, h2c, tcp }, "memory") {
                Ok(x) => x,
                Err(e) => {
                    let n = t.memory.columns.len();
                    t.memory
                        .rows
                        .push(Row::not_run(kind.name(), start_failure(&e, false), n));
                    return;
                }
            };
            let pids = procfs::trees(&[proxy.pid()]);
            tokio::time::sleep(p.settle).await;
            let idle = procfs::rss_bytes(&pids) as f64;
            let mut held = Vec::with_capacity(n2);
            let addr = loopback(http1);
            let mut out = http::open_idle(addr, n1, p.idle_batch, &mut held).await;
            tokio::time::sleep(p.settle).await;
            let at1 = procfs::rss_bytes(&pids) as f64;
            out.merge(http::open_idle(addr, n2.saturating_sub(n1), p.idle_batch, &mut held).await);
            tokio::time::sleep(p.settle).await;
            let at2 = procfs::rss_bytes(&pids) as f64;
            drop(held);
            runs.push(vec![
                idle / MB,
                at1 / MB,
                at2 / MB,
                (at2 - idle) / n2.max(1) as f64,
                out.errors as f64,
            ]);
            first = first.or(out.first_error);
        }
        row(kind.name(), &mut t.memory, runs, first);
    }

    pub(super) async fn scale(&self, kind: Kind, bin: &Path, t: &mut Tables) {
        if !self.wants(Workload::Scale) {
            return;
        }
        if !kind.reads_envoy_config() {
            let n = t.scale.columns.len();
            t.scale.rows.push(Row::not_run(
                kind.name(),
                Status::Unsupported("no generated equivalent of an Envoy bootstrap".into()),
                n,
            ));
            return;
        }
        let p = &self.profile;
        let mut runs = Vec::new();
        for _ in 0..self.runs {
            let role = Role::Scale {
                listen: free_port(),
                routes: p.scale_routes,
                clusters: p.scale_clusters,
            };
            match self.start(kind, bin, &role, "scale") {
                Ok(proxy) => {
                    let rss = procfs::rss_bytes(&procfs::trees(&[proxy.pid()])) as f64;
                    runs.push(vec![proxy.startup.as_secs_f64() * 1e3, rss / MB]);
                }
                Err(e) => {
                    let n = t.scale.columns.len();
                    t.scale
                        .rows
                        .push(Row::not_run(kind.name(), start_failure(&e, false), n));
                    return;
                }
            }
        }
        row(kind.name(), &mut t.scale, runs, None);
    }
}
