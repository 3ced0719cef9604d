//! Accept, errors: failures to open a listener's sockets, naming the listener and the address.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// A listener socket could not be set up (`listener "l0" 127.0.0.1:80: Address already in use`).
#[derive(Debug)]
pub struct BindError {
    pub listener: String,
    pub address: SocketAddr,
    /// The socket call that failed (`bind`, `listen`, `IP_TRANSPARENT`, ...).
    pub step: &'static str,
    pub source: io::Error,
}

impl BindError {
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listener \"{}\" {}: ", self.listener, self.address)?;
        // A failed bind is the common case and needs no label; every other step names itself.
        if self.step != "bind" {
            write!(f, "{}: ", self.step)?;
        }
        write!(f, "{}", self.source)
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<BindError> for io::Error {
    fn from(e: BindError) -> Self {
        io::Error::new(e.source.kind(), e)
    }
}
