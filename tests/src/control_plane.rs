//! A scriptable xDS control plane (ADS, state-of-the-world and delta) on TCP or a Unix socket, the
//! same for remora and for Envoy. The test sets resources by type; every stream that subscribed
//! gets the change pushed, and every request (ACK, NACK, subscription) is recorded so the test
//! can ask how a pushed version was taken. It can be killed and restarted on the same address,
//! keeping its resources, as istiod restarting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Types whose empty subscription means "everything" (wildcard).
fn wildcard_type(type_url: &str) -> bool {
    type_url == LISTENER || type_url == CLUSTER
}

/// One request a client sent.
#[derive(Debug, Clone)]
pub struct Seen {
    pub stream: u64,
    pub delta: bool,
    pub type_url: String,
    /// SotW `version_info` (the last accepted version).
    pub version_info: String,
    pub nonce: String,
    /// SotW `resource_names`, or delta `resource_names_subscribe`.
    pub names: Vec<String>,
    pub unsubscribe: Vec<String>,
    /// Delta `initial_resource_versions` names.
    pub initial: Vec<String>,
    pub error: Option<String>,
    pub node_id: Option<String>,
}

/// One response the server sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub stream: u64,
    pub type_url: String,
    pub version: u64,
    pub nonce: String,
    /// Names carried (delta: changed ones), and delta removals.
    pub names: Vec<String>,
    pub removed: Vec<String>,
}

/// How a client took a pushed version of a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ack,
    Nack(String),
}

#[derive(Debug, Clone)]
struct Stored {
    version: u64,
    any: Any,
}

#[derive(Default)]
struct State {
    resources: HashMap<String, BTreeMap<String, Stored>>,
    /// Per type, bumped by every change of that type.
    versions: HashMap<String, u64>,
    seen: Vec<Seen>,
    sent: Vec<Sent>,
    streams: u64,
    nonce: u64,
}

impl State {
    fn type_version(&self, t: &str) -> u64 {
        self.versions.get(t).copied().unwrap_or(0)
    }
    fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        format!("n{}", self.nonce)
    }
}

/// Where the server listens.
#[derive(Debug, Clone)]
pub enum Addr {
    Tcp(SocketAddr),
    Uds(PathBuf),
}

/// A running control plane; stops when dropped.
pub struct ControlPlane {
    state: Arc<Mutex<State>>,
    pushed: Arc<watch::Sender<u64>>,
    /// Bumped by every recorded request, so waiters wake on it instead of polling (the benchmark
    /// times pushes to their ACK with it).
    recorded: Arc<watch::Sender<u64>>,
    killed: Arc<watch::Sender<bool>>,
    addr: Addr,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.killed.send_replace(true);
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

impl ControlPlane {
    /// Serves ADS on a free loopback TCP port.
    pub async fn tcp() -> ControlPlane {
        let port = crate::ports::free_port();
        Self::start(Addr::Tcp(SocketAddr::from(([127, 0, 0, 1], port)))).await
    }

    /// Serves ADS on a Unix socket at `path` (Istio's `./etc/istio/proxy/XDS`).
    pub async fn uds(path: &Path) -> ControlPlane {
        Self::start(Addr::Uds(path.to_path_buf())).await
    }

    async fn start(addr: Addr) -> ControlPlane {
        let mut cp = ControlPlane {
            state: Arc::default(),
            pushed: Arc::new(watch::Sender::new(0)),
            recorded: Arc::new(watch::Sender::new(0)),
            killed: Arc::new(watch::Sender::new(false)),
            addr,
            server: None,
        };
        cp.serve().await;
        cp
    }

    async fn serve(&mut self) {
        self.killed.send_replace(false);
        let svc = AggregatedDiscoveryServiceServer::new(Service {
            state: self.state.clone(),
            pushed: self.pushed.clone(),
            recorded: self.recorded.clone(),
            killed: self.killed.clone(),
        });
        let mut stop = self.killed.subscribe();
        let shutdown = async move {
            let _ = stop.wait_for(|k| *k).await;
        };
        let router = tonic::transport::Server::builder().add_service(svc);
        let task = match &self.addr {
            Addr::Tcp(a) => {
                let listener = bind_tcp(*a).await;
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                tokio::spawn(async move {
                    let _ = router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await;
                })
            }
            Addr::Uds(p) => {
                let _ = std::fs::remove_file(p);
                let listener = tokio::net::UnixListener::bind(p).expect("bind the xDS socket");
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                tokio::spawn(async move {
                    let _ = router
                        .serve_with_incoming_shutdown(incoming, shutdown)
                        .await;
                })
            }
        };
        self.server = Some(task);
    }

