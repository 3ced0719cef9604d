//! Where a gRPC config source points: the bootstrap's `ads_config` or an `api_config_source`, resolved
//! to an [`XdsEndpoint`] through the static cluster it names.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    address, api_config_source::ApiType, grpc_service::TargetSpecifier, Address, ApiConfigSource,
};
use remora_xds_client::XdsEndpoint;

use crate::config::{ConfigErrors, Path};

/// A resolved gRPC config source.
#[derive(Debug, Clone)]
pub struct GrpcSource {
    /// How to reach the control plane.
    pub endpoint: XdsEndpoint,
    /// What the endpoint is, for logs: `unix:./etc/istio/proxy/XDS`, `http://10.0.0.1:15010`.
    pub target: String,
    /// The incremental protocol (`DELTA_GRPC`, `AGGREGATED_DELTA_GRPC`).
    pub delta: bool,
    /// `set_node_on_first_message_only`.
    pub node_on_first_message_only: bool,
    /// The static cluster named by `envoy_grpc.cluster_name` (empty for `google_grpc`).
    pub cluster: String,
}

/// Resolves an `ApiConfigSource` found at `path` against the bootstrap's static `clusters`.
///
/// Envoy accepts `GRPC`/`DELTA_GRPC` and `AGGREGATED_GRPC`/`AGGREGATED_DELTA_GRPC` for gRPC sources
/// (Istio's bootstrap uses the former for `ads_config`); `REST` is not supported.
pub fn resolve(
    api: &ApiConfigSource,
    path: &Path,
    clusters: &[Cluster],
) -> Result<GrpcSource, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let delta = match ApiType::try_from(api.api_type) {
        Ok(ApiType::Grpc | ApiType::AggregatedGrpc) => false,
        Ok(ApiType::DeltaGrpc | ApiType::AggregatedDeltaGrpc) => true,
        Ok(ApiType::Rest) => {
            errors.push(
                path.field("api_type"),
                "REST config sources are not supported; use GRPC or DELTA_GRPC",
            );
            false
        }
        _ => {
            errors.push(
                path.field("api_type"),
                format!("unsupported api_type {}", api.api_type),
            );
            false
        }
    };
    if !api.cluster_names.is_empty() {
        errors.push(
            path.field("cluster_names"),
            "cluster_names is for REST sources; gRPC sources name their cluster in grpc_services",
        );
    }
    let gpath = path.field("grpc_services");
    let service = match api.grpc_services.as_slice() {
        [one] => Some(one),
        [] => {
            errors.push(gpath.clone(), "exactly one grpc_services entry is required");
            None
        }
        [_, ..] => {
            errors.push(
                gpath.index(1),
                "only one grpc_services entry is supported (Envoy uses the first only)",
            );
            None
        }
    };
    errors.clone().finish(())?;
    let Some(service) = service else {
        return Err(errors);
    };
    let spath = gpath.index(0);
    let timeout = service.timeout.as_ref().map(crate::config::to_std);
    let (mut endpoint, target, cluster) = match &service.target_specifier {
        Some(TargetSpecifier::EnvoyGrpc(g)) => {
            let cpath = spath.field("envoy_grpc").field("cluster_name");
            let Some(c) = clusters.iter().find(|c| c.name == g.cluster_name) else {
                return Err(ConfigErrors::from(crate::config::ConfigError::new(
                    cpath,
                    format!(
                        "unknown cluster {:?}: a gRPC config source must name a static cluster",
                        g.cluster_name
                    ),
                )));
            };
            let (endpoint, target) = cluster_endpoint(c, &cpath)?;
            (endpoint, target, g.cluster_name.clone())
        }
        Some(TargetSpecifier::GoogleGrpc(g)) => {
            let tpath = spath.field("google_grpc").field("target_uri");
            let (endpoint, target) = uri_endpoint(&g.target_uri, &tpath)?;
            (endpoint, target, String::new())
        }
        None => {
            return Err(ConfigErrors::from(crate::config::ConfigError::new(
                spath,
                "one of envoy_grpc or google_grpc is required",
            )))
        }
    };
    if let Some(t) = timeout.filter(|t| !t.is_zero()) {
        endpoint = endpoint.connect_timeout(t);
    }
    for (i, m) in service.initial_metadata.iter().enumerate() {
        endpoint = endpoint.metadata(&m.key, &m.value).map_err(|e| {
            ConfigErrors::from(crate::config::ConfigError::new(
                spath.field("initial_metadata").index(i),
                e.to_string(),
            ))
        })?;
    }
    Ok(GrpcSource {
        endpoint,
        target,
        delta,
        node_on_first_message_only: api.set_node_on_first_message_only,
        cluster,
    })
}

/// The endpoint of the static cluster a gRPC source names: its first `load_assignment` endpoint.
fn cluster_endpoint(c: &Cluster, path: &Path) -> Result<(XdsEndpoint, String), ConfigErrors> {
    let err = |msg: String| ConfigErrors::from(crate::config::ConfigError::new(path.clone(), msg));
    if c.transport_socket.is_some() {
        return Err(err(format!(
            "cluster {:?}: TLS to the control plane is not supported yet; use plaintext TCP or a \
             Unix domain socket (pipe) address",
            c.name
        )));
    }
    let address = c
        .load_assignment
        .as_ref()
        .and_then(|la| la.endpoints.first())
        .and_then(|e| e.lb_endpoints.first())
        .and_then(|e| match &e.host_identifier {
            Some(
                envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(
                    ep,
                ),
            ) => ep.address.as_ref(),
            _ => None,
        })
        .ok_or_else(|| {
            err(format!(
                "cluster {:?} has no load_assignment endpoint to reach the control plane at",
                c.name
            ))
        })?;
    let keepalive = c
        .upstream_connection_options
        .as_ref()
        .and_then(|o| o.tcp_keepalive.as_ref())
        .and_then(|k| k.keepalive_time)
        .map(|s| Duration::from_secs(u64::from(s.value)));
    let (endpoint, target) = address_endpoint(address, &c.name).map_err(err)?;
    let endpoint = match keepalive {
        // gRPC keepalive pings at the TCP keepalive interval, timed out after 20 s as Envoy's default.
        Some(k) if !k.is_zero() => endpoint.keepalive(k, Duration::from_secs(20)),
        _ => endpoint,
    };
    let connect_timeout = c
        .connect_timeout
        .as_ref()
        .map(crate::config::to_std)
        .unwrap_or(Duration::from_secs(5));
    Ok((endpoint.connect_timeout(connect_timeout), target))
}

