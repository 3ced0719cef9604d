//! `envoy.filters.network.rbac`: allow or close a connection by its policies.
//!
//! The connection is judged once, before the terminal filter sees it (after the TLS handshake, so
//! `authenticated` principals see the peer certificate), against Envoy's connection attributes:
//! source and destination addresses, the peer's identity, the requested server name; header and
//! `url_path` matchers see no request, as in Envoy, where they meet an empty header map. Stats are
//! Envoy 1.40's: `<stat_prefix>.rbac.allowed|denied` and
//! `<stat_prefix>.rbac.<shadow_rules_stat_prefix>.shadow_allowed|shadow_denied` (Istio's dry run:
//! `tcp.rbac.istio_dry_run_allow_.shadow_denied`).
//!
//! `enforcement_type` CONTINUOUS re-evaluates on every read in Envoy; remora's connection
//! attributes cannot change after the first decision, so both types decide once. A denied
//! connection closes after `delay_deny`, if set.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::{
    rbac::EnforcementType, Rbac as NetworkRbacProto,
};

use crate::config::{ConfigErrors, Path};
use crate::http::filter::rbac::{Engines, RbacFilter, RuleSets};
use crate::http::filter::Request;
use crate::http::server::ConnInfo;
use crate::stats::Store;

pub const NAME: &str = "envoy.filters.network.rbac";
pub const TYPE: &str = "envoy.extensions.filters.network.rbac.v3.RBAC";

/// The filter with its counters.
#[derive(Debug)]
pub struct NetworkRbac {
    filter: RbacFilter,
    delay_deny: Option<Duration>,
}

impl NetworkRbac {
    /// Validates `c` (`path` points at its typed_config); errors name the field.
    pub fn from_proto(
        c: &NetworkRbacProto,
        path: &Path,
        store: &Store,
        errs: &mut ConfigErrors,
    ) -> Option<Self> {
        let before = errs.0.len();
        if c.stat_prefix.is_empty() {
            errs.push(
                path.field("stat_prefix"),
                "the network RBAC filter needs a stat_prefix",
            );
        }
        if EnforcementType::try_from(c.enforcement_type).is_err() {
            errs.push(
                path.field("enforcement_type"),
                format!("unknown enforcement type {}", c.enforcement_type),
            );
        }
        let sets = RuleSets {
            rules: c.rules.as_ref(),
            shadow_rules: c.shadow_rules.as_ref(),
            matcher: c.matcher.is_some(),
            shadow_matcher: c.shadow_matcher.is_some(),
            track_per_rule_stats: false,
        };
        let engines = Engines::from_sets(&sets, path, errs)?;
        if errs.0.len() != before {
            return None;
        }
        let scope = match c.stat_prefix.ends_with('.') {
            true => format!("{}rbac.", c.stat_prefix),
            false => format!("{}.rbac.", c.stat_prefix),
        };
        Some(NetworkRbac {
            filter: RbacFilter::scoped(
                Arc::new(engines),
                "",
                &c.shadow_rules_stat_prefix,
                store,
                &scope,
            ),
            delay_deny: c
                .delay_deny
                .as_ref()
                .map(crate::config::to_std)
                .filter(|d| !d.is_zero()),
        })
    }

