//! Stopping listeners on purpose: the admin API's `POST /drain_listeners` and the process drain on
//! SIGTERM.
//!
//! `/drain_listeners` follows Envoy: it picks every listener, or with `inboundonly` only those whose
//! `traffic_direction` is INBOUND. With `graceful` their connections drain over `--drain-time-s`
//! (HTTP responses close their connection more and more often, `drain::Mode::Announce`) and then the
//! listeners stop accepting, unless `skip_exit`; without `graceful` they stop accepting at once. A
//! stopped listener closes its sockets (new connections are refused) but leaves its open
//! connections alone, and the process keeps running: what happens next is the caller's decision
//! (istio-agent kills the proxy after its termination drain duration).
//!
//! SIGTERM drains like a sidecar wants: every listener that is not OUTBOUND stops accepting and its
//! connections close as soon as their in-flight requests finish, while OUTBOUND listeners keep
//! serving, so the application can finish its own work through them until the process exits.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;

use super::{lock, ListenerManager, Running};
use crate::admin::DrainListeners;

/// Which listeners a drain applies to, by their `traffic_direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    All,
    /// `inboundonly`: INBOUND listeners only.
    Inbound,
    /// The process drain: all but OUTBOUND listeners.
    NotOutbound,
}

impl Selection {
    fn covers(self, direction: i32) -> bool {
        match self {
            Self::All => true,
            Self::Inbound => direction == TrafficDirection::Inbound as i32,
            Self::NotOutbound => direction != TrafficDirection::Outbound as i32,
        }
    }

    /// Internal listeners have no clients outside the proxy: the process drain leaves them to the
    /// listeners that chain into them (OUTBOUND ones keep serving through them).
    fn covers_listener(self, direction: i32, internal: bool) -> bool {
        !(internal && self == Self::NotOutbound) && self.covers(direction)
    }

    /// The wider of two selections (`None` covers nothing).
    fn union(a: Option<Self>, b: Self) -> Self {
        match (a, b) {
            (None, b) => b,
            (Some(a), b) if a == b => a,
            (Some(Self::All), _) | (_, Self::All) => Self::All,
            // Inbound ⊂ NotOutbound.
            _ => Self::NotOutbound,
        }
    }
}

impl ListenerManager {
    /// `POST /drain_listeners` with Envoy's meaning (see the module notes).
    pub fn drain_listeners(&self, request: DrainListeners) {
        let selection = if request.inbound_only {
            Selection::Inbound
        } else {
            Selection::All
        };
        if !request.graceful {
            self.stop(selection);
            return;
        }
        {
            let running = lock(&self.inner.running);
            for r in running.values().filter(|r| covers(selection, r)) {
                r.connections.announce(self.inner.grace);
            }
        }
        tracing::info!(?selection, grace = ?self.inner.grace, "draining listeners");
        if !request.skip_exit {
            let mgr = self.clone();
            let grace = self.inner.grace;
            tokio::spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(grace) => mgr.stop(selection),
                    () = mgr.inner.process.signaled() => {}
                }
            });
        }
    }

    /// The process drain: listeners that are not OUTBOUND stop accepting and close their
    /// connections once idle; OUTBOUND listeners keep serving.
    pub fn shutdown(&self) {
        self.stop(Selection::NotOutbound);
        let running = lock(&self.inner.running);
        for r in running
            .values()
            .filter(|r| covers(Selection::NotOutbound, r))
        {
            r.connections.drain();
        }
    }

    /// Stops the selected listeners from accepting; their connections stay. A listener that LDS
    /// adds or moves later under a stopped selection does not start accepting either.
    fn stop(&self, selection: Selection) {
        let mut running = lock(&self.inner.running);
        {
            let mut stopped = lock(&self.inner.stopped);
            *stopped = Some(Selection::union(*stopped, selection));
        }
        for (name, r) in running.iter_mut() {
            if covers(selection, r) && !r.stopped {
                r.stopped = true;
                r.accept.drain();
                self.inner.stats.stopped.inc();
                tracing::info!(listener = %name, "listener stopped accepting");
            }
        }
        self.publish(&running);
    }

    /// Whether a listener with this direction must not accept (a stop covers it).
    pub(super) fn stopped_for(&self, direction: i32, internal: bool) -> bool {
        lock(&self.inner.stopped).is_some_and(|s| s.covers_listener(direction, internal))
    }

    /// How long a graceful drain lasts (`--drain-time-s`).
    pub fn grace(&self) -> Duration {
        self.inner.grace
    }
}

fn covers(selection: Selection, r: &Running) -> bool {
    selection.covers_listener(
        r.proto.traffic_direction,
        r.proto.listener_specifier.is_some(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN: i32 = TrafficDirection::Inbound as i32;
    const OUT: i32 = TrafficDirection::Outbound as i32;
    const UNSPECIFIED: i32 = TrafficDirection::Unspecified as i32;

    #[test]
    fn selections_follow_the_traffic_direction() {
        assert!(Selection::Inbound.covers(IN));
        assert!(!Selection::Inbound.covers(OUT));
        assert!(
            !Selection::Inbound.covers(UNSPECIFIED),
            "inboundonly means INBOUND, as in Envoy"
        );
        assert!(Selection::NotOutbound.covers(UNSPECIFIED));
        assert!(!Selection::NotOutbound.covers(OUT));
        assert!(Selection::All.covers(OUT));
        assert!(!Selection::NotOutbound.covers_listener(UNSPECIFIED, true));
        assert!(Selection::NotOutbound.covers_listener(UNSPECIFIED, false));
        assert!(Selection::All.covers_listener(UNSPECIFIED, true));
    }

    #[test]
    fn stops_add_up() {
        use Selection::*;
        assert_eq!(Selection::union(None, Inbound), Inbound);
        assert_eq!(Selection::union(Some(Inbound), NotOutbound), NotOutbound);
        assert_eq!(Selection::union(Some(NotOutbound), Inbound), NotOutbound);
        assert_eq!(Selection::union(Some(Inbound), All), All);
        assert_eq!(Selection::union(Some(All), Inbound), All);
    }
}
