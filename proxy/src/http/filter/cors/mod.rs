//! `envoy.filters.http.cors`: CORS preflights answered locally and CORS headers on responses, from
//! the routes' `CorsPolicy` (`typed_per_filter_config`, what Istio's VirtualService `corsPolicy`
//! becomes).
//!
//! As in Envoy, each field is taken from the most specific level that sets it (weighted cluster,
//! route, virtual host, route configuration), and `filter_enabled` / `shadow_enabled` from the most
//! specific policy alone. A request with an `Origin` that some `allow_origin_string_match` accepts
//! is a CORS request: an `OPTIONS` with `Access-Control-Request-Method` is a preflight, answered
//! `200` with the allow headers (`cors_response`); any other gets `Access-Control-Allow-Origin` (and
//! credentials, expose headers) on whatever response it ends with. A preflight from an origin not
//! allowed is forwarded (`forward_not_matching_preflights`, default true) or answered without
//! allow-origin. Stats `http.<prefix>.cors.origin_valid|origin_invalid`.

use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as CorsPolicyProto;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};

use crate::config::{ConfigErrors, Path};
use crate::http::body::BoxBody;
use crate::http::route::{runtime_fraction, StringMatch};
use crate::stats::{Counter, Store};

pub const NAME: &str = "envoy.filters.http.cors";
pub const TYPE: &str = "envoy.extensions.filters.http.cors.v3.Cors";
pub const PER_ROUTE_TYPE: &str = "envoy.extensions.filters.http.cors.v3.CorsPolicy";

const ORIGIN: HeaderName = http::header::ORIGIN;
const REQUEST_METHOD: HeaderName = http::header::ACCESS_CONTROL_REQUEST_METHOD;
const REQUEST_HEADERS: HeaderName = http::header::ACCESS_CONTROL_REQUEST_HEADERS;
const ALLOW_ORIGIN: HeaderName = http::header::ACCESS_CONTROL_ALLOW_ORIGIN;
const ALLOW_CREDENTIALS: HeaderName = http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS;
const ALLOW_METHODS: HeaderName = http::header::ACCESS_CONTROL_ALLOW_METHODS;
const ALLOW_HEADERS: HeaderName = http::header::ACCESS_CONTROL_ALLOW_HEADERS;
const MAX_AGE: HeaderName = http::header::ACCESS_CONTROL_MAX_AGE;
const EXPOSE_HEADERS: HeaderName = http::header::ACCESS_CONTROL_EXPOSE_HEADERS;
const REQUEST_PRIVATE_NETWORK: &str = "access-control-request-private-network";
const ALLOW_PRIVATE_NETWORK: &str = "access-control-allow-private-network";

/// A share of requests (`RuntimeFractionalPercent` without a runtime: its default value).
#[derive(Debug, Clone, Copy)]
enum Share {
    All,
    None,
    Fraction(u64, u64),
}

impl Share {
    fn sample(self) -> bool {
        match self {
            Share::All => true,
            Share::None => false,
            Share::Fraction(num, den) => rand::random::<u64>() % den < num,
        }
    }
}

/// One level's validated `CorsPolicy`.
#[derive(Debug)]
pub struct CorsPolicy {
    allow_origins: Vec<StringMatch>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    allow_credentials: Option<bool>,
    allow_private_network_access: Option<bool>,
    forward_not_matching_preflights: Option<bool>,
    enabled: Share,
    shadow_enabled: Share,
}

impl CorsPolicy {
    pub fn from_proto(c: &CorsPolicyProto, path: &Path, errs: &mut ConfigErrors) -> Option<Self> {
        let before = errs.0.len();
        let allow_origins = c
            .allow_origin_string_match
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                StringMatch::from_proto(m, &path.field("allow_origin_string_match").index(i), errs)
            })
            .collect();
        let mut header = |v: &str, field: &str| -> Option<HeaderValue> {
            if v.is_empty() {
                return None;
            }
            HeaderValue::from_str(v)
                .map_err(|_| errs.push(path.field(field), "not a valid header value"))
                .ok()
        };
        let allow_methods = header(&c.allow_methods, "allow_methods");
        let allow_headers = header(&c.allow_headers, "allow_headers");
        let expose_headers = header(&c.expose_headers, "expose_headers");
        let max_age = header(&c.max_age, "max_age");
        let share =
            |f: Option<&envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent>,
             unset: Share| match f {
                None => unset,
                Some(f) => match runtime_fraction(f) {
                    None => Share::All,
                    Some((0, _)) => Share::None,
                    Some((num, den)) => Share::Fraction(num, den),
                },
            };
        let policy = CorsPolicy {
            allow_origins,
            allow_methods,
            allow_headers,
            expose_headers,
            max_age,
            allow_credentials: c.allow_credentials.map(|b| b.value),
            allow_private_network_access: c.allow_private_network_access.map(|b| b.value),
            forward_not_matching_preflights: c.forward_not_matching_preflights.map(|b| b.value),
            enabled: share(c.filter_enabled.as_ref(), Share::All),
            shadow_enabled: share(c.shadow_enabled.as_ref(), Share::None),
        };
        (errs.0.len() == before).then_some(policy)
    }
}

