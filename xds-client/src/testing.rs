//! Test helpers: a recording handler and resource builders.

use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::resource::{Handler, ResourceError, TypeUrl, Update};

/// Records every update and rejects the resources whose names are in `reject`.
pub(crate) struct Recorder {
    pub(crate) type_url: &'static str,
    pub(crate) reject: Vec<&'static str>,
    pub(crate) updates: Arc<Mutex<Vec<Update>>>,
}

impl Recorder {
    pub(crate) fn new(type_url: &'static str) -> Self {
        Self {
            type_url,
            reject: Vec::new(),
            updates: Arc::default(),
        }
    }

    pub(crate) fn last(&self) -> Update {
        self.updates
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("an update was applied")
    }

    pub(crate) fn count(&self) -> usize {
        self.updates.lock().expect("lock").len()
    }
}

impl Handler for Recorder {
    fn type_url(&self) -> &str {
        self.type_url
    }

    fn apply(&self, update: Update) -> Result<(), Vec<ResourceError>> {
        let errors: Vec<ResourceError> = update
            .resources
            .iter()
            .filter(|r| self.reject.contains(&r.name.as_str()))
            .map(|r| ResourceError::new(&r.name, "address: missing"))
            .collect();
        self.updates.lock().expect("lock").push(update);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

pub(crate) fn cluster(name: &str) -> Any {
    Any {
        type_url: TypeUrl::CLUSTER.into(),
        value: Cluster {
            name: name.into(),
            ..Default::default()
        }
        .encode_to_vec(),
    }
}

pub(crate) fn listener(name: &str) -> Any {
    Any {
        type_url: TypeUrl::LISTENER.into(),
        value: Listener {
            name: name.into(),
            ..Default::default()
        }
        .encode_to_vec(),
    }
}
