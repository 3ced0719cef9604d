//! The bootstrap: read from `-c` and `--config-yaml`, translated into a [`Snapshot`].

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

use envoy_types::pb::envoy::config::listener::v3::Listener;
use tracing::warn;

use super::listeners::ListenerBuilder;
use super::network::ChainStack;
use super::parse::{self, ParseOptions};
use super::rds::RouteRegistry;
use super::{ConfigError, ConfigErrors, Path};
use crate::access_log::Writers;
use crate::http::stats::ClusterHttpStats;
use crate::istio::{IstioMetrics, LocalNode};
use crate::listener::address::listen_address;
use crate::listener::{self, ListenerConfig};
use crate::secrets::SecretStore;
use crate::stats::Store;
use crate::upstream::ClusterManager;

/// One complete, validated configuration. Immutable; replaced as a whole.
pub struct Snapshot {
    pub bootstrap: Bootstrap,
    pub admin: Option<SocketAddr>,
    pub clusters: Arc<ClusterManager>,
    /// Static listeners with the protos they came from.
    pub listeners: Vec<(ListenerConfig<ChainStack>, Listener)>,
    /// Named secrets; `start` their SDS file watchers once a runtime runs.
    pub secrets: SecretStore,
    /// Translates LDS listeners against the same clusters, secrets and route registry.
    pub builder: ListenerBuilder,
    /// `dynamic_resources`, when the bootstrap has them.
    pub dynamic: Option<crate::xds::Plan>,
}

/// Reads the bootstrap as Envoy does: the file (JSON by extension `.json`, else YAML), then
/// `--config-yaml` merged over it.
pub fn load(
    path: Option<&std::path::Path>,
    overlay: Option<&str>,
    opts: ParseOptions,
) -> Result<Bootstrap, ConfigError> {
    let base = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                ConfigError::new("", format!("unable to read file {}: {e}", p.display()))
            })?;
            let is_json = p.extension().and_then(|e| e.to_str()) == Some("json");
            let parsed = if is_json {
                parse::from_json(&text, opts)
            } else {
                parse::from_yaml(&text, opts)
            };
            Some(parsed.map_err(|e| {
                ConfigError::new(e.path, format!("{} (in {})", e.message, p.display()))
            })?)
        }
        None => None,
    };
    let overlay = overlay
        .map(|y| {
            parse::from_yaml::<Bootstrap>(y, opts)
                .map_err(|e| ConfigError::new(e.path, format!("{} (in --config-yaml)", e.message)))
        })
        .transpose()?;
    match (base, overlay) {
        (Some(b), Some(o)) => parse::merge(&b, &o),
        (Some(b), None) => Ok(b),
        (None, Some(o)) => Ok(o),
        (None, None) => Err(ConfigError::new(
            "",
            "at least one of --config-path or --config-yaml is required",
        )),
    }
}

/// Bootstrap fields that are set but have no effect in remora, each with what that means; Envoy
/// would act on them, so a silent accept would hide a difference.
#[allow(deprecated)] // `tracing` and `watchdog` are deprecated in the proto, yet still set in the wild.
fn ignored_fields(b: &Bootstrap) -> Vec<(&'static str, &'static str)> {
    let mut ignored = Vec::new();
    if !b.stats_sinks.is_empty() {
        ignored.push((
            "stats_sinks",
            "stats sinks are not supported; stats are only served by the admin interface",
        ));
    }
    if b.overload_manager.is_some() {
        ignored.push((
            "overload_manager",
            "the overload manager is not supported; no overload actions are taken",
        ));
    }
    if b.tracing.is_some() {
        ignored.push(("tracing", "tracing is not supported; no spans are reported"));
    }
    if b.watchdog.is_some() {
        ignored.push(("watchdog", "watchdogs are not supported; ignored"));
    }
    if b.watchdogs.is_some() {
        ignored.push(("watchdogs", "watchdogs are not supported; ignored"));
    }
    if b.bootstrap_extensions
        .iter()
        .any(|e| !is_internal_listener(e))
    {
        ignored.push((
            "bootstrap_extensions",
            "bootstrap extensions are not supported; ignored",
        ));
    }
    ignored
}

const INTERNAL_LISTENER: &str = "envoy.bootstrap.internal_listener";

fn is_internal_listener(
    e: &envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig,
) -> bool {
    e.name == INTERNAL_LISTENER
        || e.typed_config
            .as_ref()
            .map(crate::config::parse::any_type_name)
            .as_deref()
            == Some("envoy.extensions.bootstrap.internal_listener.v3.InternalListener")
}

