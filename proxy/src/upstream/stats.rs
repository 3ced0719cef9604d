//! Connect stage bookkeeping: a cluster's Envoy stats (`cluster.<name>.*`) and its hosts' counters.
//!
//! Every stat Envoy creates for a cluster is registered at configuration time so that `/stats` lists
//! the same names at zero; the handles the data path touches are kept as fields.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::stats::{Counter, Gauge, Kind, Scope};

/// Counters Envoy registers for every cluster that remora does not drive (yet); they stay at zero.
const IDLE_COUNTERS: &[&str] = &[
    "assignment_stale",
    "assignment_timeout_received",
    "assignment_use_cached",
    "bind_errors",
    "lb_healthy_panic",
    "lb_local_cluster_not_ok",
    "lb_recalculate_zone_structures",
    "lb_subsets_created",
    "lb_subsets_fallback",
    "lb_subsets_fallback_panic",
    "lb_subsets_removed",
    "lb_subsets_selected",
    "lb_zone_cluster_too_small",
    "lb_zone_no_capacity_left",
    "lb_zone_routing_all_directly",
    "lb_zone_routing_cross_zone",
    "lb_zone_routing_sampled",
    "original_dst_host_invalid",
    "retry_or_shadow_abandoned",
    "update_empty",
    "update_no_rebuild",
    "upstream_cx_close_notify",
    "upstream_cx_connect_attempts_exceeded",
    "upstream_cx_connect_with_0_rtt",
    "upstream_cx_destroy_local_with_active_rq",
    "upstream_cx_destroy_remote_with_active_rq",
    "upstream_cx_destroy_with_active_rq",
    "upstream_cx_http3_total",
    "upstream_cx_max_duration_reached",
    "upstream_cx_pool_overflow",
    "upstream_cx_preconnect_skipped",
    "upstream_flow_control_backed_up_total",
    "upstream_flow_control_drained_total",
    "upstream_flow_control_paused_reading_total",
    "upstream_flow_control_resumed_reading_total",
    "upstream_http3_broken",
    "upstream_internal_redirect_failed_total",
    "upstream_internal_redirect_succeeded_total",
    "upstream_queue_overloaded",
    "upstream_rq_0rtt",
    "upstream_rq_active_overflow",
    "upstream_rq_maintenance_mode",
    "upstream_rq_pending_failure_eject",
    "upstream_rq_rx_reset_no_error",
];

const IDLE_GAUGES: &[&str] = &[
    "lb_subsets_active",
    "max_host_weight",
    "upstream_cx_rx_bytes_buffered",
    "upstream_cx_tx_bytes_buffered",
    "version",
    "warming_state",
];

/// The stats [`ClusterStats`] drives, in its fields' order (one family per cluster).
const MEMBERS: &[(&str, Kind)] = &[
    ("upstream_cx_total", Kind::Counter),
    ("upstream_cx_active", Kind::Gauge),
    ("upstream_cx_http1_total", Kind::Counter),
    ("upstream_cx_http2_total", Kind::Counter),
    ("upstream_cx_connect_fail", Kind::Counter),
    ("upstream_cx_connect_timeout", Kind::Counter),
    ("upstream_cx_overflow", Kind::Counter),
    ("upstream_cx_none_healthy", Kind::Counter),
    ("upstream_cx_destroy", Kind::Counter),
    ("upstream_cx_destroy_local", Kind::Counter),
    ("upstream_cx_destroy_remote", Kind::Counter),
    ("upstream_cx_idle_timeout", Kind::Counter),
    ("upstream_cx_max_requests", Kind::Counter),
    ("upstream_cx_protocol_error", Kind::Counter),
    ("upstream_cx_rx_bytes_total", Kind::Counter),
    ("upstream_cx_tx_bytes_total", Kind::Counter),
    ("upstream_rq_total", Kind::Counter),
    ("upstream_rq_active", Kind::Gauge),
    ("upstream_rq_completed", Kind::Counter),
    ("upstream_rq_cancelled", Kind::Counter),
    ("upstream_rq_pending_total", Kind::Counter),
    ("upstream_rq_pending_active", Kind::Gauge),
    ("upstream_rq_pending_overflow", Kind::Counter),
    ("upstream_rq_active_overflow", Kind::Counter),
    ("upstream_rq_retry_overflow", Kind::Counter),
    ("upstream_rq_rx_reset", Kind::Counter),
    ("upstream_rq_tx_reset", Kind::Counter),
    ("upstream_rq_retry", Kind::Counter),
    ("upstream_rq_retry_success", Kind::Counter),
    ("upstream_rq_retry_limit_exceeded", Kind::Counter),
    ("upstream_rq_retry_backoff_exponential", Kind::Counter),
    ("upstream_rq_retry_backoff_ratelimited", Kind::Counter),
    ("upstream_rq_timeout", Kind::Counter),
    ("upstream_rq_per_try_timeout", Kind::Counter),
    ("upstream_rq_per_try_idle_timeout", Kind::Counter),
    ("upstream_rq_max_duration_reached", Kind::Counter),
    ("membership_total", Kind::Gauge),
    ("membership_healthy", Kind::Gauge),
    ("membership_degraded", Kind::Gauge),
    ("membership_excluded", Kind::Gauge),
    ("membership_change", Kind::Counter),
    ("update_attempt", Kind::Counter),
    ("update_success", Kind::Counter),
    ("update_failure", Kind::Counter),
];

