//! TLS, server side: a listener chain's `DownstreamTlsContext` as a rustls acceptor, rebuilt when
//! its secrets change, and the handshake of each accepted connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    downstream_tls_context::{OcspStaplePolicy, SessionTicketKeysType},
    DownstreamTlsContext,
};
use remora_certs::{classify_io, DownstreamCertVerifier, RotatingCertResolver};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::Acceptor;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{server::TlsStream, LazyConfigAcceptor};
use tracing::{debug, warn};

use super::context::{build_common, current_cert, Common, NotReady};
use super::params::Side;
use super::peer::TlsInfo;
use super::stats::TlsStats;
use crate::config::{ConfigErrors, Path};
use crate::secrets::SecretStore;
use crate::stats::Store;

/// Envoy has no handshake deadline unless `transport_socket_connect_timeout` is set; a proxy that
/// never gives up on a silent client leaks connections, so remora defaults to this.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct Ready {
    config: Arc<ServerConfig>,
    /// The same without ALPN, for clients that offer none of `alpn_protocols`: Envoy then
    /// negotiates no protocol, where rustls would refuse the handshake.
    no_alpn: Arc<ServerConfig>,
    resolver: Arc<RotatingCertResolver>,
}

/// One filter chain's TLS server context.
pub struct ServerTls {
    common: Common,
    require_client_certificate: bool,
    require_sni: bool,
    stateful_resumption: bool,
    prefer_client_ciphers: bool,
    handshake_timeout: Duration,
    /// Names the chain in logs.
    label: String,
    ready: ArcSwapOption<Ready>,
    stats: OnceLock<TlsStats>,
    last_not_ready_warning: AtomicU64,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("label", &self.label)
            .field("ready", &self.is_ready())
            .finish()
    }
}

/// Why a downstream connection got no TLS session.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("the TLS context is not ready: {0}")]
    NotReady(String),
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed: {reason}: {source}")]
    Handshake {
        reason: remora_certs::VerifyFailure,
        source: std::io::Error,
    },
    #[error("the client sent no SNI and require_sni is set")]
    NoSni,
}

