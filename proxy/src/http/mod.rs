//! HTTP: the connection manager's server side, the route table, and the proxying of one request.

pub mod body;
pub mod route;
