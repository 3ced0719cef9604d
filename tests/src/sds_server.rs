//! A scriptable SDS server (SotW `StreamSecrets`) on a Unix socket, as istio-agent serves workload
//! certificates to its proxy: it answers each subscription with the named secrets it has and pushes
//! a new version to every stream when a test replaces one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// What the server has recorded.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Every request: (resource names, response nonce, error detail message).
    pub requests: Vec<(Vec<String>, String, Option<String>)>,
}

#[derive(Default)]
struct State {
    secrets: HashMap<String, Secret>,
    version: u64,
    seen: Seen,
}

/// A running SDS server; stops when dropped.
pub struct SdsServer {
    state: Arc<Mutex<State>>,
    pushed: Arc<tokio::sync::watch::Sender<u64>>,
    pub path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SdsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `tls_certificate` secret with inline PEM, as istio-agent sends it.
pub fn certificate(name: &str, chain_pem: &str, key_pem: &str) -> Secret {
    let inline = |s: &str| DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(s.as_bytes().to_vec())),
        ..Default::default()
    };
    Secret {
        name: name.into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(chain_pem)),
            private_key: Some(inline(key_pem)),
            ..Default::default()
        })),
    }
}

/// A `validation_context` secret (Istio's `ROOTCA`).
pub fn validation(name: &str, ca_pem: &str) -> Secret {
    Secret {
        name: name.into(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineBytes(
                        ca_pem.as_bytes().to_vec(),
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
    }
}

impl SdsServer {
    /// Serves on a Unix socket at `path`.
    pub async fn start(path: &Path) -> SdsServer {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).expect("bind the SDS socket");
        let state: Arc<Mutex<State>> = Arc::default();
        let pushed = Arc::new(tokio::sync::watch::Sender::new(0));
        let svc = Service {
            state: state.clone(),
            pushed: pushed.clone(),
        };
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(SecretDiscoveryServiceServer::new(svc))
                .serve_with_incoming(incoming)
                .await;
        });
        SdsServer {
            state,
            pushed,
            path: path.to_path_buf(),
            task,
        }
    }

    /// Adds or replaces a secret and pushes it to the streams that asked for it.
    pub fn set(&self, s: Secret) {
        {
            let mut st = self.state.lock().expect("state");
            st.version += 1;
            st.secrets.insert(s.name.clone(), s);
        }
        self.pushed.send_modify(|v| *v += 1);
    }

    pub fn seen(&self) -> Seen {
        self.state.lock().expect("state").seen.clone()
    }
}

#[derive(Clone)]
struct Service {
    state: Arc<Mutex<State>>,
    pushed: Arc<tokio::sync::watch::Sender<u64>>,
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl Service {
    fn response(&self, names: &[String], nonce: u64) -> Option<DiscoveryResponse> {
        let st = self.state.lock().expect("state");
        let resources: Vec<Any> = names
            .iter()
            .filter_map(|n| st.secrets.get(n))
            .map(|s| Any {
                type_url: SECRET.into(),
                value: s.encode_to_vec(),
            })
            .collect();
        if resources.is_empty() {
            return None;
        }
        Some(DiscoveryResponse {
            version_info: st.version.to_string(),
            resources,
            type_url: SECRET.into(),
            nonce: nonce.to_string(),
            ..Default::default()
        })
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for Service {
    type DeltaSecretsStream = Out<DeltaDiscoveryResponse>;
    type StreamSecretsStream = Out<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented("delta SDS is not scripted"))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let svc = self.clone();
        let mut pushes = self.pushed.subscribe();
        tokio::spawn(async move {
            let mut names: Vec<String> = Vec::new();
            let mut nonce = 0u64;
            loop {
                tokio::select! {
                    req = inbound.next() => {
                        let Some(Ok(req)) = req else { return };
                        svc.state.lock().expect("state").seen.requests.push((
                            req.resource_names.clone(),
                            req.response_nonce.clone(),
                            req.error_detail.as_ref().map(|e| e.message.clone()),
                        ));
                        let mut asked = req.resource_names.clone();
                        asked.sort();
                        if asked == names {
                            continue; // an ACK or NACK of what was sent
                        }
                        names = asked;
                    }
                    changed = pushes.changed() => if changed.is_err() { return },
                }
                nonce += 1;
                if let Some(resp) = svc.response(&names, nonce) {
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn fetch_secrets(
        &self,
        _: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("fetch is not scripted"))
    }
}