/// What the filter does with one request.
#[derive(Debug)]
pub enum Decision {
    /// Not a CORS request (or the origin is not allowed): nothing to add.
    Continue,
    /// A preflight, answered here.
    Preflight(http::Response<BoxBody>),
    /// A CORS request: these headers go on its response, whatever produces it.
    Respond(HeaderMap),
}

/// The filter as one connection manager runs it.
#[derive(Debug)]
pub struct CorsFilter {
    origin_valid: Counter,
    origin_invalid: Counter,
}

impl CorsFilter {
    pub fn new(store: &Store, stat_prefix: &str) -> Self {
        let s = store.scope(format!("http.{stat_prefix}.cors."));
        CorsFilter {
            origin_valid: s.counter("origin_valid"),
            origin_invalid: s.counter("origin_invalid"),
        }
    }

    /// Judges `req` against `policies`, most specific first.
    pub fn decode(&self, policies: &[&CorsPolicy], req: &http::request::Parts) -> Decision {
        let Some(first) = policies.first() else {
            return Decision::Continue;
        };
        let (enabled, shadow) = (first.enabled.sample(), first.shadow_enabled.sample());
        if !enabled && !shadow {
            return Decision::Continue;
        }
        let Some(origin) = req.headers.get(ORIGIN).filter(|o| !o.is_empty()) else {
            return Decision::Continue;
        };
        let field = |f: fn(&CorsPolicy) -> Option<&HeaderValue>| policies.iter().find_map(|p| f(p));
        let flag = |f: fn(&CorsPolicy) -> Option<bool>| policies.iter().find_map(|p| f(p));
        let origins = policies
            .iter()
            .map(|p| &p.allow_origins)
            .find(|o| !o.is_empty());
        let allowed = origins.is_some_and(|o| {
            let origin = origin.to_str().unwrap_or("");
            o.iter().any(|m| m.matches("*") || m.matches(origin))
        });
        if allowed {
            self.origin_valid.inc();
        } else {
            self.origin_invalid.inc();
        }
        if !enabled {
            return Decision::Continue;
        }
        let credentials = flag(|p| p.allow_credentials).unwrap_or(false);
        let preflight = req.method == Method::OPTIONS
            && req
                .headers
                .get(REQUEST_METHOD)
                .is_some_and(|m| !m.is_empty());
        if !preflight {
            if !allowed {
                return Decision::Continue;
            }
            let mut add = HeaderMap::new();
            add.insert(ALLOW_ORIGIN, origin.clone());
            if credentials {
                add.insert(ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
            }
            if let Some(v) = field(|p| p.expose_headers.as_ref()) {
                add.insert(EXPOSE_HEADERS, v.clone());
            }
            return Decision::Respond(add);
        }
        if !allowed && flag(|p| p.forward_not_matching_preflights).unwrap_or(true) {
            return Decision::Continue;
        }
        let mut resp = http::Response::new(crate::http::body::empty());
        let h = resp.headers_mut();
        if allowed {
            h.insert(ALLOW_ORIGIN, origin.clone());
            // The answer passes the filter's own response side too, as in Envoy.
            if let Some(v) = field(|p| p.expose_headers.as_ref()) {
                h.insert(EXPOSE_HEADERS, v.clone());
            }
        }
        if credentials {
            h.insert(ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        // `*` echoes what the preflight asks for.
        let echo = |v: &HeaderValue, asked: &HeaderName| match v.as_bytes() {
            b"*" => req.headers.get(asked).cloned(),
            _ => Some(v.clone()),
        };
        if let Some(v) = field(|p| p.allow_methods.as_ref()).and_then(|v| echo(v, &REQUEST_METHOD))
        {
            h.insert(ALLOW_METHODS, v);
        }
        if let Some(v) = field(|p| p.allow_headers.as_ref()).and_then(|v| echo(v, &REQUEST_HEADERS))
        {
            h.insert(ALLOW_HEADERS, v);
        }
        if let Some(v) = field(|p| p.max_age.as_ref()) {
            h.insert(MAX_AGE, v.clone());
        }
        if flag(|p| p.allow_private_network_access).unwrap_or(false)
            && req
                .headers
                .get(REQUEST_PRIVATE_NETWORK)
                .is_some_and(|v| v == "true")
        {
            h.insert(ALLOW_PRIVATE_NETWORK, HeaderValue::from_static("true"));
        }
        Decision::Preflight(resp)
    }
}

#[cfg(test)]
mod tests;