impl ServerTls {
    /// Translates a `DownstreamTlsContext` (`path` points at it). The context may start without
    /// its SDS secrets; it then refuses handshakes until they arrive.
    pub fn from_proto(
        ctx: &DownstreamTlsContext,
        path: &Path,
        secrets: &SecretStore,
        handshake_timeout: Option<Duration>,
    ) -> Result<Arc<ServerTls>, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let common = match &ctx.common_tls_context {
            Some(c) => build_common(
                c,
                Side::Server,
                &path.field("common_tls_context"),
                secrets,
                &mut errs,
            ),
            None => build_common(
                &Default::default(),
                Side::Server,
                &path.field("common_tls_context"),
                secrets,
                &mut errs,
            ),
        };
        if common.cert.is_none() && errs.is_empty() {
            errs.push(path.field("common_tls_context").field("tls_certificates"), "a server TLS context needs a certificate (tls_certificates or tls_certificate_sds_secret_configs)");
        }
        let require_client_certificate = ctx.require_client_certificate.is_some_and(|b| b.value);
        if require_client_certificate && common.validation.is_none() && errs.is_empty() {
            errs.push(
                path.field("require_client_certificate"),
                "require_client_certificate needs a validation context with a trusted CA",
            );
        }
        if matches!(
            OcspStaplePolicy::try_from(ctx.ocsp_staple_policy),
            Ok(OcspStaplePolicy::StrictStapling | OcspStaplePolicy::MustStaple)
        ) {
            errs.push(
                path.field("ocsp_staple_policy"),
                "OCSP stapling is not supported; only LENIENT_STAPLING",
            );
        }
        match &ctx.session_ticket_keys_type {
            Some(SessionTicketKeysType::SessionTicketKeys(_)) => errs.push(
                path.field("session_ticket_keys"),
                "configured session ticket keys are not supported",
            ),
            Some(SessionTicketKeysType::SessionTicketKeysSdsSecretConfig(_)) => errs.push(
                path.field("session_ticket_keys_sds_secret_config"),
                "session ticket keys from SDS are not supported",
            ),
            // rustls issues no stateless tickets unless given a ticketer; nothing to disable.
            Some(SessionTicketKeysType::DisableStatelessSessionResumption(_)) | None => {}
        }
        if ctx.session_timeout.is_some() {
            warn!(path = %path.field("session_timeout"), "session_timeout is ignored");
        }
        errs.finish(())?;
        let tls = Arc::new(ServerTls {
            common,
            require_client_certificate,
            require_sni: ctx.require_sni.is_some_and(|b| b.value),
            stateful_resumption: !ctx.disable_stateful_session_resumption,
            prefer_client_ciphers: ctx.prefer_client_ciphers,
            handshake_timeout: handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
            label: path.to_string(),
            ready: ArcSwapOption::empty(),
            stats: OnceLock::new(),
            last_not_ready_warning: AtomicU64::new(0),
        });
        tls.subscribe();
        if let Err(e) = tls.rebuild() {
            warn!(context = %tls.label, reason = %e, "TLS context not ready; its filter chain refuses connections until its secrets arrive");
        }
        Ok(tls)
    }

    fn subscribe(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        if let Some(cert) = &self.common.cert {
            let w = weak.clone();
            cert.subscribe(move || {
                if let Some(t) = w.upgrade() {
                    t.cert_changed();
                }
            });
        }
        if let Some(super::context::ValidationRef::Secret { entry, .. }) = &self.common.validation {
            entry.subscribe(move || {
                if let Some(t) = weak.upgrade() {
                    t.updated(t.rebuild());
                }
            });
        }
    }

    fn updated(&self, result: Result<(), NotReady>) {
        match result {
            Ok(()) => {
                self.stats().context_update_by_sds.inc();
                debug!(context = %self.label, "TLS context updated");
            }
            Err(e) => warn!(context = %self.label, reason = %e, "TLS context update not applied"),
        }
    }

    /// A new certificate is presented from the next handshake on; open connections keep theirs.
    fn cert_changed(&self) {
        let ready = self.ready.load();
        match (ready.as_ref(), &self.common.cert) {
            (Some(r), Some(entry)) => match current_cert(entry) {
                Ok(c) => {
                    r.resolver.store(c.key.clone());
                    self.updated(Ok(()));
                }
                Err(e) => self.updated(Err(e)),
            },
            _ => self.updated(self.rebuild()),
        }
    }

    /// Builds the rustls config from the secrets' current values.
    fn rebuild(&self) -> Result<(), NotReady> {
        let entry = self
            .common
            .cert
            .as_ref()
            .ok_or_else(|| NotReady::Missing("certificate".into()))?;
        let cert = current_cert(entry)?;
        let validation = match &self.common.validation {
            Some(v) => v.current()?,
            None => None,
        };
        let verifier: Arc<dyn ClientCertVerifier> = match validation {
            Some(v) => DownstreamCertVerifier::builder(v.bundles)
                .san_matchers(v.matchers)
                .require_client_certificate(self.require_client_certificate)
                .build()
                .map_err(|e| NotReady::Invalid(e.to_string()))?,
            None => WebPkiClientVerifier::no_client_auth(),
        };
        let resolver = match self.ready.load().as_ref() {
            Some(r) => {
                r.resolver.store(cert.key.clone());
                r.resolver.clone()
            }
            None => Arc::new(RotatingCertResolver::new(cert.key.clone())),
        };
        let params = &self.common.params;
        let mut cfg = ServerConfig::builder_with_provider(params.provider.clone())
            .with_protocol_versions(&params.versions)
            .map_err(|e| NotReady::Invalid(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver.clone());
        cfg.alpn_protocols = self.common.alpn.clone();
        cfg.ignore_client_order = !self.prefer_client_ciphers;
        if !self.stateful_resumption {
            cfg.session_storage = Arc::new(NoServerSessionStorage {});
            cfg.send_tls13_tickets = 0;
        }
        let mut no_alpn = cfg.clone();
        no_alpn.alpn_protocols.clear();
        self.ready.store(Some(Arc::new(Ready {
            config: Arc::new(cfg),
            no_alpn: Arc::new(no_alpn),
            resolver,
        })));
        Ok(())
    }

    /// Whether handshakes can run (every secret has arrived).
    pub fn is_ready(&self) -> bool {
        self.ready.load().is_some()
    }

    /// Registers the `ssl.*` stats under the listener's prefix (`listener.0.0.0.0_443`). Called
    /// once the listener's stat prefix is known; before that the counters are detached.
    pub fn bind_stats(&self, store: &Store, listener_prefix: &str) {
        let scope = store.scope(format!("{listener_prefix}."));
        if self.stats.set(TlsStats::new(&scope, Side::Server)).is_ok()
            && self.ready.load().is_some()
            && self.common.uses_sds_file()
        {
            self.stats().context_update_by_sds.inc();
        }
    }

    pub fn stats(&self) -> &TlsStats {
        self.stats.get_or_init(TlsStats::default)
    }

    /// The certificate presented now, for `/certs` and tests.
    pub fn current_certificate(&self) -> Option<remora_certs::CertInfo> {
        self.ready
            .load()
            .as_ref()
            .and_then(|r| r.resolver.current_info().ok())
    }

    /// Runs the server handshake on an accepted connection, counting Envoy's `ssl.*` stats.
    pub async fn accept<S>(
        &self,
        stream: S,
        peer: SocketAddr,
    ) -> Result<(TlsStream<S>, TlsInfo), AcceptError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let stats = self.stats();
        let Some(ready) = self.ready.load_full() else {
            stats.secrets_not_ready.inc();
            self.warn_not_ready(peer);
            return Err(AcceptError::NotReady(self.label.clone()));
        };
        let handshake = async {
            let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
            let offered: Option<Vec<&[u8]>> = start.client_hello().alpn().map(|a| a.collect());
            let overlap = offered.is_none_or(|o| {
                ready.config.alpn_protocols.is_empty()
                    || o.iter()
                        .any(|p| ready.config.alpn_protocols.iter().any(|c| c == p))
            });
            let config = if overlap {
                &ready.config
            } else {
                &ready.no_alpn
            };
            start.into_stream(config.clone()).await
        };
        let tls = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let reason = classify_io(&e);
                stats.failed(reason);
                debug!(%peer, %reason, error = %e, "downstream TLS handshake failed");
                return Err(AcceptError::Handshake { reason, source: e });
            }
            Err(_) => {
                stats.connection_error.inc();
                debug!(%peer, timeout = ?self.handshake_timeout, "downstream TLS handshake timed out");
                return Err(AcceptError::Timeout(self.handshake_timeout));
            }
        };
        let (_, conn) = tls.get_ref();
        if self.require_sni && conn.server_name().is_none() {
            stats.connection_error.inc();
            debug!(%peer, "downstream TLS handshake without SNI refused (require_sni)");
            return Err(AcceptError::NoSni);
        }
        let mut info = TlsInfo::from_state(conn, conn.server_name());
        if let Ok(local) = ready.resolver.current_info() {
            info.local_uri_sans = local.uri_sans().to_vec();
        }
        stats.succeeded(conn, info.peer.as_ref().and_then(|p| p.signature_scheme));
        if info.peer.is_none() {
            stats.no_certificate.inc();
        }
        Ok((tls, info))
    }

    /// Warns at most every 10 s per chain; every refused connection still counts in the stat.
    fn warn_not_ready(&self, peer: SocketAddr) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_not_ready_warning.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .last_not_ready_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(context = %self.label, %peer, "closing connection: the TLS context's secrets are not available yet");
        } else {
            debug!(context = %self.label, %peer, "closing connection: TLS context not ready");
        }
    }
}
