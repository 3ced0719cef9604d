//! Istio's telemetry, natively: workload metadata (from the bootstrap node and exchanged with peers),
//! the standard metrics' labels as Istio's stats filter computes them, and the metrics themselves in
//! Envoy's Prometheus exposition. `http` and `tcp` are the filters' data-path ends; `exchange` is
//! the TCP metadata exchange's wire format.

pub mod exchange;
pub mod http;
pub mod labels;
pub mod metadata;
pub mod metrics;
pub mod node;
pub mod tcp;

pub use self::http::HttpTelemetry;
pub use labels::{Facts, Protocol, Reporter};
pub use metadata::WorkloadMetadata;
pub use metrics::IstioMetrics;
pub use node::LocalNode;
pub use tcp::{TcpFacts, TcpTelemetry};
