//! Unit tests of the delta subscription: ACK/NACK, removal, subscription diffs and the versions a
//! reconnect reports.

use super::*;
use crate::resource::TypeUrl;
use crate::testing::{cluster, Recorder};
use envoy_types::pb::envoy::service::discovery::v3::Resource as Wrapped;

fn push(nonce: &str, added: &[(&str, &str)], removed: &[&str]) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: format!("sys-{nonce}"),
        type_url: TypeUrl::CLUSTER.into(),
        nonce: nonce.into(),
        resources: added
            .iter()
            .map(|(name, version)| Wrapped {
                name: (*name).into(),
                version: (*version).into(),
                resource: Some(cluster(name)),
                ..Default::default()
            })
            .collect(),
        removed_resources: removed.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    }
}

fn node() -> Node {
    Node {
        id: "n".into(),
        ..Default::default()
    }
}

#[test]
fn first_request_carries_node_and_names_and_no_versions() {
    let mut s = DeltaSubscription::new(TypeUrl::ENDPOINT, Interest::names(["b", "a"]));
    let r = s.initial_request(Some(&node()));
    assert_eq!(r.node.map(|n| n.id), Some("n".into()));
    assert_eq!(r.resource_names_subscribe, ["a", "b"]);
    assert!(r.initial_resource_versions.is_empty() && r.response_nonce.is_empty());
    let mut w = DeltaSubscription::new(TypeUrl::CLUSTER, Interest::wildcard());
    assert!(w.initial_request(None).resource_names_subscribe.is_empty());
}

#[test]
fn ack_is_the_nonce_and_versions_follow_adds_and_removes() {
    let h = Recorder::new(TypeUrl::CLUSTER);
    let mut s = DeltaSubscription::new(TypeUrl::CLUSTER, Interest::wildcard());
    s.initial_request(None);
    let ack = s.handle(&push("1", &[("a", "v1"), ("b", "v1")], &[]), &h);
    assert!(ack.rejected.is_none());
    assert_eq!(ack.request.response_nonce, "1");
    assert!(ack.request.error_detail.is_none() && ack.request.node.is_none());
    assert!(ack.request.resource_names_subscribe.is_empty());
    let u = h.last();
    assert!(!u.full_state);
    assert_eq!(u.version, "sys-1");

    s.handle(&push("2", &[("b", "v2")], &["a"]), &h);
    let u = h.last();
    assert_eq!(u.removed, ["a"]);
    assert_eq!(u.resources.len(), 1);
    assert_eq!(u.resources[0].version, "v2");
    assert_eq!(
        s.versions()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
        [("b", "v2")]
    );
    assert_eq!(s.system_version(), "sys-2");
}

#[test]
fn nack_names_the_resource_and_keeps_the_versions() {
    let mut h = Recorder::new(TypeUrl::CLUSTER);
    let mut s = DeltaSubscription::new(TypeUrl::CLUSTER, Interest::wildcard());
    s.initial_request(None);
    s.handle(&push("1", &[("a", "v1")], &[]), &h);
    h.reject = vec!["a"];
    let nack = s.handle(&push("2", &[("a", "v2")], &[]), &h);
    assert_eq!(nack.request.response_nonce, "2");
    let detail = nack.request.error_detail.expect("NACK");
    assert_eq!(detail.code, 3);
    assert_eq!(detail.message, "cluster \"a\": address: missing");
    assert_eq!(s.versions().get("a").map(String::as_str), Some("v1"));
    assert_eq!(s.system_version(), "sys-1");
}

#[test]
fn reconnect_reports_the_accepted_versions() {
    let h = Recorder::new(TypeUrl::CLUSTER);
    let mut s = DeltaSubscription::new(TypeUrl::CLUSTER, Interest::wildcard());
    s.initial_request(Some(&node()));
    s.handle(&push("1", &[("a", "v1"), ("b", "v7")], &[]), &h);
    s.reset_stream();
    let again = s.initial_request(Some(&node()));
    assert_eq!(again.initial_resource_versions.len(), 2);
    assert_eq!(again.initial_resource_versions["b"], "v7");
    assert!(again.response_nonce.is_empty());
}

#[test]
fn interest_changes_send_the_difference_and_forget_unsubscribed_names() {
    let h = Recorder::new(TypeUrl::CLUSTER);
    let mut s = DeltaSubscription::new(TypeUrl::CLUSTER, Interest::names(["a", "b"]));
    assert!(
        s.set_interest(Interest::names(["a", "b", "c"])).is_none(),
        "nothing before the stream opens"
    );
    s.initial_request(None);
    s.handle(
        &push("1", &[("a", "v1"), ("b", "v1"), ("c", "v1")], &[]),
        &h,
    );
    let r = s
        .set_interest(Interest::names(["a", "d"]))
        .expect("changed");
    assert_eq!(r.resource_names_subscribe, ["d"]);
    assert_eq!(r.resource_names_unsubscribe, ["b", "c"]);
    assert!(r.response_nonce.is_empty() && r.node.is_none());
    assert_eq!(s.versions().keys().collect::<Vec<_>>(), ["a"]);
    let w = s
        .set_interest(Interest {
            wildcard: true,
            names: ["a".to_string(), "d".to_string()].into(),
        })
        .expect("changed");
    assert_eq!(w.resource_names_subscribe, ["*"]);
    assert!(s.set_interest(s.interest().clone()).is_none());
}

#[test]
fn a_resource_of_another_type_is_rejected() {
    let h = Recorder::new(TypeUrl::CLUSTER);
    let mut s = DeltaSubscription::new(TypeUrl::CLUSTER, Interest::wildcard());
    s.initial_request(None);
    let mut bad = push("1", &[("a", "v1")], &[]);
    bad.resources[0].resource = Some(crate::testing::listener("a"));
    let nack = s.handle(&bad, &h);
    assert!(nack.rejected.is_some());
    assert_eq!(h.count(), 0);
    assert!(s.versions().is_empty());
}
