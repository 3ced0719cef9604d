//! `envoy.filters.network.set_filter_state`: sets filter state objects when a connection starts
//! (`on_new_connection`), before the chain's terminal filter reads them (tcp_proxy's
//! `envoy.tcp_proxy.cluster`, an ORIGINAL_DST cluster's target, what an internal upstream carries).

use envoy_types::pb::envoy::extensions::filters::network::set_filter_state::v3::Config;
use std::time::SystemTime;

use crate::access_log::LogContext;
use crate::config::{ConfigErrors, Path};
use crate::filter_state::{FilterState, Setters};
use crate::http::server::ConnInfo;

pub const NAME: &str = "envoy.filters.network.set_filter_state";
pub const TYPE: &str = "envoy.extensions.filters.network.set_filter_state.v3.Config";

/// The validated filter.
#[derive(Debug, Clone)]
pub struct SetFilterState {
    on_new_connection: Setters,
}

impl SetFilterState {
    /// Validates `cfg` found at `path` (the filter's `typed_config`). The later stages,
    /// `on_downstream_tls_handshake` and `on_downstream_data`, are errors naming the field.
    pub fn from_proto(cfg: &Config, path: &Path, errors: &mut ConfigErrors) -> SetFilterState {
        for (field, set) in [
            (
                "on_downstream_tls_handshake",
                !cfg.on_downstream_tls_handshake.is_empty(),
            ),
            ("on_downstream_data", !cfg.on_downstream_data.is_empty()),
        ] {
            if set {
                errors.push(
                    path.field(field),
                    "not supported yet (only on_new_connection)",
                );
            }
        }
        SetFilterState {
            on_new_connection: Setters::from_protos(
                &cfg.on_new_connection,
                &path.field("on_new_connection"),
                errors,
            ),
        }
    }

    /// Sets the values on the new connection `info` describes.
    pub fn on_new_connection(&self, info: &ConnInfo, state: &mut FilterState) {
        let ctx = LogContext {
            downstream_remote_address: Some(info.peer),
            downstream_local_address: Some(info.local),
            downstream_direct_remote_address: Some(info.peer),
            requested_server_name: info.requested_server_name.as_deref(),
            connection_id: Some(info.id),
            // Envoy runs this stage before the TLS handshake ends (`on_downstream_tls_handshake`
            // is the later one), so TLS operators print `-` here.
            downstream_tls: None,
            downstream_internal: info.internal_listener.as_deref(),
            filter_state: None,
            ..LogContext::new(SystemTime::now())
        };
        self.on_new_connection.apply(&ctx, state);
    }
}
