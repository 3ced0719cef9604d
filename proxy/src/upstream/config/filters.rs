//! A cluster's upstream network `filters` → what its connections run after connecting. Only
//! Istio's TCP metadata exchange is known; any other filter is an error naming it.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;

use crate::config::istio::{self as istio_config, TcpExchangeConfig};
use crate::config::parse::ParseOptions;
use crate::config::{ConfigErrors, Path};

/// The cluster's metadata exchange, if its `filters` have one.
pub fn from_cluster(
    c: &Cluster,
    path: &Path,
    errs: &mut ConfigErrors,
) -> Option<TcpExchangeConfig> {
    let mut exchange = None;
    for (i, f) in c.filters.iter().enumerate() {
        let p = path.field("filters").index(i);
        match f.typed_config.as_ref() {
            Some(any) if istio_config::is_tcp_exchange(any) => {
                match istio_config::tcp_exchange(any, &p, ParseOptions::default()) {
                    Ok(x) => exchange = Some(x),
                    Err(e) => errs.extend(e),
                }
            }
            _ => errs.push(
                p,
                format!(
                    "upstream network filter \"{}\" is not supported yet",
                    f.name
                ),
            ),
        }
    }
    exchange
}
