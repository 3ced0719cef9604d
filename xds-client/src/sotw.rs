//! State-of-the-world subscriptions: one per type URL, ACK/NACK by `version_info` and `response_nonce`.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status;

use crate::resource::{nack_message, sotw_resource, Handler, ResourceError, TypeUrl, Update};
use crate::subscriptions::Interest;

/// A handler's judgement of one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Applied: ACK with the response's version.
    Accept,
    /// Rejected: NACK with the last accepted version and this message (naming the resource and field).
    Reject(String),
}

/// `google.rpc.Code.INVALID_ARGUMENT`, which Envoy puts in a NACK's `error_detail`.
pub(crate) const INVALID_ARGUMENT: i32 = 3;

/// The client side of one type's state-of-the-world subscription.
#[derive(Debug, Clone)]
pub struct Subscription {
    type_url: String,
    interest: Interest,
    accepted_version: String,
    last_nonce: String,
    sent_initial: bool,
    /// The names of the last accepted response, to find what a full-state response removed.
    present: BTreeSet<String>,
}

impl Subscription {
    /// A wildcard subscription (LDS, CDS).
    pub fn wildcard(type_url: &str) -> Self {
        Self::with_interest(type_url, Interest::wildcard())
    }

    /// A subscription to named resources (RDS, EDS, SDS).
    pub fn named(type_url: &str, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self::with_interest(type_url, Interest::names(names))
    }

    /// A subscription to `interest`.
    pub fn with_interest(type_url: &str, interest: Interest) -> Self {
        Self {
            type_url: type_url.to_string(),
            interest,
            accepted_version: String::new(),
            last_nonce: String::new(),
            sent_initial: false,
            present: BTreeSet::new(),
        }
    }

    /// The subscribed type URL.
    pub fn type_url(&self) -> &str {
        &self.type_url
    }

    /// The last version the handler accepted (empty before the first ACK).
    pub fn accepted_version(&self) -> &str {
        &self.accepted_version
    }

    /// What the subscription currently asks for.
    pub fn interest(&self) -> &Interest {
        &self.interest
    }

    /// Whether the current stream carried this subscription's first request already.
    pub fn is_open(&self) -> bool {
        self.sent_initial
    }

    /// Forgets the stream (it ended); the next request must be an [`initial_request`](Self::initial_request).
    pub fn reset_stream(&mut self) {
        self.sent_initial = false;
        self.last_nonce.clear();
    }

    /// The request that opens (or reopens, after a reconnect) the subscription. On a new stream the
    /// last accepted version is resent so the server can skip an unchanged push; no nonce is sent
    /// because nonces belong to the stream that carried them.
    pub fn initial_request(&mut self, node: Option<&Node>) -> DiscoveryRequest {
        self.sent_initial = true;
        self.last_nonce.clear();
        DiscoveryRequest {
            version_info: self.accepted_version.clone(),
            node: node.cloned(),
            resource_names: self.interest.requested(),
            type_url: self.type_url.clone(),
            ..Default::default()
        }
    }

    /// Records a response and the handler's verdict, and returns the ACK or NACK to send.
    pub fn respond(&mut self, response: &DiscoveryResponse, verdict: Verdict) -> DiscoveryRequest {
        self.last_nonce = response.nonce.clone();
        let error_detail = match verdict {
            Verdict::Accept => {
                self.accepted_version = response.version_info.clone();
                None
            }
            Verdict::Reject(message) => Some(Status {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            }),
        };
        DiscoveryRequest {
            version_info: self.accepted_version.clone(),
            resource_names: self.interest.requested(),
            type_url: self.type_url.clone(),
            response_nonce: self.last_nonce.clone(),
            error_detail,
            ..Default::default()
        }
    }

    /// Decodes a response, lets `handler` apply it and returns the ACK or NACK. A resource that
    /// cannot be named or has the wrong type rejects the whole response, as do duplicate names.
    pub fn handle(&mut self, response: &DiscoveryResponse, handler: &dyn Handler) -> Handled {
        let verdict = match self.update(response) {
            Ok(update) => {
                let names: BTreeSet<String> =
                    update.resources.iter().map(|r| r.name.clone()).collect();
                match handler.apply(update) {
                    Ok(()) => {
                        self.present = names;
                        Verdict::Accept
                    }
                    Err(errors) => Verdict::Reject(nack_message(&self.type_url, &errors)),
                }
            }
            Err(errors) => Verdict::Reject(nack_message(&self.type_url, &errors)),
        };
        let rejected = match &verdict {
            Verdict::Accept => None,
            Verdict::Reject(message) => Some(message.clone()),
        };
        Handled {
            request: self.respond(response, verdict),
            rejected,
        }
    }

    /// The update a response means for this subscription.
    pub fn update(&self, response: &DiscoveryResponse) -> Result<Update, Vec<ResourceError>> {
        let mut errors = Vec::new();
        let mut resources = Vec::with_capacity(response.resources.len());
        let mut seen = BTreeSet::new();
        for any in &response.resources {
            match sotw_resource(any, &self.type_url, &response.version_info) {
                Ok(r) if !seen.insert(r.name.clone()) => {
                    errors.push(ResourceError::new(&r.name, "duplicate resource name"));
                }
                Ok(r) => resources.push(r),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let removed = if TypeUrl::absence_removes(&self.type_url) {
            self.present.difference(&seen).cloned().collect()
        } else {
            Vec::new()
        };
        Ok(Update {
            type_url: self.type_url.clone(),
            version: response.version_info.clone(),
            resources,
            removed,
            full_state: true,
        })
    }

    /// Changes the subscribed names; returns the request announcing them when the set changed.
    pub fn set_names(
        &mut self,
        names: impl IntoIterator<Item = impl Into<String>>,
    ) -> Option<DiscoveryRequest> {
        let interest = Interest {
            wildcard: self.interest.wildcard,
            names: names.into_iter().map(Into::into).collect(),
        };
        self.set_interest(interest)
    }

    /// Changes what the subscription asks for; returns the request announcing it when it changed on
    /// an open stream. The request carries the accepted version and the latest nonce, as Envoy's do.
    pub fn set_interest(&mut self, interest: Interest) -> Option<DiscoveryRequest> {
        if interest == self.interest {
            return None;
        }
        self.interest = interest;
        self.sent_initial.then(|| DiscoveryRequest {
            version_info: self.accepted_version.clone(),
            resource_names: self.interest.requested(),
            type_url: self.type_url.clone(),
            response_nonce: self.last_nonce.clone(),
            ..Default::default()
        })
    }
}

/// The outcome of [`Subscription::handle`].
#[derive(Debug, Clone)]
pub struct Handled {
    /// The ACK or NACK to send.
    pub request: DiscoveryRequest,
    /// The NACK message when the response was rejected.
    pub rejected: Option<String>,
}

#[cfg(test)]
mod tests;
