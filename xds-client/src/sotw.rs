//! State-of-the-world subscriptions: one per type URL, ACK/NACK by `version_info` and `response_nonce`.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status;

/// Well-known xDS type URLs.
pub struct TypeUrl;

impl TypeUrl {
    pub const LISTENER: &'static str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &'static str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const CLUSTER: &'static str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &'static str =
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const SECRET: &'static str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
}

/// A handler's judgement of one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Applied: ACK with the response's version.
    Accept,
    /// Rejected: NACK with the last accepted version and this message (naming the resource and field).
    Reject(String),
}

/// `google.rpc.Code.INVALID_ARGUMENT`, which Envoy puts in a NACK's `error_detail`.
const INVALID_ARGUMENT: i32 = 3;

/// The client side of one type's state-of-the-world subscription.
#[derive(Debug, Clone)]
pub struct Subscription {
    type_url: String,
    /// Empty means wildcard (every resource of the type), as LDS and CDS use.
    names: BTreeSet<String>,
    accepted_version: String,
    last_nonce: String,
    sent_initial: bool,
}

impl Subscription {
    /// A wildcard subscription (LDS, CDS).
    pub fn wildcard(type_url: &str) -> Self {
        Self::named(type_url, std::iter::empty::<String>())
    }

    /// A subscription to named resources (RDS, EDS, SDS).
    pub fn named(type_url: &str, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            type_url: type_url.to_string(),
            names: names.into_iter().map(Into::into).collect(),
            accepted_version: String::new(),
            last_nonce: String::new(),
            sent_initial: false,
        }
    }

    pub fn type_url(&self) -> &str {
        &self.type_url
    }

    /// The last version the handler accepted (empty before the first ACK).
    pub fn accepted_version(&self) -> &str {
        &self.accepted_version
    }

    /// The request that opens (or reopens, after a reconnect) the subscription. Envoy sends the node on
    /// the first request of a stream only; on a new stream the last accepted version is resent so the
    /// server can skip an unchanged push.
    pub fn initial_request(&mut self, node: Option<&Node>) -> DiscoveryRequest {
        self.sent_initial = true;
        self.last_nonce.clear();
        DiscoveryRequest {
            version_info: self.accepted_version.clone(),
            node: node.cloned(),
            resource_names: self.names.iter().cloned().collect(),
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
            resource_names: self.names.iter().cloned().collect(),
            type_url: self.type_url.clone(),
            response_nonce: self.last_nonce.clone(),
            error_detail,
            ..Default::default()
        }
    }

    /// Changes the subscribed names; returns the request announcing them when the set changed.
    pub fn set_names(
        &mut self,
        names: impl IntoIterator<Item = impl Into<String>>,
    ) -> Option<DiscoveryRequest> {
        let names: BTreeSet<String> = names.into_iter().map(Into::into).collect();
        if names == self.names {
            return None;
        }
        self.names = names;
        self.sent_initial.then(|| DiscoveryRequest {
            version_info: self.accepted_version.clone(),
            resource_names: self.names.iter().cloned().collect(),
            type_url: self.type_url.clone(),
            response_nonce: self.last_nonce.clone(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(version: &str, nonce: &str) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.into(),
            nonce: nonce.into(),
            type_url: TypeUrl::CLUSTER.into(),
            ..Default::default()
        }
    }

    #[test]
    fn ack_carries_the_new_version_and_nonce() {
        let mut s = Subscription::wildcard(TypeUrl::CLUSTER);
        let node = Node {
            id: "n".into(),
            ..Default::default()
        };
        let first = s.initial_request(Some(&node));
        assert_eq!(first.node.as_ref().map(|n| n.id.as_str()), Some("n"));
        assert!(first.version_info.is_empty() && first.response_nonce.is_empty());
        let ack = s.respond(&response("v1", "a"), Verdict::Accept);
        assert_eq!(
            (ack.version_info.as_str(), ack.response_nonce.as_str()),
            ("v1", "a")
        );
        assert!(ack.error_detail.is_none() && ack.node.is_none());
    }

    #[test]
    fn nack_keeps_the_last_good_version() {
        let mut s = Subscription::wildcard(TypeUrl::LISTENER);
        s.initial_request(None);
        s.respond(&response("v1", "a"), Verdict::Accept);
        let nack = s.respond(
            &response("v2", "b"),
            Verdict::Reject("listener \"l\": bad".into()),
        );
        assert_eq!(nack.version_info, "v1");
        assert_eq!(nack.response_nonce, "b");
        let detail = nack.error_detail.expect("NACK has error_detail");
        assert_eq!(detail.code, 3);
        assert!(detail.message.contains("listener \"l\""));
        assert_eq!(s.accepted_version(), "v1");
    }

    #[test]
    fn reconnect_resends_the_accepted_version_without_nonce() {
        let mut s = Subscription::named(TypeUrl::ROUTE, ["r1"]);
        s.initial_request(None);
        s.respond(&response("7", "x"), Verdict::Accept);
        let again = s.initial_request(None);
        assert_eq!(again.version_info, "7");
        assert!(again.response_nonce.is_empty());
        assert_eq!(again.resource_names, vec!["r1".to_string()]);
    }

    #[test]
    fn changing_names_sends_a_request_only_when_they_change() {
        let mut s = Subscription::named(TypeUrl::ENDPOINT, ["a"]);
        assert!(
            s.set_names(["a", "b"]).is_none(),
            "nothing is sent before the stream opens"
        );
        s.initial_request(None);
        assert!(s.set_names(["b", "a"]).is_none());
        let req = s.set_names(["a"]).expect("changed");
        assert_eq!(req.resource_names, vec!["a".to_string()]);
    }
}
