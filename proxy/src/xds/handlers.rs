//! One xds-client [`Handler`] per resource type: decode the update, hand it to the proxy's
//! [`ConfigSink`], count it under Envoy's stat names, and follow the dependencies it creates
//! (clusters → their endpoints, listeners → their route configurations and secrets).

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use prost::Message;
use remora_xds_client::{Handler, ResourceError, Subscriptions, TypeUrl, Update};

use super::stats::UpdateStats;

/// The decoded resources of one update of one type.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<T> {
    /// `version_info` (state-of-the-world) or `system_version_info` (delta).
    pub version: String,
    /// Added or updated resources with their names and per-resource versions.
    pub resources: Vec<Named<T>>,
    /// Names that no longer exist.
    pub removed: Vec<String>,
    /// True when `resources` is the whole state of the type (state-of-the-world).
    pub full_state: bool,
}

/// One decoded resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Named<T> {
    pub name: String,
    pub version: String,
    pub resource: T,
}

/// What the proxy does with dynamic resources. Each method applies its update atomically (all of it,
/// or none of it with one error per rejected resource, naming the field) and returns once new
/// connections and requests see it.
pub trait ConfigSink: Send + Sync + 'static {
    fn clusters(&self, update: Decoded<Cluster>) -> Result<(), Vec<ResourceError>>;
    fn endpoints(&self, update: Decoded<ClusterLoadAssignment>) -> Result<(), Vec<ResourceError>>;
    fn listeners(&self, update: Decoded<Listener>) -> Result<(), Vec<ResourceError>>;
    fn routes(&self, update: Decoded<RouteConfiguration>) -> Result<(), Vec<ResourceError>>;
    fn secrets(&self, update: Decoded<Secret>) -> Result<(), Vec<ResourceError>>;
    /// The names of `type_url` (EDS, RDS or SDS) that the current configuration refers to: EDS
    /// service names of EDS clusters, route configuration names of RDS connection managers, secret
    /// names whose `sds_config` is ADS.
    fn wanted(&self, type_url: &str) -> Vec<String>;
}

/// The kinds of resource, in the order Envoy initialises them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cluster,
    Endpoint,
    Listener,
    Route,
    Secret,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Cluster,
        Kind::Endpoint,
        Kind::Listener,
        Kind::Route,
        Kind::Secret,
    ];

    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Cluster => TypeUrl::CLUSTER,
            Kind::Endpoint => TypeUrl::ENDPOINT,
            Kind::Listener => TypeUrl::LISTENER,
            Kind::Route => TypeUrl::ROUTE,
            Kind::Secret => TypeUrl::SECRET,
        }
    }

    /// The types whose subscriptions follow from this one's resources.
    fn dependents(self) -> &'static [Kind] {
        match self {
            Kind::Cluster => &[Kind::Endpoint, Kind::Secret],
            Kind::Listener => &[Kind::Route, Kind::Secret],
            _ => &[],
        }
    }
}

/// The handler of one resource type.
pub struct TypeHandler {
    kind: Kind,
    sink: Arc<dyn ConfigSink>,
    subscriptions: Subscriptions,
    stats: UpdateStats,
    /// Whether secrets come over this client (ADS) and so follow the configuration's references.
    follow_secrets: bool,
}

impl TypeHandler {
    pub fn new(
        kind: Kind,
        sink: Arc<dyn ConfigSink>,
        subscriptions: Subscriptions,
        stats: UpdateStats,
        follow_secrets: bool,
    ) -> Self {
        Self {
            kind,
            sink,
            subscriptions,
            stats,
            follow_secrets,
        }
    }

    fn decode_all<T: Message + Default>(update: &Update) -> Result<Decoded<T>, Vec<ResourceError>> {
        let mut errors = Vec::new();
        let mut resources = Vec::with_capacity(update.resources.len());
        for r in &update.resources {
            match r.decode::<T>() {
                Ok(resource) => resources.push(Named {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource,
                }),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Decoded {
            version: update.version.clone(),
            resources,
            removed: update.removed.clone(),
            full_state: update.full_state,
        })
    }

    fn dispatch(&self, update: &Update) -> Result<(), Vec<ResourceError>> {
        match self.kind {
            Kind::Cluster => self.sink.clusters(Self::decode_all(update)?),
            Kind::Endpoint => self.sink.endpoints(Self::decode_all(update)?),
            Kind::Listener => self.sink.listeners(Self::decode_all(update)?),
            Kind::Route => self.sink.routes(Self::decode_all(update)?),
            Kind::Secret => self.sink.secrets(Self::decode_all(update)?),
        }
    }

    /// Subscribes the dependent types to exactly what the configuration now refers to.
    fn follow(&self) {
        for dep in self.kind.dependents() {
            if *dep == Kind::Secret && !self.follow_secrets {
                continue;
            }
            let url = dep.type_url();
            self.subscriptions.subscribe(url, self.sink.wanted(url));
        }
    }
}

impl Handler for TypeHandler {
    fn type_url(&self) -> &str {
        self.kind.type_url()
    }

