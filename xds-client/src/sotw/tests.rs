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

mod handled {
    use super::*;
    use crate::testing::{cluster, listener, Recorder};
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    fn push(type_url: &str, version: &str, nonce: &str, resources: Vec<Any>) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.into(),
            nonce: nonce.into(),
            type_url: type_url.into(),
            resources,
            ..Default::default()
        }
    }

    #[test]
    fn cds_absence_removes_and_the_handler_sees_the_full_set() {
        let h = Recorder::new(TypeUrl::CLUSTER);
        let mut s = Subscription::wildcard(TypeUrl::CLUSTER);
        s.initial_request(None);
        let out = s.handle(
            &push(
                TypeUrl::CLUSTER,
                "1",
                "n1",
                vec![cluster("a"), cluster("b")],
            ),
            &h,
        );
        assert!(out.rejected.is_none());
        assert_eq!(out.request.version_info, "1");
        let u = h.last();
        assert!(u.full_state && u.removed.is_empty());
        assert_eq!(
            u.resources
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(u.resources.iter().all(|r| r.version == "1"));

        s.handle(&push(TypeUrl::CLUSTER, "2", "n2", vec![cluster("b")]), &h);
        assert_eq!(h.last().removed, ["a"]);
    }

    #[test]
    fn eds_absence_removes_nothing() {
        let h = Recorder::new(TypeUrl::ENDPOINT);
        let mut s = Subscription::named(TypeUrl::ENDPOINT, ["a", "b"]);
        s.initial_request(None);
        let cla = |name: &str| Any {
            type_url: TypeUrl::ENDPOINT.into(),
            value: ClusterLoadAssignment {
                cluster_name: name.into(),
                ..Default::default()
            }
            .encode_to_vec(),
        };
        s.handle(
            &push(TypeUrl::ENDPOINT, "1", "n1", vec![cla("a"), cla("b")]),
            &h,
        );
        s.handle(&push(TypeUrl::ENDPOINT, "2", "n2", vec![cla("a")]), &h);
        assert!(h.last().removed.is_empty());
    }

    #[test]
    fn a_rejected_listener_is_named_in_the_nack_and_changes_nothing() {
        let mut h = Recorder::new(TypeUrl::LISTENER);
        let mut s = Subscription::wildcard(TypeUrl::LISTENER);
        s.initial_request(None);
        s.handle(
            &push(TypeUrl::LISTENER, "1", "n1", vec![listener("l0")]),
            &h,
        );
        h.reject = vec!["l1"];
        let out = s.handle(
            &push(TypeUrl::LISTENER, "2", "n2", vec![listener("l1")]),
            &h,
        );
        let nack = out.request;
        assert_eq!(
            (nack.version_info.as_str(), nack.response_nonce.as_str()),
            ("1", "n2")
        );
        let detail = nack.error_detail.expect("NACK");
        assert_eq!(detail.code, 3);
        assert_eq!(detail.message, "listener \"l1\": address: missing");
        assert_eq!(out.rejected.as_deref(), Some(detail.message.as_str()));
        // The rejected push did not become the state: l0 is still the last accepted set.
        h.reject.clear();
        s.handle(
            &push(TypeUrl::LISTENER, "3", "n3", vec![listener("l2")]),
            &h,
        );
        assert_eq!(h.last().removed, ["l0"]);
    }

    #[test]
    fn malformed_responses_are_nacked_without_reaching_the_handler() {
        let h = Recorder::new(TypeUrl::CLUSTER);
        let mut s = Subscription::wildcard(TypeUrl::CLUSTER);
        s.initial_request(None);
        let wrong = s.handle(&push(TypeUrl::CLUSTER, "1", "n1", vec![listener("l")]), &h);
        assert!(wrong.request.error_detail.is_some());
        let dup = s.handle(
            &push(
                TypeUrl::CLUSTER,
                "1",
                "n2",
                vec![cluster("c"), cluster("c")],
            ),
            &h,
        );
        let detail = dup.request.error_detail.expect("NACK");
        assert_eq!(detail.message, "cluster \"c\": duplicate resource name");
        assert_eq!(h.count(), 0);
        assert_eq!(dup.request.version_info, "");
    }

    #[test]
    fn wildcard_with_names_asks_for_star() {
        let mut plain = Subscription::wildcard(TypeUrl::CLUSTER);
        assert!(plain.initial_request(None).resource_names.is_empty());
        let mut mixed = Subscription::with_interest(
            TypeUrl::CLUSTER,
            Interest {
                wildcard: true,
                names: ["extra".to_string()].into(),
            },
        );
        assert_eq!(mixed.initial_request(None).resource_names, ["*", "extra"]);
    }

    #[test]
    fn a_name_change_mid_stream_carries_the_latest_nonce_and_version() {
        let h = Recorder::new(TypeUrl::ROUTE);
        let mut s = Subscription::named(TypeUrl::ROUTE, ["r1"]);
        s.initial_request(None);
        s.handle(&push(TypeUrl::ROUTE, "5", "n5", Vec::new()), &h);
        let req = s.set_names(["r1", "r2"]).expect("changed");
        assert_eq!(req.resource_names, ["r1", "r2"]);
        assert_eq!(
            (req.version_info.as_str(), req.response_nonce.as_str()),
            ("5", "n5")
        );
        assert!(req.error_detail.is_none());
        s.reset_stream();
        assert!(!s.is_open());
        assert!(s.set_names(["r3"]).is_none(), "nothing on a closed stream");
    }
}
