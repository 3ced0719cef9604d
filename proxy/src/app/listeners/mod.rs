//! The listener manager: listeners added, changed and removed at runtime (LDS), each with its bound
//! sockets and accept loops.
//!
//! A changed listener keeps its sockets when its address stays the same: the accept loops switch to
//! the new filter chains for the next connection, while the old version's connections drain gently
//! over `--drain-time-s` (HTTP responses close their connection more and more often, `drain::Ramp`;
//! tcp_proxy connections close when it ends). A new address binds new sockets first, then the old
//! ones stop accepting. A removed listener stops accepting and drains the same way. Unchanged
//! listeners are not touched.
//!
//! `stop` holds what `/drain_listeners` and the process drain do to listeners on purpose.
//!
//! After every change the manager publishes which listener owns which address, for the
//! `use_original_dst` hand-off (`listener::handoff`): a virtual listener's redirected connection
//! goes to the owner current at its accept.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use remora_xds_client::ResourceError;

use crate::config::listeners::ListenerBuilder;
use crate::config::network::{ChainStack, NetworkStack};
use crate::config::rds::Routes;
use crate::config::Path;
use crate::detect::Detector;
use crate::drain;
use crate::listener::{self, ActiveListener, ListenerConfig, Owners, Serving};
use crate::stats::{Counter, Gauge, Store};
use crate::upstream::Origin;
use crate::xds::Decoded;

mod stop;

type Current = Arc<ArcSwap<Serving<ChainStack, Arc<Detector>>>>;

/// One running listener.
struct Running {
    proto: Listener,
    origin: Origin,
    version: String,
    last_updated: SystemTime,
    addresses: Vec<SocketAddr>,
    current: Current,
    /// Stops the accept loops of the bound sockets.
    accept: drain::Signal,
    /// Drains the connections of the current version.
    connections: drain::Signal,
    /// Stopped on purpose (`/drain_listeners`, the process drain): no longer accepting.
    stopped: bool,
}

/// A listener as `/config_dump` and `/listeners` show it.
#[derive(Debug, Clone)]
pub struct ListenerView {
    pub name: String,
    pub proto: Listener,
    pub origin: Origin,
    pub version: String,
    pub last_updated: SystemTime,
    pub addresses: Vec<SocketAddr>,
}

struct ManagerStats {
    active: Gauge,
    added: Counter,
    modified: Counter,
    in_place_updated: Counter,
    removed: Counter,
    create_success: Counter,
    create_failure: Counter,
    stopped: Counter,
}

struct Inner {
    builder: ListenerBuilder,
    store: Store,
    workers: usize,
    grace: Duration,
    process: drain::Watch,
    running: Mutex<BTreeMap<String, Running>>,
    /// The running listeners by address, for the `use_original_dst` hand-off.
    owners: Owners<ChainStack, Arc<Detector>>,
    /// How many LDS updates wait for their route configurations.
    warming: tokio::sync::watch::Sender<usize>,
    /// LDS updates applied so far, to drop a warming update that a later one replaced.
    updates: AtomicU64,
    stats: ManagerStats,
    /// The listeners stopped on purpose so far, by direction.
    stopped: Mutex<Option<stop::Selection>>,
}

/// A translated LDS update, ready to put in place.
struct Install {
    listeners: Vec<(ListenerConfig<ChainStack>, Listener)>,
    version: String,
    removed: Vec<String>,
}

