//! The body types shared by the HTTP stages.

use bytes::Bytes;
use http_body_util::combinators::BoxBody as HttpBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body of any origin: a downstream stream, a buffered (replayable) copy for
/// retries, or a body the proxy generates itself.
pub type BoxBody = HttpBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> BoxBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A body of the given bytes.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}
