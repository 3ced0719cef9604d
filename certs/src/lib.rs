#![forbid(unsafe_code)]
//! Workload identity and PKI for remora: SPIFFE IDs and trust domains (this crate knows nothing of xDS
//! or routing; the proxy builds its TLS contexts from what is here).

mod spiffe;

pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
