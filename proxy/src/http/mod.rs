//! HTTP: the connection manager's server side, the route table, and the proxying of one request.

pub mod body;
pub mod codec;
pub mod completion;
pub mod connect;
pub mod filter;
pub mod forward;
pub mod headers;
pub mod keepalive;
pub mod local_reply;
pub mod normalize;
pub mod proxy;
pub mod route;
pub mod server;
pub mod stats;
pub mod tunnel;
pub mod upgrade;
