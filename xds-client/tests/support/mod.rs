//! A scriptable in-process control plane (ADS and SDS) and a recording handler.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use remora_xds_client::{Handler, ResourceError, Subscriptions, Update};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::{
    TcpListenerStream, UnboundedReceiverStream, UnixListenerStream,
};
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

/// The server's side of one stream: what the client sent, and a way to push or end it.
pub struct ServerStream<Req, Resp> {
    requests: Streaming<Req>,
    responses: mpsc::UnboundedSender<Result<Resp, Status>>,
}

impl<Req, Resp> ServerStream<Req, Resp> {
    /// The client's next request.
    pub async fn recv(&mut self) -> Req {
        tokio::time::timeout(Duration::from_secs(10), self.requests.message())
            .await
            .expect("a request within the timeout")
            .expect("a well-formed request")
            .expect("the stream is open")
    }

    /// Pushes a response.
    pub fn send(&self, response: Resp) {
        self.responses.send(Ok(response)).expect("stream open");
    }

    /// Ends the stream with an error status.
    pub fn fail(self, status: Status) {
        self.responses.send(Err(status)).expect("stream open");
    }
}

pub type Sotw = ServerStream<DiscoveryRequest, DiscoveryResponse>;
pub type Delta = ServerStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

/// The test's side of the control plane: each new client stream arrives here.
pub struct ControlPlane {
    sotw: mpsc::UnboundedReceiver<Sotw>,
    delta: mpsc::UnboundedReceiver<Delta>,
}

impl ControlPlane {
    /// The next state-of-the-world stream the client opens.
    pub async fn sotw_stream(&mut self) -> Sotw {
        tokio::time::timeout(Duration::from_secs(10), self.sotw.recv())
            .await
            .expect("a stream within the timeout")
            .expect("server running")
    }

    /// The next delta stream the client opens.
    pub async fn delta_stream(&mut self) -> Delta {
        tokio::time::timeout(Duration::from_secs(10), self.delta.recv())
            .await
            .expect("a stream within the timeout")
            .expect("server running")
    }
}

#[derive(Clone)]
struct Streams {
    sotw: mpsc::UnboundedSender<Sotw>,
    delta: mpsc::UnboundedSender<Delta>,
}

type Out<T> = UnboundedReceiverStream<Result<T, Status>>;

impl Streams {
    fn sotw(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Response<Out<DiscoveryResponse>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.sotw.send(ServerStream {
            requests: request.into_inner(),
            responses: tx,
        });
        Response::new(UnboundedReceiverStream::new(rx))
    }

    fn delta(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Response<Out<DeltaDiscoveryResponse>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.delta.send(ServerStream {
            requests: request.into_inner(),
            responses: tx,
        });
        Response::new(UnboundedReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Streams {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(self.sotw(request))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(self.delta(request))
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for Streams {
    type StreamSecretsStream = Out<DiscoveryResponse>;
    type DeltaSecretsStream = Out<DeltaDiscoveryResponse>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        Ok(self.sotw(request))
    }

    async fn delta_secrets(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Ok(self.delta(request))
    }

    async fn fetch_secrets(
        &self,
        _: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("fetch"))
    }
}

fn control_plane() -> (Streams, ControlPlane) {
    let (sotw_tx, sotw) = mpsc::unbounded_channel();
    let (delta_tx, delta) = mpsc::unbounded_channel();
    (
        Streams {
            sotw: sotw_tx,
            delta: delta_tx,
        },
        ControlPlane { sotw, delta },
    )
}

/// Which discovery service the test control plane offers.
#[derive(Debug, Clone, Copy)]
pub enum Offer {
    /// `AggregatedDiscoveryService`.
    Ads,
    /// `SecretDiscoveryService`.
    Sds,
}

// tonic's multi-service router needs its `router` feature (axum); one service per server suffices.
fn spawn_server<I, IO, IE>(offer: Offer, streams: Streams, incoming: I)
where
    I: tonic::codegen::tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    match offer {
        Offer::Ads => tokio::spawn(
            Server::builder()
                .serve_with_incoming(AggregatedDiscoveryServiceServer::new(streams), incoming),
        ),
        Offer::Sds => tokio::spawn(
            Server::builder()
                .serve_with_incoming(SecretDiscoveryServiceServer::new(streams), incoming),
        ),
    };
}

/// Serves `offer` on connections the test accepts itself (TLS).
pub fn serve_incoming<I, IO, IE>(offer: Offer, incoming: I) -> ControlPlane
where
    I: tonic::codegen::tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let (streams, plane) = control_plane();
    spawn_server(offer, streams, incoming);
    plane
}

/// Serves `offer` on a loopback TCP port; returns the `http://` URI.
pub async fn serve_tcp(offer: Offer) -> (String, ControlPlane) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (streams, plane) = control_plane();
    spawn_server(offer, streams, TcpListenerStream::new(listener));
    (format!("http://{addr}"), plane)
}

/// Serves ADS on a Unix domain socket at `path`.
pub fn serve_unix(path: &Path) -> ControlPlane {
    let listener = UnixListener::bind(path).expect("bind uds");
    let (streams, plane) = control_plane();
    spawn_server(Offer::Ads, streams, UnixListenerStream::new(listener));
    plane
}

/// A fresh directory for sockets.
pub fn temp_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("remora-xds-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn node() -> Node {
    Node {
        id: "sidecar~10.0.0.1~app.default~default.svc.cluster.local".into(),
        cluster: "app".into(),
        ..Default::default()
    }
}

pub fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// Records updates; rejects resources named in `reject`; optionally subscribes another type to
/// the names it accepted (CDS → EDS, as a proxy's cluster manager does).
#[derive(Clone)]
pub struct Recorder {
    pub type_url: &'static str,
    pub reject: Arc<Mutex<Vec<String>>>,
    pub updates: Arc<Mutex<Vec<Update>>>,
    pub follow: Option<(Subscriptions, &'static str)>,
}

impl Recorder {
    pub fn new(type_url: &'static str) -> Self {
        Self {
            type_url,
            reject: Arc::default(),
            updates: Arc::default(),
            follow: None,
        }
    }

    pub fn reject(&self, name: &str) {
        self.reject.lock().expect("lock").push(name.to_string());
    }

    pub fn updates(&self) -> Vec<Update> {
        self.updates.lock().expect("lock").clone()
    }
}

impl Handler for Recorder {
    fn type_url(&self) -> &str {
        self.type_url
    }

    fn apply(&self, update: Update) -> Result<(), Vec<ResourceError>> {
        let reject = self.reject.lock().expect("lock").clone();
        let errors: Vec<ResourceError> = update
            .resources
            .iter()
            .filter(|r| reject.contains(&r.name))
            .map(|r| ResourceError::new(&r.name, "lb_policy: unsupported"))
            .collect();
        let names: Vec<String> = update.resources.iter().map(|r| r.name.clone()).collect();
        self.updates.lock().expect("lock").push(update);
        if !errors.is_empty() {
            return Err(errors);
        }
        if let Some((subscriptions, type_url)) = &self.follow {
            subscriptions.subscribe(type_url, names);
        }
        Ok(())
    }
}
