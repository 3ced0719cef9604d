//! Network filters that judge a connection before its chain's terminal filter (the connection
//! manager or tcp_proxy) takes it: `envoy.filters.network.rbac`.

pub mod rbac;

use std::sync::Arc;

use crate::http::server::ConnInfo;

/// A filter chain's non-terminal network filters, in order.
#[derive(Debug, Default, Clone)]
pub struct NetworkFilters {
    rbac: Vec<Arc<rbac::NetworkRbac>>,
}

impl NetworkFilters {
    pub fn push_rbac(&mut self, f: rbac::NetworkRbac) {
        self.rbac.push(Arc::new(f));
    }

    pub fn is_empty(&self) -> bool {
        self.rbac.is_empty()
    }

    /// Whether the connection may go on to the terminal filter; a refused connection is to be
    /// closed (after a filter's `delay_deny`).
    pub async fn admit(&self, info: &ConnInfo) -> bool {
        for f in &self.rbac {
            if !f.admit(info).await {
                return false;
            }
        }
        true
    }
}
