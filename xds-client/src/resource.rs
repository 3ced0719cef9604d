//! Resources and handlers: what a response carries and who decides whether it is acceptable.

use std::fmt;

use envoy_types::pb::envoy::service::discovery::v3::Resource as WrappedResource;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

/// Well-known xDS type URLs.
pub struct TypeUrl;

impl TypeUrl {
    /// LDS: `envoy.config.listener.v3.Listener`.
    pub const LISTENER: &'static str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    pub const ROUTE: &'static str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    pub const CLUSTER: &'static str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    pub const ENDPOINT: &'static str =
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// SDS: `envoy.extensions.transport_sockets.tls.v3.Secret`.
    pub const SECRET: &'static str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

    /// Whether a state-of-the-world response for this type carries every resource, so that a resource
    /// absent from it is removed. The xDS protocol says so for LDS and CDS (and scoped routes); for
    /// RDS, EDS and SDS a missing resource only means "not in this response".
    pub fn absence_removes(type_url: &str) -> bool {
        matches!(
            type_url,
            Self::LISTENER
                | Self::CLUSTER
                | "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
        )
    }

    /// Whether Envoy subscribes to every resource of this type (LDS, CDS) rather than to names.
    pub fn is_wildcard_by_default(type_url: &str) -> bool {
        matches!(type_url, Self::LISTENER | Self::CLUSTER)
    }

    /// The words a NACK uses for one resource of this type: `Listener` → `listener`,
    /// `ClusterLoadAssignment` → `cluster load assignment`.
    pub fn kind(type_url: &str) -> String {
        let message = type_url.rsplit(['/', '.']).next().unwrap_or(type_url);
        let mut kind = String::with_capacity(message.len() + 4);
        for (i, c) in message.chars().enumerate() {
            if c.is_uppercase() {
                if i > 0 {
                    kind.push(' ');
                }
                kind.extend(c.to_lowercase());
            } else {
                kind.push(c);
            }
        }
        kind
    }
}

/// The `Resource` wrapper a state-of-the-world server may use instead of the bare message.
const WRAPPED_RESOURCE: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

/// One resource of an update, still encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The resource's name (`Listener.name`, `ClusterLoadAssignment.cluster_name`, ...).
    pub name: String,
    /// The resource's own version: the response's `version_info` in state-of-the-world, the
    /// per-resource `version` in delta.
    pub version: String,
    /// The resource itself.
    pub resource: Any,
}

impl Resource {
    /// Decodes the resource as `M`; the error names the resource, ready for a NACK.
    pub fn decode<M: Message + Default>(&self) -> Result<M, ResourceError> {
        M::decode(self.resource.value.as_slice()).map_err(|e| ResourceError::new(&self.name, e))
    }
}

/// What one response changes for one type URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The type of every resource in this update.
    pub type_url: String,
    /// `version_info` (state-of-the-world) or `system_version_info` (delta; often empty).
    pub version: String,
    /// State-of-the-world: every resource of the response (the full set for LDS/CDS, the subscribed
    /// ones for RDS/EDS/SDS). Delta: the added or updated resources only.
    pub resources: Vec<Resource>,
    /// Names that no longer exist. State-of-the-world: resources of a type where absence removes
    /// ([`TypeUrl::absence_removes`]) that were in the last accepted response and are not in this
    /// one. Delta: the response's `removed_resources`.
    pub removed: Vec<String>,
    /// True when `resources` is the complete state of the type (state-of-the-world).
    pub full_state: bool,
}

/// Why one resource (or, with an empty name, the whole update) was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceError {
    /// The rejected resource's name; empty when the error is not about one resource.
    pub name: String,
    /// What is wrong, ideally naming the field (`filter_chains[0].filters[1]: ...`).
    pub message: String,
}

impl ResourceError {
    /// An error about the resource `name`.
    pub fn new(name: impl Into<String>, message: impl fmt::Display) -> Self {
        Self {
            name: name.into(),
            message: message.to_string(),
        }
    }
}

/// Applies updates of one type URL. Implemented by the user of the client (e.g. a proxy's listener
/// manager); the client turns the result into an ACK or a NACK.
pub trait Handler: Send + Sync + 'static {
    /// The type URL this handler applies, e.g. [`TypeUrl::CLUSTER`].
    fn type_url(&self) -> &str;

    /// Applies an update atomically: either all of it or, on error, none of it. Each error names the
    /// resource it is about; together they become the NACK's `error_detail` message.
    fn apply(&self, update: Update) -> Result<(), Vec<ResourceError>>;
}

