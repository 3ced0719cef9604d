//! YAML read as a stream decodes as it did through a JSON value tree: same messages, same errors.

use std::path::{Path, PathBuf};

use super::parse::{from_value, from_yaml, yaml_value, ParseOptions};
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

fn through_tree(text: &str, opts: ParseOptions) -> Result<Bootstrap, super::ConfigError> {
    from_value(yaml_value(text)?, opts)
}

fn same(text: &str, what: &str) {
    for allow in [false, true] {
        let opts = ParseOptions {
            allow_unknown_fields: allow,
        };
        let tree = through_tree(text, opts);
        let stream = from_yaml::<Bootstrap>(text, opts);
        assert_eq!(stream, tree, "{what} (allow_unknown_fields {allow})");
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

#[test]
fn every_shipped_configuration_decodes_as_through_the_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["tests/configs", "examples"] {
        yaml_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "found {} configurations", files.len());
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable");
        same(&text, &f.display().to_string());
    }
}

#[test]
fn scalar_typing_and_errors_are_the_tree_s() {
    for text in [
        "",
        "~",
        "[1, 2]",
        "a: [",
        "node: { id: 123 }",
        "node: { id: true }",
        "node: { id: '123', cluster: ~ }",
        "node: { id: x }\n---\nnode: { id: y }",
        "node: { id: x, id: y }",
        "node: { metadata: { a: 1, b: [x, 2.5, true, ~], 3: c, true: d, e: .inf } }",
        "static_resources: { clusters: [ { name: a, connect_timeout: 1 } ] }",
        "static_resources: { clusters: [ { name: a, connect_timeout: 1.5s, lb_policy: 1 } ] }",
        "static_resources: { clusters: [ { name: a, lb_policy: NOPE } ] }",
        "static_resources: { clusters: [ { name: a, bogus: 1 } ] }",
        "bogus: 1",
        "static_resources: { clusters: [ { name: a, per_connection_buffer_limit_bytes: -1 } ] }",
        "static_resources: { clusters: [ { name: a, per_connection_buffer_limit_bytes: 99999999999 } ] }",
        "static_resources: { clusters: [ { name: a, per_connection_buffer_limit_bytes: '12' } ] }",
        "static_resources: { clusters: [ { name: a, type: STATIC, cluster_type: { name: x } } ] }",
        "static_resources: { clusters: [ { name: a, dns_lookup_family: ~ } ] }",
        "stats_flush_interval: 5s\nenable_dispatcher_stats: yes",
        "enable_dispatcher_stats: true\nstats_flush_interval: 5",
        "{ [a]: b }",
        "x: &a { id: 1 }\nnode: *a",
        "node: { id: !!str 12 }",
    ] {
        same(text, text);
    }
}