/// Every listener, static and dynamic. A cheap handle.
#[derive(Clone)]
pub struct ListenerManager {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves a connection to an internal listener with the listener's current version.
fn admit_internal(
    conn: listener::InternalConnection,
    serving: &Arc<Serving<ChainStack, Arc<Detector>>>,
) {
    listener::internal::admit(conn, serving, &|acc, _: &Arc<Detector>| {
        super::serve_internal(acc)
    });
}

/// Whether only the filter chains changed (Envoy's in-place filter chain update).
fn only_filter_chains_differ(a: &Listener, b: &Listener) -> bool {
    let strip = |l: &Listener| Listener {
        filter_chains: Vec::new(),
        default_filter_chain: None,
        ..l.clone()
    };
    strip(a) == strip(b)
}

/// What a new listener version needs before it serves: its RDS route configurations.
fn rds_of(cfg: &ListenerConfig<ChainStack>) -> Vec<Arc<crate::config::rds::RdsRoute>> {
    cfg.chains
        .iter()
        .filter_map(|(_, c)| match &c.payload.stack {
            NetworkStack::Http(rt) => match &rt.cfg.routes {
                Routes::Rds(r) => Some(r.clone()),
                Routes::Static(_) => None,
            },
            NetworkStack::Tcp(_) => None,
        })
        .collect()
}

impl ListenerManager {
    /// A manager translating listeners with `builder`, binding `workers` sockets per address, and
    /// draining replaced listeners' connections over `grace`. Its listeners all stop when `process`
    /// drains.
    pub fn new(
        builder: ListenerBuilder,
        store: &Store,
        workers: usize,
        grace: Duration,
        process: drain::Watch,
    ) -> Self {
        let s = store.scope("listener_manager.");
        Self {
            inner: Arc::new(Inner {
                builder,
                store: store.clone(),
                workers,
                grace,
                process,
                running: Mutex::default(),
                owners: Owners::default(),
                warming: tokio::sync::watch::channel(0).0,
                updates: AtomicU64::new(0),
                stats: ManagerStats {
                    active: s.gauge("total_listeners_active"),
                    added: s.counter("listener_added"),
                    modified: s.counter("listener_modified"),
                    in_place_updated: s.counter("listener_in_place_updated"),
                    removed: s.counter("listener_removed"),
                    create_success: s.counter("listener_create_success"),
                    create_failure: s.counter("listener_create_failure"),
                    stopped: s.counter("listener_stopped"),
                },
                stopped: Mutex::default(),
            }),
        }
    }

    /// Binds and serves a static listener. Errors name the listener.
    pub fn add_static(
        &self,
        cfg: ListenerConfig<ChainStack>,
        proto: Listener,
    ) -> Result<(), ResourceError> {
        let mut running = lock(&self.inner.running);
        let r = self.start(cfg, proto, Origin::Static, String::new())?;
        running.insert(r.proto.name.clone(), r);
        self.inner.stats.active.set(running.len() as i64);
        self.publish(&running);
        Ok(())
    }

    fn serving(
        &self,
        cfg: ListenerConfig<ChainStack>,
        connections: &drain::Signal,
    ) -> Serving<ChainStack, Arc<Detector>> {
        let detector = Arc::new(Detector::new(&cfg, &self.inner.store));
        Serving {
            active: ActiveListener::uncounted(cfg, &self.inner.store),
            with: detector,
            drain: connections.watch(),
        }
    }

    /// Binds `cfg`'s sockets and starts their accept loops.
    fn start(
        &self,
        cfg: ListenerConfig<ChainStack>,
        proto: Listener,
        origin: Origin,
        version: String,
    ) -> Result<Running, ResourceError> {
        let name = proto.name.clone();
        // A listener that a drain has stopped stays without sockets when LDS adds it again.
        let stopped = self.stopped_for(proto.traffic_direction, cfg.internal);
        let sockets = if stopped {
            tracing::info!(listener = %name, "listeners of this direction are stopped; not binding");
            Vec::new()
        } else {
            listener::bind(&cfg, self.inner.workers)
                .map_err(|e| ResourceError::new(&name, format!("address: cannot bind: {e}")))?
        };
        let addresses = cfg.addresses().map(|a| a.address).collect();
        let cfg_internal = cfg.internal;
        let connections = self.inner.process.child();
        let current: Current = Arc::new(ArcSwap::from_pointee(self.serving(cfg, &connections)));
        let accept = self.inner.process.child();
        if cfg_internal && !stopped {
            let current = current.clone();
            let stopped = accept.watch();
            self.internal().register(&name, move |conn| {
                // A stopped or retired listener refuses, as a closed socket does.
                if !stopped.is_draining() {
                    admit_internal(conn, &current.load_full());
                }
            });
        }
        for b in sockets {
            let socket = tokio::net::TcpListener::from_std(b.listener)
                .map_err(|e| ResourceError::new(&name, format!("address: {e}")))?;
            tokio::spawn(listener::serve_current(
                socket,
                current.clone(),
                Some(self.inner.owners.clone()),
                |acc, detector: &Arc<Detector>| super::serve_connection(acc, detector.clone()),
                accept.watch(),
            ));
        }
        Ok(Running {
            proto,
            origin,
            version,
            last_updated: SystemTime::now(),
            addresses,
            current,
            accept,
            connections,
            stopped,
        })
    }

