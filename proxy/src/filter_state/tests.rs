use envoy_types::pb::envoy::extensions::filters::common::set_filter_state::v3::FilterStateValue;

use super::*;
use crate::access_log::LogContext;
use crate::config::parse::{from_yaml, ParseOptions};
use crate::config::{ConfigErrors, Path};

fn setters(yaml: &str) -> Result<Setters, String> {
    let values: Vec<FilterStateValue> = yaml
        .split("---")
        .map(|doc| from_yaml(doc, ParseOptions::default()).expect("FilterStateValue"))
        .collect();
    let mut errors = ConfigErrors::default();
    let s = Setters::from_protos(
        &values,
        &Path::default().field("on_new_connection"),
        &mut errors,
    );
    if errors.is_empty() {
        Ok(s)
    } else {
        Err(errors.to_string())
    }
}

fn ctx() -> LogContext<'static> {
    LogContext {
        downstream_local_address: Some("10.0.0.1:8080".parse().expect("addr")),
        ..LogContext::new(std::time::SystemTime::now())
    }
}

#[test]
fn empty_state_does_not_allocate_and_shares_nothing() {
    let s = FilterState::default();
    assert!(s.is_empty());
    assert_eq!(s.objects.capacity(), 0);
    assert_eq!(s.for_upstream().objects.capacity(), 0);
}

#[test]
fn well_known_keys_are_typed_and_read_back() {
    let s = setters(
        r#"
object_key: envoy.tcp_proxy.cluster
format_string: { text_format_source: { inline_string: "backend" } }
---
object_key: envoy.network.transport_socket.original_dst_address
format_string: { text_format_source: { inline_string: "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%:9090" } }
"#,
    )
    .expect("valid");
    let mut state = FilterState::default();
    s.apply(&ctx(), &mut state);
    assert_eq!(state.tcp_proxy_cluster(), Some("backend"));
    assert_eq!(
        state.original_dst_address(),
        Some("10.0.0.1:9090".parse().expect("addr"))
    );
}

#[test]
fn a_value_that_does_not_parse_is_not_set_and_empty_ones_can_be_skipped() {
    let s = setters(
        r#"
object_key: envoy.network.transport_socket.original_dst_address
format_string: { text_format_source: { inline_string: "not an address" } }
---
object_key: x.empty
factory_key: envoy.string
skip_if_empty: true
format_string: { text_format_source: { inline_string: "" } }
---
object_key: x.kept
factory_key: envoy.string
format_string: { text_format_source: { inline_string: "" } }
"#,
    )
    .expect("valid");
    let mut state = FilterState::default();
    s.apply(&ctx(), &mut state);
    assert_eq!(state.original_dst_address(), None);
    assert!(state.get("x.empty").is_none());
    assert_eq!(
        state.get("x.kept").map(|o| o.value.clone()),
        Some(Value::String(String::new()))
    );
}

#[test]
fn later_values_see_earlier_ones_and_replace_them() {
    // `read_only` is deprecated in Envoy and has no effect.
    let s = setters(
        r#"
object_key: a
factory_key: envoy.string
read_only: true
format_string: { text_format_source: { inline_string: "first" } }
---
object_key: b
factory_key: envoy.string
format_string: { text_format_source: { inline_string: "%FILTER_STATE(a:PLAIN)%-%FILTER_STATE(a)%" } }
---
object_key: a
factory_key: envoy.string
format_string: { text_format_source: { inline_string: "second" } }
"#,
    )
    .expect("valid");
    let mut state = FilterState::default();
    s.apply(&ctx(), &mut state);
    assert_eq!(
        state.get("a").map(|o| o.value.plain()).as_deref(),
        Some("second")
    );
    assert_eq!(
        state.get("b").map(|o| o.value.plain()).as_deref(),
        Some("first-\"first\"")
    );
}

#[test]
fn a_read_only_object_is_not_replaced() {
    let mut state = FilterState::default();
    let object = |v: &str, read_only| Object {
        key: "k".into(),
        value: Value::String(v.into()),
        read_only,
        sharing: Sharing::None,
    };
    assert!(state.set(object("one", true)));
    assert!(!state.set(object("two", false)));
    assert_eq!(
        state.get("k").map(|o| o.value.plain()).as_deref(),
        Some("one")
    );
}

#[test]
fn unknown_factories_are_errors_naming_the_field() {
    let e = setters(
        r#"
object_key: envoy.upstream.dynamic_host
format_string: { text_format_source: { inline_string: "x" } }
"#,
    )
    .expect_err("unknown");
    assert!(e.contains("on_new_connection[0].object_key"), "{e}");
    assert!(e.contains("envoy.upstream.dynamic_host"), "{e}");
    let e = setters(
        r#"
object_key: mine
factory_key: my.factory
format_string: { text_format_source: { inline_string: "x" } }
"#,
    )
    .expect_err("unknown");
    assert!(e.contains("on_new_connection[0].factory_key"), "{e}");
    let e = setters(r#"object_key: envoy.tcp_proxy.cluster"#).expect_err("no value");
    assert!(e.contains("format_string"), "{e}");
}

#[test]
fn sharing_with_upstream_goes_once_or_transitively() {
    let mut state = FilterState::default();
    for (key, sharing) in [
        ("none", Sharing::None),
        ("once", Sharing::Once),
        ("always", Sharing::Transitive),
    ] {
        state.set(Object {
            key: key.into(),
            value: Value::String(key.into()),
            read_only: false,
            sharing,
        });
    }
    let next = state.for_upstream();
    assert!(next.get("none").is_none());
    assert_eq!(next.get("once").map(|o| o.sharing), Some(Sharing::None));
    assert_eq!(
        next.get("always").map(|o| o.sharing),
        Some(Sharing::Transitive)
    );
    let after = next.for_upstream();
    assert!(after.get("once").is_none());
    assert!(after.get("always").is_some());
}

#[test]
fn upstream_sni_and_alpn_come_from_their_keys() {
    let s = setters(
        r#"
object_key: envoy.network.upstream_server_name
format_string: { text_format_source: { inline_string: "api.example.com" } }
---
object_key: envoy.network.application_protocols
format_string: { text_format_source: { inline_string: "h2,http/1.1" } }
"#,
    )
    .expect("valid");
    let mut state = FilterState::default();
    assert_eq!(state.upstream_server_name(), None);
    assert_eq!(state.application_protocols(), None);
    s.apply(&ctx(), &mut state);
    assert_eq!(state.upstream_server_name(), Some("api.example.com"));
    assert_eq!(
        state.application_protocols(),
        Some(&[b"h2".to_vec(), b"http/1.1".to_vec()][..])
    );
    assert_eq!(
        state
            .get("envoy.network.application_protocols")
            .map(|o| o.value.plain())
            .as_deref(),
        Some("h2,http/1.1")
    );
}
