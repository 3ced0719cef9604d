//! Transport to the control plane: an HTTP/2 gRPC channel over TCP, TLS (rustls, ring) or a Unix
//! domain socket, with keepalive pings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::XdsError;

/// Where the control plane is and how to reach it.
#[derive(Debug, Clone)]
pub struct XdsEndpoint {
    target: Target,
    connect_timeout: Duration,
    keepalive: Option<(Duration, Duration)>,
    metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
}

#[derive(Debug, Clone)]
enum Target {
    Tcp(Endpoint),
    Tls {
        endpoint: Endpoint,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    },
    Unix {
        endpoint: Endpoint,
        path: PathBuf,
    },
}

fn endpoint(uri: &str) -> Result<Endpoint, XdsError> {
    Endpoint::from_shared(uri.to_string()).map_err(|source| XdsError::InvalidUri {
        uri: uri.to_string(),
        source,
    })
}

/// The host of a URI without IPv6 brackets.
fn host(uri: &Uri) -> &str {
    let host = uri.host().unwrap_or_default();
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

impl XdsEndpoint {
    /// Plaintext HTTP/2 over TCP: `http://host:port`.
    pub fn tcp(uri: &str) -> Result<Self, XdsError> {
        Ok(Self::with_target(Target::Tcp(endpoint(uri)?)))
    }

    /// TLS over TCP with `config` (rustls; its ALPN is set to `h2`): `https://host:port`. The server
    /// name checked against the certificate is the URI's host unless [`Self::tls_server_name`] says
    /// otherwise.
    pub fn tls(uri: &str, config: Arc<rustls::ClientConfig>) -> Result<Self, XdsError> {
        let origin = endpoint(uri)?;
        let name = host(origin.uri()).to_string();
        let server_name =
            ServerName::try_from(name.clone()).map_err(|_| XdsError::InvalidServerName(name))?;
        // The connector does TLS itself, so tonic must see a plain URI to dial; requests still carry
        // the https origin.
        let plain = origin.uri().to_string().replacen("https://", "http://", 1);
        let endpoint = endpoint(&plain)?.origin(origin.uri().clone());
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self::with_target(Target::Tls {
            endpoint,
            config: Arc::new(config),
            server_name,
        }))
    }

    /// HTTP/2 over a Unix domain socket (Istio's `./etc/istio/proxy/XDS`, the SPIFFE workload API
    /// socket for SDS).
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        // The authority only fills `:authority`; the connector ignores it.
        let endpoint = Endpoint::from_static("http://localhost");
        Self::with_target(Target::Unix {
            endpoint,
            path: path.into(),
        })
    }

    fn with_target(target: Target) -> Self {
        Self {
            target,
            connect_timeout: Duration::from_secs(5),
            keepalive: Some((Duration::from_secs(30), Duration::from_secs(20))),
            metadata: Vec::new(),
        }
    }

    /// Overrides the TLS server name (SNI and certificate check). No effect on other transports.
    pub fn tls_server_name(mut self, name: &str) -> Result<Self, XdsError> {
        if let Target::Tls { server_name, .. } = &mut self.target {
            *server_name = ServerName::try_from(name.to_string())
                .map_err(|_| XdsError::InvalidServerName(name.to_string()))?;
        }
        Ok(self)
    }

    /// How long establishing the connection may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// HTTP/2 PING every `interval`, closing the connection when one is not answered within
    /// `timeout` (default 30 s / 20 s), so a silently dead control plane is noticed.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive = Some((interval, timeout));
        self
    }

    /// Disables HTTP/2 keepalive pings.
    pub fn no_keepalive(mut self) -> Self {
        self.keepalive = None;
        self
    }

    /// Adds gRPC initial metadata sent on every stream (Envoy's `grpc_service.initial_metadata`).
    pub fn metadata(mut self, key: &str, value: &str) -> Result<Self, XdsError> {
        let invalid = |message: String| XdsError::InvalidMetadata {
            key: key.to_string(),
            message,
        };
        let k = key
            .parse::<AsciiMetadataKey>()
            .map_err(|e| invalid(e.to_string()))?;
        let v = value
            .parse::<AsciiMetadataValue>()
            .map_err(|e| invalid(e.to_string()))?;
        self.metadata.push((k, v));
        Ok(self)
    }

    fn configure(&self, endpoint: &Endpoint) -> Endpoint {
        let mut e = endpoint.clone().connect_timeout(self.connect_timeout);
        if let Some((interval, timeout)) = self.keepalive {
            e = e
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(timeout)
                .keep_alive_while_idle(true);
        }
        e
    }

    /// Opens a channel (the connection is established before this returns).
    pub(crate) async fn connect(&self) -> Result<Channel, XdsError> {
        match &self.target {
            Target::Tcp(endpoint) => self.configure(endpoint).connect().await,
            Target::Tls {
                endpoint,
                config,
                server_name,
            } => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let server_name = server_name.clone();
                let connect = tower::service_fn(move |uri: Uri| {
                    let connector = connector.clone();
                    let server_name = server_name.clone();
                    async move {
                        let port = uri.port_u16().unwrap_or(443);
                        let tcp = TcpStream::connect((host(&uri), port)).await?;
                        tcp.set_nodelay(true)?;
                        let tls = connector.connect(server_name, tcp).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(tls))
                    }
                });
                self.configure(endpoint)
                    .connect_with_connector(connect)
                    .await
            }
            Target::Unix { endpoint, path } => {
                let path = path.clone();
                let connect = tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                });
                self.configure(endpoint)
                    .connect_with_connector(connect)
                    .await
            }
        }
        .map_err(XdsError::Connect)
    }

    /// Wraps a request stream with the configured metadata.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        for (k, v) in &self.metadata {
            request.metadata_mut().append(k.clone(), v.clone());
        }
        request
    }
}
