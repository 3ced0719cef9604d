//! End-to-end harness: real proxy binaries (remora, Envoy), in-process backends and real clients.
//!
//! Suites live in `tests/tests/`; this crate gives them the building blocks: locate a binary, pick
//! free ports, render a config fixture, start a proxy and wait for it, run echo backends, send
//! requests (hyper, curl) and read admin stats.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod authz;
pub mod backend;
pub mod bins;
pub mod client;
pub mod control_plane;
pub mod curl;
pub mod diff;
pub mod exec;
pub mod netns;
pub mod peers;
pub mod pki;
pub mod ports;
pub mod proxy;
pub mod sds_server;
pub mod select;
pub mod stack;
pub mod tempdir;
pub mod template;
pub mod xds;

pub use backend::{HttpBackend, TcpEcho};
pub use client::{Client, Protocol, Request, Response};
pub use proxy::{Kind, Proxy};

/// The path of a fixture under `tests/configs/`.
pub fn fixture_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(rel)
}

/// The text of a fixture under `tests/configs/`.
pub fn fixture(rel: &str) -> String {
    let path = fixture_path(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
