//! Upstream backends: an HTTP echo server with failure knobs, a gRPC-shaped h2c server, and a TCP
//! echo server.
//!
//! The HTTP backend answers every request with a JSON [`Echo`] of what it received, so a test can
//! assert which backend a request reached and what the proxy changed on the way. Knobs, by path
//! segment anywhere in the path or by request header:
//! - `/status/NNN` or `x-echo-status: NNN` — answer with that status (still an echo body);
//! - `/delay/MS` or `x-echo-delay-ms: MS` — wait before answering;
//! - `/reset` — close the connection without a response;
//! - `/fail/N` — the first N requests with this exact path get 503, later ones succeed;
//!   `x-echo-fail-times: N` with `x-echo-fail-status: CODE` (default 503) or
//!   `x-echo-fail-reset: 1` does the same keyed by path and `x-echo-fail-key`;
//! - `x-echo-response-header: name=value` (repeatable) — add a response header;
//! - `Upgrade: websocket` — answer 101 and echo the upgraded bytes.

mod echo;
pub mod grpc;
mod knobs;
mod tcp;

pub use echo::{Echo, HttpBackend};
pub use grpc::GrpcBackend;
pub use tcp::TcpEcho;
