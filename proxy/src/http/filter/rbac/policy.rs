//! RBAC policies: `permissions` (what the request does) and `principals` (who sends it), compiled
//! once; anything remora cannot evaluate is a config error, so a policy never matches by omission.

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::rbac::v3::{
    permission::Rule, principal::Identifier, Permission, Policy as PolicyProto, Principal,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{path_matcher, PathMatcher, StringMatcher};
use http::request::Parts;

use crate::config::{ConfigErrors, Path};
use crate::http::route::{HeaderMatcher, HeaderSource, StringMatch};
use crate::listener::address::cidr;
use crate::listener::Cidr;
use crate::tls::TlsInfo;

/// What a policy is evaluated against: the request and its connection (`parts` is `None` when the
/// network RBAC filter judges the connection before any request).
pub struct Request<'a> {
    pub parts: Option<&'a Parts>,
    /// The downstream connection's peer (`direct_remote_ip`, `source_ip`).
    pub peer: SocketAddr,
    /// The client as the connection manager decided it (`remote_ip`: x-forwarded-for when trusted).
    pub remote: IpAddr,
    pub local: SocketAddr,
    pub tls: Option<&'a TlsInfo>,
    pub requested_server_name: Option<&'a str>,
    /// The connection's filter state (`filter_state` principals, e.g. Istio's
    /// `io.istio.peer_principal` that `io.istio.network.authn` sets).
    pub filter_state: Option<&'a crate::filter_state::FilterState>,
}

impl Request<'_> {
    /// The path without query and fragment, as `url_path` matches it.
    fn url_path(&self) -> Option<&str> {
        let p = self.parts?.uri.path();
        Some(p.split_once('#').map_or(p, |(p, _)| p))
    }

    fn headers(&self) -> HeaderSource<'_> {
        self.parts
            .map_or(HeaderSource::Empty, HeaderSource::Request)
    }
}

/// One compiled policy: some permission and some principal must match.
#[derive(Debug)]
pub struct Policy {
    permissions: Vec<Perm>,
    principals: Vec<Id>,
}

impl Policy {
    pub fn from_proto(p: &PolicyProto, path: &Path, errs: &mut ConfigErrors) -> Option<Self> {
        if p.condition.is_some() {
            errs.push(path.field("condition"), "CEL conditions are not supported");
        }
        if p.checked_condition.is_some() {
            errs.push(
                path.field("checked_condition"),
                "CEL conditions are not supported",
            );
        }
        let permissions = list(
            &p.permissions,
            &path.field("permissions"),
            errs,
            Perm::from_proto,
        );
        let principals = list(
            &p.principals,
            &path.field("principals"),
            errs,
            Id::from_proto,
        );
        if p.permissions.is_empty() {
            errs.push(path.field("permissions"), "must contain at least 1 item");
        }
        if p.principals.is_empty() {
            errs.push(path.field("principals"), "must contain at least 1 item");
        }
        Some(Policy {
            permissions: permissions?,
            principals: principals?,
        })
    }

    pub fn matches(&self, req: &Request<'_>) -> bool {
        self.permissions.iter().any(|p| p.matches(req))
            && self.principals.iter().any(|p| p.matches(req))
    }
}

/// Compiles every item (so every error is reported); `None` if any failed.
fn list<P, T>(
    items: &[P],
    path: &Path,
    errs: &mut ConfigErrors,
    one: fn(&P, &Path, &mut ConfigErrors) -> Option<T>,
) -> Option<Vec<T>> {
    let out: Vec<Option<T>> = items
        .iter()
        .enumerate()
        .map(|(i, p)| one(p, &path.index(i), errs))
        .collect();
    out.into_iter().collect()
}

fn string_matcher(
    m: Option<&StringMatcher>,
    path: &Path,
    errs: &mut ConfigErrors,
) -> Option<StringMatch> {
    match m {
        Some(m) => StringMatch::from_proto(m, path, errs),
        None => {
            errs.push(path, "is required");
            None
        }
    }
}

fn path_matcher(m: &PathMatcher, path: &Path, errs: &mut ConfigErrors) -> Option<StringMatch> {
    match &m.rule {
        Some(path_matcher::Rule::Path(s)) => string_matcher(Some(s), &path.field("path"), errs),
        None => {
            errs.push(path, "path is required");
            None
        }
    }
}

fn cidr_range(
    c: &envoy_types::pb::envoy::config::core::v3::CidrRange,
    path: &Path,
    errs: &mut ConfigErrors,
) -> Option<Cidr> {
    cidr(c, path).map_err(|e| errs.0.push(e)).ok()
}

