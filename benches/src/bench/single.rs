//! The direct floor (client → backend) and one proxy: HTTP/1.1 and h2c saturation, the fixed rate,
//! TCP bulk.

use std::net::SocketAddr;
use std::path::Path;

use super::{row, start_failure, Bench, Measured, Tables};
use crate::load::{http, open, tcp};
use crate::peers::{Kind, Role};
use crate::ports::{free_port, loopback};
use crate::report::{Row, Status, Table};
use crate::stats::{quantile_ms, ratio};

/// Where the load goes: the backend itself or a proxy's listeners.
struct Target<'a> {
    name: &'a str,
    http1: SocketAddr,
    h2c: SocketAddr,
    tcp: SocketAddr,
    /// Processes whose CPU counts (none for direct).
    roots: Vec<u32>,
}

impl Bench {
    pub(super) async fn direct(&self, t: &mut Tables) {
        let target = Target {
            name: "direct",
            http1: self.backend.http,
            h2c: self.backend.http,
            tcp: self.backend.tcp,
            roots: Vec::new(),
        };
        self.single_workloads(&target, t, None).await;
    }

    pub(super) async fn single(&self, kind: Kind, bin: &Path, t: &mut Tables) {
        use super::Workload::*;
        if ![Http1, H2c, Rate, Tcp].iter().any(|w| self.wants(*w)) {
            return;
        }
        let (http1, h2c, tcp) = (free_port(), free_port(), free_port());
        let role = Role::Single { http1, h2c, tcp };
        match self.start(kind, bin, &role, "single") {
            Ok(p) => {
                let target = Target {
                    name: kind.name(),
                    http1: loopback(http1),
                    h2c: loopback(h2c),
                    tcp: loopback(tcp),
                    roots: vec![p.pid()],
                };
                let tcp_unserved = p.unserved(tcp).map(str::to_string);
                self.single_workloads(&target, t, tcp_unserved).await;
            }
            Err(e) => {
                let status = start_failure(&e, false);
                for table in [&mut t.http1, &mut t.h2c, &mut t.rate, &mut t.tcp] {
                    let n = table.columns.len();
                    table
                        .rows
                        .push(Row::not_run(kind.name(), status.clone(), n));
                }
            }
        }
    }

    async fn single_workloads(
        &self,
        target: &Target<'_>,
        t: &mut Tables,
        tcp_unserved: Option<String>,
    ) {
        use super::Workload::*;
        let p = &self.profile;
        if self.wants(Http1) {
            let (addr, conns) = (target.http1, p.h1_conns);
            self.saturation(target, &mut t.http1, |w| http::h1_closed(addr, conns, w))
                .await;
        }
        if self.wants(H2c) {
            let (addr, conns, streams) = (target.h2c, p.h2_conns, p.h2_streams);
            self.saturation(target, &mut t.h2c, |w| {
                http::h2_closed(addr, conns, streams, w)
            })
            .await;
        }
        if self.wants(Rate) {
            let direct = direct_percentiles(&t.rate);
            self.fixed_rate(
                target.name,
                target.http1,
                &target.roots,
                &direct,
                &mut t.rate,
            )
            .await;
        }
        if self.wants(Tcp) {
            match tcp_unserved {
                Some(why) => {
                    let n = t.tcp.columns.len();
                    t.tcp
                        .rows
                        .push(Row::not_run(target.name, Status::Unsupported(why), n));
                }
                None => self.tcp_bulk(target, &mut t.tcp).await,
            }
        }
    }

    async fn saturation<F, Fut>(&self, target: &Target<'_>, table: &mut Table, load: F)
    where
        F: Fn(crate::load::Window) -> Fut,
        Fut: std::future::Future<Output = crate::load::Outcome> + Send + 'static,
    {
        let mut runs = Vec::new();
        let mut first = None;
        for _ in 0..self.runs {
            let m = self.measure(&target.roots, &load).await;
            runs.push(vec![
                m.rate(),
                m.cpu_us_per_request(!target.roots.is_empty()),
                quantile_ms(&m.out.latency, 0.5),
                quantile_ms(&m.out.latency, 0.99),
                m.out.errors as f64,
            ]);
            first = first.or(m.out.first_error);
        }
        row(target.name, table, runs, first);
    }

    /// The fixed-rate workload against `addr`, CPU summed over `roots`; `direct` holds the direct
    /// path's median p50 and p99 for the added-latency columns.
    pub(super) async fn fixed_rate(
        &self,
        name: &str,
        addr: SocketAddr,
        roots: &[u32],
        direct: &Option<(f64, f64)>,
        table: &mut Table,
    ) {
        let rate = self.profile.rate;
        let mut runs = Vec::new();
        let mut first = None;
        for _ in 0..self.runs {
            let m: Measured = self.measure(roots, |w| open::h1_rate(addr, rate, w)).await;
            let q = |x| quantile_ms(&m.out.latency, x);
            let (p50, p99) = (q(0.5), q(0.99));
            let (d50, d99) = direct.unwrap_or((f64::NAN, f64::NAN));
            runs.push(vec![
                p50,
                q(0.9),
                p99,
                q(0.999),
                p50 - d50,
                p99 - d99,
                m.cpu_us_per_request(!roots.is_empty()),
                m.out.errors as f64,
            ]);
            first = first.or(m.out.first_error);
        }
        row(name, table, runs, first);
    }

    async fn tcp_bulk(&self, target: &Target<'_>, table: &mut Table) {
        let direct = table.value("direct", "Gb/s");
        let (addr, conns) = (target.tcp, self.profile.tcp_conns);
        let mut runs = Vec::new();
        let mut first = None;
        for _ in 0..self.runs {
            let m = self
                .measure(&target.roots, |w| tcp::bulk(addr, conns, w))
                .await;
            let gbps = m.tcp_bytes as f64 * 8.0 / m.secs.max(1e-9) / 1e9;
            let cpu_per_gb = if target.roots.is_empty() || m.tcp_bytes == 0 {
                f64::NAN
            } else {
                m.cpu / (m.tcp_bytes as f64 / 1e9)
            };
            runs.push(vec![
                gbps,
                direct.map_or(f64::NAN, |d| ratio(gbps, d)),
                cpu_per_gb,
                m.out.errors as f64,
            ]);
            first = first.or(m.out.first_error);
        }
        row(target.name, table, runs, first);
    }
}

/// The direct path's median p50 and p99 in a fixed-rate table.
pub(super) fn direct_percentiles(t: &Table) -> Option<(f64, f64)> {
    Some((t.value("direct", "p50 ms")?, t.value("direct", "p99 ms")?))
}
