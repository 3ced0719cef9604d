//! `envoy.filters.http.rbac`: allow or deny a request by its policies, before the router.
//!
//! Enforced `rules` decide (ALLOW: some policy must match; DENY: none may; LOG: always allowed);
//! `shadow_rules` are evaluated for their stats only. A route's `RBACPerRoute` replaces both rule
//! sets for that route; the stats stay the filter's. Denied requests get Envoy's
//! `403 RBAC: access denied`.

pub mod policy;

use std::sync::Arc;

use envoy_types::pb::envoy::config::rbac::v3::{rbac::Action as ActionProto, Rbac as RulesProto};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::{
    Rbac as RbacProto, RbacPerRoute,
};
use http::StatusCode;

use crate::config::{ConfigErrors, Path};
use crate::http::filter::DynamicMetadata;
use crate::stats::{Counter, Store};
use policy::{Policy, Request};

pub const TYPE: &str = "envoy.extensions.filters.http.rbac.v3.RBAC";
pub const PER_ROUTE_TYPE: &str = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute";
pub const DENIED_BODY: &str = "RBAC: access denied";
/// The dynamic metadata namespace of the HTTP filter's shadow verdict.
pub const METADATA_NAMESPACE: &str = "envoy.filters.http.rbac";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Deny,
    Log,
}

/// One rule set (`rules` or `shadow_rules`): its action and its policies in name order (Envoy keeps
/// them in a sorted map, so the first match in that order is the effective policy).
#[derive(Debug)]
struct Rules {
    action: Action,
    policies: Vec<(String, Policy)>,
}

impl Rules {
    fn from_proto(r: &RulesProto, path: &Path, errs: &mut ConfigErrors) -> Option<Self> {
        let action = match ActionProto::try_from(r.action) {
            Ok(ActionProto::Allow) => Action::Allow,
            Ok(ActionProto::Deny) => Action::Deny,
            Ok(ActionProto::Log) => Action::Log,
            Err(_) => {
                errs.push(path.field("action"), format!("unknown action {}", r.action));
                return None;
            }
        };
        if r.audit_logging_options.is_some() {
            errs.push(
                path.field("audit_logging_options"),
                "RBAC audit logging is not supported",
            );
        }
        let mut names: Vec<&String> = r.policies.keys().collect();
        names.sort();
        let mut policies = Vec::with_capacity(names.len());
        let mut ok = true;
        for name in names {
            let p = path.field("policies").field(name);
            match Policy::from_proto(&r.policies[name], &p, errs) {
                Some(policy) => policies.push((name.clone(), policy)),
                None => ok = false,
            }
        }
        ok.then_some(Rules { action, policies })
    }

    /// Whether the request may pass, and the policy that matched.
    fn decide(&self, req: &Request<'_>) -> (bool, Option<&str>) {
        let matched = self
            .policies
            .iter()
            .find(|(_, p)| p.matches(req))
            .map(|(n, _)| n.as_str());
        let allowed = match self.action {
            Action::Allow => matched.is_some(),
            Action::Deny => matched.is_none(),
            Action::Log => true,
        };
        (allowed, matched)
    }
}

/// The enforced and shadow rule sets of a filter or of a route's `RBACPerRoute`.
#[derive(Debug, Default)]
pub struct Engines {
    rules: Option<Rules>,
    shadow: Option<Rules>,
}

/// The parts of an HTTP or network RBAC config that make its engines.
pub struct RuleSets<'a> {
    pub rules: Option<&'a RulesProto>,
    pub shadow_rules: Option<&'a RulesProto>,
    pub matcher: bool,
    pub shadow_matcher: bool,
    pub track_per_rule_stats: bool,
}

impl Engines {
    fn from_proto(c: &RbacProto, path: &Path, errs: &mut ConfigErrors) -> Option<Self> {
        let sets = RuleSets {
            rules: c.rules.as_ref(),
            shadow_rules: c.shadow_rules.as_ref(),
            matcher: c.matcher.is_some(),
            shadow_matcher: c.shadow_matcher.is_some(),
            track_per_rule_stats: c.track_per_rule_stats,
        };
        Self::from_sets(&sets, path, errs)
    }

    /// Compiles the rule sets; anything remora cannot evaluate is an error naming its field.
    pub fn from_sets(c: &RuleSets<'_>, path: &Path, errs: &mut ConfigErrors) -> Option<Self> {
        for (set, field) in [(c.matcher, "matcher"), (c.shadow_matcher, "shadow_matcher")] {
            if set {
                errs.push(
                    path.field(field),
                    "RBAC matcher trees are not supported; use rules",
                );
            }
        }
        if c.track_per_rule_stats {
            errs.push(
                path.field("track_per_rule_stats"),
                "per-rule RBAC stats are not supported",
            );
        }
        let before = errs.0.len();
        let rules = c
            .rules
            .and_then(|r| Rules::from_proto(r, &path.field("rules"), errs));
        let shadow = c
            .shadow_rules
            .and_then(|r| Rules::from_proto(r, &path.field("shadow_rules"), errs));
        (errs.0.len() == before).then_some(Engines { rules, shadow })
    }