/// A compiled `Permission`.
#[derive(Debug)]
enum Perm {
    Any,
    And(Vec<Perm>),
    Or(Vec<Perm>),
    Not(Box<Perm>),
    Header(HeaderMatcher),
    UrlPath(StringMatch),
    DestinationIp(Cidr),
    DestinationPort(u32),
    /// `[start, end)`, as Envoy's `Int32Range`.
    DestinationPortRange(i32, i32),
    RequestedServerName(StringMatch),
}

impl Perm {
    #[allow(deprecated)]
    fn from_proto(p: &Permission, path: &Path, errs: &mut ConfigErrors) -> Option<Self> {
        let unsupported = |field: &str, errs: &mut ConfigErrors| {
            errs.push(
                path.field(field),
                "this RBAC permission is not supported by remora",
            );
            None
        };
        Some(match &p.rule {
            Some(Rule::Any(true)) => Perm::Any,
            Some(Rule::Any(false)) => {
                errs.push(path.field("any"), "must be true");
                return None;
            }
            Some(Rule::AndRules(s)) => Perm::And(list(
                &s.rules,
                &path.field("and_rules").field("rules"),
                errs,
                Perm::from_proto,
            )?),
            Some(Rule::OrRules(s)) => Perm::Or(list(
                &s.rules,
                &path.field("or_rules").field("rules"),
                errs,
                Perm::from_proto,
            )?),
            Some(Rule::NotRule(p)) => Perm::Not(Box::new(Perm::from_proto(
                p,
                &path.field("not_rule"),
                errs,
            )?)),
            Some(Rule::Header(h)) => {
                Perm::Header(HeaderMatcher::from_proto(h, &path.field("header"), errs)?)
            }
            Some(Rule::UrlPath(m)) => {
                Perm::UrlPath(path_matcher(m, &path.field("url_path"), errs)?)
            }
            Some(Rule::DestinationIp(c)) => {
                Perm::DestinationIp(cidr_range(c, &path.field("destination_ip"), errs)?)
            }
            Some(Rule::DestinationPort(port)) => {
                if *port > 65535 {
                    errs.push(
                        path.field("destination_port"),
                        "must be less than or equal to 65535",
                    );
                    return None;
                }
                Perm::DestinationPort(*port)
            }
            Some(Rule::DestinationPortRange(r)) => Perm::DestinationPortRange(r.start, r.end),
            Some(Rule::RequestedServerName(m)) => Perm::RequestedServerName(
                StringMatch::from_proto(m, &path.field("requested_server_name"), errs)?,
            ),
            Some(Rule::Metadata(_)) => return unsupported("metadata", errs),
            Some(Rule::Matcher(_)) => return unsupported("matcher", errs),
            Some(Rule::UriTemplate(_)) => return unsupported("uri_template", errs),
            Some(Rule::SourcedMetadata(_)) => return unsupported("sourced_metadata", errs),
            None => {
                errs.push(path, "one of the permission rules is required");
                return None;
            }
        })
    }

    fn matches(&self, req: &Request<'_>) -> bool {
        match self {
            Perm::Any => true,
            Perm::And(all) => all.iter().all(|p| p.matches(req)),
            Perm::Or(any) => any.iter().any(|p| p.matches(req)),
            Perm::Not(p) => !p.matches(req),
            Perm::Header(h) => h.matches(req.headers()),
            Perm::UrlPath(m) => req.url_path().is_some_and(|p| m.matches(p)),
            Perm::DestinationIp(c) => c.contains(req.local.ip()),
            Perm::DestinationPort(p) => u32::from(req.local.port()) == *p,
            Perm::DestinationPortRange(start, end) => {
                let port = i32::from(req.local.port());
                port >= *start && port < *end
            }
            Perm::RequestedServerName(m) => m.matches(req.requested_server_name.unwrap_or("")),
        }
    }
}

/// A compiled `Principal`.
#[derive(Debug)]
enum Id {
    Any,
    And(Vec<Id>),
    Or(Vec<Id>),
    Not(Box<Id>),
    /// `authenticated`: a TLS connection; with a matcher, the peer certificate's URI SANs, then DNS
    /// SANs, then subject must match, as Envoy checks them.
    Authenticated(Option<StringMatch>),
    DirectRemoteIp(Cidr),
    RemoteIp(Cidr),
    Header(HeaderMatcher),
    UrlPath(StringMatch),
    /// `filter_state` with a `string_match`: the object's plain value must match; absent, no match.
    FilterState(String, StringMatch),
}

