//! Istio's telemetry, natively: workload metadata (from the bootstrap node and exchanged with peers),
//! the standard metrics' labels as Istio's stats filter computes them, and the metrics themselves in
//! Envoy's Prometheus exposition.

pub mod labels;
pub mod metadata;
pub mod metrics;

pub use labels::{Facts, Protocol, Reporter};
pub use metadata::WorkloadMetadata;
pub use metrics::IstioMetrics;
