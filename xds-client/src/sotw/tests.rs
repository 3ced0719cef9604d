//! Unit tests of the state-of-the-world subscription: ACK/NACK contents, nonces, removal.

use super::*;
use crate::resource::TypeUrl;

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
