//! `envoy.filters.network.tcp_proxy` → the validated TCP proxy model.

use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::{ClusterSpecifier, TunnelingConfig},
    TcpProxy,
};

use super::{duration, BuildContext, ConfigErrors, Path};
use crate::access_log::AccessLogs;
use crate::http::route::{Formatter, HeaderMutations};

/// Where a TCP proxy sends its connections.
#[derive(Debug, Clone)]
pub enum TcpTarget {
    Cluster(String),
    /// Clusters with their weights; the total is their sum.
    Weighted(Vec<(String, u32)>, u64),
}

#[derive(Debug)]
pub struct TcpProxyConfig {
    pub stat_prefix: String,
    pub target: TcpTarget,
    /// Idle time after which both sides are closed; Envoy's default is one hour, zero disables it.
    pub idle_timeout: Option<Duration>,
    pub max_connect_attempts: u32,
    pub max_downstream_connection_duration: Option<Duration>,
    pub access_logs: AccessLogs,
    /// `tunneling_config`: the bytes go upstream inside an HTTP CONNECT (or POST) stream.
    pub tunneling: Option<Tunneling>,
}

/// `tunneling_config`, validated.
#[derive(Debug)]
pub struct Tunneling {
    /// The CONNECT authority (or the POST's host), with command operators expanded per connection.
    pub(crate) hostname: Formatter,
    /// POST to `post_path` instead of CONNECT.
    pub post_path: Option<String>,
    pub(crate) headers_to_add: HeaderMutations,
}

pub fn build(
    tp: &TcpProxy,
    path: &Path,
    ctx: &BuildContext<'_>,
) -> Result<TcpProxyConfig, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    if tp.stat_prefix.is_empty() {
        errors.push(
            path.field("stat_prefix"),
            "value length must be at least 1 characters",
        );
    }
    let target = match &tp.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => {
            if !ctx.cluster_exists(c) {
                errors.push(path.field("cluster"), format!("unknown cluster \"{c}\""));
            }
            TcpTarget::Cluster(c.clone())
        }
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            let wpath = path.field("weighted_clusters").field("clusters");
            if w.clusters.is_empty() {
                errors.push(wpath.clone(), "at least one cluster is required");
            }
            let mut total = 0u64;
            let mut list = Vec::new();
            for (i, c) in w.clusters.iter().enumerate() {
                if !ctx.cluster_exists(&c.name) {
                    errors.push(
                        wpath.index(i).field("name"),
                        format!("unknown cluster \"{}\"", c.name),
                    );
                }
                total += u64::from(c.weight);
                list.push((c.name.clone(), c.weight));
            }
            if total == 0 && !w.clusters.is_empty() {
                errors.push(wpath, "the sum of the weights must be greater than 0");
            }
            TcpTarget::Weighted(list, total)
        }
        None => {
            errors.push(path, "one of cluster or weighted_clusters is required");
            TcpTarget::Cluster(String::new())
        }
    };
    let tunneling = tp
        .tunneling_config
        .as_ref()
        .and_then(|t| tunneling(t, &path.field("tunneling_config"), &mut errors));
    for (field, set) in [
        ("on_demand", tp.on_demand.is_some()),
        ("metadata_match", tp.metadata_match.is_some()),
    ] {
        if set {
            errors.push(path.field(field), "not supported yet");
        }
    }
    let access_logs =
        AccessLogs::from_protos(&tp.access_log, &path.field("access_log"), ctx.log_writers);
    let access_logs = match access_logs {
        Ok(a) => a,
        Err(e) => {
            errors.extend(e);
            return Err(errors);
        }
    };
    errors.finish(TcpProxyConfig {
        stat_prefix: tp.stat_prefix.clone(),
        target,
        idle_timeout: duration(&tp.idle_timeout)
            .or(Some(Duration::from_secs(3600)))
            .filter(|d| !d.is_zero()),
        max_connect_attempts: tp.max_connect_attempts.map(|v| v.value).unwrap_or(1).max(1),
        max_downstream_connection_duration: duration(&tp.max_downstream_connection_duration)
            .filter(|d| !d.is_zero()),
        access_logs,
        tunneling,
    })
}

fn tunneling(t: &TunnelingConfig, path: &Path, errors: &mut ConfigErrors) -> Option<Tunneling> {
    if t.hostname.is_empty() {
        errors.push(
            path.field("hostname"),
            "value length must be at least 1 characters",
        );
    }
    let hostname = match Formatter::parse(&t.hostname) {
        Ok(f) => Some(f),
        Err(e) => {
            errors.push(path.field("hostname"), e);
            None
        }
    };
    let post_path = match (t.use_post, t.post_path.as_str()) {
        (false, "") => None,
        (false, _) => {
            errors.push(
                path.field("post_path"),
                "Can't set a post path when POST method isn't used",
            );
            None
        }
        (true, "") => Some("/".to_string()),
        (true, p) if !p.starts_with('/') => {
            errors.push(path.field("post_path"), "must start with '/'");
            None
        }
        (true, p) => Some(p.to_string()),
    };
    for (field, set) in [
        ("propagate_response_headers", t.propagate_response_headers),
        ("propagate_response_trailers", t.propagate_response_trailers),
    ] {
        if set {
            errors.push(path.field(field), "not supported yet");
        }
    }
    let headers_to_add = HeaderMutations::from_proto(
        &t.headers_to_add,
        &[],
        &path.field("headers_to_add"),
        &path.field("headers_to_remove"),
        errors,
    );
    Some(Tunneling {
        hostname: hostname?,
        post_path,
        headers_to_add,
    })
}

impl TcpTarget {
    /// The cluster for one connection.
    pub fn pick(&self) -> &str {
        match self {
            TcpTarget::Cluster(c) => c,
            TcpTarget::Weighted(list, total) => {
                let mut n = rand::random_range(0..(*total).max(1));
                for (name, w) in list {
                    if n < u64::from(*w) {
                        return name;
                    }
                    n -= u64::from(*w);
                }
                list.last().map(|(n, _)| n.as_str()).unwrap_or("")
            }
        }
    }
}
