//! TLS, client side: a cluster's `UpstreamTlsContext` as a rustls connector (SNI, ALPN, client
//! certificate, server verification), rebuilt when its secrets change.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use remora_certs::{classify_io, RotatingCertResolver, UpstreamCertVerifier, VerifyFailure};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{client::TlsStream, TlsConnector};
use tracing::{debug, warn};

use super::context::{build_common, current_cert, Common, NotReady, ValidationRef};
use super::params::Side;
use super::peer::TlsInfo;
use super::stats::TlsStats;
use crate::config::{ConfigErrors, Path};
use crate::secrets::SecretStore;
use crate::stats::Scope;

struct Ready {
    /// One connector per [`Alpn`] fallback (they differ only when `alpn_protocols` is empty).
    connectors: [TlsConnector; 3],
    /// The configuration without ALPN, for handshakes whose ALPN an HTTP filter overrides.
    base: Arc<ClientConfig>,
    resolver: Option<Arc<RotatingCertResolver>>,
}

/// What ALPN offers when the context configures none: the protocol of the pool connecting (Envoy's
/// ALPN fallback), or nothing for tcp_proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alpn {
    #[default]
    None = 0,
    Http1 = 1,
    Http2 = 2,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::None => Vec::new(),
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::Http2 => vec![b"h2".to_vec()],
        }
    }
}

/// What one connection offers instead of the context's settings: the ALPN list (Istio's
/// `istio.alpn`, or the filter state's `envoy.network.application_protocols`), as Envoy's ALPN
/// override does, and the server name (`envoy.network.upstream_server_name`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides<'a> {
    pub alpn: Option<&'a [Vec<u8>]>,
    pub sni: Option<&'a str>,
}

/// One cluster's TLS client context.
pub struct ClientTls {
    common: Common,
    sni: Option<String>,
    auto_host_sni: bool,
    /// `alpn_protocols`, or the `auto_config` override; `None`: the pool's fallback.
    alpn: Option<Vec<Vec<u8>>>,
    label: String,
    ready: ArcSwapOption<Ready>,
    stats: OnceLock<TlsStats>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("label", &self.label)
            .field("sni", &self.sni)
            .field("ready", &self.ready.load().is_some())
            .finish()
    }
}

/// Why no TLS session to an upstream was established.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the TLS context is not ready: {0}")]
    NotReady(String),
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed ({reason}): {source}")]
    Handshake {
        reason: VerifyFailure,
        source: std::io::Error,
    },
}

