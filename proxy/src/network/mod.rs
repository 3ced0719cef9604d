//! Network filters that judge a connection before its chain's terminal filter (the connection
//! manager or tcp_proxy) takes it: `envoy.filters.network.rbac` and
//! `envoy.filters.network.set_filter_state`.

pub mod rbac;
pub mod set_filter_state;

use std::sync::Arc;

use crate::http::server::ConnInfo;

/// A filter chain's non-terminal network filters, in order.
#[derive(Debug, Default, Clone)]
pub struct NetworkFilters {
    rbac: Vec<Arc<rbac::NetworkRbac>>,
    set_filter_state: Vec<Arc<set_filter_state::SetFilterState>>,
}

impl NetworkFilters {
    pub fn push_rbac(&mut self, f: rbac::NetworkRbac) {
        self.rbac.push(Arc::new(f));
    }

    pub fn push_set_filter_state(&mut self, f: set_filter_state::SetFilterState) {
        self.set_filter_state.push(Arc::new(f));
    }

    pub fn is_empty(&self) -> bool {
        self.rbac.is_empty() && self.set_filter_state.is_empty()
    }

    /// Runs the filters' new-connection stage: `set_filter_state` values go into `info`.
    pub fn on_new_connection(&self, info: &mut ConnInfo) {
        for f in &self.set_filter_state {
            let mut state = std::mem::take(&mut info.filter_state);
            f.on_new_connection(info, &mut state);
            info.filter_state = state;
        }
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
