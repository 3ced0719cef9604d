//! Balance and connect: clusters, endpoints, load balancing, connection pools and circuit breakers.
//!
//! A request reaches this stage with its cluster chosen by the route. `Cluster::send` then runs, in
//! order: the `max_requests` breaker → host selection (priority level, locality, `lb_policy`) → the
//! endpoint's pool (an idle connection, or a new one within `max_connections`, waiting as a pending
//! request within `max_pending_requests`) → the exchange. Its response body keeps the request
//! counted as active until it has been read.

mod admin;
pub mod balance;
pub mod body;
pub mod circuit;
pub mod cluster;
pub mod config;
pub mod dns;
pub mod endpoint;
pub mod error;
pub mod manager;
pub mod original_dst;
pub mod pool;
pub mod stats;

#[cfg(test)]
mod tests;

pub use body::ResponseBody;
pub use circuit::RetryGuard;
pub use cluster::{Cluster, ConnectContext, SendContext, Sent, TcpConnection};
pub use config::ClusterSpec;
pub use endpoint::{Host, HostSet};
pub use error::UpstreamError;
pub use manager::{ClusterEntry, ClusterManager, Origin};
pub use pool::connect::ConnectionGuard;
pub use stats::ClusterStats;
