//! HTTP filters: the stage between the connection manager's header handling and the router.
//!
//! Filters run in the order of the manager's `http_filters`, once the route is known (so they read
//! the route's `typed_per_filter_config`, most specific first: weighted cluster, route, virtual
//! host, route configuration). A filter `disabled` in the manager runs only where a route enables
//! it, and a route can disable any filter, as in Envoy. A manager without filters pays one
//! `is_empty` check per request. Implemented: [`rbac`], [`fault`], [`cors`], [`ext_authz`],
//! [`grpc_stats`] (which watches the call through its response rather than deciding anything
//! here), [`set_filter_state`] and Istio's [`connect_authority`] and [`connect_baggage`].

pub mod connect_authority;
pub mod connect_baggage;
pub mod cors;
pub mod ext_authz;
pub mod fault;
pub mod grpc_stats;
pub mod rbac;
pub mod set_filter_state;

use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;

use crate::config::parse::{any_type_name, unpack_any, ParseOptions};
use crate::config::{ConfigErrors, Path};
use crate::http::body::BoxBody;
use crate::http::local_reply;
use crate::http::route::{Picked, Selected};
use crate::http::stats::ClusterHttpStats;
use crate::stats::Store;
use crate::upstream::ClusterManager;
pub use rbac::policy::Request;

/// A filter's validated config, as the connection manager lists it.
#[derive(Debug)]
pub struct FilterSpec {
    /// The name routes use in `typed_per_filter_config`.
    pub name: String,
    /// Off unless a route turns it on.
    pub disabled: bool,
    pub kind: SpecKind,
}

#[derive(Debug)]
pub enum SpecKind {
    Rbac(rbac::RbacConfig),
    Fault(Arc<fault::Faults>),
    Cors,
    GrpcStats(Arc<grpc_stats::GrpcStats>),
    ExtAuthz(Arc<ext_authz::ExtAuthzConfig>),
    SetFilterState(crate::filter_state::Setters),
    ConnectAuthority,
    ConnectBaggage,
}

/// A route's validated per-filter config.
#[derive(Debug, Clone)]
pub enum PerRoute {
    Rbac(Arc<rbac::Engines>),
    Fault(Arc<fault::Faults>),
    Cors(Arc<cors::CorsPolicy>),
    ExtAuthz(Arc<ext_authz::RouteSettings>),
    ConnectAuthority(connect_authority::RouteSettings),
}

/// Whether remora takes route config of this message type.
pub fn per_route_known(type_name: &str) -> bool {
    type_name == rbac::PER_ROUTE_TYPE
        || type_name == fault::TYPE
        || type_name == cors::PER_ROUTE_TYPE
        || type_name == ext_authz::PER_ROUTE_TYPE
        || type_name == connect_authority::TYPE
}

/// Validates a route's per-filter config (`path` points at it); `None` for types this module does
/// not parse.
pub fn per_route(any: &Any, path: &Path, errs: &mut ConfigErrors) -> Option<PerRoute> {
    match any_type_name(any).as_str() {
        rbac::PER_ROUTE_TYPE => {
            rbac::Engines::per_route(&unpacked(any, path, errs)?, path, errs).map(PerRoute::Rbac)
        }
        fault::TYPE => {
            fault::Faults::from_proto(&unpacked(any, path, errs)?, path, errs).map(PerRoute::Fault)
        }
        cors::PER_ROUTE_TYPE => {
            cors::CorsPolicy::from_proto(&unpacked(any, path, errs)?, path, errs)
                .map(|p| PerRoute::Cors(Arc::new(p)))
        }
        ext_authz::PER_ROUTE_TYPE => {
            ext_authz::RouteSettings::from_proto(&unpacked(any, path, errs)?, path, errs)
                .map(|r| PerRoute::ExtAuthz(Arc::new(r)))
        }
        connect_authority::TYPE => unpacked::<connect_authority::Config>(any, path, errs)
            .map(|c| PerRoute::ConnectAuthority((&c).into())),
        _ => None,
    }
}

fn unpacked<M: prost::Message + prost::Name + Default>(
    any: &Any,
    path: &Path,
    errs: &mut ConfigErrors,
) -> Option<M> {
    unpack_any(any, ParseOptions::default())
        .map_err(|e| errs.push(path, e.message))
        .ok()
}

/// Dynamic metadata filters leave for the ones after them (the RBAC filter's shadow verdict,
/// which ext_authz's `filter_enabled_metadata` reads): `(filter namespace, key, string value)`.
#[derive(Debug, Default)]
pub struct DynamicMetadata(Vec<(&'static str, String, String)>);

impl DynamicMetadata {
    pub fn set(&mut self, namespace: &'static str, key: String, value: String) {
        match self
            .0
            .iter_mut()
            .find(|(n, k, _)| *n == namespace && *k == key)
        {
            Some(e) => e.2 = value,
            None => self.0.push((namespace, key, value)),
        }
    }

    /// The keys and values of one namespace.
    pub fn namespace<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0
            .iter()
            .filter(move |(n, _, _)| *n == namespace)
            .map(|(_, k, v)| (k.as_str(), v.as_str()))
    }

    pub fn get(&self, namespace: &str, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, k, _)| *n == namespace && k == key)
            .map(|(_, _, v)| v.as_str())
    }
}

