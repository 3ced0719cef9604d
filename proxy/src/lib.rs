#![forbid(unsafe_code)]
//! remora: an Envoy-compatible data-plane proxy for service meshes.
//!
//! A connection passes the stages in module order: `listener` (accept, pick the filter chain) → `http`
//! (serve, `http::route`) or `tcp` → `upstream` (balance, connect). `config` turns Envoy v3 protos into
//! the validated model those stages read; `admin`, `stats` and `access_log` report on them.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod certs_cli;
pub mod cli;
pub mod config;
pub mod detect;
pub mod drain;
pub mod echo;
pub mod filter_state;
pub mod http;
pub mod istio;
pub mod listener;
pub mod logging;
pub mod network;
pub mod probe;
pub mod secrets;
pub mod stats;
pub mod tcp;
pub mod tls;
pub mod upstream;
pub mod xds;
