//! The two wire protocols behind one interface: which gRPC method opens a stream and how a
//! subscription of each protocol answers responses.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_client::ListenerDiscoveryServiceClient;
use envoy_types::pb::envoy::service::route::v3::route_discovery_service_client::RouteDiscoveryServiceClient;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use futures_util::future::BoxFuture;
use tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

use crate::delta::DeltaSubscription;
use crate::resource::{Handler, TypeUrl};
use crate::sotw::Subscription;
use crate::subscriptions::Interest;

/// Which discovery service a stream talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Service {
    /// `AggregatedDiscoveryService`: every type on one stream.
    Ads,
    /// The type's own service (`SecretDiscoveryService` for SDS, ...).
    Single(String),
}

impl Service {
    /// Whether a non-aggregated service exists for `type_url`.
    pub(crate) fn exists_for(type_url: &str) -> bool {
        matches!(
            type_url,
            TypeUrl::LISTENER
                | TypeUrl::CLUSTER
                | TypeUrl::ROUTE
                | TypeUrl::ENDPOINT
                | TypeUrl::SECRET
        )
    }
}

/// The outcome of one response for the driver.
pub(crate) struct Answer<R> {
    pub(crate) request: R,
    pub(crate) rejected: Option<String>,
    pub(crate) version: String,
}

/// A subscription of either protocol, as the stream driver uses it.
pub(crate) trait Protocol: Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    /// Delta streams carry the node on their first request only, whatever the configuration says.
    const NODE_ON_FIRST_ONLY: bool;

    fn create(type_url: &str, interest: Interest) -> Self;
    fn is_open(&self) -> bool;
    fn reset_stream(&mut self);
    fn initial_request(&mut self) -> Self::Request;
    fn set_interest(&mut self, interest: Interest) -> Option<Self::Request>;
    fn handle(&mut self, response: &Self::Response, handler: &dyn Handler)
        -> Answer<Self::Request>;
    fn response_type(response: &Self::Response) -> &str;
    fn set_node(request: &mut Self::Request, node: &Node);
    fn open(
        channel: Channel,
        service: &Service,
        requests: Request<UnboundedReceiverStream<Self::Request>>,
    ) -> BoxFuture<'static, Result<Streaming<Self::Response>, Status>>;
}

impl Protocol for Subscription {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const NODE_ON_FIRST_ONLY: bool = false;

    fn create(type_url: &str, interest: Interest) -> Self {
        Subscription::with_interest(type_url, interest)
    }
    fn is_open(&self) -> bool {
        Subscription::is_open(self)
    }
    fn reset_stream(&mut self) {
        Subscription::reset_stream(self);
    }
    fn initial_request(&mut self) -> DiscoveryRequest {
        Subscription::initial_request(self, None)
    }
    fn set_interest(&mut self, interest: Interest) -> Option<DiscoveryRequest> {
        Subscription::set_interest(self, interest)
    }
    fn handle(
        &mut self,
        response: &DiscoveryResponse,
        handler: &dyn Handler,
    ) -> Answer<DiscoveryRequest> {
        let handled = Subscription::handle(self, response, handler);
        Answer {
            request: handled.request,
            rejected: handled.rejected,
            version: response.version_info.clone(),
        }
    }
    fn response_type(response: &DiscoveryResponse) -> &str {
        &response.type_url
    }
    fn set_node(request: &mut DiscoveryRequest, node: &Node) {
        request.node = Some(node.clone());
    }
    fn open(
        channel: Channel,
        service: &Service,
        requests: Request<UnboundedReceiverStream<DiscoveryRequest>>,
    ) -> BoxFuture<'static, Result<Streaming<DiscoveryResponse>, Status>> {
        let service = service.clone();
        Box::pin(async move {
            let response = match &service {
                Service::Ads => {
                    AggregatedDiscoveryServiceClient::new(channel)
                        .stream_aggregated_resources(requests)
                        .await
                }
                Service::Single(t) => match t.as_str() {
                    TypeUrl::LISTENER => {
                        ListenerDiscoveryServiceClient::new(channel)
                            .stream_listeners(requests)
                            .await
                    }
                    TypeUrl::CLUSTER => {
                        ClusterDiscoveryServiceClient::new(channel)
                            .stream_clusters(requests)
                            .await
                    }
                    TypeUrl::ROUTE => {
                        RouteDiscoveryServiceClient::new(channel)
                            .stream_routes(requests)
                            .await
                    }
                    TypeUrl::ENDPOINT => {
                        EndpointDiscoveryServiceClient::new(channel)
                            .stream_endpoints(requests)
                            .await
                    }
                    TypeUrl::SECRET => {
                        SecretDiscoveryServiceClient::new(channel)
                            .stream_secrets(requests)
                            .await
                    }
                    other => Err(Status::unimplemented(format!(
                        "no discovery service for {other}"
                    ))),
                },
            };
            response.map(tonic::Response::into_inner)
        })
    }
}

