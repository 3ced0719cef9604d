//! What the client wants from the control plane: per type URL, a wildcard and/or a set of names.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::watch;

/// The resources of one type URL the client subscribes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    /// Every resource of the type (LDS and CDS in Envoy).
    pub wildcard: bool,
    /// Resources wanted by name (RDS, EDS, SDS; with `wildcard`, names wanted in addition to it).
    pub names: BTreeSet<String>,
}

impl Interest {
    /// Every resource of the type.
    pub fn wildcard() -> Self {
        Self {
            wildcard: true,
            names: BTreeSet::new(),
        }
    }

    /// The named resources only.
    pub fn names(names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            wildcard: false,
            names: names.into_iter().map(Into::into).collect(),
        }
    }

    /// Whether anything is wanted at all; a type with nothing wanted is not requested.
    pub fn is_active(&self) -> bool {
        self.wildcard || !self.names.is_empty()
    }

    /// The names a request carries: none for a plain wildcard (the legacy form Envoy sends for LDS and
    /// CDS), `*` plus the names for a wildcard with names, the names otherwise.
    pub(crate) fn requested(&self) -> Vec<String> {
        let star = (self.wildcard && !self.names.is_empty()).then(|| "*".to_string());
        star.into_iter().chain(self.names.iter().cloned()).collect()
    }
}

/// The shared, changeable set of subscriptions of a client. Cloning gives another handle to the same
/// set; handlers keep one to subscribe to the names they discover (a CDS handler subscribing to EDS
/// for its clusters, an LDS handler to RDS for its route configurations).
#[derive(Debug, Clone)]
pub struct Subscriptions {
    tx: Arc<watch::Sender<BTreeMap<String, Interest>>>,
}

impl Subscriptions {
    pub(crate) fn new() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(BTreeMap::new())),
        }
    }

    /// Subscribes `type_url` to exactly these names (replacing earlier names and any wildcard).
    pub fn subscribe(&self, type_url: &str, names: impl IntoIterator<Item = impl Into<String>>) {
        self.set(type_url, Interest::names(names));
    }

    /// Subscribes `type_url` to every resource of the type.
    pub fn subscribe_wildcard(&self, type_url: &str) {
        self.set(type_url, Interest::wildcard());
    }

    /// Sets the interest of `type_url`; the running client sends the change on its stream.
    pub fn set(&self, type_url: &str, interest: Interest) {
        self.tx.send_if_modified(|all| {
            if all.get(type_url) == Some(&interest) {
                return false;
            }
            all.insert(type_url.to_string(), interest);
            true
        });
    }

    /// The current interest of `type_url`.
    pub fn get(&self, type_url: &str) -> Option<Interest> {
        self.tx.borrow().get(type_url).cloned()
    }

    /// Sets `interest` unless the type already has one (a default that earlier calls override).
    pub(crate) fn set_default(&self, type_url: &str, interest: Interest) {
        self.tx.send_if_modified(|all| {
            if all.contains_key(type_url) {
                return false;
            }
            all.insert(type_url.to_string(), interest);
            true
        });
    }

    pub(crate) fn watch(&self) -> watch::Receiver<BTreeMap<String, Interest>> {
        self.tx.subscribe()
    }
}
