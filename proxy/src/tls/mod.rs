//! TLS: Envoy's `envoy.transport_sockets.tls` on listener chains (`DownstreamTlsContext`, the
//! server side) and clusters (`UpstreamTlsContext`, the client side), over tokio-rustls with the
//! verifiers and rotating resolvers of `remora-certs`.
//!
//! Configuration translates once ([`ServerTls::from_proto`], [`ClientTls::from_proto`]); secrets
//! come from the [`crate::secrets::SecretStore`], and a context whose secrets have not arrived
//! refuses handshakes (counting `*_context_secrets_not_ready`) without holding up anything else.

pub mod client;
pub mod context;
pub mod io;
pub mod params;
pub mod peer;
pub mod server;
pub mod stats;
pub mod validation;

#[cfg(test)]
pub(crate) mod tests;

use envoy_types::pb::envoy::config::core::v3::{transport_socket, TransportSocket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, UpstreamTlsContext,
};
use prost::Name;

use crate::config::parse::{any_type_name, unpack_any, ParseOptions};
use crate::config::{ConfigError, ConfigErrors, Path};

pub use client::{Alpn, ClientTls, ConnectError};
pub use io::ClientStream;
pub use peer::{PeerCert, TlsInfo};
pub use server::{AcceptError, ServerTls};

pub const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
const RAW_SOCKET: &str = "envoy.transport_sockets.raw_buffer";
const RAW_TYPE: &str = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";

/// The TLS context `M` of a `transport_socket` (`path` points at it); `None` for `raw_buffer`.
fn context_of<M: prost::Message + Name + Default>(
    ts: &TransportSocket,
    path: &Path,
    opts: ParseOptions,
) -> Result<Option<M>, ConfigErrors> {
    let any = ts
        .config_type
        .as_ref()
        .map(|transport_socket::ConfigType::TypedConfig(a)| a);
    let kind = any.map(any_type_name).unwrap_or_default();
    if ts.name == RAW_SOCKET || kind == RAW_TYPE {
        return Ok(None);
    }
    if ts.name != TLS_SOCKET && kind != M::full_name() {
        return Err(ConfigError::new(
            path.field("name"),
            format!(
                "transport socket \"{}\" is not supported (only {TLS_SOCKET} and {RAW_SOCKET})",
                ts.name
            ),
        )
        .into());
    }
    let Some(any) = any else {
        return Err(ConfigError::new(
            path.field("typed_config"),
            format!("{TLS_SOCKET} needs a typed_config ({})", M::full_name()),
        )
        .into());
    };
    unpack_any::<M>(any, opts)
        .map(Some)
        .map_err(|e| ConfigError::new(path.field(&e.path), e.message).into())
}

/// A listener chain's `transport_socket` as a `DownstreamTlsContext`.
pub fn downstream_context(
    ts: &TransportSocket,
    path: &Path,
    opts: ParseOptions,
) -> Result<Option<DownstreamTlsContext>, ConfigErrors> {
    context_of(ts, path, opts)
}

/// A cluster's `transport_socket` as an `UpstreamTlsContext`.
pub fn upstream_context(
    ts: &TransportSocket,
    path: &Path,
    opts: ParseOptions,
) -> Result<Option<UpstreamTlsContext>, ConfigErrors> {
    context_of(ts, path, opts)
}
