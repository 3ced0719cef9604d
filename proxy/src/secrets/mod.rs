//! Secrets: the TLS certificates and validation contexts that listeners and clusters use, by name,
//! from `static_resources.secrets` and from SDS.
//!
//! [`SecretStore`] holds every named secret as a [`SecretEntry`]; TLS contexts keep the entries they
//! reference and subscribe to their changes. SDS from a file (`sds_config.path_config_source`) is
//! watched by [`file_watch`]. A gRPC SDS client needs only to call [`SecretStore::update`] with each
//! `Secret` it receives: loading, keeping the old value on a bad update, stats and telling the TLS
//! contexts are the store's job.

pub mod file_watch;
pub mod source;
pub mod store;

#[cfg(test)]
mod tests;

pub use source::{LoadedCert, LoadedValidation, SecretValue};
pub use store::{SdsStats, SecretEntry, SecretKey, SecretSource, SecretStore};
