#![forbid(unsafe_code)]
//! The xDS protocol, independent of what the resources mean.
//!
//! The crate speaks the xDS transport protocol to a control plane — aggregated (ADS) or per-type
//! streams, state-of-the-world or incremental (delta), over TCP, TLS or a Unix domain socket — and
//! leaves the meaning of resources to [`Handler`]s, one per type URL. It owns the bookkeeping:
//! which version was accepted, which nonce answers which response, the ACK or NACK (with
//! `INVALID_ARGUMENT` and a message naming each rejected resource), removals, resubscription with
//! `initial_resource_versions` after a reconnect, and the jittered exponential reconnect backoff.
//!
//! # Wiring a handler
//!
//! ```no_run
//! use envoy_types::pb::envoy::config::cluster::v3::Cluster;
//! use envoy_types::pb::envoy::config::core::v3::Node;
//! use remora_xds_client::{
//!     Handler, ResourceError, Subscriptions, TypeUrl, Update, XdsClient, XdsEndpoint,
//! };
//!
//! struct Clusters {
//!     subscriptions: Subscriptions,
//! }
//!
//! impl Handler for Clusters {
//!     fn type_url(&self) -> &str {
//!         TypeUrl::CLUSTER
//!     }
//!
//!     fn apply(&self, update: Update) -> Result<(), Vec<ResourceError>> {
//!         let mut errors = Vec::new();
//!         let mut names = Vec::new();
//!         for resource in &update.resources {
//!             match resource.decode::<Cluster>() {
//!                 Ok(cluster) if cluster.name.is_empty() => {
//!                     errors.push(ResourceError::new(&resource.name, "name: empty"))
//!                 }
//!                 Ok(cluster) => names.push(cluster.name),
//!                 Err(e) => errors.push(e),
//!             }
//!         }
//!         if !errors.is_empty() {
//!             return Err(errors); // NACK: `cluster "c1": name: empty`
//!         }
//!         // ... swap in the new clusters, drop `update.removed` ...
//!         self.subscriptions.subscribe(TypeUrl::ENDPOINT, names); // EDS for the clusters
//!         Ok(())
//!     }
//! }
//!
//! # async fn example(shutdown: tokio::sync::watch::Receiver<bool>) -> Result<(), remora_xds_client::XdsError> {
//! let endpoint = XdsEndpoint::unix("./etc/istio/proxy/XDS");
//! let node = Node { id: "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local".into(), ..Default::default() };
//! let builder = XdsClient::builder(endpoint, node).ads(true).delta(false);
//! let subscriptions = builder.subscriptions();
//! let client = builder.handler(Clusters { subscriptions }).build()?;
//! let stats = client.stats().clone(); // export `connected()`, `type_stats(..).update_success`, ...
//! let mut shutdown = shutdown;
//! client.run(async move { let _ = shutdown.changed().await; }).await;
//! # let _ = stats;
//! # Ok(())
//! # }
//! ```
//!
//! # Semantics
//!
//! * **Subscriptions.** LDS and CDS default to the wildcard (sent as an empty name list, as Envoy
//!   does), other types to no names: they are requested once [`Subscriptions::subscribe`] names
//!   something. Changes are sent on the running stream (SotW: the full name list with the accepted
//!   version and latest nonce; delta: `resource_names_subscribe`/`_unsubscribe`).
//! * **Node.** Delta sends it on the first request of a stream; SotW too unless
//!   [`XdsClientBuilder::node_on_every_request`] is set (Envoy's `set_node_on_first_message_only`).
//! * **ACK/NACK.** SotW: `version_info` is the last accepted version, `response_nonce` the nonce of
//!   the response answered; a NACK adds `error_detail`. Delta: the nonce (and `error_detail`) only.
//! * **Removal.** SotW LDS/CDS: a resource absent from a response is in [`Update::removed`]; for
//!   RDS/EDS/SDS absence means nothing. Delta: `removed_resources`.
//! * **Reconnect.** After an error or a server close the stream reopens after a jittered backoff
//!   (reset once a stream delivers a response); SotW resends the accepted versions, delta the
//!   accepted resource versions as `initial_resource_versions`.

mod backoff;
mod client;
mod delta;
mod error;
mod resource;
mod sotw;
mod stats;
mod subscriptions;
#[cfg(test)]
mod testing;
mod transport;

pub use backoff::Backoff;
pub use client::{XdsClient, XdsClientBuilder};
pub use delta::{DeltaHandled, DeltaSubscription};
pub use error::XdsError;
pub use resource::{nack_message, Handler, Resource, ResourceError, TypeUrl, Update};
pub use sotw::{Handled, Subscription, Verdict};
pub use stats::{TypeStats, XdsStats};
pub use subscriptions::{Interest, Subscriptions};
pub use transport::XdsEndpoint;
