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
    /// Istio's `io.istio.network.authn`: the peer's and our SPIFFE principals become the filter
    /// state objects `io.istio.peer_principal` / `io.istio.local_principal`.
    istio_authn: bool,
    rbac: Vec<Arc<rbac::NetworkRbac>>,
    set_filter_state: Vec<Arc<set_filter_state::SetFilterState>>,
}

impl NetworkFilters {
    pub fn push_rbac(&mut self, f: rbac::NetworkRbac) {
        self.rbac.push(Arc::new(f));
    }

    pub fn set_istio_authn(&mut self) {
        self.istio_authn = true;
    }

    pub fn push_set_filter_state(&mut self, f: set_filter_state::SetFilterState) {
        self.set_filter_state.push(Arc::new(f));
    }

    pub fn is_empty(&self) -> bool {
        !self.istio_authn && self.rbac.is_empty() && self.set_filter_state.is_empty()
    }

    /// Runs the filters' new-connection stage: `set_filter_state` values go into `info`.
    pub fn on_new_connection(&self, info: &mut ConnInfo) {
        if self.istio_authn {
            istio_principals(info);
        }
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

/// What Istio's `io.istio.network.authn` stores: the first `spiffe://` URI SAN of the peer's
/// certificate and of ours, when the peer presented one (connection-long, shared with the
/// upstream once, read-only).
fn istio_principals(info: &mut ConnInfo) {
    use crate::filter_state::{Object, Sharing, Value};
    let Some(tls) = info.tls.as_deref() else {
        return;
    };
    let Some(peer) = tls.peer.as_ref() else {
        return;
    };
    let spiffe = |sans: &[String]| sans.iter().find(|s| s.starts_with("spiffe://")).cloned();
    let principals = [
        ("io.istio.peer_principal", spiffe(&peer.uri_sans)),
        ("io.istio.local_principal", spiffe(&tls.local_uri_sans)),
    ];
    for (key, principal) in principals {
        if let Some(p) = principal {
            info.filter_state.set(Object {
                key: key.to_string(),
                value: Value::String(p),
                read_only: true,
                sharing: Sharing::Once,
            });
        }
    }
}