/// `envoy.bootstrap.internal_listener`: the per-direction buffer of internal connections, in
/// bytes, when the bootstrap turns internal listeners on.
fn internal_listener_buffer(
    b: &Bootstrap,
    root: &Path,
    errors: &mut ConfigErrors,
) -> Option<usize> {
    use envoy_types::pb::envoy::extensions::bootstrap::internal_listener::v3::InternalListener;
    let (i, e) = b
        .bootstrap_extensions
        .iter()
        .enumerate()
        .find(|(_, e)| is_internal_listener(e))?;
    let path = root
        .field("bootstrap_extensions")
        .index(i)
        .field("typed_config");
    let cfg: InternalListener = match &e.typed_config {
        Some(any) => match crate::config::parse::unpack_any(any, ParseOptions::default()) {
            Ok(c) => c,
            Err(err) => {
                errors.push(path.field(&err.path), err.message);
                return None;
            }
        },
        None => InternalListener::default(),
    };
    match cfg.buffer_size_kb.map(|v| v.value) {
        None => Some(crate::listener::internal::DEFAULT_BUFFER_BYTES),
        Some(kb) if (1..=8192).contains(&kb) => Some(kb as usize * 1024),
        Some(kb) => {
            errors.push(
                path.field("buffer_size_kb"),
                format!("value must be inside range [1, 8192], got {kb}"),
            );
            None
        }
    }
}

/// Translates a bootstrap, reporting every error with its path.
pub fn build(
    bootstrap: Bootstrap,
    stats: &Store,
    opts: ParseOptions,
    writers: &Writers,
) -> Result<Snapshot, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let root = Path::default();
    for (field, effect) in ignored_fields(&bootstrap) {
        warn!(path = %root.field(field), "{effect}");
    }
    let dynamic = match crate::xds::plan(&bootstrap) {
        Ok(plan) => plan,
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    if let Some(m) = bootstrap
        .stats_config
        .as_ref()
        .and_then(|c| c.stats_matcher.as_ref())
    {
        let mpath = root.field("stats_config").field("stats_matcher");
        match crate::stats::matcher::StatsMatcher::from_proto(m, &mpath) {
            Ok(Some(m)) => stats.set_matcher(m),
            Ok(None) => {}
            Err(e) => errors.extend(e),
        }
    }
    let res = bootstrap.static_resources.clone().unwrap_or_default();
    let spath = root.field("static_resources");
    let secrets = SecretStore::new(stats);
    if let Err(e) = secrets.add_static(&res.secrets, &spath.field("secrets")) {
        errors.extend(e);
    }
    let clusters = match ClusterManager::from_protos_with_secrets(
        &res.clusters,
        &spath.field("clusters"),
        stats,
        &secrets,
    ) {
        Ok(c) => Some(c),
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    // Listeners are checked against the clusters that did translate, so one bad cluster does not hide
    // listener errors.
    let translated = clusters.is_some();
    let clusters = Arc::new(clusters.unwrap_or_else(|| ClusterManager::new(stats, &secrets)));
    if let Some(buffer) = internal_listener_buffer(&bootstrap, &root, &mut errors) {
        clusters.internal().enable(buffer);
    }
    let names: Vec<String> = clusters.iter().map(|c| c.name().to_string()).collect();
    let cluster_stats = Arc::new(ClusterHttpStats::new(
        stats,
        names.iter().map(String::as_str),
    ));
    let builder = ListenerBuilder {
        clusters: clusters.clone(),
        cluster_stats,
        stats: stats.clone(),
        opts,
        writers: writers.clone(),
        secrets: secrets.clone(),
        routes: RouteRegistry::new((*clusters).clone()),
        istio: Arc::new(LocalNode::new(
            bootstrap.node.as_ref(),
            IstioMetrics::default(),
        )),
    };
    let lpath = spath.field("listeners");
    let mut listeners = Vec::new();
    for (i, l) in res.listeners.iter().enumerate() {
        match builder.build(l, &lpath.index(i)) {
            Ok(cfg) => listeners.push((cfg, l.clone())),
            Err(e) => errors.extend(e),
        }
    }
    {
        let configs: Vec<&ListenerConfig<ChainStack>> = listeners.iter().map(|(c, _)| c).collect();
        if let Err(e) = listener::validate_listener_set(&configs, &lpath) {
            errors.extend(e);
        }
    }
    let admin = match bootstrap.admin.as_ref().and_then(|a| a.address.as_ref()) {
        Some(a) => {
            match listen_address(a, &root.field("admin").field("address")).map(|l| l.address) {
                Ok(addr) => Some(addr),
                Err(e) => {
                    errors.0.push(e);
                    None
                }
            }
        }
        None => None,
    };
    if !translated {
        return Err(errors);
    }
    errors.finish(Snapshot {
        bootstrap,
        admin,
        clusters,
        listeners,
        secrets,
        builder,
        dynamic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_fields_are_named_when_set() {
        assert!(ignored_fields(&Bootstrap::default()).is_empty());
        let yaml = r#"
stats_sinks:
- name: envoy.stat_sinks.statsd
overload_manager: { refresh_interval: 1s }
tracing: {}
watchdogs: {}
bootstrap_extensions:
- name: envoy.bootstrap.foo
"#;
        let b: Bootstrap = parse::from_yaml(yaml, ParseOptions::default()).expect("bootstrap");
        let names: Vec<&str> = ignored_fields(&b).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            names,
            [
                "stats_sinks",
                "overload_manager",
                "tracing",
                "watchdogs",
                "bootstrap_extensions"
            ]
        );
    }
}
