//! The client: a builder wiring handlers to a control plane, and `run`, which drives the streams
//! until shutdown.

mod driver;
mod protocol;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use futures_util::future::{join_all, BoxFuture};

use crate::backoff::Backoff;
use crate::delta::DeltaSubscription;
use crate::error::XdsError;
use crate::resource::{Handler, TypeUrl};
use crate::sotw::Subscription;
use crate::stats::XdsStats;
use crate::subscriptions::{Interest, Subscriptions};
use crate::transport::XdsEndpoint;
use driver::{drive, Shared};
use protocol::Service;

/// Builds an [`XdsClient`].
pub struct XdsClientBuilder {
    endpoint: XdsEndpoint,
    node: Node,
    handlers: Vec<Arc<dyn Handler>>,
    ads: bool,
    delta: bool,
    node_on_every_request: bool,
    backoff: Backoff,
    subscriptions: Subscriptions,
}

impl XdsClientBuilder {
    /// Adds the handler of one type URL.
    pub fn handler(self, handler: impl Handler) -> Self {
        self.shared_handler(Arc::new(handler))
    }

    /// Adds a handler that is shared with other code.
    pub fn shared_handler(mut self, handler: Arc<dyn Handler>) -> Self {
        self.handlers.push(handler);
        self
    }

    /// One aggregated stream for every type (`true`, the default) or one stream per type on the
    /// type's own service (`StreamListeners`, ..., `StreamSecrets` for SDS).
    pub fn ads(mut self, ads: bool) -> Self {
        self.ads = ads;
        self
    }

    /// The incremental protocol (`DeltaAggregatedResources`, ...) instead of state-of-the-world.
    pub fn delta(mut self, delta: bool) -> Self {
        self.delta = delta;
        self
    }

    /// Whether state-of-the-world requests all carry the node. The default (`false`) sends it on the
    /// first request of each stream only, like Envoy with `set_node_on_first_message_only: true`;
    /// delta streams always send it once.
    pub fn node_on_every_request(mut self, every: bool) -> Self {
        self.node_on_every_request = every;
        self
    }

    /// The reconnect backoff (default 500 ms base, 30 s cap, full jitter).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff = Backoff::new(base, max);
        self
    }

    /// The subscriptions of the client being built; handlers keep a clone to subscribe to names they
    /// discover. Types without an explicit interest default to the wildcard for LDS and CDS and to
    /// no names (nothing requested yet) for the others.
    pub fn subscriptions(&self) -> Subscriptions {
        self.subscriptions.clone()
    }

    /// Checks the configuration and builds the client.
    pub fn build(self) -> Result<XdsClient, XdsError> {
        let mut handlers = BTreeMap::new();
        for handler in self.handlers {
            let type_url = handler.type_url().to_string();
            if !self.ads && !Service::exists_for(&type_url) {
                return Err(XdsError::NoService(type_url));
            }
            if handlers.insert(type_url.clone(), handler).is_some() {
                return Err(XdsError::DuplicateHandler(type_url));
            }
        }
        for type_url in handlers.keys() {
            let interest = if TypeUrl::is_wildcard_by_default(type_url) {
                Interest::wildcard()
            } else {
                Interest::default()
            };
            self.subscriptions.set_default(type_url, interest);
        }
        let stats = Arc::new(XdsStats::new(handlers.keys().map(String::as_str)));
        Ok(XdsClient {
            shared: Arc::new(Shared {
                endpoint: self.endpoint,
                node: self.node,
                node_on_every_request: self.node_on_every_request,
                handlers,
                subscriptions: self.subscriptions,
                stats,
                backoff: self.backoff,
            }),
            ads: self.ads,
            delta: self.delta,
        })
    }
}

/// An xDS client: subscriptions per type URL, answered by [`Handler`]s, over ADS or per-type streams.
#[derive(Clone)]
pub struct XdsClient {
    shared: Arc<Shared>,
    ads: bool,
    delta: bool,
}

impl XdsClient {
    /// Starts building a client of the control plane at `endpoint`, identifying itself as `node`.
    pub fn builder(endpoint: XdsEndpoint, node: Node) -> XdsClientBuilder {
        XdsClientBuilder {
            endpoint,
            node,
            handlers: Vec::new(),
            ads: true,
            delta: false,
            node_on_every_request: false,
            backoff: Backoff::default(),
            subscriptions: Subscriptions::new(),
        }
    }

    /// Starts building an SDS client for an `api_config_source` (`StreamSecrets`, or `DeltaSecrets`
    /// with `.delta(true)`), separate from ADS.
    pub fn sds(endpoint: XdsEndpoint, node: Node, handler: impl Handler) -> XdsClientBuilder {
        Self::builder(endpoint, node).ads(false).handler(handler)
    }

    /// Subscribes `type_url` to exactly these names; a running client sends the change at once.
    pub fn subscribe(&self, type_url: &str, names: impl IntoIterator<Item = impl Into<String>>) {
        self.shared.subscriptions.subscribe(type_url, names);
    }

    /// The client's subscriptions (a handle that can be cloned into handlers).
    pub fn subscriptions(&self) -> &Subscriptions {
        &self.shared.subscriptions
    }

    /// Connection state and update counters.
    pub fn stats(&self) -> &Arc<XdsStats> {
        &self.shared.stats
    }

    /// Drives the streams until `shutdown` completes: connects, subscribes, applies responses through
    /// the handlers and ACKs or NACKs them, and reconnects with jittered exponential backoff after
    /// any failure or server close. Dropping the future closes the streams too.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let groups: Vec<(Service, Vec<String>)> = if self.ads {
            vec![(Service::Ads, self.ordered_types())]
        } else {
            self.ordered_types()
                .into_iter()
                .map(|t| (Service::Single(t.clone()), vec![t]))
                .collect()
        };
        let shared = self.shared.as_ref();
        let streams: Vec<BoxFuture<'_, ()>> = groups
            .into_iter()
            .map(|(service, types)| -> BoxFuture<'_, ()> {
                if self.delta {
                    Box::pin(drive::<DeltaSubscription>(shared, service, types))
                } else {
                    Box::pin(drive::<Subscription>(shared, service, types))
                }
            })
            .collect();
        tokio::select! {
            () = shutdown => {}
            _ = join_all(streams) => {}
        }
    }

    /// The handled types in the order Envoy first requests them.
    fn ordered_types(&self) -> Vec<String> {
        let rank = |t: &str| match t {
            TypeUrl::CLUSTER => 0,
            TypeUrl::ENDPOINT => 1,
            TypeUrl::LISTENER => 2,
            TypeUrl::ROUTE => 3,
            TypeUrl::SECRET => 4,
            _ => 5,
        };
        let mut types: Vec<String> = self.shared.handlers.keys().cloned().collect();
        types.sort_by_key(|t| rank(t));
        types
    }
}