impl ClientTls {
    /// Translates an `UpstreamTlsContext` (`path` points at it). `force_alpn` (the `auto_config`
    /// protocols) replaces `alpn_protocols`, as Envoy's ALPN override does.
    pub fn from_proto(
        ctx: &UpstreamTlsContext,
        path: &Path,
        secrets: &SecretStore,
        force_alpn: Option<&[&[u8]]>,
    ) -> Result<Arc<ClientTls>, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let cpath = path.field("common_tls_context");
        let common = build_common(
            &ctx.common_tls_context.clone().unwrap_or_default(),
            Side::Client,
            &cpath,
            secrets,
            &mut errs,
        );
        if ctx.allow_renegotiation {
            errs.push(
                path.field("allow_renegotiation"),
                "TLS renegotiation is not supported",
            );
        }
        if ctx.auto_sni_san_validation {
            errs.push(
                path.field("auto_sni_san_validation"),
                "auto_sni_san_validation is not supported",
            );
        }
        if ctx.max_session_keys.is_some() {
            debug!(path = %path.field("max_session_keys"), "max_session_keys is ignored; rustls keeps its own session cache");
        }
        errs.finish(())?;
        if common.validation.is_none() {
            warn!(context = %path, "UpstreamTlsContext has no validation_context: the upstream's certificate is not verified (as in Envoy)");
        }
        let alpn = match force_alpn {
            Some(f) => Some(f.iter().map(|p| p.to_vec()).collect()),
            None => (!common.alpn.is_empty()).then(|| common.alpn.clone()),
        };
        let tls = Arc::new(ClientTls {
            common,
            sni: (!ctx.sni.is_empty()).then(|| ctx.sni.clone()),
            auto_host_sni: ctx.auto_host_sni,
            alpn,
            label: path.to_string(),
            ready: ArcSwapOption::empty(),
            stats: OnceLock::new(),
        });
        tls.subscribe();
        if let Err(e) = tls.rebuild() {
            warn!(context = %tls.label, reason = %e, "upstream TLS context not ready; connections fail until its secrets arrive");
        }
        Ok(tls)
    }

    fn subscribe(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let on_change = move || {
            if let Some(t) = weak.upgrade() {
                match t.rebuild() {
                    Ok(()) => t.stats().context_update_by_sds.inc(),
                    Err(e) => {
                        warn!(context = %t.label, reason = %e, "upstream TLS context update not applied")
                    }
                }
            }
        };
        let on_change = Arc::new(on_change);
        if let Some(cert) = &self.common.cert {
            let f = on_change.clone();
            cert.subscribe(move || f());
        }
        if let Some(ValidationRef::Secret { entry, .. }) = &self.common.validation {
            entry.subscribe(move || on_change());
        }
    }

    fn rebuild(&self) -> Result<(), NotReady> {
        let validation = match &self.common.validation {
            Some(v) => v.current()?,
            None => None,
        };
        let params = &self.common.params;
        let verifier: Arc<dyn ServerCertVerifier> = match validation {
            Some(v) => UpstreamCertVerifier::builder(v.bundles)
                .san_matchers(v.matchers)
                .build()
                .map_err(|e| NotReady::Invalid(e.to_string()))?,
            None => Arc::new(AnyServerCert(params.provider.clone())),
        };
        let resolver = match &self.common.cert {
            Some(entry) => {
                let cert = current_cert(entry)?;
                Some(
                    match self.ready.load().as_ref().and_then(|r| r.resolver.clone()) {
                        Some(r) => {
                            r.store(cert.key.clone());
                            r
                        }
                        None => Arc::new(RotatingCertResolver::new(cert.key.clone())),
                    },
                )
            }
            None => None,
        };
        let builder = ClientConfig::builder_with_provider(params.provider.clone())
            .with_protocol_versions(&params.versions)
            .map_err(|e| NotReady::Invalid(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let base = match &resolver {
            Some(r) => builder.with_client_cert_resolver(r.clone() as Arc<dyn ResolvesClientCert>),
            None => builder.with_no_client_auth(),
        };
        let connector = |fallback: Alpn| {
            let mut cfg = base.clone();
            cfg.alpn_protocols = self.alpn.clone().unwrap_or_else(|| fallback.protocols());
            TlsConnector::from(Arc::new(cfg))
        };
        self.ready.store(Some(Arc::new(Ready {
            connectors: [
                connector(Alpn::None),
                connector(Alpn::Http1),
                connector(Alpn::Http2),
            ],
            base: Arc::new(base),
            resolver,
        })));
        Ok(())
    }

    /// Registers the `ssl.*` stats in the cluster's scope (`cluster.<name>.`).
    pub fn bind_stats(&self, scope: &Scope) {
        if self.stats.set(TlsStats::new(scope, Side::Client)).is_ok()
            && self.ready.load().is_some()
            && self.common.uses_sds_file()
        {
            self.stats().context_update_by_sds.inc();
        }
    }

    pub fn stats(&self) -> &TlsStats {
        self.stats.get_or_init(TlsStats::default)
    }

    /// Runs the client handshake over a connected stream to `endpoint` (`hostname` is the
    /// endpoint's hostname, for `auto_host_sni`). See [`Overrides`] for what replaces the
    /// context's ALPN and server name.
    pub async fn connect<S>(
        &self,
        stream: S,
        endpoint: SocketAddr,
        hostname: &str,
        alpn: Alpn,
        overrides: Overrides<'_>,
        timeout: Duration,
    ) -> Result<(TlsStream<S>, TlsInfo), ConnectError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Overrides {
            alpn: alpn_override,
            sni: sni_override,
        } = overrides;
        let stats = self.stats();
        let Some(ready) = self.ready.load_full() else {
            stats.secrets_not_ready.inc();
            return Err(ConnectError::NotReady(self.label.clone()));
        };
        // An IP address as the server name sends no SNI.
        // `envoy.network.upstream_server_name` in the downstream filter state wins, as in Envoy.
        let sni = sni_override.or(self
            .sni
            .as_deref()
            .or((self.auto_host_sni && !hostname.is_empty()).then_some(hostname)));
        let name = match sni.map(|s| ServerName::try_from(s.to_string())) {
            Some(Ok(n)) => n,
            _ => ServerName::IpAddress(endpoint.ip().into()),
        };
        let handshake = match alpn_override {
            Some(list) => {
                let mut cfg = (*ready.base).clone();
                cfg.alpn_protocols = list.to_vec();
                TlsConnector::from(Arc::new(cfg)).connect(name, stream)
            }
            None => ready.connectors[alpn as usize].connect(name, stream),
        };
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(tls)) => {
                let (_, conn) = tls.get_ref();
                let info = TlsInfo::from_state(conn, sni);
                stats.succeeded(conn, info.peer.as_ref().and_then(|p| p.signature_scheme));
                Ok((tls, info))
            }
            Ok(Err(e)) => {
                let reason = classify_io(&e);
                stats.failed(reason);
                debug!(%endpoint, %reason, error = %e, "upstream TLS handshake failed");
                Err(ConnectError::Handshake { reason, source: e })
            }
            Err(_) => {
                stats.connection_error.inc();
                Err(ConnectError::Timeout(timeout))
            }
        }
    }
}

/// Envoy's behaviour for an `UpstreamTlsContext` without a validation context: any server
/// certificate is accepted. The handshake signatures are still checked, so the server must hold the
/// key of the certificate it sends.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