fn address_endpoint(address: &Address, cluster: &str) -> Result<(XdsEndpoint, String), String> {
    match &address.address {
        Some(address::Address::Pipe(p)) => {
            Ok((XdsEndpoint::unix(&p.path), format!("unix:{}", p.path)))
        }
        Some(address::Address::SocketAddress(sa)) => {
            let port = match &sa.port_specifier {
                Some(
                    envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p),
                ) => *p,
                _ => return Err(format!("cluster {cluster:?}: the endpoint needs a port_value")),
            };
            let host = if sa.address.contains(':') {
                format!("[{}]", sa.address)
            } else {
                sa.address.clone()
            };
            let uri = format!("http://{host}:{port}");
            let endpoint =
                XdsEndpoint::tcp(&uri).map_err(|e| format!("cluster {cluster:?}: {e}"))?;
            Ok((endpoint, uri))
        }
        _ => Err(format!(
            "cluster {cluster:?}: the endpoint must be a socket_address or a pipe"
        )),
    }
}

/// `google_grpc.target_uri`: `host:port`, `unix:PATH` or `unix://PATH` (no TLS credentials).
fn uri_endpoint(uri: &str, path: &Path) -> Result<(XdsEndpoint, String), ConfigErrors> {
    let err = |msg: String| ConfigErrors::from(crate::config::ConfigError::new(path.clone(), msg));
    if let Some(p) = uri
        .strip_prefix("unix://")
        .or_else(|| uri.strip_prefix("unix:"))
    {
        return Ok((XdsEndpoint::unix(p), format!("unix:{p}")));
    }
    let full = if uri.contains("://") {
        uri.to_string()
    } else {
        format!("http://{uri}")
    };
    let endpoint = XdsEndpoint::tcp(&full).map_err(|e| err(e.to_string()))?;
    Ok((endpoint, full))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse::{from_yaml, ParseOptions};
    use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;

    fn bootstrap(yaml: &str) -> Bootstrap {
        from_yaml(yaml, ParseOptions::default()).expect("bootstrap")
    }

    fn ads(b: &Bootstrap) -> Result<GrpcSource, ConfigErrors> {
        let dr = b.dynamic_resources.as_ref().expect("dynamic_resources");
        let clusters = &b.static_resources.as_ref().expect("static").clusters;
        resolve(
            dr.ads_config.as_ref().expect("ads_config"),
            &Path::default()
                .field("dynamic_resources")
                .field("ads_config"),
            clusters,
        )
    }

    const ISTIO: &str = r#"
dynamic_resources:
  ads_config:
    api_type: GRPC
    set_node_on_first_message_only: true
    transport_api_version: V3
    grpc_services: [{ envoy_grpc: { cluster_name: xds-grpc } }]
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { pipe: { path: ./etc/istio/proxy/XDS } } } }] }]
    upstream_connection_options: { tcp_keepalive: { keepalive_time: 300 } }
"#;

    #[test]
    fn istio_ads_over_a_pipe() {
        let s = ads(&bootstrap(ISTIO)).expect("resolves");
        assert_eq!(s.target, "unix:./etc/istio/proxy/XDS");
        assert!(!s.delta);
        assert!(s.node_on_first_message_only);
        assert_eq!(s.cluster, "xds-grpc");
    }

    #[test]
    fn delta_over_tcp() {
        let y = ISTIO
            .replace("api_type: GRPC", "api_type: DELTA_GRPC")
            .replace(
                "pipe: { path: ./etc/istio/proxy/XDS }",
                "socket_address: { address: 127.0.0.1, port_value: 15010 }",
            );
        let s = ads(&bootstrap(&y)).expect("resolves");
        assert_eq!(s.target, "http://127.0.0.1:15010");
        assert!(s.delta);
    }

    #[test]
    fn errors_name_the_field() {
        let y = ISTIO.replace("cluster_name: xds-grpc }", "cluster_name: nope }");
        let e = ads(&bootstrap(&y))
            .expect_err("unknown cluster")
            .to_string();
        assert!(
            e.starts_with(
                "dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: unknown cluster \"nope\""
            ),
            "{e}"
        );
        let y = ISTIO.replace("api_type: GRPC", "api_type: REST");
        let e = ads(&bootstrap(&y)).expect_err("rest").to_string();
        assert!(
            e.contains("dynamic_resources.ads_config.api_type: REST"),
            "{e}"
        );
    }

    #[test]
    fn google_grpc_target_uri() {
        let y = ISTIO.replace(
            "{ envoy_grpc: { cluster_name: xds-grpc } }",
            "{ google_grpc: { target_uri: 'unix:///var/run/xds.sock', stat_prefix: x } }",
        );
        let s = ads(&bootstrap(&y)).expect("resolves");
        assert_eq!(s.target, "unix:/var/run/xds.sock");
    }
}
