//! `io.istio.http.connect_authority` (istio/proxy): on routes whose per-filter config enables it,
//! the request's authority (a CONNECT's `host:port`) and the configured tunnel port go into the
//! filter state as `istio.set_internal_dst_address`, shared with the upstream connection. An
//! internal listener's `istio.set_internal_dst_address` listener filter then gives its connection
//! that address as its local address and the ORIGINAL_DST target. The filter's own config is not
//! read, as in istio/proxy: only the most specific per-route config acts.

use prost::Name;

use crate::filter_state::{FilterState, Object, Sharing, Value, ISTIO_INTERNAL_DST};

pub const TYPE: &str = "io.istio.http.connect_authority.Config";

/// `io.istio.http.connect_authority.Config`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Config {
    /// Per-route switch.
    #[prost(bool, tag = "1")]
    pub enabled: bool,
    /// The tunnel port of the ORIGINAL_DST target.
    #[prost(uint32, tag = "2")]
    pub port: u32,
}

impl Name for Config {
    const NAME: &'static str = "Config";
    const PACKAGE: &'static str = "io.istio.http.connect_authority";
}

/// A route's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSettings {
    pub enabled: bool,
    pub port: u32,
}

impl From<&Config> for RouteSettings {
    fn from(c: &Config) -> Self {
        RouteSettings {
            enabled: c.enabled,
            port: c.port,
        }
    }
}

/// Records `authority` when the route enables the filter.
pub fn decode(route: Option<&RouteSettings>, authority: Option<&str>, state: &mut FilterState) {
    let (Some(r), Some(authority)) = (route.filter(|r| r.enabled), authority) else {
        return;
    };
    state.set(Object {
        key: ISTIO_INTERNAL_DST.to_string(),
        value: Value::Authority {
            authority: authority.to_string(),
            port: r.port,
        },
        read_only: false,
        sharing: Sharing::Transitive,
    });
}
