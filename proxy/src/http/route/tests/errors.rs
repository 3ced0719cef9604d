//! Configuration errors, each named by its path.

use super::*;

const R0: &str = "route_config.virtual_hosts[0].routes[0]";

fn route_err(route_yaml: &str, path_suffix: &str, needle: &str) {
    let yaml = one_vhost(&format!("  - name: r\n{route_yaml}"));
    let path = if path_suffix.is_empty() {
        R0.to_string()
    } else {
        format!("{R0}.{path_suffix}")
    };
    assert_error(&yaml, &path, needle);
}

#[test]
fn unknown_clusters() {
    route_err(
        "    match: {prefix: /}\n    route: {cluster: missing-a}\n",
        "route.cluster",
        "unknown cluster 'missing-a'",
    );
    route_err(
        "    match: {prefix: /}\n    route: {weighted_clusters: {clusters: [{name: ok, weight: 1}, {name: missing-b, weight: 1}]}}\n",
        "route.weighted_clusters.clusters[1].name",
        "unknown cluster 'missing-b'",
    );
    route_err(
        "    match: {prefix: /}\n    route: {cluster: c, request_mirror_policies: [{cluster: missing-m}]}\n",
        "route.request_mirror_policies[0].cluster",
        "unknown cluster 'missing-m'",
    );
}

#[test]
fn validate_clusters_false_accepts_unknown_clusters() {
    let yaml = "name: rc\nvalidate_clusters: false\nvirtual_hosts:\n- name: vh\n  domains: ['*']\n  routes:\n  - {match: {prefix: /}, route: {cluster: missing}}\n";
    assert!(build(yaml).is_ok());
}

#[test]
fn invalid_regexes() {
    route_err(
        "    match: {safe_regex: {regex: '(unclosed'}}\n    route: {cluster: c}\n",
        "match.safe_regex.regex",
        "invalid regex",
    );
    route_err(
        "    match: {prefix: /, headers: [{name: x, string_match: {safe_regex: {regex: '['}}}]}\n    route: {cluster: c}\n",
        "match.headers[0].string_match.safe_regex.regex",
        "invalid regex",
    );
    route_err(
        "    match: {prefix: /}\n    route: {cluster: c, regex_rewrite: {pattern: {regex: '*'}, substitution: x}}\n",
        "route.regex_rewrite.pattern.regex",
        "invalid regex",
    );
    route_err(
        "    match: {prefix: /}\n    route: {cluster: c, regex_rewrite: {pattern: {regex: '(a)'}, substitution: '\\2'}}\n",
        "route.regex_rewrite.substitution",
        "group \\2",
    );
}

#[test]
fn weighted_cluster_errors() {
    route_err(
        "    match: {prefix: /}\n    route: {weighted_clusters: {clusters: []}}\n",
        "route.weighted_clusters.clusters",
        "at least one",
    );
    route_err(
        "    match: {prefix: /}\n    route: {weighted_clusters: {clusters: [{name: a, weight: 0}]}}\n",
        "route.weighted_clusters.clusters",
        "greater than 0",
    );
    route_err(
        "    match: {prefix: /}\n    route: {weighted_clusters: {total_weight: 100, clusters: [{name: a, weight: 30}]}}\n",
        "route.weighted_clusters.total_weight",
        "add up to 30",
    );
}

#[test]
fn missing_match_or_action() {
    route_err(
        "    match: {prefix: /}\n",
        "",
        "one of route, redirect or direct_response is required",
    );
    route_err("    route: {cluster: c}\n", "match", "is required");
}

#[test]
fn duplicate_domains_are_rejected_case_insensitively() {
    let yaml = r#"
name: rc
virtual_hosts:
- name: a
  domains: ["a.com", "*"]
  routes: []
- name: b
  domains: ["A.COM", "*"]
  routes: []
"#;
    assert_error(
        yaml,
        "route_config.virtual_hosts[1].domains[0]",
        "duplicate entry of domain 'a.com'",
    );
    assert_error(
        yaml,
        "route_config.virtual_hosts[1].domains[1]",
        "single wildcard",
    );
}