    /// `RBACPerRoute` (`path` points at the per-route config).
    pub fn per_route(c: &RbacPerRoute, path: &Path, errs: &mut ConfigErrors) -> Option<Arc<Self>> {
        match &c.rbac {
            Some(rbac) => Engines::from_proto(rbac, &path.field("rbac"), errs).map(Arc::new),
            // An empty per-route config leaves nothing to enforce for the route, as in Envoy.
            None => Some(Arc::new(Engines::default())),
        }
    }
}

/// The validated filter config.
#[derive(Debug)]
pub struct RbacConfig {
    engines: Arc<Engines>,
    rules_stat_prefix: String,
    shadow_rules_stat_prefix: String,
}

impl RbacConfig {
    pub fn from_proto(c: &RbacProto, path: &Path, errs: &mut ConfigErrors) -> Option<Self> {
        Some(RbacConfig {
            engines: Arc::new(Engines::from_proto(c, path, errs)?),
            rules_stat_prefix: c.rules_stat_prefix.clone(),
            shadow_rules_stat_prefix: c.shadow_rules_stat_prefix.clone(),
        })
    }
}

/// The filter as one connection manager runs it: config and its stats.
#[derive(Debug)]
pub struct RbacFilter {
    engines: Arc<Engines>,
    /// `shadow_rules_stat_prefix` as given: Envoy prefixes the metadata keys with it, undotted.
    shadow_prefix: String,
    allowed: Counter,
    denied: Counter,
    shadow_allowed: Counter,
    shadow_denied: Counter,
}

impl RbacFilter {
    /// `http.<stat_prefix>.rbac.[<rules_stat_prefix>.]allowed`, as Envoy names them (a prefix gets
    /// a dot unless it ends with one).
    pub fn new(cfg: &RbacConfig, store: &Store, stat_prefix: &str) -> Self {
        Self::scoped(
            cfg.engines.clone(),
            &cfg.rules_stat_prefix,
            &cfg.shadow_rules_stat_prefix,
            store,
            &format!("http.{stat_prefix}.rbac."),
        )
    }

    /// The engines with their counters under `scope` (`<scope>[<rules_prefix>.]allowed`, …).
    pub fn scoped(
        engines: Arc<Engines>,
        rules_prefix: &str,
        shadow_prefix: &str,
        store: &Store,
        scope: &str,
    ) -> Self {
        let s = store.scope(scope);
        let join = |p: &str| match p {
            "" => String::new(),
            p if p.ends_with('.') => p.to_string(),
            p => format!("{p}."),
        };
        let rules = join(rules_prefix);
        let shadow = join(shadow_prefix);
        RbacFilter {
            engines,
            shadow_prefix: shadow_prefix.to_string(),
            allowed: s.counter(&format!("{rules}allowed")),
            denied: s.counter(&format!("{rules}denied")),
            shadow_allowed: s.counter(&format!("{shadow}shadow_allowed")),
            shadow_denied: s.counter(&format!("{shadow}shadow_denied")),
        }
    }

    /// `Err` means the enforced rules refused: a local reply for a request, a close for a connection.
    pub fn decode(&self, route: Option<&Engines>, req: &Request<'_>) -> Result<(), Denied> {
        self.decode_http(route, req, &mut DynamicMetadata::default())
    }

    /// As [`Self::decode`], leaving the shadow verdict in the request's dynamic metadata as Envoy
    /// does (`<shadow prefix>shadow_effective_policy_id`, `<shadow prefix>shadow_engine_result`).
    pub fn decode_http(
        &self,
        route: Option<&Engines>,
        req: &Request<'_>,
        meta: &mut DynamicMetadata,
    ) -> Result<(), Denied> {
        let engines = route.unwrap_or(&self.engines);
        if let Some(shadow) = &engines.shadow {
            let (allowed, policy) = shadow.decide(req);
            tracing::debug!(allowed, policy, "RBAC shadow rules");
            if allowed {
                self.shadow_allowed.inc();
            } else {
                self.shadow_denied.inc();
            }
            let key = |k: &str| format!("{}{k}", self.shadow_prefix);
            if let Some(p) = policy {
                meta.set(
                    METADATA_NAMESPACE,
                    key("shadow_effective_policy_id"),
                    p.to_string(),
                );
            }
            let result = if allowed { "allowed" } else { "denied" };
            meta.set(
                METADATA_NAMESPACE,
                key("shadow_engine_result"),
                result.to_string(),
            );
        }
        let Some(rules) = &engines.rules else {
            return Ok(());
        };
        let (allowed, policy) = rules.decide(req);
        if allowed {
            self.allowed.inc();
            Ok(())
        } else {
            tracing::debug!(policy, "RBAC denied the request");
            self.denied.inc();
            Err(Denied)
        }
    }
}

/// A request the enforced rules refused.
#[derive(Debug)]
pub struct Denied;

impl Denied {
    pub fn status(&self) -> StatusCode {
        StatusCode::FORBIDDEN
    }
}

#[cfg(test)]
mod tests;
