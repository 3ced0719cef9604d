//! gRPC xDS: the bootstrap's `dynamic_resources` turned into running xds-client streams whose
//! handlers feed the proxy's dynamic configuration.
//!
//! [`plan`] reads `ads_config`, `lds_config` and `cds_config` and resolves each gRPC source to its
//! static cluster's address (Istio's `xds-grpc` is a `pipe`). [`spawn`] runs one client per source:
//! the ADS client carries CDS, EDS, LDS and RDS (and SDS when secrets name `ads`); a non-ADS
//! `api_config_source` gets its own client. Handlers ([`handlers::TypeHandler`]) decode each update
//! and apply it through a [`ConfigSink`], which owns the meaning of resources; clusters then subscribe
//! their EDS names and listeners their RDS names, as Envoy does.

pub mod file;
pub mod handlers;
pub mod sds;
pub mod source;
pub mod stats;

use std::sync::Arc;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, ConfigSource,
};
use remora_xds_client::XdsClient;

pub use handlers::{ConfigSink, Decoded, Kind, Named};
pub use source::GrpcSource;

use crate::config::{ConfigErrors, Path};
use crate::stats::Store;
use stats::UpdateStats;

/// Where one top-level type (LDS or CDS) comes from.
#[derive(Debug, Clone)]
pub enum TypeSource {
    /// Not configured: only static resources of this type.
    None,
    /// `ads: {}`: the ADS stream.
    Ads,
    /// Its own gRPC stream (`api_config_source`).
    Grpc(Box<GrpcSource>),
    /// A file (`path_config_source`, or the deprecated `path`), applied by the file watcher.
    File(Box<ConfigSource>),
}

/// The gRPC sources of a bootstrap.
#[derive(Debug, Clone)]
pub struct Plan {
    pub ads: Option<GrpcSource>,
    pub lds: TypeSource,
    pub cds: TypeSource,
    /// `initial_fetch_timeout` of `lds_config` / `cds_config`: how long init waits for the first
    /// response (15 s when unset; `None` for `0s`, which waits as long as it takes).
    pub lds_fetch_timeout: Option<std::time::Duration>,
    pub cds_fetch_timeout: Option<std::time::Duration>,
}

/// Envoy's `initial_fetch_timeout` semantics.
fn fetch_timeout(cs: &Option<ConfigSource>) -> Option<std::time::Duration> {
    match cs.as_ref().and_then(|c| c.initial_fetch_timeout.as_ref()) {
        None => Some(std::time::Duration::from_secs(15)),
        Some(d) => Some(crate::config::to_std(d)).filter(|d| !d.is_zero()),
    }
}

impl Plan {
    /// Whether anything comes over gRPC.
    pub fn uses_grpc(&self) -> bool {
        self.ads.is_some()
            || matches!(self.lds, TypeSource::Grpc(_))
            || matches!(self.cds, TypeSource::Grpc(_))
    }
}

/// Reads `dynamic_resources`; `None` when the bootstrap has none.
pub fn plan(bootstrap: &Bootstrap) -> Result<Option<Plan>, ConfigErrors> {
    let Some(dr) = bootstrap.dynamic_resources.as_ref() else {
        return Ok(None);
    };
    let root = Path::default().field("dynamic_resources");
    let clusters = bootstrap
        .static_resources
        .as_ref()
        .map(|s| s.clusters.as_slice())
        .unwrap_or_default();
    let mut errors = ConfigErrors::default();
    let ads = match &dr.ads_config {
        Some(a) => match source::resolve(a, &root.field("ads_config"), clusters) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.extend(e);
                None
            }
        },
        None => None,
    };
    let mut type_source = |cs: &Option<ConfigSource>, field: &str| -> TypeSource {
        let path = root.field(field);
        let Some(cs) = cs else {
            return TypeSource::None;
        };
        match &cs.config_source_specifier {
            Some(ConfigSourceSpecifier::Ads(_)) => {
                if ads.is_none() && dr.ads_config.is_none() {
                    errors.push(path.field("ads"), "ads is set but ads_config is missing");
                }
                TypeSource::Ads
            }
            Some(ConfigSourceSpecifier::ApiConfigSource(api)) => {
                match source::resolve(api, &path.field("api_config_source"), clusters) {
                    Ok(s) => TypeSource::Grpc(Box::new(s)),
                    Err(e) => {
                        errors.extend(e);
                        TypeSource::None
                    }
                }
            }
            #[allow(deprecated)]
            Some(ConfigSourceSpecifier::PathConfigSource(_) | ConfigSourceSpecifier::Path(_)) => {
                TypeSource::File(Box::new(cs.clone()))
            }
            _ => {
                errors.push(
                    path,
                    "one of ads, api_config_source or path_config_source is required",
                );
                TypeSource::None
            }
        }
    };
    let lds = type_source(&dr.lds_config, "lds_config");
    let cds = type_source(&dr.cds_config, "cds_config");
    errors.finish(Some(Plan {
        ads,
        lds,
        cds,
        lds_fetch_timeout: fetch_timeout(&dr.lds_config),
        cds_fetch_timeout: fetch_timeout(&dr.cds_config),
    }))
}

