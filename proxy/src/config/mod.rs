//! Configuration: Envoy v3 protos in, a validated immutable model out.

pub mod error;
pub mod parse;

pub use error::{ConfigError, ConfigErrors, Path};
