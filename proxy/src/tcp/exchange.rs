//! tcp_proxy's metadata exchange stage: Istio's `istio.metadata_exchange` as the chain's network
//! filter (with the downstream, before connecting) and as the cluster's upstream filter (with
//! the upstream, once connected). Each runs only when the connection's TLS negotiated the
//! filter's ALPN protocol; otherwise the bytes flow untouched and the peer stays "unknown".

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::istio::TcpExchangeConfig;
use crate::istio::exchange::{self, ExchangeStats, Exchanged};
use crate::istio::LocalNode;
use crate::tls::TlsInfo;

/// What the exchanges of one tcp_proxy chain share.
#[derive(Debug)]
pub struct TcpExchange {
    /// The chain's network filter, if it has one.
    pub downstream: Option<TcpExchangeConfig>,
    pub local: Arc<LocalNode>,
    pub stats: ExchangeStats,
}

impl TcpExchange {
    /// Runs the exchange on `stream` when `negotiated` is `cfg`'s protocol.
    async fn run<S>(
        &self,
        stream: &mut S,
        cfg: &TcpExchangeConfig,
        negotiated: Option<&[u8]>,
    ) -> Exchanged
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if negotiated != Some(cfg.protocol.as_bytes()) {
            self.stats.alpn_protocol_not_found.inc();
            return Exchanged::default();
        }
        self.stats.alpn_protocol_found.inc();
        exchange::exchange(stream, &self.local.exchange_frame, &self.stats).await
    }

    /// The listener side: with the downstream, when the chain has the filter.
    pub async fn with_downstream<D>(&self, down: &mut D, tls: Option<&TlsInfo>) -> Exchanged
    where
        D: AsyncRead + AsyncWrite + Unpin,
    {
        match &self.downstream {
            Some(cfg) => {
                let alpn = tls.and_then(|t| t.alpn.as_deref());
                self.run(down, cfg, alpn).await
            }
            None => Exchanged::default(),
        }
    }

    /// The cluster side: with the upstream, when the cluster has the filter.
    pub async fn with_upstream<U>(
        &self,
        up: &mut U,
        cfg: Option<&TcpExchangeConfig>,
        alpn: Option<&[u8]>,
    ) -> Exchanged
    where
        U: AsyncRead + AsyncWrite + Unpin,
    {
        match cfg {
            Some(cfg) => self.run(up, cfg, alpn).await,
            None => Exchanged::default(),
        }
    }
}