impl Protocol for DeltaSubscription {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const NODE_ON_FIRST_ONLY: bool = true;

    fn create(type_url: &str, interest: Interest) -> Self {
        DeltaSubscription::new(type_url, interest)
    }
    fn is_open(&self) -> bool {
        DeltaSubscription::is_open(self)
    }
    fn reset_stream(&mut self) {
        DeltaSubscription::reset_stream(self);
    }
    fn initial_request(&mut self) -> DeltaDiscoveryRequest {
        DeltaSubscription::initial_request(self, None)
    }
    fn set_interest(&mut self, interest: Interest) -> Option<DeltaDiscoveryRequest> {
        DeltaSubscription::set_interest(self, interest)
    }
    fn handle(
        &mut self,
        response: &DeltaDiscoveryResponse,
        handler: &dyn Handler,
    ) -> Answer<DeltaDiscoveryRequest> {
        let handled = DeltaSubscription::handle(self, response, handler);
        Answer {
            request: handled.request,
            rejected: handled.rejected,
            version: response.system_version_info.clone(),
        }
    }
    fn response_type(response: &DeltaDiscoveryResponse) -> &str {
        &response.type_url
    }
    fn set_node(request: &mut DeltaDiscoveryRequest, node: &Node) {
        request.node = Some(node.clone());
    }
    fn open(
        channel: Channel,
        service: &Service,
        requests: Request<UnboundedReceiverStream<DeltaDiscoveryRequest>>,
    ) -> BoxFuture<'static, Result<Streaming<DeltaDiscoveryResponse>, Status>> {
        let service = service.clone();
        Box::pin(async move {
            let response = match &service {
                Service::Ads => {
                    AggregatedDiscoveryServiceClient::new(channel)
                        .delta_aggregated_resources(requests)
                        .await
                }
                Service::Single(t) => match t.as_str() {
                    TypeUrl::LISTENER => {
                        ListenerDiscoveryServiceClient::new(channel)
                            .delta_listeners(requests)
                            .await
                    }
                    TypeUrl::CLUSTER => {
                        ClusterDiscoveryServiceClient::new(channel)
                            .delta_clusters(requests)
                            .await
                    }
                    TypeUrl::ROUTE => {
                        RouteDiscoveryServiceClient::new(channel)
                            .delta_routes(requests)
                            .await
                    }
                    TypeUrl::ENDPOINT => {
                        EndpointDiscoveryServiceClient::new(channel)
                            .delta_endpoints(requests)
                            .await
                    }
                    TypeUrl::SECRET => {
                        SecretDiscoveryServiceClient::new(channel)
                            .delta_secrets(requests)
                            .await
                    }
                    other => Err(Status::unimplemented(format!(
                        "no discovery service for {other}"
                    ))),
                },
            };
            response.map(tonic::Response::into_inner)
        })
    }
}