#[test]
fn unsupported_behaviour_changing_fields() {
    route_err(
        "    match: {prefix: /}\n    route: {cluster_specifier_plugin: p}\n",
        "route.cluster_specifier_plugin",
        "not supported",
    );
    route_err(
        "    match: {prefix: /}\n    route: {inline_cluster_specifier_plugin: {extension: {name: x, typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}}}\n",
        "route.inline_cluster_specifier_plugin",
        "not supported",
    );
    route_err(
        "    match: {prefix: /}\n    filter_action: {action: {'@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}\n",
        "filter_action",
        "not supported",
    );
    route_err(
        "    match: {prefix: /}\n    route: {cluster: c, metadata_match: {filter_metadata: {envoy.lb: {v: '1'}}}}\n",
        "route.metadata_match",
        "not supported",
    );
    route_err(
        "    match: {prefix: /, tls_context: {presented: true}}\n    route: {cluster: c}\n",
        "match.tls_context",
        "not supported",
    );
}

const LUA: &str = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute";
const CORS: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";

#[test]
fn per_filter_configs_of_unknown_filters() {
    route_err(
        &format!("    match: {{prefix: /}}\n    route: {{cluster: c}}\n    typed_per_filter_config:\n      envoy.filters.http.lua: {{'@type': {LUA}, disabled: true}}\n"),
        "typed_per_filter_config.envoy.filters.http.lua",
        "LuaPerRoute",
    );
    // Optional unknown configs are dropped; known ones are found most-specific first.
    let t = table(&format!(
        r#"
name: rc
virtual_hosts:
- name: vh
  domains: ["*"]
  typed_per_filter_config:
    envoy.filters.http.cors: {{'@type': {CORS}, max_age: vhost}}
  routes:
  - match: {{prefix: /}}
    route: {{cluster: c}}
    typed_per_filter_config:
      envoy.filters.http.lua:
        '@type': type.googleapis.com/envoy.config.route.v3.FilterConfig
        is_optional: true
        config: {{'@type': {LUA}, disabled: true}}
      envoy.filters.http.router_off:
        '@type': type.googleapis.com/envoy.config.route.v3.FilterConfig
        disabled: true
"#
    ));
    let s = t.select(&get("/", "h")).expect("selected");
    assert!(s
        .per_filter_config("envoy.filters.http.lua", None)
        .is_none());
    let off = s
        .per_filter_config("envoy.filters.http.router_off", None)
        .expect("override");
    assert!(off.disabled && off.config.is_none());
    let cors = s
        .per_filter_config("envoy.filters.http.cors", None)
        .expect("vhost config");
    assert_eq!(
        cors.config.as_ref().map(|a| a.type_url.as_str()),
        Some(CORS)
    );
}

#[test]
fn header_mutation_errors() {
    let yaml = r#"
name: rc
request_headers_to_add:
- {header: {key: x-a, value: '%NOT_AN_OPERATOR%'}}
- {header: {key: host, value: h}}
- {header: {key: x-b, value: v}, append: true, append_action: OVERWRITE_IF_EXISTS}
response_headers_to_remove: [":status"]
virtual_hosts: []
"#;
    assert_error(
        yaml,
        "route_config.request_headers_to_add[0].header.value",
        "NOT_AN_OPERATOR",
    );
    assert_error(
        yaml,
        "route_config.request_headers_to_add[1].header.key",
        "may not be modified",
    );
    assert_error(
        yaml,
        "route_config.request_headers_to_add[2]",
        "both append and append_action",
    );
    assert_error(
        yaml,
        "route_config.response_headers_to_remove[0]",
        "may not be removed",
    );
}

