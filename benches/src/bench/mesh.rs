//! The mesh case: two sidecars with mTLS between them (client → outbound → mTLS → inbound →
//! backend), at the fixed rate and with a new-connection handshake load on the inbound side.

use std::path::Path;

use super::single::direct_percentiles;
use super::{row, start_failure, Bench, Tables, Workload};
use crate::load::tls;
use crate::peers::{Kind, Role};
use crate::pki::INBOUND_DNS;
use crate::ports::{free_port, loopback};
use crate::report::Row;

impl Bench {
    pub(super) async fn mesh(&self, kind: Kind, bin: &Path, t: &mut Tables) {
        if !self.wants(Workload::Mesh) && !self.wants(Workload::Handshake) {
            return;
        }
        let inbound_port = free_port();
        let pair = self
            .start(
                kind,
                bin,
                &Role::MeshInbound {
                    listen: inbound_port,
                },
                "inbound",
            )
            .and_then(|inbound| {
                let listen = free_port();
                let role = Role::MeshOutbound {
                    listen,
                    inbound: inbound_port,
                };
                let outbound = self.start(kind, bin, &role, "outbound")?;
                Ok((inbound, outbound, listen))
            });
        let (inbound, outbound, listen) = match pair {
            Ok(p) => p,
            Err(e) => {
                let status = start_failure(&e, true);
                for table in [&mut t.mesh, &mut t.handshake] {
                    let n = table.columns.len();
                    table
                        .rows
                        .push(Row::not_run(kind.name(), status.clone(), n));
                }
                return;
            }
        };
        if self.wants(Workload::Mesh) {
            let direct = direct_percentiles(&t.rate);
            let roots = [outbound.pid(), inbound.pid()];
            self.fixed_rate(kind.name(), loopback(listen), &roots, &direct, &mut t.mesh)
                .await;
        }
        if self.wants(Workload::Handshake) {
            self.handshakes(kind.name(), loopback(inbound_port), inbound.pid(), t)
                .await;
        }
    }

    async fn handshakes(&self, name: &str, addr: std::net::SocketAddr, pid: u32, t: &mut Tables) {
        let cfg = match self.pki.outbound_client() {
            Ok(c) => c,
            Err(e) => {
                let n = t.handshake.columns.len();
                t.handshake.rows.push(Row::not_run(
                    name,
                    crate::report::Status::Failed(format!("client TLS config: {e}")),
                    n,
                ));
                return;
            }
        };
        let clients = self.profile.tls_clients;
        let mut runs = Vec::new();
        let mut first = None;
        for _ in 0..self.runs {
            let cfg = cfg.clone();
            let m = self
                .measure(&[pid], move |w| {
                    tls::handshakes(addr, cfg, INBOUND_DNS, clients, w)
                })
                .await;
            runs.push(vec![
                m.rate(),
                crate::stats::per(m.cpu * 1e3, m.out.requests),
                m.out.errors as f64,
            ]);
            first = first.or(m.out.first_error);
        }
        row(name, &mut t.handshake, runs, first);
    }
}
