//! Drain: tell every accept loop and connection that the process (or a listener) is going away, then
//! wait for the in-flight connections to finish.
//!
//! `Signal::drain()` flips a watch channel that every `Watch` observes. Each in-flight connection holds
//! a `Guard` from `Watch::guard()`; `Signal::wait_idle` returns once all guards are gone or the drain
//! timeout passes (Envoy's `--drain-time-s`), whichever comes first. A gentle drain spreads the
//! closes of an HTTP connection's responses over the grace time ([`Ramp`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

#[derive(Debug, Default)]
struct Inflight {
    count: AtomicUsize,
    idle: Notify,
}

/// How a drain closes connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Running,
    /// A listener update or removal: HTTP connections close on a response with a chance that
    /// grows over the grace time ([`Ramp`]) and once idle past it; tcp_proxy connections close
    /// when it ends.
    Gentle(Duration),
    /// An operator's drain (`POST /drain_listeners?graceful`): HTTP connections close as in
    /// [`Mode::Gentle`]; tcp_proxy connections stay open, as Envoy leaves them.
    Announce(Duration),
    /// The process is going away: every connection shuts down gracefully now.
    Now,
}

/// The side that starts a drain.
#[derive(Debug)]
pub struct Signal {
    tx: Arc<watch::Sender<Mode>>,
    inflight: Arc<Inflight>,
}

/// The side that observes a drain. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Watch {
    rx: watch::Receiver<Mode>,
    inflight: Arc<Inflight>,
}

/// Held by one in-flight connection; dropping it tells `Signal::wait_idle` the connection is done.
#[derive(Debug)]
#[must_use = "the connection counts as in flight only while the guard is held"]
pub struct Guard {
    inflight: Arc<Inflight>,
}

/// A new drain signal and its first watch.
pub fn channel() -> (Signal, Watch) {
    let (tx, rx) = watch::channel(Mode::Running);
    let inflight = Arc::new(Inflight::default());
    (
        Signal {
            tx: Arc::new(tx),
            inflight: inflight.clone(),
        },
        Watch { rx, inflight },
    )
}

impl Signal {
    /// Starts the drain. Idempotent.
    pub fn drain(&self) {
        self.tx.send_replace(Mode::Now);
    }

    /// Starts a gentle drain (a listener changed or went away): see [`Mode::Gentle`]. A later
    /// [`Signal::drain`] still closes everything at once.
    pub fn drain_gently(&self, grace: Duration) {
        self.begin(Mode::Gentle(grace));
    }

    /// Starts an operator's drain: see [`Mode::Announce`]. A later [`Signal::drain`] still closes
    /// everything at once.
    pub fn announce(&self, grace: Duration) {
        self.begin(Mode::Announce(grace));
    }

    /// Moves a running signal to `mode`; a drain already under way keeps its mode.
    fn begin(&self, mode: Mode) {
        self.tx.send_if_modified(|m| {
            if *m == Mode::Running {
                *m = mode;
                true
            } else {
                false
            }
        });
    }

    /// How many guards are currently held.
    pub fn inflight(&self) -> usize {
        self.inflight.count.load(Ordering::Acquire)
    }

    /// Waits until no guard is held, or `timeout` passes. Returns `true` when idle was reached.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before checking, so a guard dropped between the check and the await
            // still wakes us.
            let notified = self.inflight.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inflight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.inflight() == 0;
            }
        }
    }

    /// Another watch on this signal (the first comes from `channel()`).
    pub fn watch(&self) -> Watch {
        Watch {
            rx: self.tx.subscribe(),
            inflight: self.inflight.clone(),
        }
    }
}

impl Watch {
    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        *self.rx.borrow() != Mode::Running
    }

    /// How the drain, if any, closes connections.
    pub fn mode(&self) -> Mode {
        *self.rx.borrow()
    }

    /// Completes when the drain starts. A `Signal` dropped without draining never completes it: draining
    /// is always an explicit decision, as in Envoy.
    pub async fn signaled(&self) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|m| *m != Mode::Running).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Completes when the drain is immediate ([`Signal::drain`], here or on the parent).
    pub async fn immediate(&self) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|m| *m == Mode::Now).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// A signal of its own (one listener's connections) that also drains, immediately, when this
    /// watch does. Its connections count as in flight for this watch's signal too, so the process
    /// drain waits for them. Needs a tokio runtime.
    pub fn child(&self) -> Signal {
        let (tx, _) = watch::channel(Mode::Running);
        let tx = Arc::new(tx);
        let parent = self.clone();
        let weak = Arc::downgrade(&tx);
        // Holds only a weak reference: a child dropped before the process drains leaves a task that
        // wakes once, at the process drain, and finds nothing to do.
        tokio::spawn(async move {
            parent.immediate().await;
            if let Some(tx) = weak.upgrade() {
                tx.send_replace(Mode::Now);
            }
        });
        Signal {
            tx,
            inflight: self.inflight.clone(),
        }
    }

    /// Counts one in-flight connection until the guard is dropped.
    pub fn guard(&self) -> Guard {
        self.inflight.count.fetch_add(1, Ordering::AcqRel);
        Guard {
            inflight: self.inflight.clone(),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.inflight.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inflight.idle.notify_waiters();
        }
    }
}

