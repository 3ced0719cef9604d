//! Incremental (delta) subscriptions: per-resource versions, subscribe/unsubscribe diffs, ACK/NACK by
//! nonce alone.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;

use crate::resource::{check_type, nack_message, Handler, Resource, ResourceError, Update};
use crate::sotw::INVALID_ARGUMENT;
use crate::subscriptions::Interest;

/// The client side of one type's delta subscription.
#[derive(Debug, Clone)]
pub struct DeltaSubscription {
    type_url: String,
    interest: Interest,
    /// Accepted resources and their versions, resent as `initial_resource_versions` on a new stream
    /// so the server sends only what changed meanwhile.
    versions: BTreeMap<String, String>,
    system_version: String,
    sent_initial: bool,
}

/// The outcome of [`DeltaSubscription::handle`].
#[derive(Debug, Clone)]
pub struct DeltaHandled {
    /// The ACK or NACK to send.
    pub request: DeltaDiscoveryRequest,
    /// The NACK message when the response was rejected.
    pub rejected: Option<String>,
}

impl DeltaSubscription {
    /// A subscription to `interest` of `type_url`.
    pub fn new(type_url: &str, interest: Interest) -> Self {
        Self {
            type_url: type_url.to_string(),
            interest,
            versions: BTreeMap::new(),
            system_version: String::new(),
            sent_initial: false,
        }
    }

    /// The subscribed type URL.
    pub fn type_url(&self) -> &str {
        &self.type_url
    }

    /// What the subscription currently asks for.
    pub fn interest(&self) -> &Interest {
        &self.interest
    }

    /// The accepted resources and their versions.
    pub fn versions(&self) -> &BTreeMap<String, String> {
        &self.versions
    }

    /// The `system_version_info` of the last accepted response.
    pub fn system_version(&self) -> &str {
        &self.system_version
    }

    /// Whether the current stream carried this subscription's first request already.
    pub fn is_open(&self) -> bool {
        self.sent_initial
    }

    /// Forgets the stream (it ended); the next request must be an [`initial_request`](Self::initial_request).
    pub fn reset_stream(&mut self) {
        self.sent_initial = false;
    }

    /// The request that opens the subscription on a new stream: the subscribed names and the versions
    /// of what the client already has. Envoy puts the node on the first request of a stream only.
    pub fn initial_request(&mut self, node: Option<&Node>) -> DeltaDiscoveryRequest {
        self.sent_initial = true;
        DeltaDiscoveryRequest {
            node: node.cloned(),
            type_url: self.type_url.clone(),
            resource_names_subscribe: self.interest.requested(),
            initial_resource_versions: self
                .versions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..Default::default()
        }
    }

    /// Decodes a response, lets `handler` apply it and returns the ACK or NACK. Accepted versions are
    /// recorded only on ACK, so a reconnect after a NACK reports what the client really runs.
    pub fn handle(
        &mut self,
        response: &DeltaDiscoveryResponse,
        handler: &dyn Handler,
    ) -> DeltaHandled {
        let verdict = match self.update(response) {
            Ok(update) => {
                let changed: Vec<(String, String)> = update
                    .resources
                    .iter()
                    .map(|r| (r.name.clone(), r.version.clone()))
                    .collect();
                let removed = update.removed.clone();
                match handler.apply(update) {
                    Ok(()) => {
                        for name in removed {
                            self.versions.remove(&name);
                        }
                        self.versions.extend(changed);
                        self.system_version = response.system_version_info.clone();
                        Ok(())
                    }
                    Err(errors) => Err(nack_message(&self.type_url, &errors)),
                }
            }
            Err(errors) => Err(nack_message(&self.type_url, &errors)),
        };
        let rejected = verdict.err();
        DeltaHandled {
            request: DeltaDiscoveryRequest {
                type_url: self.type_url.clone(),
                response_nonce: response.nonce.clone(),
                error_detail: rejected.clone().map(|message| Status {
                    code: INVALID_ARGUMENT,
                    message,
                    details: Vec::new(),
                }),
                ..Default::default()
            },
            rejected,
        }
    }

    /// The update a response means: the added or updated resources and the removed names. Entries
    /// without a body (TTL heartbeats) change nothing and are skipped.
    pub fn update(&self, response: &DeltaDiscoveryResponse) -> Result<Update, Vec<ResourceError>> {
        let mut errors = Vec::new();
        let mut resources = Vec::with_capacity(response.resources.len());
        let mut seen = BTreeSet::new();
        for r in &response.resources {
            let name = match (&r.name, &r.resource_name) {
                (name, _) if !name.is_empty() => name.clone(),
                (_, Some(n)) => n.name.clone(),
                _ => {
                    errors.push(ResourceError::new("", "resource without a name"));
                    continue;
                }
            };
            let Some(any) = &r.resource else { continue };
            if !seen.insert(name.clone()) {
                errors.push(ResourceError::new(&name, "duplicate resource name"));
                continue;
            }
            if let Err(e) = check_type(&name, any, &self.type_url) {
                errors.push(e);
                continue;
            }
            resources.push(Resource {
                name,
                version: r.version.clone(),
                resource: any.clone(),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let removed = response
            .removed_resources
            .iter()
            .cloned()
            .chain(
                response
                    .removed_resource_names
                    .iter()
                    .map(|n| n.name.clone()),
            )
            .collect();
        Ok(Update {
            type_url: self.type_url.clone(),
            version: response.system_version_info.clone(),
            resources,
            removed,
            full_state: false,
        })
    }

    /// Changes what the subscription asks for; on an open stream returns the request carrying the
    /// difference (`resource_names_subscribe` / `_unsubscribe`, `*` for the wildcard). Unsubscribed
    /// names are forgotten so a later reconnect does not claim them.
    pub fn set_interest(&mut self, interest: Interest) -> Option<DeltaDiscoveryRequest> {
        if interest == self.interest {
            return None;
        }
        let old = std::mem::replace(&mut self.interest, interest);
        let mut subscribe: Vec<String> = self
            .interest
            .names
            .difference(&old.names)
            .cloned()
            .collect();
        let mut unsubscribe: Vec<String> = old
            .names
            .difference(&self.interest.names)
            .cloned()
            .collect();
        match (old.wildcard, self.interest.wildcard) {
            (false, true) => subscribe.insert(0, "*".into()),
            (true, false) => unsubscribe.insert(0, "*".into()),
            _ => {}
        }
        if !self.interest.wildcard {
            for name in &unsubscribe {
                self.versions.remove(name);
            }
            if old.wildcard {
                let wanted = &self.interest.names;
                self.versions.retain(|name, _| wanted.contains(name));
            }
        }
        if !self.sent_initial {
            return None;
        }
        Some(DeltaDiscoveryRequest {
            type_url: self.type_url.clone(),
            resource_names_subscribe: subscribe,
            resource_names_unsubscribe: unsubscribe,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests;