#[test]
fn rewrite_and_match_errors() {
    route_err(
        "    match: {prefix: /}\n    route: {cluster: c, prefix_rewrite: /x, regex_rewrite: {pattern: {regex: a}, substitution: b}}\n",
        "route",
        "only one of prefix_rewrite",
    );
    route_err(
        "    match: {path_separated_prefix: /a/}\n    route: {cluster: c}\n",
        "match.path_separated_prefix",
        "not end with '/'",
    );
    route_err(
        "    match: {prefix: /, headers: [{name: x, range_match: {start: 5, end: 5}}]}\n    route: {cluster: c}\n",
        "match.headers[0].range_match",
        "less than end",
    );
}

#[test]
fn direct_response_and_retry_errors() {
    route_err(
        "    match: {prefix: /}\n    direct_response: {status: 100}\n",
        "direct_response.status",
        "not in [200, 600)",
    );
    let big = "x".repeat(5000);
    route_err(
        &format!("    match: {{prefix: /}}\n    direct_response: {{status: 200, body: {{inline_string: {big}}}}}\n"),
        "direct_response.body",
        "maximum is 4096",
    );
    route_err(
        "    match: {prefix: /}\n    direct_response: {status: 200, body: {filename: /nonexistent/remora/body}}\n",
        "direct_response.body.filename",
        "reading",
    );
    route_err(
        "    match: {prefix: /}\n    route: {cluster: c, retry_policy: {retry_back_off: {base_interval: 1s, max_interval: 0.5s}}}\n",
        "route.retry_policy.retry_back_off.max_interval",
        "greater than or equal",
    );
}

#[test]
fn every_error_is_reported_in_one_pass() {
    let yaml = one_vhost(
        "  - {match: {prefix: /}, route: {cluster: missing-1}}\n  - {match: {safe_regex: {regex: '('}}, route: {cluster: c}}\n  - {match: {prefix: /}}\n",
    );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 3, "{errs:#?}");
}

const RBAC_PER_ROUTE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute";

#[test]
fn per_route_rbac_is_validated_where_it_stands() {
    route_err(
        &format!("    match: {{prefix: /}}\n    route: {{cluster: c}}\n    typed_per_filter_config:\n      envoy.filters.http.rbac: {{'@type': {RBAC_PER_ROUTE}, rbac: {{rules: {{policies: {{p: {{permissions: [{{any: true}}], principals: [{{metadata: {{filter: f, path: [{{key: k}}], value: {{present_match: true}}}}}}]}}}}}}}}}}\n"),
        "typed_per_filter_config.envoy.filters.http.rbac.rbac.rules.policies.p.principals[0].metadata",
        "not supported",
    );
}

#[test]
fn a_level_that_only_enables_a_filter_leaves_its_config_to_the_less_specific_ones() {
    let t = table(&format!(
        r#"
name: rc
virtual_hosts:
- name: vh
  domains: ["*"]
  typed_per_filter_config:
    envoy.filters.http.rbac: {{'@type': {RBAC_PER_ROUTE}}}
  routes:
  - match: {{prefix: /on}}
    route: {{cluster: c}}
    typed_per_filter_config:
      envoy.filters.http.rbac: {{'@type': type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: false}}
  - match: {{prefix: /off}}
    route: {{cluster: c}}
    typed_per_filter_config:
      envoy.filters.http.rbac: {{'@type': type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true}}
  - match: {{prefix: /}}
    route: {{cluster: c}}
"#
    ));
    let look = |path: &str| {
        let s = t.select(&get(path, "h")).expect("selected");
        let (disabled, config) = s.filter_override("envoy.filters.http.rbac", None);
        (disabled, config.is_some())
    };
    assert_eq!(look("/on"), (Some(false), true));
    assert_eq!(look("/off"), (Some(true), true));
    assert_eq!(look("/other"), (Some(false), true));
    let s = t.select(&get("/", "h")).expect("selected");
    assert_eq!(s.filter_override("envoy.filters.http.fault", None).0, None);
}
