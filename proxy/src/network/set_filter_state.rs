//! `envoy.filters.network.set_filter_state`: sets filter state objects when a connection starts
//! (`on_new_connection`) and, for TLS, once its handshake is done (`on_downstream_tls_handshake`),
//! before the chain's terminal filter reads them (tcp_proxy's
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
    on_downstream_tls_handshake: Setters,
}

impl SetFilterState {
    /// Validates `cfg` found at `path` (the filter's `typed_config`). `on_downstream_data` is an
    /// error naming the field.
    pub fn from_proto(cfg: &Config, path: &Path, errors: &mut ConfigErrors) -> SetFilterState {
        if !cfg.on_downstream_data.is_empty() {
            errors.push(
                path.field("on_downstream_data"),
                "not supported yet (on_new_connection and on_downstream_tls_handshake are)",
            );
        }
        SetFilterState {
            on_new_connection: Setters::from_protos(
                &cfg.on_new_connection,
                &path.field("on_new_connection"),
                errors,
            ),
            on_downstream_tls_handshake: Setters::from_protos(
                &cfg.on_downstream_tls_handshake,
                &path.field("on_downstream_tls_handshake"),
                errors,
            ),
        }
    }

    /// Sets the values on the new connection `info` describes; for a TLS connection, then the
    /// values of the handshake stage, which see its TLS.
    pub fn on_new_connection(&self, info: &ConnInfo, state: &mut FilterState) {
        // Envoy's on_new_connection already sees a TLS chain's handshake (checked against Envoy
        // 1.40), so both stages read the TLS operators.
        let tls = info.tls.as_deref();
        self.stage(&self.on_new_connection, info, tls, state);
        if tls.is_some() {
            self.stage(&self.on_downstream_tls_handshake, info, tls, state);
        }
    }

    fn stage(
        &self,
        setters: &Setters,
        info: &ConnInfo,
        tls: Option<&crate::tls::TlsInfo>,
        state: &mut FilterState,
    ) {
        if setters.is_empty() {
            return;
        }
        let ctx = LogContext {
            downstream_remote_address: Some(info.peer),
            downstream_local_address: Some(info.local),
            downstream_direct_remote_address: Some(info.peer),
            requested_server_name: info.requested_server_name.as_deref(),
            connection_id: Some(info.id),
            downstream_tls: tls,
            downstream_internal: info.internal_listener.as_deref(),
            filter_state: None,
            ..LogContext::new(SystemTime::now())
        };
        setters.apply(&ctx, state);
    }
}