/// The NACK message for a set of resource errors: `listener "l1": bad port; listener "l2": ...`.
pub fn nack_message(type_url: &str, errors: &[ResourceError]) -> String {
    if errors.is_empty() {
        return format!("{} update rejected", TypeUrl::kind(type_url));
    }
    let kind = TypeUrl::kind(type_url);
    errors
        .iter()
        .map(|e| {
            if e.name.is_empty() {
                e.message.clone()
            } else {
                format!("{kind} {:?}: {}", e.name, e.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every xDS resource message has its name as field 1 (`name`, or `cluster_name` for EDS), so the
/// client can name resources without knowing their types.
#[derive(Clone, PartialEq, Message)]
struct NameOnly {
    #[prost(string, tag = "1")]
    name: String,
}

/// Turns a state-of-the-world `Any` into a named [`Resource`], unwrapping the
/// `envoy.service.discovery.v3.Resource` envelope a server may use.
pub(crate) fn sotw_resource(
    any: &Any,
    type_url: &str,
    version: &str,
) -> Result<Resource, ResourceError> {
    if any.type_url == WRAPPED_RESOURCE {
        let wrapped = WrappedResource::decode(any.value.as_slice())
            .map_err(|e| ResourceError::new("", format!("undecodable Resource wrapper: {e}")))?;
        let inner = wrapped.resource.unwrap_or_default();
        let name = if wrapped.name.is_empty() {
            resource_name(&inner)?
        } else {
            wrapped.name
        };
        check_type(&name, &inner, type_url)?;
        return Ok(Resource {
            name,
            version: version.to_string(),
            resource: inner,
        });
    }
    let name = resource_name(any)?;
    check_type(&name, any, type_url)?;
    Ok(Resource {
        name,
        version: version.to_string(),
        resource: any.clone(),
    })
}

fn resource_name(any: &Any) -> Result<String, ResourceError> {
    NameOnly::decode(any.value.as_slice())
        .map(|n| n.name)
        .map_err(|e| ResourceError::new("", format!("undecodable {}: {e}", any.type_url)))
}

pub(crate) fn check_type(name: &str, any: &Any, type_url: &str) -> Result<(), ResourceError> {
    if any.type_url == type_url {
        Ok(())
    } else {
        Err(ResourceError::new(
            name,
            format!("type {} in a {type_url} response", any.type_url),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

    #[test]
    fn kinds_read_like_envoy_nacks() {
        assert_eq!(TypeUrl::kind(TypeUrl::LISTENER), "listener");
        assert_eq!(TypeUrl::kind(TypeUrl::ENDPOINT), "cluster load assignment");
        assert_eq!(TypeUrl::kind(TypeUrl::ROUTE), "route configuration");
    }

    #[test]
    fn nack_message_names_each_resource() {
        let errors = [
            ResourceError::new("l1", "port 0"),
            ResourceError::new("", "duplicate names"),
        ];
        assert_eq!(
            nack_message(TypeUrl::LISTENER, &errors),
            "listener \"l1\": port 0; duplicate names"
        );
    }

    #[test]
    fn names_come_from_the_resource_and_wrappers_are_unwrapped() {
        let cla = ClusterLoadAssignment {
            cluster_name: "backend".into(),
            ..Default::default()
        };
        let any = Any {
            type_url: TypeUrl::ENDPOINT.into(),
            value: cla.encode_to_vec(),
        };
        let r = sotw_resource(&any, TypeUrl::ENDPOINT, "3").expect("named");
        assert_eq!((r.name.as_str(), r.version.as_str()), ("backend", "3"));
        let decoded: ClusterLoadAssignment = r.decode().expect("decodes");
        assert_eq!(decoded.cluster_name, "backend");

        let wrapped = Any {
            type_url: WRAPPED_RESOURCE.into(),
            value: WrappedResource {
                name: "alias".into(),
                resource: Some(any.clone()),
                ..Default::default()
            }
            .encode_to_vec(),
        };
        let r = sotw_resource(&wrapped, TypeUrl::ENDPOINT, "3").expect("unwrapped");
        assert_eq!(r.name, "alias");
        assert_eq!(r.resource, any);

        let err = sotw_resource(&any, TypeUrl::CLUSTER, "3").expect_err("wrong type");
        assert_eq!(err.name, "backend");
    }
}
