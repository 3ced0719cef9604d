//! Mutual TLS end to end over in-memory rustls connections: verifiers, rotation, dev CA files.

mod mtls {
    pub mod support;
}

#[path = "mtls/verify.rs"]
mod verify;

#[path = "mtls/rotation.rs"]
mod rotation;

#[path = "mtls/files.rs"]
mod files;