/// The stats of one cluster, under `cluster.<alt_stat_name or name>.`.
#[derive(Debug, Clone)]
pub struct ClusterStats {
    pub scope: Scope,
    pub upstream_cx_total: Counter,
    pub upstream_cx_active: Gauge,
    pub upstream_cx_http1_total: Counter,
    pub upstream_cx_http2_total: Counter,
    pub upstream_cx_connect_fail: Counter,
    pub upstream_cx_connect_timeout: Counter,
    pub upstream_cx_overflow: Counter,
    pub upstream_cx_none_healthy: Counter,
    pub upstream_cx_destroy: Counter,
    pub upstream_cx_destroy_local: Counter,
    pub upstream_cx_destroy_remote: Counter,
    pub upstream_cx_idle_timeout: Counter,
    pub upstream_cx_max_requests: Counter,
    pub upstream_cx_protocol_error: Counter,
    pub upstream_cx_rx_bytes_total: Counter,
    pub upstream_cx_tx_bytes_total: Counter,
    pub upstream_rq_total: Counter,
    pub upstream_rq_active: Gauge,
    pub upstream_rq_completed: Counter,
    pub upstream_rq_cancelled: Counter,
    pub upstream_rq_pending_total: Counter,
    pub upstream_rq_pending_active: Gauge,
    pub upstream_rq_pending_overflow: Counter,
    pub upstream_rq_active_overflow: Counter,
    pub upstream_rq_retry_overflow: Counter,
    pub upstream_rq_rx_reset: Counter,
    pub upstream_rq_tx_reset: Counter,
    /// Counted by the router (the proxy stage), registered here so that they exist from the start.
    pub upstream_rq_retry: Counter,
    pub upstream_rq_retry_success: Counter,
    pub upstream_rq_retry_limit_exceeded: Counter,
    pub upstream_rq_retry_backoff_exponential: Counter,
    pub upstream_rq_retry_backoff_ratelimited: Counter,
    pub upstream_rq_timeout: Counter,
    pub upstream_rq_per_try_timeout: Counter,
    pub upstream_rq_per_try_idle_timeout: Counter,
    pub upstream_rq_max_duration_reached: Counter,
    pub membership_total: Gauge,
    pub membership_healthy: Gauge,
    pub membership_degraded: Gauge,
    pub membership_excluded: Gauge,
    pub membership_change: Counter,
    pub update_attempt: Counter,
    pub update_success: Counter,
    pub update_failure: Counter,
}