    /// Ends every stream with UNAVAILABLE and stops listening (the control plane dies).
    pub async fn kill(&mut self) {
        self.killed.send_replace(true);
        if let Some(s) = self.server.take() {
            if tokio::time::timeout(Duration::from_secs(2), &mut Box::pin(s))
                .await
                .is_err()
            {
                // Connections that linger past the graceful stop go with the task.
            }
        }
        if let Addr::Uds(p) = &self.addr {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Listens again on the same address with the same resources.
    pub async fn restart(&mut self) {
        self.serve().await;
    }

    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// The TCP port (panics on a Unix socket).
    pub fn port(&self) -> u16 {
        match &self.addr {
            Addr::Tcp(a) => a.port(),
            Addr::Uds(p) => panic!("the control plane listens on {}", p.display()),
        }
    }

    /// The bootstrap `address` for the `xds-grpc` cluster's endpoint, as YAML flow mapping.
    pub fn endpoint_yaml(&self) -> String {
        match &self.addr {
            Addr::Tcp(a) => format!(
                "{{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }}",
                a.port()
            ),
            Addr::Uds(p) => format!("{{ pipe: {{ path: \"{}\" }} }}", p.display()),
        }
    }

    /// Replaces every resource of `type_url` and pushes the new version; returns it.
    pub fn set(&self, type_url: &str, resources: Vec<(String, Any)>) -> u64 {
        let v = {
            let mut st = self.state.lock().expect("state");
            let v = st.type_version(type_url) + 1;
            st.versions.insert(type_url.to_string(), v);
            let old = st.resources.remove(type_url).unwrap_or_default();
            let new = resources
                .into_iter()
                .map(|(name, any)| {
                    let version = match old.get(&name) {
                        Some(o) if o.any == any => o.version,
                        _ => v,
                    };
                    (name, Stored { version, any })
                })
                .collect();
            st.resources.insert(type_url.to_string(), new);
            v
        };
        self.pushed.send_modify(|n| *n += 1);
        v
    }

    /// Adds or replaces one resource; returns the type's new version.
    pub fn upsert(&self, type_url: &str, name: &str, any: Any) -> u64 {
        let mut all = self.current(type_url);
        all.retain(|(n, _)| n != name);
        all.push((name.to_string(), any));
        self.set(type_url, all)
    }

    /// Removes one resource; returns the type's new version.
    pub fn remove(&self, type_url: &str, name: &str) -> u64 {
        let mut all = self.current(type_url);
        all.retain(|(n, _)| n != name);
        self.set(type_url, all)
    }

    fn current(&self, type_url: &str) -> Vec<(String, Any)> {
        let st = self.state.lock().expect("state");
        st.resources
            .get(type_url)
            .map(|m| m.iter().map(|(n, r)| (n.clone(), r.any.clone())).collect())
            .unwrap_or_default()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("state").seen.clone()
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.state.lock().expect("state").sent.clone()
    }

    /// Streams opened so far (reconnects open new ones).
    pub fn streams(&self) -> u64 {
        self.state.lock().expect("state").streams
    }

    /// The client's answer to the first response that carried `version` of `type_url`, once it
    /// arrives (None after `timeout`).
    pub async fn outcome(
        &self,
        type_url: &str,
        version: u64,
        timeout: Duration,
    ) -> Option<Outcome> {
        let deadline = Instant::now() + timeout;
        let mut recorded = self.recorded.subscribe();
        loop {
            recorded.borrow_and_update();
            {
                let st = self.state.lock().expect("state");
                let nonces: BTreeSet<&str> = st
                    .sent
                    .iter()
                    .filter(|s| s.type_url == type_url && s.version == version)
                    .map(|s| s.nonce.as_str())
                    .collect();
                if let Some(r) = st
                    .seen
                    .iter()
                    .find(|r| r.type_url == type_url && nonces.contains(r.nonce.as_str()))
                {
                    return Some(match &r.error {
                        Some(e) => Outcome::Nack(e.clone()),
                        None => Outcome::Ack,
                    });
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let _ = tokio::time::timeout(left, recorded.changed()).await;
        }
    }

    /// [`ControlPlane::outcome`] that must come: panics naming `who`, with every request seen and
    /// `context()` (the proxy's stderr) when no answer arrives within `timeout`.
    pub async fn answer(
        &self,
        who: impl std::fmt::Display,
        type_url: &str,
        version: u64,
        timeout: Duration,
        context: impl FnOnce() -> String,
    ) -> Outcome {
        match self.outcome(type_url, version, timeout).await {
            Some(o) => o,
            None => panic!(
                "[{who}] an answer to {type_url} version {version}: {:#?}\n{}",
                self.seen(),
                context()
            ),
        }
    }

    /// Waits until `f` holds for what was seen.
    pub async fn wait_seen(&self, what: &str, timeout: Duration, f: impl Fn(&[Seen]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !f(&self.seen()) {
            assert!(
                Instant::now() < deadline,
                "{what} within {timeout:?}: {:#?}",
                self.seen()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn bind_tcp(addr: SocketAddr) -> tokio::net::TcpListener {
    // A restart rebinds the port the proxy knows; the old socket may linger for a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("bind the control plane on {addr}: {e}"),
        }
    }
}

#[derive(Clone)]
struct Service {
    state: Arc<Mutex<State>>,
    pushed: Arc<watch::Sender<u64>>,
    recorded: Arc<watch::Sender<u64>>,
    killed: Arc<watch::Sender<bool>>,
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A SotW stream's memory of one type.
#[derive(Default)]
struct SotwType {
    names: Vec<String>,
    sent_version: Option<u64>,
}

/// A delta stream's memory of one type.
#[derive(Default)]
struct DeltaType {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the client has, by name: the version sent (or reported on reconnect).
    has: BTreeMap<String, String>,
}

async fn stopped(killed: &mut watch::Receiver<bool>) {
    let _ = killed.wait_for(|k| *k).await;
}

fn unavailable() -> Status {
    Status::unavailable("control plane stopped")
}

impl Service {
    fn open_stream(&self) -> u64 {
        let mut st = self.state.lock().expect("state");
        st.streams += 1;
        st.streams
    }

    fn sotw_response(
        &self,
        stream: u64,
        type_url: &str,
        t: &mut SotwType,
    ) -> Option<DiscoveryResponse> {
        let mut st = self.state.lock().expect("state");
        let version = st.type_version(type_url);
        let all = st.resources.get(type_url).cloned().unwrap_or_default();
        let wildcard = wildcard_type(type_url) && t.names.is_empty();
        let chosen: Vec<(&String, &Stored)> = all
            .iter()
            .filter(|(n, _)| wildcard || t.names.contains(n))
            .collect();
        if !wildcard && chosen.is_empty() {
            return None;
        }
        if wildcard && version == 0 {
            return None;
        }
        let nonce = st.next_nonce();
        st.sent.push(Sent {
            stream,
            type_url: type_url.to_string(),
            version,
            nonce: nonce.clone(),
            names: chosen.iter().map(|(n, _)| (*n).clone()).collect(),
            removed: Vec::new(),
        });
        t.sent_version = Some(version);
        Some(DiscoveryResponse {
            version_info: version.to_string(),
            resources: chosen.iter().map(|(_, r)| r.any.clone()).collect(),
            type_url: type_url.to_string(),
            nonce,
            ..Default::default()
        })
    }

    fn delta_response(
        &self,
        stream: u64,
        type_url: &str,
        t: &mut DeltaType,
    ) -> Option<DeltaDiscoveryResponse> {
        let mut st = self.state.lock().expect("state");
        let version = st.type_version(type_url);
        let all = st.resources.get(type_url).cloned().unwrap_or_default();
        let wanted = |n: &str| t.wildcard || t.names.contains(n);
        let mut changed = Vec::new();
        for (name, r) in &all {
            let v = format!("v{}", r.version);
            if wanted(name) && t.has.get(name) != Some(&v) {
                changed.push(Resource {
                    name: name.clone(),
                    version: v.clone(),
                    resource: Some(r.any.clone()),
                    ..Default::default()
                });
            }
        }
        let removed: Vec<String> = t
            .has
            .keys()
            .filter(|n| !all.contains_key(*n) && wanted(n))
            .cloned()
            .collect();
        if changed.is_empty() && removed.is_empty() {
            return None;
        }
        for r in &changed {
            t.has.insert(r.name.clone(), r.version.clone());
        }
        for n in &removed {
            t.has.remove(n);
        }
        let nonce = st.next_nonce();
        st.sent.push(Sent {
            stream,
            type_url: type_url.to_string(),
            version,
            nonce: nonce.clone(),
            names: changed.iter().map(|r| r.name.clone()).collect(),
            removed: removed.clone(),
        });
        Some(DeltaDiscoveryResponse {
            system_version_info: version.to_string(),
            resources: changed,
            type_url: type_url.to_string(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        })
    }

    fn record(&self, seen: Seen) {
        self.state.lock().expect("state").seen.push(seen);
        self.recorded.send_modify(|n| *n += 1);
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Service {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let svc = self.clone();
        let stream = self.open_stream();
        let mut pushes = self.pushed.subscribe();
        let mut killed = self.killed.subscribe();
        tokio::spawn(async move {
            let mut types: BTreeMap<String, SotwType> = BTreeMap::new();
            loop {
                let mut to_check: Vec<String> = Vec::new();
                tokio::select! {
                    req = inbound.next() => {
                        let Some(Ok(req)) = req else { return };
                        svc.record(Seen {
                            stream,
                            delta: false,
                            type_url: req.type_url.clone(),
                            version_info: req.version_info.clone(),
                            nonce: req.response_nonce.clone(),
                            names: req.resource_names.clone(),
                            unsubscribe: Vec::new(),
                            initial: Vec::new(),
                            error: req.error_detail.as_ref().map(|e| e.message.clone()),
                            node_id: req.node.as_ref().map(|n| n.id.clone()),
                        });
                        let t = types.entry(req.type_url.clone()).or_default();
                        let mut names = req.resource_names.clone();
                        names.sort();
                        if t.sent_version.is_none() || names != t.names {
                            t.names = names;
                            t.sent_version = None;
                            to_check.push(req.type_url.clone());
                        }
                    }
                    changed = pushes.changed() => {
                        if changed.is_err() { return }
                        to_check.extend(types.keys().cloned());
                    }
                    _ = stopped(&mut killed) => {
                        let _ = tx.send(Err(unavailable())).await;
                        return;
                    }
                }
                for type_url in to_check {
                    let Some(t) = types.get_mut(&type_url) else {
                        continue;
                    };
                    let current = svc.state.lock().expect("state").type_version(&type_url);
                    if t.sent_version == Some(current) {
                        continue;
                    }
                    if let Some(resp) = svc.sotw_response(stream, &type_url, t) {
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let svc = self.clone();
        let stream = self.open_stream();
        let mut pushes = self.pushed.subscribe();
        let mut killed = self.killed.subscribe();
        tokio::spawn(async move {
            let mut types: BTreeMap<String, DeltaType> = BTreeMap::new();
            loop {
                let mut to_check: Vec<String> = Vec::new();
                tokio::select! {
                    req = inbound.next() => {
                        let Some(Ok(req)) = req else { return };
                        svc.record(Seen {
                            stream,
                            delta: true,
                            type_url: req.type_url.clone(),
                            version_info: String::new(),
                            nonce: req.response_nonce.clone(),
                            names: req.resource_names_subscribe.clone(),
                            unsubscribe: req.resource_names_unsubscribe.clone(),
                            initial: req.initial_resource_versions.keys().cloned().collect(),
                            error: req.error_detail.as_ref().map(|e| e.message.clone()),
                            node_id: req.node.as_ref().map(|n| n.id.clone()),
                        });
                        let first = !types.contains_key(&req.type_url);
                        let t = types.entry(req.type_url.clone()).or_default();
                        if first {
                            t.wildcard = wildcard_type(&req.type_url)
                                && (req.resource_names_subscribe.is_empty()
                                    || req.resource_names_subscribe.iter().any(|n| n == "*"));
                            t.has = req.initial_resource_versions.clone().into_iter().collect();
                        }
                        for n in &req.resource_names_subscribe {
                            if n == "*" {
                                t.wildcard = true;
                            } else {
                                t.names.insert(n.clone());
                            }
                        }
                        for n in &req.resource_names_unsubscribe {
                            if n == "*" {
                                t.wildcard = false;
                            }
                            t.names.remove(n);
                            t.has.remove(n);
                        }
                        if first || !req.resource_names_subscribe.is_empty() {
                            to_check.push(req.type_url.clone());
                        }
                    }
                    changed = pushes.changed() => {
                        if changed.is_err() { return }
                        to_check.extend(types.keys().cloned());
                    }
                    _ = stopped(&mut killed) => {
                        let _ = tx.send(Err(unavailable())).await;
                        return;
                    }
                }
                for type_url in to_check {
                    let Some(t) = types.get_mut(&type_url) else {
                        continue;
                    };
                    if let Some(resp) = svc.delta_response(stream, &type_url, t) {
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// A resource from its YAML (the proto3 JSON mapping, `@type` in Anys), named for `set`.
pub fn resource<M: prost::Message + prost::Name + Default>(
    name: &str,
    yaml: &str,
) -> (String, Any) {
    let msg: M = remora_proxy::config::parse::from_yaml(yaml, Default::default())
        .unwrap_or_else(|e| panic!("resource {name}: {e}\n{yaml}"));
    (
        name.to_string(),
        Any {
            type_url: M::type_url(),
            value: msg.encode_to_vec(),
        },
    )
}
