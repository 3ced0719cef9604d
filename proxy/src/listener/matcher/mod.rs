//! Accept, filter-chain matcher: a listener's `filter_chain_matcher` (the xDS matcher tree over
//! network inputs) validated into a tree whose actions are filter chain names.
//!
//! Semantics, as Envoy's: a tree looks its input up in an exact map, a prefix map (longest prefix
//! first) or an IP trie (`xds.type.matcher.v3.IPMatcher`, most specific range first); a list tries its
//! predicates in order. When the branch taken ends without an action (a nested matcher that does not
//! match), the next candidate is tried — a shorter prefix, a less specific non-exclusive range, the
//! next list entry — and then the matcher's `on_no_match`. An input without a value (no SNI, no ALPN)
//! matches nothing.

mod input;
pub mod ip;

use std::collections::HashMap;
use std::net::IpAddr;

use envoy_types::pb::xds::core::v3::{CidrRange as XdsCidrRange, TypedExtensionConfig};
use envoy_types::pb::xds::r#type::matcher::v3::matcher::matcher_list::predicate::{
    single_predicate, MatchType, SinglePredicate,
};
use envoy_types::pb::xds::r#type::matcher::v3::matcher::matcher_list::Predicate as PredicateProto;
use envoy_types::pb::xds::r#type::matcher::v3::matcher::matcher_tree::TreeType;
use envoy_types::pb::xds::r#type::matcher::v3::matcher::{
    on_match, MatcherType, OnMatch as OnMatchProto,
};
use envoy_types::pb::xds::r#type::matcher::v3::{
    string_matcher, Matcher as MatcherProto, StringMatcher,
};
use prost::Message;

use super::address::{self, Cidr};
use super::chain_match::MatchInput;
use crate::config::parse::{any_type_name, type_name};
use crate::config::{ConfigErrors, Path};
pub use input::Input;

/// A validated `filter_chain_matcher`; its actions are filter chain names.
#[derive(Debug, Clone)]
pub struct ChainMatcher {
    root: Node,
    needs_inspection: bool,
}

#[derive(Debug, Clone)]
enum Node {
    Tree {
        input: Input,
        map: TreeMap,
        on_no_match: Option<Box<OnMatch>>,
    },
    List {
        matchers: Vec<(Predicate, OnMatch)>,
        on_no_match: Option<Box<OnMatch>>,
    },
    /// A matcher with neither a list nor a tree: only `on_no_match`.
    Empty { on_no_match: Option<Box<OnMatch>> },
}

#[derive(Debug, Clone)]
enum TreeMap {
    Exact(HashMap<String, OnMatch>),
    /// Longest prefix first.
    Prefix(Vec<(String, OnMatch)>),
    /// Most specific range first (stable for equal lengths).
    Ip(Vec<IpRange>),
}

#[derive(Debug, Clone)]
struct IpRange {
    cidr: Cidr,
    on_match: OnMatch,
    exclusive: bool,
}

#[derive(Debug, Clone)]
enum OnMatch {
    /// The filter chain's name.
    Action(String),
    Matcher(Box<Node>),
}

#[derive(Debug, Clone)]
enum Predicate {
    Single { input: Input, value: ValueMatch },
    Or(Vec<Predicate>),
    And(Vec<Predicate>),
    Not(Box<Predicate>),
}

#[derive(Debug, Clone)]
enum ValueMatch {
    String(StringMatch),
    /// `envoy.extensions.matching.input_matchers.ip.v3.Ip`.
    Ip(Vec<Cidr>),
}

#[derive(Debug, Clone)]
struct StringMatch {
    pattern: Pattern,
    ignore_case: bool,
}

#[derive(Debug, Clone)]
enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(regex::Regex),
}

impl ChainMatcher {
    /// Validates `m` found at `path` (`...filter_chain_matcher`).
    pub fn from_proto(m: &MatcherProto, path: &Path) -> Result<Self, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let mut needs_inspection = false;
        let root = node(m, path, &mut errors, &mut needs_inspection);
        errors.finish(Self {
            root,
            needs_inspection,
        })
    }

    /// The name of the filter chain for a connection, or `None` when nothing matches.
    pub fn select<'a>(&'a self, input: &MatchInput<'_>) -> Option<&'a str> {
        self.root.eval(input)
    }

    /// Whether some input needs a listener filter (SNI, ALPN, transport protocol).
    pub fn needs_inspection(&self) -> bool {
        self.needs_inspection
    }

    /// Every action's chain name, for validation against the listener's chains.
    pub fn actions(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.root.actions(&mut out);
        out
    }
}