/// One HTTP connection's gentle drain, as Envoy's default `--drain-strategy gradual`: from the
/// moment it starts, each response closes the connection (`Connection: close`, or a GOAWAY for
/// HTTP/2) with a probability of elapsed / grace, so the clients of a changed listener move over
/// spread across the grace time instead of all reconnecting at once.
#[derive(Debug, Default)]
pub struct Ramp {
    started: OnceLock<(Instant, Duration)>,
    goaway: Notify,
}

impl Ramp {
    /// Starts the ramp (later calls keep the first start).
    pub fn start(&self, grace: Duration) {
        let _ = self.started.set((Instant::now(), grace));
    }

    /// Whether the response being sent now should close its connection.
    pub fn close_now(&self) -> bool {
        let Some((since, grace)) = self.started.get() else {
            return false;
        };
        let elapsed = since.elapsed();
        if elapsed >= *grace {
            return true;
        }
        rand::rng().random::<f64>() < elapsed.as_secs_f64() / grace.as_secs_f64()
    }

    /// Asks the connection to send its GOAWAY (HTTP/2).
    pub fn go_away(&self) {
        self.goaway.notify_one();
    }

    /// Completes once [`Ramp::go_away`] was called (now or before).
    pub async fn going_away(&self) {
        self.goaway.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ramp_closes_more_as_the_grace_time_passes() {
        let ramp = Ramp::default();
        assert!(!ramp.close_now(), "no drain, no close");
        ramp.start(Duration::from_secs(10));
        let closes = |ramp: &Ramp| (0..1000).filter(|_| ramp.close_now()).count();
        assert_eq!(closes(&ramp), 0, "nothing closes at the start");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let early = closes(&ramp);
        tokio::time::sleep(Duration::from_secs(6)).await;
        let late = closes(&ramp);
        assert!(
            (100..300).contains(&early),
            "about 20% at 2 s of 10: {early}"
        );
        assert!((700..900).contains(&late), "about 80% at 8 s of 10: {late}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            closes(&ramp),
            1000,
            "everything closes once the grace time is over"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn going_away_remembers_an_earlier_request() {
        let ramp = Ramp::default();
        ramp.go_away();
        tokio::time::timeout(Duration::from_secs(1), ramp.going_away())
            .await
            .expect("the GOAWAY asked before anyone waited");
    }

    #[tokio::test(start_paused = true)]
    async fn signaled_completes_only_after_drain() {
        let (signal, watch) = channel();
        let w = watch.clone();
        let waiter = tokio::spawn(async move { w.signaled().await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished());
        assert!(!watch.is_draining());
        signal.drain();
        waiter.await.expect("waiter");
        assert!(watch.is_draining());
        // A watch taken after the drain sees it at once.
        signal.watch().signaled().await;
    }

    #[tokio::test(start_paused = true)]
    async fn wait_idle_returns_when_guards_drop() {
        let (signal, watch) = channel();
        let g1 = watch.guard();
        let g2 = watch.clone().guard();
        assert_eq!(signal.inflight(), 2);
        signal.drain();
        let dropper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(g1);
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(g2);
        });
        let start = tokio::time::Instant::now();
        assert!(signal.wait_idle(Duration::from_secs(600)).await);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        dropper.await.expect("dropper");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_idle_gives_up_at_the_timeout() {
        let (signal, watch) = channel();
        let _held = watch.guard();
        signal.drain();
        let start = tokio::time::Instant::now();
        assert!(!signal.wait_idle(Duration::from_secs(3)).await);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_idle_with_nothing_in_flight_is_immediate() {
        let (signal, _watch) = channel();
        assert!(signal.wait_idle(Duration::from_secs(3)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_signal_never_drains() {
        let (signal, watch) = channel();
        drop(signal);
        let r = tokio::time::timeout(Duration::from_secs(60), watch.signaled()).await;
        assert!(r.is_err());
    }
}