    fn apply(&self, update: Update) -> Result<(), Vec<ResourceError>> {
        self.stats.attempt();
        match self.dispatch(&update) {
            Ok(()) => {
                self.stats.success(&update.version);
                self.follow();
                Ok(())
            }
            Err(errors) => {
                self.stats.rejected();
                for e in &errors {
                    tracing::warn!(
                        kind = TypeUrl::kind(self.kind.type_url()),
                        resource = %e.name,
                        error = %e.message,
                        version = %update.version,
                        "xDS update rejected"
                    );
                }
                Err(errors)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Store;
    use envoy_types::pb::google::protobuf::Any;
    use remora_xds_client::Resource;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        clusters: Mutex<Vec<Decoded<Cluster>>>,
        reject: bool,
    }

    impl ConfigSink for Recorder {
        fn clusters(&self, update: Decoded<Cluster>) -> Result<(), Vec<ResourceError>> {
            if self.reject {
                return Err(vec![ResourceError::new("c1", "lb_policy: bad")]);
            }
            self.clusters.lock().expect("lock").push(update);
            Ok(())
        }
        fn endpoints(&self, _: Decoded<ClusterLoadAssignment>) -> Result<(), Vec<ResourceError>> {
            Ok(())
        }
        fn listeners(&self, _: Decoded<Listener>) -> Result<(), Vec<ResourceError>> {
            Ok(())
        }
        fn routes(&self, _: Decoded<RouteConfiguration>) -> Result<(), Vec<ResourceError>> {
            Ok(())
        }
        fn secrets(&self, _: Decoded<Secret>) -> Result<(), Vec<ResourceError>> {
            Ok(())
        }
        fn wanted(&self, type_url: &str) -> Vec<String> {
            if type_url == TypeUrl::ENDPOINT {
                self.clusters
                    .lock()
                    .expect("lock")
                    .iter()
                    .flat_map(|u| u.resources.iter().map(|r| r.name.clone()))
                    .collect()
            } else {
                Vec::new()
            }
        }
    }

    fn update(resources: Vec<Resource>) -> Update {
        Update {
            type_url: TypeUrl::CLUSTER.into(),
            version: "v1".into(),
            resources,
            removed: vec![],
            full_state: true,
        }
    }

    fn cluster(name: &str) -> Resource {
        let c = Cluster {
            name: name.into(),
            ..Default::default()
        };
        Resource {
            name: name.into(),
            version: "v1".into(),
            resource: Any {
                type_url: TypeUrl::CLUSTER.into(),
                value: c.encode_to_vec(),
            },
        }
    }

    fn handler(sink: Arc<Recorder>, store: &Store, subs: Subscriptions) -> TypeHandler {
        TypeHandler::new(
            Kind::Cluster,
            sink,
            subs,
            UpdateStats::new(store, "cluster_manager.cds."),
            false,
        )
    }

    #[test]
    fn accepted_clusters_subscribe_their_endpoints_and_count() {
        let store = Store::new();
        let sink = Arc::new(Recorder::default());
        let subs = remora_xds_client::XdsClient::builder(
            remora_xds_client::XdsEndpoint::unix("/nonexistent"),
            Default::default(),
        )
        .subscriptions();
        let h = handler(sink.clone(), &store, subs.clone());
        h.apply(update(vec![cluster("a"), cluster("b")]))
            .expect("accepted");
        assert_eq!(sink.clusters.lock().expect("lock")[0].resources.len(), 2);
        assert_eq!(
            subs.get(TypeUrl::ENDPOINT),
            Some(remora_xds_client::Interest::names(["a", "b"]))
        );
        assert_eq!(store.counter("cluster_manager.cds.update_success").get(), 1);
        assert_eq!(store.counter("cluster_manager.cds.update_attempt").get(), 1);
    }

    #[test]
    fn undecodable_or_rejected_updates_are_nacked_and_counted() {
        let store = Store::new();
        let sink = Arc::new(Recorder::default());
        let subs = remora_xds_client::XdsClient::builder(
            remora_xds_client::XdsEndpoint::unix("/nonexistent"),
            Default::default(),
        )
        .subscriptions();
        let h = handler(sink.clone(), &store, subs.clone());
        let mut bad = cluster("bad");
        bad.resource.value = vec![0xff, 0xff, 0xff];
        let errors = h.apply(update(vec![cluster("a"), bad])).expect_err("nack");
        assert_eq!(errors[0].name, "bad");
        assert!(sink.clusters.lock().expect("lock").is_empty());
        assert_eq!(subs.get(TypeUrl::ENDPOINT), None);

        let rejecting = Arc::new(Recorder {
            reject: true,
            ..Default::default()
        });
        let h = handler(rejecting, &store, subs);
        let errors = h.apply(update(vec![cluster("c1")])).expect_err("nack");
        assert_eq!(errors[0].message, "lb_policy: bad");
        assert_eq!(
            store.counter("cluster_manager.cds.update_rejected").get(),
            2
        );
        assert_eq!(store.counter("cluster_manager.cds.update_success").get(), 0);
    }
}
