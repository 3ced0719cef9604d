//! Errors of the xDS client: configuration mistakes found at build time and stream failures that
//! trigger a reconnect.

/// An xDS client error.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    /// The control plane address is not a usable URI.
    #[error("invalid xDS server URI {uri:?}: {source}")]
    InvalidUri {
        /// The URI as given.
        uri: String,
        /// Why tonic rejected it.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS server name (SNI and certificate check) is not a DNS name or an IP address.
    #[error("invalid TLS server name {0:?}")]
    InvalidServerName(String),
    /// A header given for the stream's initial metadata is not valid gRPC metadata.
    #[error("invalid initial metadata {key:?}: {message}")]
    InvalidMetadata {
        /// The header name.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// Two handlers were registered for the same type URL.
    #[error("two handlers for {0}")]
    DuplicateHandler(String),
    /// Without ADS every type needs its own discovery service, and this type has none.
    #[error("no non-aggregated discovery service for {0}; use ADS")]
    NoService(String),
    /// Connecting to the control plane failed.
    #[error("connecting to the xDS server: {0}")]
    Connect(#[source] tonic::transport::Error),
    /// The discovery stream failed with a gRPC status.
    #[error("xDS stream failed: {0}")]
    Rpc(#[source] tonic::Status),
    /// The server ended the discovery stream.
    #[error("xDS stream closed by the server")]
    Closed,
}