    /// Judges the connection; `false` (after `delay_deny`) means close it.
    pub async fn admit(&self, info: &ConnInfo) -> bool {
        let req = Request {
            parts: None,
            peer: info.peer,
            remote: info.peer.ip(),
            local: info.local,
            tls: info.tls.as_deref(),
            requested_server_name: info.requested_server_name.as_deref(),
            filter_state: Some(&info.filter_state),
        };
        if self.filter.decode(None, &req).is_ok() {
            return true;
        }
        tracing::debug!(peer = %info.peer, "network RBAC denied the connection");
        if let Some(d) = self.delay_deny {
            tokio::time::sleep(d).await;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse::{from_yaml, ParseOptions};

    fn build(yaml: &str, store: &Store) -> Result<NetworkRbac, String> {
        let proto: NetworkRbacProto = from_yaml(yaml, ParseOptions::default()).expect("parses");
        let mut errs = ConfigErrors::default();
        match NetworkRbac::from_proto(&proto, &Path::root("rbac"), store, &mut errs) {
            Some(f) if errs.is_empty() => Ok(f),
            _ => Err(errs.to_string()),
        }
    }

    fn conn(peer: &str, local: &str) -> ConnInfo {
        ConnInfo {
            filter_state: Default::default(),
            internal_listener: None,
            id: 1,
            peer: peer.parse().expect("peer"),
            local: local.parse().expect("local"),
            scheme: "http",
            tls: None,
            requested_server_name: None,
        }
    }

    const PORT_9000_ONLY: &str = r#"
stat_prefix: tcp.
rules:
  action: ALLOW
  policies:
    port:
      permissions: [{ destination_port: 9000 }]
      principals: [{ any: true }]
shadow_rules_stat_prefix: istio_dry_run_allow_
shadow_rules:
  action: DENY
  policies:
    loopback:
      permissions: [{ any: true }]
      principals: [{ direct_remote_ip: { address_prefix: 127.0.0.0, prefix_len: 8 } }]
"#;

    #[tokio::test]
    async fn connections_are_judged_by_their_addresses_and_counted_as_envoy_names_them() {
        let store = Store::new();
        let f = build(PORT_9000_ONLY, &store).expect("valid");
        assert!(f.admit(&conn("127.0.0.1:5000", "10.0.0.1:9000")).await);
        assert!(!f.admit(&conn("10.1.1.1:5000", "10.0.0.1:9001")).await);
        let count = |name: &str| store.counter(name).get();
        assert_eq!(count("tcp.rbac.allowed"), 1);
        assert_eq!(count("tcp.rbac.denied"), 1);
        assert_eq!(count("tcp.rbac.istio_dry_run_allow_.shadow_denied"), 1);
        assert_eq!(count("tcp.rbac.istio_dry_run_allow_.shadow_allowed"), 1);
    }

    #[tokio::test]
    async fn header_and_path_rules_see_no_request() {
        let store = Store::new();
        let f = build(
            r#"
stat_prefix: tcp
rules:
  action: ALLOW
  policies:
    get-only:
      permissions: [{ header: { name: ":method", string_match: { exact: GET } } }]
      principals: [{ any: true }]
    path:
      permissions: [{ url_path: { path: { prefix: "/" } } }]
      principals: [{ any: true }]
"#,
            &store,
        )
        .expect("valid");
        assert!(
            !f.admit(&conn("127.0.0.1:5000", "127.0.0.1:80")).await,
            "an HTTP-only ALLOW policy never admits a connection"
        );
        assert_eq!(
            store.counter("tcp.rbac.denied").get(),
            1,
            "the prefix gets its dot"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delay_deny_holds_the_close() {
        let store = Store::new();
        let f = build(
            "stat_prefix: t\ndelay_deny: 2s\nrules: { action: DENY, policies: { all: { permissions: [{ any: true }], principals: [{ any: true }] } } }",
            &store,
        )
        .expect("valid");
        let t0 = tokio::time::Instant::now();
        assert!(!f.admit(&conn("127.0.0.1:5000", "127.0.0.1:80")).await);
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn what_cannot_be_evaluated_is_an_error_naming_the_field() {
        let store = Store::new();
        let e = build("rules: { action: ALLOW }", &store).expect_err("no stat_prefix");
        assert!(e.contains("rbac.stat_prefix"), "{e}");
        let e = build(
            "stat_prefix: t\nrules: { action: ALLOW, policies: { m: { permissions: [{ metadata: { filter: x } }], principals: [{ any: true }] } } }",
            &store,
        )
        .expect_err("metadata permission");
        assert!(e.contains("rbac.rules.policies.m.permissions[0]"), "{e}");
    }
}
