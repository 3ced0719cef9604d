//! Accept, filter-chain selection: a listener's chains and the one a connection gets.

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};

use std::collections::HashMap;

use super::chain_match::{narrow, ChainMatch, MatchInput};
use super::matcher::ChainMatcher;
use crate::config::{ConfigErrors, Path};

/// Which of a listener's chains a connection got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainId {
    /// `filter_chains[i]`.
    Index(usize),
    /// `default_filter_chain`.
    Default,
}

/// One filter chain: its match criteria and the payload built for it.
#[derive(Debug)]
pub struct Chain<C> {
    /// The chain's `name` (may be empty, as in Envoy).
    pub name: String,
    pub criteria: ChainMatch,
    pub payload: C,
}

/// A listener's filter chains, selected with Envoy's stage-by-stage narrowing.
#[derive(Debug)]
pub struct FilterChains<C> {
    chains: Vec<Chain<C>>,
    default: Option<Chain<C>>,
    /// `filter_chain_matcher`: when set, it alone picks the chain, by name.
    matcher: Option<(ChainMatcher, HashMap<String, usize>)>,
}

impl<C> FilterChains<C> {
    /// Builds and validates `filter_chains` and `default_filter_chain` of `l` (`path` names the
    /// listener). `build_chain` makes each chain's payload; its errors are collected with the rest.
    pub fn from_proto(
        l: &Listener,
        path: &Path,
        build_chain: &mut dyn FnMut(&FilterChain, &Path) -> Result<C, ConfigErrors>,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let matcher = match &l.filter_chain_matcher {
            Some(m) => match ChainMatcher::from_proto(m, &path.field("filter_chain_matcher")) {
                Ok(m) => Some(m),
                Err(e) => {
                    errors.extend(e);
                    None
                }
            },
            None => None,
        };
        let uses_matcher = l.filter_chain_matcher.is_some();
        if l.fcds_config.is_some() {
            errors.push(
                path.field("fcds_config"),
                "filter chain discovery is not supported",
            );
        }
        if l.filter_chains.is_empty() && l.default_filter_chain.is_none() {
            errors.push(path.field("filter_chains"), "no filter chains specified");
        }
        let chains_path = path.field("filter_chains");
        let mut chains = Vec::with_capacity(l.filter_chains.len());
        let mut protos: Vec<(usize, FilterChainMatch)> = Vec::with_capacity(l.filter_chains.len());
        for (i, fc) in l.filter_chains.iter().enumerate() {
            let fc_path = chains_path.index(i);
            // With a filter_chain_matcher, Envoy ignores filter_chain_match.
            let proto_match = if uses_matcher {
                FilterChainMatch::default()
            } else {
                fc.filter_chain_match.clone().unwrap_or_default()
            };
            let criteria =
                ChainMatch::from_proto(&proto_match, &fc_path.field("filter_chain_match"));
            let payload = build_chain(fc, &fc_path);
            if uses_matcher {
                if fc.name.is_empty() {
                    errors.push(
                        fc_path.field("name"),
                        "filter chains must be named when the listener has a filter_chain_matcher",
                    );
                } else if let Some(j) = l.filter_chains[..i].iter().position(|o| o.name == fc.name)
                {
                    errors.push(
                        fc_path.field("name"),
                        format!(
                            "filter chain name {:?} is not unique (also filter_chains[{j}]); the filter_chain_matcher selects chains by name",
                            fc.name
                        ),
                    );
                }
            } else if let Some(&(j, _)) = protos.iter().find(|(_, m)| *m == proto_match) {
                errors.push(
                    fc_path.field("filter_chain_match"),
                    format!(
                        "multiple filter chains with the same matching rules are defined: {} and {}",
                        describe(l, j),
                        describe(l, i)
                    ),
                );
            }
            protos.push((i, proto_match));
            match (criteria, payload) {
                (Ok(criteria), Ok(payload)) => chains.push(Chain {
                    name: fc.name.clone(),
                    criteria,
                    payload,
                }),
                (c, p) => {
                    c.err()
                        .into_iter()
                        .chain(p.err())
                        .for_each(|e| errors.extend(e));
                }
            }
        }
        // Identical matches were reported above; look for chains that merely overlap.
        if errors.is_empty() && !uses_matcher {
            for i in 0..chains.len() {
                for j in 0..i {
                    if chains[j].criteria.overlaps(&chains[i].criteria)
                        && protos[i].1 != protos[j].1
                    {
                        errors.push(
                            chains_path.index(i).field("filter_chain_match"),
                            format!(
                                "multiple filter chains with overlapping matching rules are defined: {} and {}",
                                describe(l, j),
                                describe(l, i)
                            ),
                        );
                    }
                }
            }
        }
        let default = match &l.default_filter_chain {
            // Envoy ignores the default chain's filter_chain_match.
            Some(fc) => match build_chain(fc, &path.field("default_filter_chain")) {
                Ok(payload) => Some(Chain {
                    name: fc.name.clone(),
                    criteria: ChainMatch::default(),
                    payload,
                }),
                Err(e) => {
                    errors.extend(e);
                    None
                }
            },
            None => None,
        };
        let matcher = matcher.map(|m| {
            let names = chains
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect();
            (m, names)
        });
        errors.finish(Self {
            chains,
            default,
            matcher,
        })
    }

    /// The chain for a connection, or `None` when nothing matches and there is no default chain
    /// (Envoy then closes the connection and counts `no_filter_chain_match`).
    pub fn select(&self, input: &MatchInput<'_>) -> Option<&C> {
        self.select_id(input).and_then(|id| self.get(id))
    }

    pub fn select_id(&self, input: &MatchInput<'_>) -> Option<ChainId> {
        if let Some((m, names)) = &self.matcher {
            // An action naming no chain is a failed match: the default chain, if any.
            return match m.select(input).and_then(|name| names.get(name)) {
                Some(i) => Some(ChainId::Index(*i)),
                None => self.default.as_ref().map(|_| ChainId::Default),
            };
        }
        match narrow(&self.chains, |c| &c.criteria, input) {
            Some(i) => Some(ChainId::Index(i)),
            None => self.default.as_ref().map(|_| ChainId::Default),
        }
    }

    pub fn get(&self, id: ChainId) -> Option<&C> {
        self.chain(id).map(|c| &c.payload)
    }

    pub fn chain(&self, id: ChainId) -> Option<&Chain<C>> {
        match id {
            ChainId::Index(i) => self.chains.get(i),
            ChainId::Default => self.default.as_ref(),
        }
    }

    /// `filter_chains` in order, then `default_filter_chain`.
    pub fn iter(&self) -> impl Iterator<Item = (ChainId, &Chain<C>)> {
        self.chains
            .iter()
            .enumerate()
            .map(|(i, c)| (ChainId::Index(i), c))
            .chain(self.default.iter().map(|c| (ChainId::Default, c)))
    }

    /// Whether some chain matches on what only a listener filter can see (SNI, ALPN, transport).
    pub fn needs_inspection(&self) -> bool {
        if let Some((m, _)) = &self.matcher {
            return m.needs_inspection();
        }
        self.chains.iter().any(|c| c.criteria.needs_inspection())
    }
}

fn describe(l: &Listener, i: usize) -> String {
    match l.filter_chains.get(i).map(|c| c.name.as_str()) {
        Some(name) if !name.is_empty() => format!("filter_chains[{i}] (\"{name}\")"),
        _ => format!("filter_chains[{i}]"),
    }
}