impl ClusterStats {
    pub fn new(scope: Scope) -> Self {
        scope.idle(IDLE_COUNTERS, IDLE_GAUGES);
        let mut f = scope.family(MEMBERS);
        Self {
            upstream_cx_total: f.counter("upstream_cx_total"),
            upstream_cx_active: f.gauge("upstream_cx_active"),
            upstream_cx_http1_total: f.counter("upstream_cx_http1_total"),
            upstream_cx_http2_total: f.counter("upstream_cx_http2_total"),
            upstream_cx_connect_fail: f.counter("upstream_cx_connect_fail"),
            upstream_cx_connect_timeout: f.counter("upstream_cx_connect_timeout"),
            upstream_cx_overflow: f.counter("upstream_cx_overflow"),
            upstream_cx_none_healthy: f.counter("upstream_cx_none_healthy"),
            upstream_cx_destroy: f.counter("upstream_cx_destroy"),
            upstream_cx_destroy_local: f.counter("upstream_cx_destroy_local"),
            upstream_cx_destroy_remote: f.counter("upstream_cx_destroy_remote"),
            upstream_cx_idle_timeout: f.counter("upstream_cx_idle_timeout"),
            upstream_cx_max_requests: f.counter("upstream_cx_max_requests"),
            upstream_cx_protocol_error: f.counter("upstream_cx_protocol_error"),
            upstream_cx_rx_bytes_total: f.counter("upstream_cx_rx_bytes_total"),
            upstream_cx_tx_bytes_total: f.counter("upstream_cx_tx_bytes_total"),
            upstream_rq_total: f.counter("upstream_rq_total"),
            upstream_rq_active: f.gauge("upstream_rq_active"),
            upstream_rq_completed: f.counter("upstream_rq_completed"),
            upstream_rq_cancelled: f.counter("upstream_rq_cancelled"),
            upstream_rq_pending_total: f.counter("upstream_rq_pending_total"),
            upstream_rq_pending_active: f.gauge("upstream_rq_pending_active"),
            upstream_rq_pending_overflow: f.counter("upstream_rq_pending_overflow"),
            upstream_rq_active_overflow: f.counter("upstream_rq_active_overflow"),
            upstream_rq_retry_overflow: f.counter("upstream_rq_retry_overflow"),
            upstream_rq_rx_reset: f.counter("upstream_rq_rx_reset"),
            upstream_rq_tx_reset: f.counter("upstream_rq_tx_reset"),
            upstream_rq_retry: f.counter("upstream_rq_retry"),
            upstream_rq_retry_success: f.counter("upstream_rq_retry_success"),
            upstream_rq_retry_limit_exceeded: f.counter("upstream_rq_retry_limit_exceeded"),
            upstream_rq_retry_backoff_exponential: f
                .counter("upstream_rq_retry_backoff_exponential"),
            upstream_rq_retry_backoff_ratelimited: f
                .counter("upstream_rq_retry_backoff_ratelimited"),
            upstream_rq_timeout: f.counter("upstream_rq_timeout"),
            upstream_rq_per_try_timeout: f.counter("upstream_rq_per_try_timeout"),
            upstream_rq_per_try_idle_timeout: f.counter("upstream_rq_per_try_idle_timeout"),
            upstream_rq_max_duration_reached: f.counter("upstream_rq_max_duration_reached"),
            membership_total: f.gauge("membership_total"),
            membership_healthy: f.gauge("membership_healthy"),
            membership_degraded: f.gauge("membership_degraded"),
            membership_excluded: f.gauge("membership_excluded"),
            membership_change: f.counter("membership_change"),
            update_attempt: f.counter("update_attempt"),
            update_success: f.counter("update_success"),
            update_failure: f.counter("update_failure"),
            scope,
        }
    }
}

/// Per-host counters as `/clusters` shows them (Envoy keeps these out of `/stats`).
#[derive(Debug, Default)]
pub struct HostStats {
    pub cx_active: AtomicI64,
    pub cx_connect_fail: AtomicU64,
    pub cx_total: AtomicU64,
    pub rq_active: AtomicI64,
    pub rq_error: AtomicU64,
    pub rq_pending_active: AtomicI64,
    pub rq_success: AtomicU64,
    pub rq_timeout: AtomicU64,
    pub rq_total: AtomicU64,
}

impl HostStats {
    /// `(name, value, is_gauge)` in Envoy's alphabetical `/clusters` order.
    pub fn rows(&self) -> [(&'static str, i64, bool); 9] {
        let c = |a: &AtomicU64| i64::try_from(a.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        let g = |a: &AtomicI64| a.load(Ordering::Relaxed).max(0);
        [
            ("cx_active", g(&self.cx_active), true),
            ("cx_connect_fail", c(&self.cx_connect_fail), false),
            ("cx_total", c(&self.cx_total), false),
            ("rq_active", g(&self.rq_active), true),
            ("rq_error", c(&self.rq_error), false),
            ("rq_pending_active", g(&self.rq_pending_active), true),
            ("rq_success", c(&self.rq_success), false),
            ("rq_timeout", c(&self.rq_timeout), false),
            ("rq_total", c(&self.rq_total), false),
        ]
    }
}

pub(crate) fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn up(a: &AtomicI64) {
    a.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn down(a: &AtomicI64) {
    a.fetch_sub(1, Ordering::Relaxed);
}