/// The node remora announces: the bootstrap's, with `--service-node`/`--service-cluster` applied by
/// the caller, and remora as the user agent.
pub fn node(bootstrap: &Bootstrap) -> Node {
    let mut node = bootstrap.node.clone().unwrap_or_default();
    if node.user_agent_name.is_empty() {
        node.user_agent_name = "remora".into();
    }
    if node.user_agent_version_type.is_none() {
        node.user_agent_version_type = Some(
            envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(
                env!("CARGO_PKG_VERSION").into(),
            ),
        );
    }
    node
}

/// The stat prefix of a type's subscription, as Envoy names it.
fn stat_prefix(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Listener => Some("listener_manager.lds."),
        Kind::Cluster => Some("cluster_manager.cds."),
        // EDS, RDS and SDS count per resource in Envoy (`cluster.<name>.update_*`,
        // `http.<prefix>.rds.<name>.*`, `sds.<name>.*`); their aggregate lives under `xds.`.
        Kind::Endpoint => Some("xds.eds."),
        Kind::Route => Some("xds.rds."),
        Kind::Secret => Some("xds.sds."),
    }
}

/// The running gRPC clients.
pub struct Running {
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Each subscription's stats, by kind (for `/config_dump` versions).
    pub stats: Vec<(Kind, UpdateStats)>,
}

/// Starts a client for every gRPC source in `plan`, feeding `sink`. The clients run until `shutdown`
/// turns true; they reconnect with jittered backoff meanwhile.
pub fn spawn(
    plan: &Plan,
    node: Node,
    sink: Arc<dyn ConfigSink>,
    store: &Store,
    secrets_over_ads: bool,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Running, remora_xds_client::XdsError> {
    let mut running = Running {
        tasks: Vec::new(),
        stats: Vec::new(),
    };
    let mut clients: Vec<(GrpcSource, bool, Vec<Kind>)> = Vec::new();
    if let Some(ads) = &plan.ads {
        let mut kinds = Vec::new();
        if matches!(plan.cds, TypeSource::Ads) {
            kinds.push(Kind::Cluster);
        }
        // Sub-resources (EDS, RDS, SDS) are fetched over ADS when it exists.
        kinds.push(Kind::Endpoint);
        if matches!(plan.lds, TypeSource::Ads) {
            kinds.push(Kind::Listener);
        }
        kinds.push(Kind::Route);
        if secrets_over_ads {
            kinds.push(Kind::Secret);
        }
        clients.push((ads.clone(), true, kinds));
    }
    for (src, kind) in [(&plan.cds, Kind::Cluster), (&plan.lds, Kind::Listener)] {
        if let TypeSource::Grpc(g) = src {
            clients.push(((**g).clone(), false, vec![kind]));
        }
    }
    for (source, ads, kinds) in clients {
        let builder = XdsClient::builder(source.endpoint.clone(), node.clone())
            .ads(ads)
            .delta(source.delta)
            .node_on_every_request(!source.node_on_first_message_only)
            .backoff(
                std::time::Duration::from_millis(500),
                std::time::Duration::from_secs(30),
            );
        let subscriptions = builder.subscriptions();
        let mut builder = builder;
        let mut mirrored = Vec::new();
        for kind in &kinds {
            let prefix = stat_prefix(*kind).unwrap_or("xds.");
            let stats = UpdateStats::new(store, prefix);
            mirrored.push((kind.type_url().to_string(), stats.clone()));
            running.stats.push((*kind, stats.clone()));
            builder = builder.handler(handlers::TypeHandler::new(
                *kind,
                sink.clone(),
                subscriptions.clone(),
                stats,
                secrets_over_ads,
            ));
        }
        let client = builder.build()?;
        running
            .tasks
            .push(stats::mirror(store, client.stats().clone(), mirrored));
        tracing::info!(target = %source.target, ads, delta = source.delta, "connecting to the control plane");
        let mut shutdown = shutdown.clone();
        running.tasks.push(tokio::spawn(async move {
            client
                .run(async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                })
                .await;
        }));
    }
    Ok(running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse::{from_yaml, ParseOptions};

    #[test]
    fn plans_istio_style_ads() {
        let b: Bootstrap = from_yaml(
            r#"
dynamic_resources:
  lds_config: { ads: {}, initial_fetch_timeout: 0s, resource_api_version: V3 }
  cds_config: { ads: {}, initial_fetch_timeout: 0s, resource_api_version: V3 }
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{ envoy_grpc: { cluster_name: xds-grpc } }]
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 15010 } } } }] }]
"#,
            ParseOptions::default(),
        )
        .expect("bootstrap");
        let p = plan(&b).expect("plan").expect("dynamic");
        assert!(p.uses_grpc());
        assert!(matches!(p.lds, TypeSource::Ads));
        assert!(matches!(p.cds, TypeSource::Ads));
        assert_eq!(p.ads.expect("ads").target, "http://127.0.0.1:15010");
    }

    #[test]
    fn ads_without_ads_config_is_an_error() {
        let b: Bootstrap = from_yaml(
            "dynamic_resources: { lds_config: { ads: {} } }",
            ParseOptions::default(),
        )
        .expect("bootstrap");
        let e = plan(&b).expect_err("no ads_config").to_string();
        assert_eq!(
            e,
            "dynamic_resources.lds_config.ads: ads is set but ads_config is missing"
        );
    }
}
