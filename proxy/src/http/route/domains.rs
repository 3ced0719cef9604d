//! Route virtual host lookup: Envoy's domain precedence (exact, longest `*suffix`, longest `prefix*`,
//! then `*`) over lowercased hosts, with hash lookups only.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// Wildcard domains of one length, keyed by their fixed part.
type ByLength = Vec<(usize, HashMap<String, usize>)>;

#[derive(Debug, Clone, Default)]
pub(crate) struct DomainIndex {
    exact: HashMap<String, usize>,
    /// Longest first.
    suffixes: ByLength,
    prefixes: ByLength,
    any: Option<usize>,
}

/// Collects domains, then freezes them into a [`DomainIndex`].
#[derive(Default)]
pub(crate) struct DomainIndexBuilder {
    exact: HashMap<String, usize>,
    suffixes: BTreeMap<usize, HashMap<String, usize>>,
    prefixes: BTreeMap<usize, HashMap<String, usize>>,
    any: Option<usize>,
    seen: HashMap<String, ()>,
}

/// Why a domain cannot be added.
pub(crate) enum DomainError {
    Duplicate,
    SecondCatchAll,
}

impl DomainIndexBuilder {
    /// Adds a domain (already lowercased) of virtual host `vhost`.
    pub(crate) fn insert(&mut self, domain: &str, vhost: usize) -> Result<(), DomainError> {
        if domain == "*" {
            if self.any.is_some() {
                return Err(DomainError::SecondCatchAll);
            }
            self.any = Some(vhost);
            return Ok(());
        }
        if self.seen.insert(domain.to_string(), ()).is_some() {
            return Err(DomainError::Duplicate);
        }
        if let Some(rest) = domain.strip_prefix('*') {
            self.suffixes
                .entry(rest.len())
                .or_default()
                .insert(rest.to_string(), vhost);
        } else if let Some(rest) = domain.strip_suffix('*') {
            self.prefixes
                .entry(rest.len())
                .or_default()
                .insert(rest.to_string(), vhost);
        } else {
            self.exact.insert(domain.to_string(), vhost);
        }
        Ok(())
    }

    pub(crate) fn build(self) -> DomainIndex {
        DomainIndex {
            exact: self.exact,
            suffixes: self.suffixes.into_iter().rev().collect(),
            prefixes: self.prefixes.into_iter().rev().collect(),
            any: self.any,
        }
    }
}

impl DomainIndex {
    /// The virtual host for a lowercased host. A wildcard never matches the empty string.
    pub(crate) fn find(&self, host: &str) -> Option<usize> {
        if let Some(v) = self.exact.get(host) {
            return Some(*v);
        }
        for (len, map) in &self.suffixes {
            if host.len() > *len {
                if let Some(v) = host.get(host.len() - len..).and_then(|s| map.get(s)) {
                    return Some(*v);
                }
            }
        }
        for (len, map) in &self.prefixes {
            if host.len() > *len {
                if let Some(v) = host.get(..*len).and_then(|s| map.get(s)) {
                    return Some(*v);
                }
            }
        }
        self.any
    }
}

/// `s` in ASCII lowercase, copied into `buf` only when it has uppercase letters.
pub(crate) fn ascii_lowercase<'a>(s: &'a str, buf: &'a mut [u8; 256]) -> Cow<'a, str> {
    if !s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Cow::Borrowed(s);
    }
    if s.len() > buf.len() {
        return Cow::Owned(s.to_ascii_lowercase());
    }
    let out = &mut buf[..s.len()];
    out.copy_from_slice(s.as_bytes());
    out.make_ascii_lowercase();
    // Lowercasing ASCII bytes keeps UTF-8 valid.
    match std::str::from_utf8(out) {
        Ok(v) => Cow::Borrowed(v),
        Err(_) => Cow::Owned(s.to_ascii_lowercase()),
    }
}
