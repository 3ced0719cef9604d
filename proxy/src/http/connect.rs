//! CONNECT termination: a route with `connect_config` answers a CONNECT (or, with `allow_post`, a
//! POST) itself with 200 and carries the request's stream over a TCP connection to the cluster.
//! HTTP/1.1 CONNECT takes over the connection; h2 CONNECT takes over its stream; a POST tunnel
//! carries the bytes in the request and response bodies.

use std::net::SocketAddr;

use super::body::{self, BoxBody};
use super::proxy::{Downstream, HttpRuntime, Outcome};
use super::{local_reply, tunnel, upgrade};
use crate::filter_state::FilterState;
use crate::upstream::{Cluster, ConnectContext};
use http::{Response, StatusCode};

/// How the downstream side of a terminated tunnel carries its bytes.
pub enum Tunnel {
    /// CONNECT: the upgraded connection or h2 stream, once the 200 is sent.
    Upgrade(upgrade::Pending),
    /// POST (`allow_post`): the request body upstream, the response body downstream.
    Body(BoxBody),
}

/// Opens the TCP connection to the cluster and answers 200, or the local reply for a failed
/// connection (as the router's for a request that never reached its upstream).
pub async fn terminate(
    rt: &HttpRuntime,
    down: &Downstream,
    cluster: &Cluster,
    original_dst: SocketAddr,
    filter_state: FilterState,
    tunnel: Tunnel,
    outcome: &mut Outcome,
) -> Response<BoxBody> {
    let ctx = ConnectContext {
        original_dst: Some(original_dst),
        filter_state,
        ..ConnectContext::default()
    };
    let mut conn = match cluster.connect_tcp(&ctx).await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(cluster = cluster.name(), error = %e, "CONNECT upstream connect failed");
            outcome.flags = e.response_flag();
            outcome.upstream_host = e.endpoint();
            outcome.upstream_transport_failure_reason = e.transport_failure_reason();
            outcome.details = "upstream_reset_before_response_started";
            return local_reply::text_response(e.status(), e.local_reply_body());
        }
    };
    outcome.upstream_host = Some(conn.upstream);
    outcome.upstream_local = conn.facts.local;
    outcome.upstream_internal = conn.internal.take();
    outcome.upstream_tls = conn.facts.tls.clone();
    outcome.from_upstream = true;
    outcome.details = "via_upstream";
    let stream = conn.stream;
    let guard = conn.guard;
    let resp_body = match tunnel {
        Tunnel::Upgrade(pending) => {
            upgrade::pipe(pending, down, stream, guard, rt.stats.clone());
            body::empty()
        }
        Tunnel::Body(req_body) => {
            let (reader, writer) = tokio::io::split(stream);
            tokio::spawn(tunnel::body_to_writer(req_body, writer));
            tunnel::reader_body(reader, guard)
        }
    };
    let mut resp = Response::new(resp_body);
    *resp.status_mut() = StatusCode::OK;
    resp
}
