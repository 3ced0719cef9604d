#![forbid(unsafe_code)]
//! The xDS protocol, independent of what the resources mean.
//!
//! This crate owns the state-of-the-world bookkeeping of a subscription (which version was accepted,
//! which nonce answers which response, what to send back as ACK or NACK) and the reconnect backoff.
//! Resource handlers decide whether a response is acceptable; the crate turns their verdict into the
//! next `DiscoveryRequest` exactly as the xDS protocol specifies.

mod backoff;
mod sotw;

pub use backoff::Backoff;
pub use sotw::{Subscription, TypeUrl, Verdict};
