//! The stream driver: connect, send the subscriptions, answer every response, follow subscription
//! changes, and reconnect with backoff when the stream fails or the server closes it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::{mpsc, watch};
use tonic::codegen::tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{debug, info, warn};

use super::protocol::{Protocol, Service};
use crate::backoff::Backoff;
use crate::error::XdsError;
use crate::resource::Handler;
use crate::stats::{ConnectedGuard, XdsStats};
use crate::subscriptions::{Interest, Subscriptions};
use crate::transport::XdsEndpoint;

/// What every stream of a client shares.
pub(crate) struct Shared {
    pub(crate) endpoint: XdsEndpoint,
    pub(crate) node: Node,
    pub(crate) node_on_every_request: bool,
    pub(crate) handlers: BTreeMap<String, Arc<dyn Handler>>,
    pub(crate) subscriptions: Subscriptions,
    pub(crate) stats: Arc<XdsStats>,
    pub(crate) backoff: Backoff,
}

/// Sends requests on one stream, putting the node where Envoy does.
struct Outbox<P: Protocol> {
    tx: mpsc::UnboundedSender<P::Request>,
    node: Node,
    every: bool,
    sent: bool,
}

impl<P: Protocol> Outbox<P> {
    fn send(&mut self, mut request: P::Request) {
        if !self.sent || self.every {
            P::set_node(&mut request, &self.node);
        }
        self.sent = true;
        // The receiver lives as long as the stream; a failed send means the stream is ending anyway.
        let _ = self.tx.send(request);
    }
}

/// State of the subscriptions carried by one stream, kept across reconnects.
struct Streamed<P> {
    service: Service,
    /// In the order their first requests go out: CDS before EDS before LDS before RDS, as Envoy's
    /// ADS does, so a server can hold back dependent resources.
    types: Vec<String>,
    subs: BTreeMap<String, P>,
}

impl<P: Protocol> Streamed<P> {
    /// Brings every subscription in line with `interests`, returning the requests that says.
    fn sync(&mut self, interests: &BTreeMap<String, Interest>) -> Vec<P::Request> {
        let mut out = Vec::new();
        for t in &self.types {
            let interest = interests.get(t).cloned().unwrap_or_default();
            let sub = self
                .subs
                .entry(t.clone())
                .or_insert_with(|| P::create(t, interest.clone()));
            out.extend(sub.set_interest(interest.clone()));
            if !sub.is_open() && interest.is_active() {
                out.push(sub.initial_request());
            }
        }
        out
    }
}

/// Drives the streams of one service forever; only dropping the future stops it.
pub(crate) async fn drive<P: Protocol>(shared: &Shared, service: Service, types: Vec<String>) {
    let mut streamed = Streamed::<P> {
        service,
        types,
        subs: BTreeMap::new(),
    };
    let mut backoff = shared.backoff.clone();
    let mut interests = shared.subscriptions.watch();
    loop {
        shared.stats.stream_attempts.fetch_add(1, Ordering::Relaxed);
        let end = run_stream(shared, &mut streamed, &mut interests, &mut backoff).await;
        shared.stats.stream_failures.fetch_add(1, Ordering::Relaxed);
        for t in &streamed.types {
            if let Some(stats) = shared.stats.type_stats(t) {
                stats.update_failure.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.stats.notify();
        for sub in streamed.subs.values_mut() {
            sub.reset_stream();
        }
        let delay = backoff.next_delay();
        warn!(service = ?streamed.service, error = %end, ?delay, "xDS stream ended; reconnecting");
        tokio::time::sleep(delay).await;
    }
}

/// One stream, from connecting to its end; always returns the reason it ended.
async fn run_stream<P: Protocol>(
    shared: &Shared,
    streamed: &mut Streamed<P>,
    interests: &mut watch::Receiver<BTreeMap<String, Interest>>,
    backoff: &mut Backoff,
) -> XdsError {
    let channel = match shared.endpoint.connect().await {
        Ok(channel) => channel,
        Err(e) => return e,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let mut outbox = Outbox::<P> {
        tx,
        node: shared.node.clone(),
        every: shared.node_on_every_request && !P::NODE_ON_FIRST_ONLY,
        sent: false,
    };
    let snapshot = interests.borrow_and_update().clone();
    for request in streamed.sync(&snapshot) {
        outbox.send(request);
    }
    let requests = shared.endpoint.request(UnboundedReceiverStream::new(rx));
    let mut inbound = match P::open(channel, &streamed.service, requests).await {
        Ok(inbound) => inbound,
        Err(status) => return XdsError::Rpc(status),
    };
    let _connected = ConnectedGuard::new(shared.stats.clone());
    info!(service = ?streamed.service, "xDS stream established");
    loop {
        tokio::select! {
            biased;
            changed = interests.changed() => {
                if changed.is_err() {
                    // The client owns the sender, so this only happens while it is being dropped.
                    return XdsError::Closed;
                }
                let snapshot = interests.borrow_and_update().clone();
                for request in streamed.sync(&snapshot) {
                    outbox.send(request);
                }
            }
            message = inbound.message() => match message {
                Ok(Some(response)) => {
                    // A stream that delivers is healthy: the next failure starts the backoff anew.
                    backoff.reset();
                    if let Some(request) = answer(shared, streamed, &response) {
                        outbox.send(request);
                    }
                }
                Ok(None) => return XdsError::Closed,
                Err(status) => return XdsError::Rpc(status),
            }
        }
    }
}

/// Applies a response through its handler and returns the ACK or NACK; responses for a type nobody
/// handles are ignored, as Envoy ignores unwatched types.
fn answer<P: Protocol>(
    shared: &Shared,
    streamed: &mut Streamed<P>,
    response: &P::Response,
) -> Option<P::Request> {
    let type_url = P::response_type(response);
    let (Some(handler), Some(sub)) = (
        shared.handlers.get(type_url),
        streamed.subs.get_mut(type_url),
    ) else {
        warn!(type_url, "ignoring a response for an unsubscribed type");
        return None;
    };
    let stats = shared.stats.type_stats(type_url);
    if let Some(stats) = stats {
        stats.update_attempt.fetch_add(1, Ordering::Relaxed);
    }
    let answer = sub.handle(response, handler.as_ref());
    match &answer.rejected {
        None => {
            debug!(type_url, version = %answer.version, "xDS update accepted");
            if let Some(stats) = stats {
                stats.accepted(&answer.version);
            }
        }
        Some(message) => {
            warn!(type_url, version = %answer.version, %message, "xDS update rejected");
            if let Some(stats) = stats {
                stats.update_rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Some(answer.request)
}
