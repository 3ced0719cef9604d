//! `envoy.filters.http.set_filter_state`: sets filter state objects on each request
//! (`on_request_headers`) from format strings over its headers. The request's objects start from
//! the connection's; an ORIGINAL_DST cluster reads `envoy.network.transport_socket.original_dst_address`
//! from them, and `%FILTER_STATE%` in the connection manager's access logs sees them.

use envoy_types::pb::envoy::extensions::filters::http::set_filter_state::v3::Config;

use crate::access_log::LogContext;
use crate::config::{ConfigErrors, Path};
use crate::filter_state::{FilterState, Setters};

pub const TYPE: &str = "envoy.extensions.filters.http.set_filter_state.v3.Config";

/// Validates the filter's `typed_config` found at `path`.
pub fn from_proto(cfg: &Config, path: &Path, errors: &mut ConfigErrors) -> Setters {
    Setters::from_protos(
        &cfg.on_request_headers,
        &path.field("on_request_headers"),
        errors,
    )
}

/// Sets the values for the request `ctx` describes.
pub fn decode(setters: &Setters, ctx: &LogContext<'_>, state: &mut FilterState) {
    setters.apply(ctx, state);
}
