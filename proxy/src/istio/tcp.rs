//! The `istio.stats` network filter on a `tcp_proxy` chain: a connection counts as opened once its
//! upstream attempt is decided (after the TCP metadata exchange, when the chain or cluster runs
//! it), and reports its bytes and its close when either side ends it.

use std::sync::Arc;

use super::labels::{self, Facts, Reporter, Values};
use super::metadata::WorkloadMetadata;
use super::node::LocalNode;
use crate::config::istio::StatsConfig;
use crate::tls::TlsInfo;

/// What a tcp_proxy connection knows about its peers when its labels are made.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpFacts<'a> {
    pub downstream_tls: Option<&'a TlsInfo>,
    pub upstream_tls: Option<&'a TlsInfo>,
    /// The peer's metadata from the TCP metadata exchange.
    pub peer: Option<&'a WorkloadMetadata>,
}

/// The stats filter of one TCP chain, with the local workload.
#[derive(Debug)]
pub struct TcpTelemetry {
    pub local: Arc<LocalNode>,
    pub cfg: StatsConfig,
}

impl TcpTelemetry {
    /// The connection's labels: the peer by the metadata it exchanged (`peer`: the upstream's for
    /// the client reporter, the downstream's otherwise) and its certificate, the destination
    /// service by the cluster.
    pub fn labels(&self, conn: &TcpFacts<'_>, cluster: &str, flags: &str) -> Values {
        let tls = match self.cfg.reporter {
            Reporter::ClientSidecar => conn.upstream_tls,
            _ => conn.downstream_tls,
        };
        let facts = Facts {
            peer: conn.peer,
            peer_san: tls
                .and_then(|t| t.peer.as_ref())
                .and_then(|c| c.uri_sans.first())
                .map(String::as_str),
            local_san: tls
                .and_then(|t| t.local_uri_sans.first())
                .map(String::as_str),
            cluster: Some(cluster),
            flags,
            ..Default::default()
        };
        labels::tcp(self.cfg.reporter, &self.local.metadata, &facts)
    }

    pub fn opened(&self, labels: &Values) {
        self.local.metrics.tcp_opened(labels.clone());
    }

    /// `sent` went to the downstream, `received` came from it.
    pub fn closed(&self, labels: Values, sent: u64, received: u64) {
        self.local.metrics.tcp_report(labels, sent, received, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::istio::metrics::IstioMetrics;

    #[test]
    fn a_connection_opens_and_closes_with_its_bytes() {
        let metrics = IstioMetrics::default();
        let t = TcpTelemetry {
            local: Arc::new(LocalNode::new(None, metrics.clone())),
            cfg: StatsConfig {
                reporter: Reporter::ServerSidecar,
                host_header_fallback: true,
            },
        };
        let l = t.labels(&TcpFacts::default(), "inbound|3306||", "");
        t.opened(&l);
        t.closed(l, 10, 4);
        let mut out = String::new();
        metrics.render(&mut out);
        for family in [
            "istio_tcp_connections_opened_total",
            "istio_tcp_connections_closed_total",
        ] {
            assert!(
                out.contains(&format!("{family}{{reporter=\"destination\"")),
                "{out}"
            );
        }
        let sent = out
            .lines()
            .find(|l| l.starts_with("istio_tcp_sent_bytes_total{"))
            .expect("sent");
        assert!(sent.ends_with(" 10"), "{sent}");
        assert!(
            sent.contains("connection_security_policy=\"none\""),
            "{sent}"
        );
    }
}
