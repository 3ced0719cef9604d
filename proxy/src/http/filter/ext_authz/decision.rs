//! What an authorization service decided, in one shape for gRPC and HTTP services, and how its
//! header changes apply.

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValueOption,
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// How one header change applies (Envoy's `HeaderAppendAction`, or the legacy `append`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Another value (a new entry).
    Add,
    /// Replace any values.
    Set,
    /// Join to an existing header with `,`; nothing when absent (legacy `append: true`).
    AppendExisting,
    AddIfAbsent,
    OverwriteIfExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub name: HeaderName,
    pub value: HeaderValue,
    pub action: Action,
}

impl Mutation {
    pub fn apply(&self, headers: &mut HeaderMap) {
        match self.action {
            Action::Add => {
                headers.append(&self.name, self.value.clone());
            }
            Action::Set => {
                headers.insert(&self.name, self.value.clone());
            }
            Action::AppendExisting => {
                let joined = headers.get(&self.name).map(|old| {
                    let mut v = old.as_bytes().to_vec();
                    v.push(b',');
                    v.extend_from_slice(self.value.as_bytes());
                    v
                });
                if let Some(v) = joined.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
                    headers.insert(&self.name, v);
                }
            }
            Action::AddIfAbsent => {
                if !headers.contains_key(&self.name) {
                    headers.insert(&self.name, self.value.clone());
                }
            }
            Action::OverwriteIfExists => {
                if headers.contains_key(&self.name) {
                    headers.insert(&self.name, self.value.clone());
                }
            }
        }
    }
}

/// Applies every mutation in order.
pub fn apply_all(mutations: &[Mutation], headers: &mut HeaderMap) {
    for m in mutations {
        m.apply(headers);
    }
}

/// A change to the upstream request from an `OkHttpResponse`: Envoy 1.40 reads only the legacy
/// `append` there (true: join to an existing header; else replace), not `append_action`.
pub fn upstream_option(o: &HeaderValueOption) -> Result<Mutation, String> {
    let mut m = from_option(o)?;
    #[allow(deprecated)]
    let append = o.append.as_ref().is_some_and(|b| b.value);
    m.action = if append {
        Action::AppendExisting
    } else {
        Action::Set
    };
    Ok(m)
}

/// A `HeaderValueOption` from a `CheckResponse`; `Err` when it is not a valid header.
pub fn from_option(o: &HeaderValueOption) -> Result<Mutation, String> {
    let h = o.header.as_ref().ok_or("header option without a header")?;
    let name = HeaderName::from_bytes(h.key.as_bytes())
        .map_err(|_| format!("invalid header name '{}'", h.key))?;
    let raw: &[u8] = if h.raw_value.is_empty() {
        h.value.as_bytes()
    } else {
        &h.raw_value
    };
    let value =
        HeaderValue::from_bytes(raw).map_err(|_| format!("invalid value of header '{name}'"))?;
    #[allow(deprecated)]
    let action = match &o.append {
        Some(b) if b.value => Action::AppendExisting,
        Some(_) => Action::Set,
        None => match HeaderAppendAction::try_from(o.append_action) {
            Ok(HeaderAppendAction::AppendIfExistsOrAdd) => Action::Add,
            Ok(HeaderAppendAction::AddIfAbsent) => Action::AddIfAbsent,
            Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => Action::Set,
            Ok(HeaderAppendAction::OverwriteIfExists) => Action::OverwriteIfExists,
            Err(_) => return Err(format!("unknown append action {}", o.append_action)),
        },
    };
    Ok(Mutation {
        name,
        value,
        action,
    })
}

/// The request may go on, changed as the service asks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Changes to the request headers sent upstream.
    pub upstream: Vec<Mutation>,
    /// Request headers to remove (never pseudo-headers or the host).
    pub remove: Vec<HeaderName>,
    /// Headers for the response the client gets.
    pub response: Vec<Mutation>,
    pub query_set: Vec<(String, String)>,
    pub query_remove: Vec<String>,
}

impl Allowed {
    pub fn apply(&self, parts: &mut http::request::Parts) {
        apply_all(&self.upstream, &mut parts.headers);
        for name in &self.remove {
            if name != http::header::HOST {
                parts.headers.remove(name);
            }
        }
        if !self.query_set.is_empty() || !self.query_remove.is_empty() {
            self.rewrite_query(parts);
        }
    }

    fn rewrite_query(&self, parts: &mut http::request::Parts) {
        let path = parts.uri.path().to_string();
        let mut pairs: Vec<(String, String)> = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (p.to_string(), String::new()),
            })
            .collect();
        pairs.retain(|(k, _)| !self.query_remove.contains(k));
        for (k, v) in &self.query_set {
            match pairs.iter_mut().find(|(pk, _)| pk == k) {
                Some(p) => p.1 = v.clone(),
                None => pairs.push((k.clone(), v.clone())),
            }
        }
        // Envoy rebuilds a changed query from its parameter map, in key order.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let target = if query.is_empty() {
            path
        } else {
            format!("{path}?{}", query.join("&"))
        };
        match target.parse() {
            Ok(uri) => parts.uri = uri,
            Err(_) => tracing::debug!("ext_authz query parameters make an invalid path"),
        }
    }
}

/// A response the service asks the client to get.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// `None`: the filter's default (403 for a denial, `status_on_error` for an error).
    pub status: Option<StatusCode>,
    pub headers: Vec<Mutation>,
    pub body: Bytes,
}

/// The service's answer, or why there is none.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allow(Allowed),
    Deny(Reply),
    /// No usable answer (unreachable, timed out, malformed), or the service's own error reply.
    Error {
        why: String,
        reply: Option<Reply>,
    },
}

impl Decision {
    pub fn error(why: impl Into<String>) -> Self {
        Decision::Error {
            why: why.into(),
            reply: None,
        }
    }
}