impl Node {
    fn eval<'a>(&'a self, input: &MatchInput<'_>) -> Option<&'a str> {
        let (found, on_no_match) = match self {
            Node::Tree {
                input: which,
                map,
                on_no_match,
            } => (
                which.value(input).and_then(|v| map.eval(&v, input)),
                on_no_match,
            ),
            Node::List {
                matchers,
                on_no_match,
            } => (
                matchers
                    .iter()
                    .filter(|(p, _)| p.matches(input))
                    .find_map(|(_, m)| m.eval(input)),
                on_no_match,
            ),
            Node::Empty { on_no_match } => (None, on_no_match),
        };
        found.or_else(|| on_no_match.as_ref().and_then(|m| m.eval(input)))
    }

    fn actions<'a>(&'a self, out: &mut Vec<&'a str>) {
        let on_no_match = match self {
            Node::Tree {
                map, on_no_match, ..
            } => {
                match map {
                    TreeMap::Exact(m) => m.values().for_each(|o| o.actions(out)),
                    TreeMap::Prefix(v) => v.iter().for_each(|(_, o)| o.actions(out)),
                    TreeMap::Ip(v) => v.iter().for_each(|r| r.on_match.actions(out)),
                }
                on_no_match
            }
            Node::List {
                matchers,
                on_no_match,
            } => {
                matchers.iter().for_each(|(_, o)| o.actions(out));
                on_no_match
            }
            Node::Empty { on_no_match } => on_no_match,
        };
        if let Some(o) = on_no_match {
            o.actions(out);
        }
    }
}

impl TreeMap {
    fn eval<'a>(&'a self, value: &str, input: &MatchInput<'_>) -> Option<&'a str> {
        match self {
            TreeMap::Exact(m) => m.get(value).and_then(|o| o.eval(input)),
            TreeMap::Prefix(v) => v
                .iter()
                .filter(|(p, _)| value.starts_with(p.as_str()))
                .find_map(|(_, o)| o.eval(input)),
            TreeMap::Ip(ranges) => {
                let ip: IpAddr = value.parse().ok()?;
                for r in ranges.iter().filter(|r| r.cidr.contains(ip)) {
                    if let Some(found) = r.on_match.eval(input) {
                        return Some(found);
                    }
                    if r.exclusive {
                        return None;
                    }
                }
                None
            }
        }
    }
}

impl OnMatch {
    fn eval<'a>(&'a self, input: &MatchInput<'_>) -> Option<&'a str> {
        match self {
            OnMatch::Action(name) => Some(name),
            OnMatch::Matcher(n) => n.eval(input),
        }
    }

    fn actions<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            OnMatch::Action(name) => out.push(name),
            OnMatch::Matcher(n) => n.actions(out),
        }
    }
}

impl Predicate {
    fn matches(&self, input: &MatchInput<'_>) -> bool {
        match self {
            Predicate::Single {
                input: which,
                value,
            } => which.value(input).is_some_and(|v| value.matches(&v)),
            Predicate::Or(ps) => ps.iter().any(|p| p.matches(input)),
            Predicate::And(ps) => ps.iter().all(|p| p.matches(input)),
            Predicate::Not(p) => !p.matches(input),
        }
    }
}

impl ValueMatch {
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatch::String(s) => s.matches(v),
            ValueMatch::Ip(cidrs) => v
                .parse::<IpAddr>()
                .is_ok_and(|ip| cidrs.iter().any(|c| c.contains(ip))),
        }
    }
}

