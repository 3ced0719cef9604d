//! Accept, tests: listeners built from Envoy YAML, exercised as a user would see them.

mod config;
mod internal;
mod matcher;
mod select;
mod serve;

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};

use super::{from_proto, ListenerConfig};
use crate::config::parse::{from_yaml, ParseOptions};
use crate::config::{ConfigErrors, Path};

/// The chain payload in tests: the chain's name.
pub(super) fn build(yaml: &str) -> Result<ListenerConfig<String>, ConfigErrors> {
    let l: Listener = from_yaml(yaml, ParseOptions::default()).map_err(ConfigErrors::from)?;
    let path = Path::root("static_resources").field("listeners").index(0);
    from_proto(&l, &path, &mut |fc: &FilterChain, _: &Path| {
        Ok(fc.name.clone())
    })
}

pub(super) fn build_ok(yaml: &str) -> ListenerConfig<String> {
    match build(yaml) {
        Ok(c) => c,
        Err(e) => panic!("listener should build:\n{e}"),
    }
}