impl Id {
    #[allow(deprecated)]
    fn from_proto(p: &Principal, path: &Path, errs: &mut ConfigErrors) -> Option<Self> {
        let unsupported = |field: &str, errs: &mut ConfigErrors| {
            errs.push(
                path.field(field),
                "this RBAC principal is not supported by remora",
            );
            None
        };
        Some(match &p.identifier {
            Some(Identifier::Any(true)) => Id::Any,
            Some(Identifier::Any(false)) => {
                errs.push(path.field("any"), "must be true");
                return None;
            }
            Some(Identifier::AndIds(s)) => Id::And(list(
                &s.ids,
                &path.field("and_ids").field("ids"),
                errs,
                Id::from_proto,
            )?),
            Some(Identifier::OrIds(s)) => Id::Or(list(
                &s.ids,
                &path.field("or_ids").field("ids"),
                errs,
                Id::from_proto,
            )?),
            Some(Identifier::NotId(p)) => {
                Id::Not(Box::new(Id::from_proto(p, &path.field("not_id"), errs)?))
            }
            Some(Identifier::Authenticated(a)) => match &a.principal_name {
                Some(m) => Id::Authenticated(Some(StringMatch::from_proto(
                    m,
                    &path.field("authenticated").field("principal_name"),
                    errs,
                )?)),
                None => Id::Authenticated(None),
            },
            // Without the PROXY protocol the connection's remote address is its peer.
            Some(Identifier::SourceIp(c)) => {
                Id::DirectRemoteIp(cidr_range(c, &path.field("source_ip"), errs)?)
            }
            Some(Identifier::DirectRemoteIp(c)) => {
                Id::DirectRemoteIp(cidr_range(c, &path.field("direct_remote_ip"), errs)?)
            }
            Some(Identifier::RemoteIp(c)) => {
                Id::RemoteIp(cidr_range(c, &path.field("remote_ip"), errs)?)
            }
            Some(Identifier::Header(h)) => {
                Id::Header(HeaderMatcher::from_proto(h, &path.field("header"), errs)?)
            }
            Some(Identifier::UrlPath(m)) => {
                Id::UrlPath(path_matcher(m, &path.field("url_path"), errs)?)
            }
            Some(Identifier::Metadata(_)) => return unsupported("metadata", errs),
            Some(Identifier::FilterState(f)) => {
                use envoy_types::pb::envoy::r#type::matcher::v3::filter_state_matcher::Matcher;
                let fpath = path.field("filter_state");
                match &f.matcher {
                    Some(Matcher::StringMatch(m)) => Id::FilterState(
                        f.key.clone(),
                        StringMatch::from_proto(m, &fpath.field("string_match"), errs)?,
                    ),
                    Some(Matcher::AddressMatch(_)) => {
                        errs.push(
                            fpath.field("address_match"),
                            "filter state address matchers are not supported by remora",
                        );
                        return None;
                    }
                    None => {
                        errs.push(fpath, "a filter_state principal needs a matcher");
                        return None;
                    }
                }
            }
            Some(Identifier::SourcedMetadata(_)) => return unsupported("sourced_metadata", errs),
            Some(Identifier::Custom(_)) => return unsupported("custom", errs),
            None => {
                errs.push(path, "one of the principal identifiers is required");
                return None;
            }
        })
    }

    fn matches(&self, req: &Request<'_>) -> bool {
        match self {
            Id::Any => true,
            Id::And(all) => all.iter().all(|p| p.matches(req)),
            Id::Or(any) => any.iter().any(|p| p.matches(req)),
            Id::Not(p) => !p.matches(req),
            Id::Authenticated(m) => authenticated(req.tls, m.as_ref()),
            Id::DirectRemoteIp(c) => c.contains(req.peer.ip()),
            Id::RemoteIp(c) => c.contains(req.remote),
            Id::Header(h) => h.matches(req.headers()),
            Id::UrlPath(m) => req.url_path().is_some_and(|p| m.matches(p)),
            Id::FilterState(key, m) => req
                .filter_state
                .and_then(|s| s.get(key))
                .is_some_and(|o| m.matches(&o.value.plain())),
        }
    }
}

fn authenticated(tls: Option<&TlsInfo>, m: Option<&StringMatch>) -> bool {
    let Some(tls) = tls else {
        return false;
    };
    let Some(m) = m else {
        return true;
    };
    let Some(cert) = &tls.peer else {
        return m.matches("");
    };
    if !cert.uri_sans.is_empty() {
        return cert.uri_sans.iter().any(|s| m.matches(s));
    }
    if !cert.dns_sans.is_empty() {
        return cert.dns_sans.iter().any(|s| m.matches(s));
    }
    m.matches(&cert.subject)
}