    /// Applies an LDS update. With `full_state` every dynamic listener missing from it is removed;
    /// otherwise `update.removed` names the removals. Each new or changed listener is translated
    /// now; one that fails to translate (or to bind, when it needs no warming) is rejected with an
    /// error naming it while the others still apply, as Envoy's listener manager does. A listener
    /// whose RDS route configurations have not arrived warms in the background (up to
    /// `warm_timeout`) and replaces its previous version once they do.
    pub fn apply_listeners(
        &self,
        update: &Decoded<Listener>,
        warm_timeout: Duration,
    ) -> Result<(), Vec<ResourceError>> {
        let (ready, mut errors) = self.translate(update);
        let waiting: Vec<_> = ready
            .iter()
            .flat_map(|(cfg, _)| rds_of(cfg))
            .filter(|r| !r.is_ready())
            .collect();
        let update = Install {
            listeners: ready,
            version: update.version.clone(),
            removed: self.removals(update),
        };
        let seq = self.inner.updates.fetch_add(1, Ordering::AcqRel) + 1;
        if waiting.is_empty() {
            errors.extend(self.install(update));
        } else {
            self.inner.warming.send_modify(|n| *n += 1);
            let mgr = self.clone();
            tokio::spawn(async move {
                for rds in waiting {
                    if tokio::time::timeout(warm_timeout, rds.ready())
                        .await
                        .is_err()
                    {
                        tracing::warn!(route_config = %rds.name, "RDS did not arrive in time; serving without its routes");
                    }
                }
                // A later update replaced this one while it warmed (state of the world: the later
                // one carries every listener).
                if mgr.inner.updates.load(Ordering::Acquire) != seq {
                    tracing::debug!(
                        "a newer LDS update arrived while this one warmed; dropping it"
                    );
                    mgr.inner.warming.send_modify(|n| *n -= 1);
                    return;
                }
                for e in mgr.install(update) {
                    tracing::warn!(listener = %e.name, error = %e.message, "listener rejected");
                }
                mgr.inner.warming.send_modify(|n| *n -= 1);
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Resolves once no listener is warming.
    pub async fn warmed(&self) {
        let mut rx = self.inner.warming.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn removals(&self, update: &Decoded<Listener>) -> Vec<String> {
        if update.full_state {
            let names: std::collections::HashSet<&str> = update
                .resources
                .iter()
                .map(|r| r.resource.name.as_str())
                .collect();
            lock(&self.inner.running)
                .iter()
                .filter(|(n, r)| r.origin == Origin::Dynamic && !names.contains(n.as_str()))
                .map(|(n, _)| n.clone())
                .collect()
        } else {
            update.removed.clone()
        }
    }

    fn translate(
        &self,
        update: &Decoded<Listener>,
    ) -> (
        Vec<(ListenerConfig<ChainStack>, Listener)>,
        Vec<ResourceError>,
    ) {
        let mut errors = Vec::new();
        let mut ready = Vec::new();
        let running = lock(&self.inner.running);
        for r in &update.resources {
            let l = &r.resource;
            if l.name.is_empty() {
                errors.push(ResourceError::new(&r.name, "name: a listener needs a name"));
                continue;
            }
            match running.get(&l.name) {
                Some(old) if old.origin == Origin::Static => {
                    errors.push(ResourceError::new(
                        &l.name,
                        format!(
                            "name: listener {:?} is static and cannot be changed by LDS",
                            l.name
                        ),
                    ));
                    continue;
                }
                Some(old) if old.proto == *l => continue,
                _ => {}
            }
            match self.inner.builder.build(l, &Path::default()) {
                Ok(cfg) => {
                    let taken = cfg.addresses().find_map(|a| {
                        running
                            .iter()
                            .find(|(n, o)| {
                                **n != l.name
                                    && o.addresses.contains(&a.address)
                                    && a.address.port() != 0
                            })
                            .map(|(n, _)| (a.address, n.clone()))
                    });
                    match taken {
                        Some((addr, other)) => {
                            self.inner.stats.create_failure.inc();
                            errors.push(ResourceError::new(
                                &l.name,
                                format!("address: {addr} is already used by listener {other:?}"),
                            ));
                        }
                        None => ready.push((cfg, l.clone())),
                    }
                }
                Err(e) => {
                    self.inner.stats.create_failure.inc();
                    errors.extend(e.0.into_iter().map(|e| ResourceError::new(&l.name, e)));
                }
            }
        }
        (ready, errors)
    }

    /// Puts translated listeners in place and removes the removed ones; returns bind errors.
    fn install(&self, update: Install) -> Vec<ResourceError> {
        let mut errors = Vec::new();
        let mut running = lock(&self.inner.running);
        for (cfg, proto) in update.listeners {
            let name = proto.name.clone();
            match running.remove(&name) {
                Some(mut old) => {
                    let new_addresses: Vec<SocketAddr> =
                        cfg.addresses().map(|a| a.address).collect();
                    if new_addresses == old.addresses {
                        // Same sockets: new connections take the new chains at once.
                        let connections = self.inner.process.child();
                        let serving = self.serving(cfg, &connections);
                        old.current.store(Arc::new(serving));
                        let previous = std::mem::replace(&mut old.connections, connections);
                        previous.drain_gently(self.inner.grace);
                        if only_filter_chains_differ(&old.proto, &proto) {
                            self.inner.stats.in_place_updated.inc();
                        }
                        self.inner.stats.create_success.inc();
                        old.proto = proto;
                        old.version = update.version.clone();
                        old.last_updated = SystemTime::now();
                        running.insert(name.clone(), old);
                        self.inner.stats.modified.inc();
                        tracing::info!(listener = %name, "listener updated in place");
                    } else {
                        match self.start(cfg, proto, Origin::Dynamic, update.version.clone()) {
                            Ok(new) => {
                                self.retire(old);
                                self.inner.stats.create_success.inc();
                                running.insert(name.clone(), new);
                                self.inner.stats.modified.inc();
                                tracing::info!(listener = %name, "listener moved to a new address");
                            }
                            Err(e) => {
                                running.insert(name.clone(), old);
                                self.inner.stats.create_failure.inc();
                                errors.push(e);
                            }
                        }
                    }
                }
                None => match self.start(cfg, proto, Origin::Dynamic, update.version.clone()) {
                    Ok(new) => {
                        self.inner.stats.create_success.inc();
                        running.insert(name.clone(), new);
                        self.inner.stats.added.inc();
                        tracing::info!(listener = %name, "listener added");
                    }
                    Err(e) => {
                        self.inner.stats.create_failure.inc();
                        errors.push(e);
                    }
                },
            }
        }
        for name in update.removed {
            if running
                .get(&name)
                .is_some_and(|r| r.origin == Origin::Static)
            {
                errors.push(ResourceError::new(
                    &name,
                    "listener is static and cannot be removed by LDS",
                ));
                continue;
            }
            if let Some(old) = running.remove(&name) {
                self.retire(old);
                self.inner.stats.removed.inc();
                tracing::info!(listener = %name, "listener removed");
            }
        }
        self.inner.stats.active.set(running.len() as i64);
        self.publish(&running);
        errors
    }

    /// Publishes which listener owns which address (a retired listener owns none).
    fn publish(&self, running: &BTreeMap<String, Running>) {
        self.inner
            .owners
            .publish(running.values().filter(|r| !r.stopped).flat_map(|r| {
                let current = r.current.clone();
                let addresses: Vec<_> = r.current.load().active.config.addresses().collect();
                addresses.into_iter().map(move |a| (a, current.clone()))
            }));
    }

    /// Where internal listeners are registered by name.
    fn internal(&self) -> &listener::InternalListeners {
        self.inner.builder.clusters.internal()
    }

    /// Stops accepting and drains the connections gently.
    fn retire(&self, old: Running) {
        if old.current.load().active.config.internal {
            self.internal().remove(&old.proto.name);
        }
        old.accept.drain();
        old.connections.drain_gently(self.inner.grace);
    }

    /// Every listener, by name.
    pub fn views(&self) -> Vec<ListenerView> {
        lock(&self.inner.running)
            .iter()
            .map(|(name, r)| ListenerView {
                name: name.clone(),
                proto: r.proto.clone(),
                origin: r.origin,
                version: r.version.clone(),
                last_updated: r.last_updated,
                addresses: r.addresses.clone(),
            })
            .collect()
    }

    /// The RDS names the listeners use.
    pub fn route_names(&self) -> Vec<String> {
        self.inner.builder.routes.names()
    }
}
