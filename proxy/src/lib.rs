//! remora: an Envoy-compatible data-plane proxy for service meshes.
//!
//! A request passes the stages in module order: `listener` (accept) → `detect` → `tls` → `http::route`
//! → `upstream` (balance, connect). `config` turns Envoy v3 protos into the validated model those stages
//! read; `admin` and `stats` expose it.

pub mod cli;
pub mod config;
pub mod stats;