impl StringMatch {
    fn matches(&self, v: &str) -> bool {
        let fold = |s: &str| {
            if self.ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        match &self.pattern {
            Pattern::Exact(p) => fold(v) == *p,
            Pattern::Prefix(p) => fold(v).starts_with(p.as_str()),
            Pattern::Suffix(p) => fold(v).ends_with(p.as_str()),
            Pattern::Contains(p) => fold(v).contains(p.as_str()),
            Pattern::Regex(r) => r.is_match(v),
        }
    }
}

fn node(m: &MatcherProto, path: &Path, errors: &mut ConfigErrors, inspect: &mut bool) -> Node {
    let on_no_match = m
        .on_no_match
        .as_ref()
        .and_then(|o| on_match(o, &path.field("on_no_match"), errors, inspect))
        .map(Box::new);
    match &m.matcher_type {
        Some(MatcherType::MatcherTree(t)) => {
            let tpath = path.field("matcher_tree");
            let Some(which) = t
                .input
                .as_ref()
                .and_then(|i| input_of(i, &tpath.field("input"), errors))
            else {
                if t.input.is_none() {
                    errors.push(tpath.field("input"), "input is required");
                }
                return Node::Empty { on_no_match };
            };
            *inspect |= which.needs_inspection();
            let map = match &t.tree_type {
                Some(TreeType::ExactMatchMap(mm)) => {
                    let mpath = tpath.field("exact_match_map").field("map");
                    TreeMap::Exact(
                        mm.map
                            .iter()
                            .filter_map(|(k, v)| {
                                on_match(v, &mpath.field(k), errors, inspect)
                                    .map(|o| (k.clone(), o))
                            })
                            .collect(),
                    )
                }
                Some(TreeType::PrefixMatchMap(mm)) => {
                    let mpath = tpath.field("prefix_match_map").field("map");
                    let mut v: Vec<(String, OnMatch)> = mm
                        .map
                        .iter()
                        .filter_map(|(k, v)| {
                            on_match(v, &mpath.field(k), errors, inspect).map(|o| (k.clone(), o))
                        })
                        .collect();
                    v.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
                    TreeMap::Prefix(v)
                }
                Some(TreeType::CustomMatch(c)) => {
                    match ip_tree(c, &tpath.field("custom_match"), errors, inspect) {
                        Some(t) => t,
                        None => return Node::Empty { on_no_match },
                    }
                }
                None => {
                    errors.push(
                        tpath,
                        "one of exact_match_map, prefix_match_map or custom_match is required",
                    );
                    return Node::Empty { on_no_match };
                }
            };
            Node::Tree {
                input: which,
                map,
                on_no_match,
            }
        }
        Some(MatcherType::MatcherList(l)) => {
            let lpath = path.field("matcher_list").field("matchers");
            if l.matchers.is_empty() {
                errors.push(lpath.clone(), "at least one matcher is required");
            }
            let matchers = l
                .matchers
                .iter()
                .enumerate()
                .filter_map(|(i, fm)| {
                    let p = lpath.index(i);
                    let pred = match &fm.predicate {
                        Some(pr) => predicate(pr, &p.field("predicate"), errors, inspect),
                        None => {
                            errors.push(p.field("predicate"), "predicate is required");
                            None
                        }
                    };
                    let om = match &fm.on_match {
                        Some(o) => on_match(o, &p.field("on_match"), errors, inspect),
                        None => {
                            errors.push(p.field("on_match"), "on_match is required");
                            None
                        }
                    };
                    Some((pred?, om?))
                })
                .collect();
            Node::List {
                matchers,
                on_no_match,
            }
        }
        None => Node::Empty { on_no_match },
    }
}

fn on_match(
    o: &OnMatchProto,
    path: &Path,
    errors: &mut ConfigErrors,
    inspect: &mut bool,
) -> Option<OnMatch> {
    if o.keep_matching {
        errors.push(
            path.field("keep_matching"),
            "keep_matching is not supported for filter chain selection",
        );
    }
    match &o.on_match {
        Some(on_match::OnMatch::Action(a)) => action(a, &path.field("action"), errors),
        Some(on_match::OnMatch::Matcher(m)) => Some(OnMatch::Matcher(Box::new(node(
            m,
            &path.field("matcher"),
            errors,
            inspect,
        )))),
        None => {
            errors.push(path.clone(), "one of action or matcher is required");
            None
        }
    }
}

/// The action: a `google.protobuf.StringValue` holding a filter chain name.
fn action(a: &TypedExtensionConfig, path: &Path, errors: &mut ConfigErrors) -> Option<OnMatch> {
    let Some(any) = a.typed_config.as_ref() else {
        errors.push(path.field("typed_config"), "typed_config is required");
        return None;
    };
    if type_name(&any.type_url) != "google.protobuf.StringValue" {
        errors.push(
            path.field("typed_config"),
            format!(
                "the filter chain matcher's action must be a google.protobuf.StringValue naming a filter chain, got {}",
                any_type_name(any)
            ),
        );
        return None;
    }
    match envoy_types::pb::google::protobuf::StringValue::decode(any.value.as_slice()) {
        Ok(v) => Some(OnMatch::Action(v.value)),
        Err(e) => {
            errors.push(path.field("typed_config"), e.to_string());
            None
        }
    }
}

fn predicate(
    p: &PredicateProto,
    path: &Path,
    errors: &mut ConfigErrors,
    inspect: &mut bool,
) -> Option<Predicate> {
    let list =
        |ps: &[PredicateProto], field: &str, errors: &mut ConfigErrors, inspect: &mut bool| {
            let lp = path.field(field).field("predicate");
            if ps.len() < 2 {
                errors.push(lp.clone(), "at least two predicates are required");
            }
            ps.iter()
                .enumerate()
                .map(|(i, q)| predicate(q, &lp.index(i), errors, inspect))
                .collect::<Option<Vec<_>>>()
        };
    match &p.match_type {
        Some(MatchType::SinglePredicate(s)) => {
            single(s, &path.field("single_predicate"), errors, inspect)
        }
        Some(MatchType::OrMatcher(l)) => {
            list(&l.predicate, "or_matcher", errors, inspect).map(Predicate::Or)
        }
        Some(MatchType::AndMatcher(l)) => {
            list(&l.predicate, "and_matcher", errors, inspect).map(Predicate::And)
        }
        Some(MatchType::NotMatcher(n)) => predicate(n, &path.field("not_matcher"), errors, inspect)
            .map(|q| Predicate::Not(Box::new(q))),
        None => {
            errors.push(
                path.clone(),
                "one of single_predicate, or_matcher, and_matcher or not_matcher is required",
            );
            None
        }
    }
}

fn single(
    s: &SinglePredicate,
    path: &Path,
    errors: &mut ConfigErrors,
    inspect: &mut bool,
) -> Option<Predicate> {
    let which = match &s.input {
        Some(i) => input_of(i, &path.field("input"), errors)?,
        None => {
            errors.push(path.field("input"), "input is required");
            return None;
        }
    };
    *inspect |= which.needs_inspection();
    let value = match &s.matcher {
        Some(single_predicate::Matcher::ValueMatch(sm)) => {
            ValueMatch::String(string_match(sm, &path.field("value_match"), errors)?)
        }
        Some(single_predicate::Matcher::CustomMatch(c)) => {
            ip_predicate(c, &path.field("custom_match"), errors)?
        }
        None => {
            errors.push(
                path.clone(),
                "one of value_match or custom_match is required",
            );
            return None;
        }
    };
    Some(Predicate::Single {
        input: which,
        value,
    })
}

fn input_of(i: &TypedExtensionConfig, path: &Path, errors: &mut ConfigErrors) -> Option<Input> {
    let Some(any) = i.typed_config.as_ref() else {
        errors.push(path.field("typed_config"), "typed_config is required");
        return None;
    };
    let name = any_type_name(any);
    match Input::from_type_name(&name) {
        Some(input) => Some(input),
        None => {
            errors.push(
                path.field("typed_config"),
                format!("unsupported filter chain matcher input {name}"),
            );
            None
        }
    }
}

fn string_match(sm: &StringMatcher, path: &Path, errors: &mut ConfigErrors) -> Option<StringMatch> {
    let fold = |s: &str| {
        if sm.ignore_case {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        }
    };
    let pattern = match &sm.match_pattern {
        Some(string_matcher::MatchPattern::Exact(s)) => Pattern::Exact(fold(s)),
        Some(string_matcher::MatchPattern::Prefix(s)) => Pattern::Prefix(fold(s)),
        Some(string_matcher::MatchPattern::Suffix(s)) => Pattern::Suffix(fold(s)),
        Some(string_matcher::MatchPattern::Contains(s)) => Pattern::Contains(fold(s)),
        Some(string_matcher::MatchPattern::SafeRegex(r)) => {
            let anchored = format!("^(?:{})$", r.regex);
            match regex::RegexBuilder::new(&anchored)
                .case_insensitive(sm.ignore_case)
                .build()
            {
                Ok(re) => Pattern::Regex(re),
                Err(e) => {
                    errors.push(path.field("safe_regex").field("regex"), e.to_string());
                    return None;
                }
            }
        }
        Some(string_matcher::MatchPattern::Custom(_)) => {
            errors.push(
                path.field("custom"),
                "custom string matchers are not supported",
            );
            return None;
        }
        None => {
            errors.push(path.clone(), "a match pattern is required");
            return None;
        }
    };
    Some(StringMatch {
        pattern,
        ignore_case: sm.ignore_case,
    })
}

fn cidr_of(r: &XdsCidrRange, path: &Path, errors: &mut ConfigErrors) -> Option<Cidr> {
    let as_core = envoy_types::pb::envoy::config::core::v3::CidrRange {
        address_prefix: r.address_prefix.clone(),
        prefix_len: r.prefix_len,
    };
    match address::cidr(&as_core, path) {
        Ok(c) => Some(c),
        Err(e) => {
            errors.push(e.path, e.message);
            None
        }
    }
}

/// The tree's `custom_match`: only the IP trie.
fn ip_tree(
    c: &TypedExtensionConfig,
    path: &Path,
    errors: &mut ConfigErrors,
    inspect: &mut bool,
) -> Option<TreeMap> {
    let any = c.typed_config.as_ref()?;
    let name = any_type_name(any);
    if name != ip::IP_MATCHER {
        errors.push(
            path.field("typed_config"),
            format!(
                "unsupported custom matcher {name}; only {} is",
                ip::IP_MATCHER
            ),
        );
        return None;
    }
    let m = match ip::IpMatcher::decode(any.value.as_slice()) {
        Ok(m) => m,
        Err(e) => {
            errors.push(path.field("typed_config"), e.to_string());
            return None;
        }
    };
    let rpath = path.field("typed_config").field("range_matchers");
    let mut ranges = Vec::new();
    for (i, rm) in m.range_matchers.iter().enumerate() {
        let p = rpath.index(i);
        let Some(om) = rm
            .on_match
            .as_ref()
            .and_then(|o| on_match(o, &p.field("on_match"), errors, inspect))
        else {
            if rm.on_match.is_none() {
                errors.push(p.field("on_match"), "on_match is required");
            }
            continue;
        };
        for (j, r) in rm.ranges.iter().enumerate() {
            if let Some(cidr) = cidr_of(r, &p.field("ranges").index(j), errors) {
                ranges.push(IpRange {
                    cidr,
                    on_match: om.clone(),
                    exclusive: rm.exclusive,
                });
            }
        }
    }
    ranges.sort_by_key(|r| std::cmp::Reverse(r.cidr.prefix_len()));
    Some(TreeMap::Ip(ranges))
}

/// A predicate's `custom_match`: `envoy.extensions.matching.input_matchers.ip.v3.Ip`.
fn ip_predicate(
    c: &TypedExtensionConfig,
    path: &Path,
    errors: &mut ConfigErrors,
) -> Option<ValueMatch> {
    use envoy_types::pb::envoy::extensions::matching::input_matchers::ip::v3::Ip;
    let any = c.typed_config.as_ref()?;
    let name = any_type_name(any);
    if name != "envoy.extensions.matching.input_matchers.ip.v3.Ip" {
        errors.push(
            path.field("typed_config"),
            format!("unsupported custom input matcher {name}"),
        );
        return None;
    }
    let ip = match Ip::decode(any.value.as_slice()) {
        Ok(ip) => ip,
        Err(e) => {
            errors.push(path.field("typed_config"), e.to_string());
            return None;
        }
    };
    let cpath = path.field("typed_config").field("cidr_ranges");
    let cidrs = ip
        .cidr_ranges
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match address::cidr(r, &cpath.index(i)) {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(e.path, e.message);
                None
            }
        })
        .collect();
    Some(ValueMatch::Ip(cidrs))
}
