//! SPIFFE IDs (`spiffe://<trust-domain>/<path>`) as the SPIFFE ID specification defines them, with the
//! Istio form `spiffe://<td>/ns/<namespace>/sa/<service-account>` understood.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The scheme is not `spiffe://`.
    #[error("a SPIFFE ID must start with \"spiffe://\"")]
    Scheme,
    /// Nothing between `spiffe://` and the path.
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    /// The trust domain has a character outside `[a-z0-9.-_]`.
    #[error("the trust domain {0:?} has a character outside [a-z0-9.-_]")]
    TrustDomainChar(String),
    /// A path segment is empty, `.` or `..`.
    #[error("path segment {0:?} is empty, \".\" or \"..\"")]
    Segment(String),
    /// A path segment has a character outside `[A-Za-z0-9.-_]`.
    #[error("the path has a character outside [A-Za-z0-9.-_]: {0:?}")]
    PathChar(String),
    /// The ID has a `?query` or `#fragment`.
    #[error("a SPIFFE ID must not have a query or fragment")]
    QueryOrFragment,
    /// The ID is longer than 2048 bytes.
    #[error("a SPIFFE ID is at most 2048 bytes")]
    TooLong,
}

/// A trust domain (`cluster.local`): lowercase letters, digits, `.`, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Validates a trust domain name.
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        if name.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(SpiffeIdError::TrustDomainChar(name.to_string()));
        }
        Ok(Self(name.to_string()))
    }

    /// The trust domain name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    /// Empty, or `/seg/seg...`.
    path: String,
}

impl SpiffeId {
    /// Parses and validates `spiffe://td/path`.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.len() > 2048 {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeIdError::Scheme)?;
        if rest.contains(['?', '#']) {
            return Err(SpiffeIdError::QueryOrFragment);
        }
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let trust_domain = TrustDomain::new(td)?;
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                if seg.is_empty() || seg == "." || seg == ".." {
                    return Err(SpiffeIdError::Segment(seg.to_string()));
                }
                if !seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                {
                    return Err(SpiffeIdError::PathChar(seg.to_string()));
                }
            }
        }
        Ok(Self {
            trust_domain,
            path: path.to_string(),
        })
    }

    /// The Istio workload identity `spiffe://<td>/ns/<namespace>/sa/<service_account>`.
    pub fn istio(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        Self::parse(&format!(
            "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }

    /// The trust domain of the ID.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The namespace of an Istio identity (`/ns/<ns>/sa/<sa>`).
    pub fn namespace(&self) -> Option<&str> {
        self.istio_parts().map(|(ns, _)| ns)
    }

    /// The service account of an Istio identity.
    pub fn service_account(&self) -> Option<&str> {
        self.istio_parts().map(|(_, sa)| sa)
    }

    fn istio_parts(&self) -> Option<(&str, &str)> {
        let mut it = self.path.strip_prefix('/')?.split('/');
        match (it.next(), it.next(), it.next(), it.next(), it.next()) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_identity_round_trips() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").expect("valid");
        assert_eq!(id.trust_domain().as_str(), "cluster.local");
        assert_eq!(id.namespace(), Some("default"));
        assert_eq!(id.service_account(), Some("web"));
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/web");
        assert_eq!(SpiffeId::istio("cluster.local", "default", "web"), Ok(id));
    }

    #[test]
    fn invalid_ids_are_rejected_with_the_reason() {
        assert_eq!(SpiffeId::parse("https://x/y"), Err(SpiffeIdError::Scheme));
        assert_eq!(
            SpiffeId::parse("spiffe:///ns/a"),
            Err(SpiffeIdError::EmptyTrustDomain)
        );
        assert!(matches!(
            SpiffeId::parse("spiffe://Cluster.Local/a"),
            Err(SpiffeIdError::TrustDomainChar(_))
        ));
        assert!(matches!(
            SpiffeId::parse("spiffe://td/a//b"),
            Err(SpiffeIdError::Segment(_))
        ));
        assert!(matches!(
            SpiffeId::parse("spiffe://td/a/../b"),
            Err(SpiffeIdError::Segment(_))
        ));
        assert!(matches!(
            SpiffeId::parse("spiffe://td/a b"),
            Err(SpiffeIdError::PathChar(_))
        ));
        assert_eq!(
            SpiffeId::parse("spiffe://td/a?x=1"),
            Err(SpiffeIdError::QueryOrFragment)
        );
        assert!(
            SpiffeId::parse("spiffe://td").is_ok(),
            "a trust-domain-only ID is valid"
        );
        assert_eq!(
            SpiffeId::parse("spiffe://td/x").expect("valid").namespace(),
            None
        );
    }
}