/// The request as the filters may change it.
pub struct Stream<'a> {
    pub parts: &'a mut http::request::Parts,
    pub body: &'a mut BoxBody,
    /// `http` or `https`, as the connection manager decided.
    pub scheme: &'a str,
    /// Set when a filter changed the request so that its route must be picked again (ext_authz's
    /// `clear_route_cache`); the filters after it still see the route picked first.
    pub route_changed: &'a mut bool,
    /// The request's filter state (`set_filter_state` writes it).
    pub filter_state: &'a mut crate::filter_state::FilterState,
}

/// One filter as a connection manager runs it.
#[derive(Debug)]
struct Filter {
    name: String,
    disabled: bool,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Rbac(rbac::RbacFilter),
    Fault(fault::FaultFilter),
    Cors(cors::CorsFilter),
    GrpcStats(Arc<grpc_stats::GrpcStats>),
    ExtAuthz(ext_authz::ExtAuthzFilter),
    SetFilterState(crate::filter_state::Setters),
    ConnectAuthority,
    ConnectBaggage,
}

/// A connection manager's filters, with their stats.
#[derive(Debug, Default)]
pub struct HttpFilters {
    filters: Vec<Filter>,
}

impl HttpFilters {
    pub fn new(
        specs: &[FilterSpec],
        store: &Store,
        stat_prefix: &str,
        clusters: &Arc<ClusterManager>,
        cluster_stats: &Arc<ClusterHttpStats>,
    ) -> Self {
        let filters = specs
            .iter()
            .map(|s| Filter {
                name: s.name.clone(),
                disabled: s.disabled,
                kind: match &s.kind {
                    SpecKind::Rbac(c) => Kind::Rbac(rbac::RbacFilter::new(c, store, stat_prefix)),
                    SpecKind::Fault(f) => {
                        Kind::Fault(fault::FaultFilter::new(f, store, stat_prefix))
                    }
                    SpecKind::Cors => Kind::Cors(cors::CorsFilter::new(store, stat_prefix)),
                    SpecKind::GrpcStats(g) => Kind::GrpcStats(g.clone()),
                    SpecKind::ExtAuthz(c) => Kind::ExtAuthz(ext_authz::ExtAuthzFilter::new(
                        c,
                        ext_authz::Shared {
                            clusters: clusters.clone(),
                            cluster_stats: cluster_stats.clone(),
                        },
                        store,
                        stat_prefix,
                    )),
                    SpecKind::SetFilterState(s) => Kind::SetFilterState(s.clone()),
                    SpecKind::ConnectAuthority => Kind::ConnectAuthority,
                    SpecKind::ConnectBaggage => Kind::ConnectBaggage,
                },
            })
            .collect();
        HttpFilters { filters }
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    fn enabled(
        &self,
        f: &Filter,
        selected: Option<&Selected<'_>>,
        picked: Option<&Picked<'_>>,
    ) -> bool {
        let (disabled, _) = match selected {
            Some(s) => s.filter_override(&f.name, picked),
            None => (None, None),
        };
        !disabled.unwrap_or(f.disabled)
    }

    /// The `grpc_stats` filter, when the manager has one that this route leaves on.
    pub fn grpc_stats(
        &self,
        selected: Option<&Selected<'_>>,
        picked: Option<&Picked<'_>>,
    ) -> Option<&grpc_stats::GrpcStats> {
        self.filters.iter().find_map(|f| match &f.kind {
            Kind::GrpcStats(g) if self.enabled(f, selected, picked) => Some(g.as_ref()),
            _ => None,
        })
    }

    /// Runs the request through every enabled filter; `Some` is a local reply that ends the request
    /// (with its response-code details). A filter may change the request (`parts`, `body`) for
    /// the ones after it and the router. `flags` gets the response flag of a filter that acted;
    /// `respond` the headers a filter puts on whatever response the request ends with (CORS).
    pub async fn decode(
        &self,
        selected: Option<&Selected<'_>>,
        picked: Option<&Picked<'_>>,
        conn: &Request<'_>,
        stream: Stream<'_>,
        flags: &mut &'static str,
        respond: &mut Option<http::HeaderMap>,
    ) -> Option<(http::Response<BoxBody>, &'static str)> {
        let Stream {
            parts,
            body,
            scheme,
            route_changed,
            filter_state: state,
        } = stream;
        let mut meta = DynamicMetadata::default();
        for f in &self.filters {
            let (disabled, config) = match selected {
                Some(s) => s.filter_override(&f.name, picked),
                None => (None, None),
            };
            if disabled.unwrap_or(f.disabled) {
                continue;
            }
            let req = Request {
                parts: Some(&*parts),
                ..*conn
            };
            match &f.kind {
                Kind::ExtAuthz(authz) => {
                    let levels = selected.map(|s| s.filter_levels(&f.name, picked));
                    let routes: Vec<&ext_authz::RouteSettings> = levels
                        .iter()
                        .flatten()
                        .flatten()
                        .filter_map(|o| match &o.parsed {
                            Some(PerRoute::ExtAuthz(r)) => Some(r.as_ref()),
                            _ => None,
                        })
                        .collect();
                    let cx = ext_authz::Context {
                        routes: &routes,
                        conn,
                        scheme,
                        cluster: picked.map(|p| p.cluster.as_ref()),
                        meta: &meta,
                    };
                    let r = authz.decode(cx, parts, body, flags, respond, route_changed);
                    if let Some(stopped) = r.await {
                        return Some(stopped);
                    }
                }
                Kind::Rbac(rbac) => {
                    let route = match config {
                        Some(PerRoute::Rbac(e)) => Some(e.as_ref()),
                        _ => None,
                    };
                    if let Err(denied) = rbac.decode_http(route, &req, &mut meta) {
                        let resp = local_reply::text_response(
                            denied.status(),
                            rbac::DENIED_BODY.to_string(),
                        );
                        return Some((resp, "rbac_access_denied_matched_policy[none]"));
                    }
                }
                Kind::Cors(cors) => {
                    let Some(parts) = req.parts else { continue };
                    let levels = selected.map(|s| s.filter_levels(&f.name, picked));
                    let policies: Vec<&cors::CorsPolicy> = levels
                        .iter()
                        .flatten()
                        .flatten()
                        .filter_map(|o| match &o.parsed {
                            Some(PerRoute::Cors(p)) => Some(p.as_ref()),
                            _ => None,
                        })
                        .collect();
                    match cors.decode(&policies, parts) {
                        cors::Decision::Continue => {}
                        cors::Decision::Preflight(resp) => return Some((resp, "cors_response")),
                        cors::Decision::Respond(add) => {
                            respond.get_or_insert_with(http::HeaderMap::new).extend(add)
                        }
                    }
                }
                // Counts the call as its response passes; see `HttpFilters::grpc_stats`.
                Kind::GrpcStats(_) => {}
                Kind::SetFilterState(setters) => {
                    let Some(parts) = req.parts else { continue };
                    let path = parts
                        .uri
                        .path_and_query()
                        .map_or(parts.uri.path(), |p| p.as_str());
                    let authority = parts.uri.authority().map(|a| a.as_str());
                    let ctx = crate::access_log::LogContext {
                        request_headers: Some(&parts.headers),
                        method: Some(parts.method.as_str()),
                        path: Some(path),
                        authority,
                        // The client the manager trusts (x-forwarded-for: port 0, as Envoy).
                        downstream_remote_address: Some(if req.remote == req.peer.ip() {
                            req.peer
                        } else {
                            std::net::SocketAddr::new(req.remote, 0)
                        }),
                        downstream_local_address: Some(req.local),
                        downstream_direct_remote_address: Some(req.peer),
                        requested_server_name: req.requested_server_name,
                        downstream_tls: req.tls,
                        ..crate::access_log::LogContext::new(std::time::SystemTime::now())
                    };
                    set_filter_state::decode(setters, &ctx, state);
                }
                Kind::ConnectBaggage => connect_baggage::decode(&parts.headers, state),
                Kind::ConnectAuthority => {
                    let route = match config {
                        Some(PerRoute::ConnectAuthority(r)) => Some(r),
                        _ => None,
                    };
                    let authority = parts
                        .headers
                        .get(http::header::HOST)
                        .and_then(|v| v.to_str().ok());
                    connect_authority::decode(route, authority, state);
                }
                Kind::Fault(fault) => {
                    // A request always has its parts here; `None` is the network RBAC's case.
                    let Some(parts) = req.parts else { continue };
                    let route = match config {
                        Some(PerRoute::Fault(f)) => Some(f.as_ref()),
                        _ => None,
                    };
                    match fault.decode(route, parts) {
                        None => {}
                        Some(fault::Injected::Abort(resp)) => {
                            *flags = "FI";
                            return Some((resp, "fault_filter_abort"));
                        }
                        Some(fault::Injected::Delay(d, abort)) => {
                            *flags = "DI";
                            let active = fault.active();
                            tokio::time::sleep(d).await;
                            drop(active);
                            if let Some(resp) = abort {
                                fault.count_abort();
                                *flags = "DI,FI";
                                return Some((resp, "fault_filter_abort"));
                            }
                        }
                    }
                }
            }
        }
        None
    }
}
