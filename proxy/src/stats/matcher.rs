//! `stats_config.stats_matcher`: which stats exist at all. A rejected name gets a detached handle
//! that counts nothing visible, as Envoy does not instantiate it (Istio's bootstrap keeps only the
//! `cluster_manager`, `listener_manager`, `server`, ... stats this way).

use envoy_types::pb::envoy::config::metrics::v3::{stats_matcher, StatsMatcher as Proto};

use crate::config::{ConfigErrors, Path};
use crate::http::route::string_match::StringMatch;

/// A validated stats matcher.
#[derive(Debug, Clone)]
pub struct StatsMatcher(Rule);

#[derive(Debug, Clone)]
enum Rule {
    RejectAll,
    Inclusion(Vec<StringMatch>),
    Exclusion(Vec<StringMatch>),
}

impl StatsMatcher {
    /// `None` when the matcher keeps every stat (`reject_all: false` or unset).
    pub fn from_proto(m: &Proto, path: &Path) -> Result<Option<Self>, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let list = |patterns: &[envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher],
                    field: &str,
                    errs: &mut ConfigErrors| {
            let p = path.field(field).field("patterns");
            patterns
                .iter()
                .enumerate()
                .filter_map(|(i, s)| StringMatch::from_proto(s, &p.index(i), errs))
                .collect::<Vec<_>>()
        };
        let out = match &m.stats_matcher {
            Some(stats_matcher::StatsMatcher::RejectAll(true)) => {
                Some(StatsMatcher(Rule::RejectAll))
            }
            Some(stats_matcher::StatsMatcher::RejectAll(false)) | None => None,
            Some(stats_matcher::StatsMatcher::InclusionList(l)) => Some(StatsMatcher(
                Rule::Inclusion(list(&l.patterns, "inclusion_list", &mut errs)),
            )),
            Some(stats_matcher::StatsMatcher::ExclusionList(l)) => Some(StatsMatcher(
                Rule::Exclusion(list(&l.patterns, "exclusion_list", &mut errs)),
            )),
        };
        errs.finish(out)
    }

    /// Whether the stat `name` is kept.
    pub fn accepts(&self, name: &str) -> bool {
        match &self.0 {
            Rule::RejectAll => false,
            Rule::Inclusion(p) => p.iter().any(|m| m.matches(name)),
            Rule::Exclusion(p) => !p.iter().any(|m| m.matches(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse::{from_yaml, ParseOptions};
    use crate::stats::Store;

    #[test]
    fn istios_inclusion_list_keeps_only_what_it_names() {
        let m: Proto = from_yaml(
            "inclusion_list: { patterns: [ { prefix: cluster_manager }, { suffix: rbac.allowed }, { safe_regex: { regex: 'vhost\\..*\\.route\\..*' } } ] }",
            ParseOptions::default(),
        )
        .expect("yaml");
        let m = StatsMatcher::from_proto(&m, &Path::default())
            .expect("valid")
            .expect("a matcher");
        let store = Store::new();
        store.set_matcher(m);
        store.counter("cluster_manager.cds.update_success").inc();
        store.counter("http.inbound.rbac.allowed").inc();
        store.counter("vhost.a.route.b.upstream_rq_total").inc();
        store.counter("control_plane.rate_limit_enforced").inc();
        store.gauge("control_plane.connected_state").set(1);
        let names: Vec<String> = store.snapshot().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "cluster_manager.cds.update_success",
                "http.inbound.rbac.allowed",
                "vhost.a.route.b.upstream_rq_total"
            ]
        );
    }
}
