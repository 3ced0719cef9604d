//! CDS and EDS updates: validate every resource, then build the next state from the current one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::cluster::v3::Cluster as ClusterProto;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use remora_xds_client::ResourceError;

use super::{ClusterEntry, ClusterManager, Clusters, Origin};
use crate::config::{ConfigErrors, Path};
use crate::upstream::config::{endpoints, ClusterSpec, Discovery, EndpointSpec};
use crate::upstream::Cluster;
use crate::xds::Decoded;

/// What a CDS update changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CdsApplied {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
    /// Clusters whose proto did not change: untouched, pools kept.
    pub unchanged: usize,
}

fn resource_errors(name: &str, errors: ConfigErrors) -> Vec<ResourceError> {
    errors
        .0
        .into_iter()
        .map(|e| ResourceError::new(name, e))
        .collect()
}

impl ClusterManager {
    /// Applies a CDS update. With `full_state` (state of the world) every dynamic cluster missing
    /// from `update.resources` is removed; otherwise `update.removed` names the removals. Every
    /// resource is validated first; one invalid resource rejects the whole update (one error per
    /// problem, naming the resource and the field) and leaves the current clusters serving.
    pub fn apply_clusters(
        &self,
        update: &Decoded<ClusterProto>,
    ) -> Result<CdsApplied, Vec<ResourceError>> {
        let _serial = self
            .inner
            .update
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.inner.state.load_full();
        let mut errors = Vec::new();
        let mut seen = HashSet::new();
        // (name, proto, spec when built: None = unchanged)
        let mut planned: Vec<(&ClusterProto, Option<ClusterSpec>)> = Vec::new();
        for r in &update.resources {
            let c = &r.resource;
            let name = c.name.as_str();
            if !r.name.is_empty() && r.name != c.name {
                errors.push(ResourceError::new(
                    &r.name,
                    format!(
                        "name: the resource is named {:?} but the cluster {:?}",
                        r.name, c.name
                    ),
                ));
                continue;
            }
            if !seen.insert(name) {
                errors.push(ResourceError::new(
                    name,
                    format!("name: duplicate cluster {name:?} in one update"),
                ));
                continue;
            }
            let existing = current.warming.get(name).or_else(|| current.active(name));
            if let Some(e) = existing {
                if e.origin == Origin::Static {
                    errors.push(ResourceError::new(
                        name,
                        format!("name: cluster {name:?} is a static cluster and cannot be updated by CDS"),
                    ));
                    continue;
                }
                if e.proto == *c {
                    planned.push((c, None));
                    continue;
                }
            }
            match ClusterSpec::from_proto_with_secrets(c, &Path::default(), &self.inner.secrets) {
                Ok(spec) => planned.push((c, Some(spec))),
                Err(e) => errors.extend(resource_errors(name, e)),
            }
        }
        let removed: Vec<String> = if update.full_state {
            current
                .active
                .iter()
                .map(|e| &e.proto.name)
                .chain(current.warming.keys())
                .filter(|n| !seen.contains(n.as_str()))
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect()
        } else {
            update.removed.clone()
        };
        for name in &removed {
            if current
                .active(name)
                .is_some_and(|e| e.origin == Origin::Static)
            {
                if update.full_state {
                    continue;
                }
                errors.push(ResourceError::new(
                    name,
                    format!("cluster {name:?} is a static cluster and cannot be removed by CDS"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let mut applied = CdsApplied::default();
        let now = SystemTime::now();
        let removed: HashSet<&str> = removed
            .iter()
            .map(String::as_str)
            .filter(|n| {
                current
                    .active(n)
                    .is_some_and(|e| e.origin == Origin::Dynamic)
                    || current.warming.contains_key(*n)
            })
            .collect();
        let mut active: Vec<Arc<ClusterEntry>> = Vec::with_capacity(current.active.len());
        let mut warming: BTreeMap<String, Arc<ClusterEntry>> = current.warming.clone();
        let mut replaced: HashMap<String, Arc<ClusterEntry>> = HashMap::new();
        let mut to_warm = Vec::new();
        for (proto, spec) in planned {
            let Some(spec) = spec else {
                applied.unchanged += 1;
                continue;
            };
            let is_update =
                current.active(&proto.name).is_some() || warming.contains_key(&proto.name);
            if is_update {
                applied.updated.push(proto.name.clone());
            } else {
                applied.added.push(proto.name.clone());
            }
            let cluster = self.build_for(spec, proto);
            let entry = Arc::new(ClusterEntry {
                cluster,
                proto: proto.clone(),
                origin: Origin::Dynamic,
                version: update.version.clone(),
                last_updated: now,
            });
            if let Some(old) = warming.remove(&proto.name) {
                old.cluster.drain_pools();
            }
            if entry.cluster.is_initialized() {
                replaced.insert(proto.name.clone(), entry);
            } else {
                warming.insert(proto.name.clone(), entry.clone());
                to_warm.push(entry);
            }
        }
        for e in current.active.iter() {
            let name = e.proto.name.as_str();
            if removed.contains(name) {
                e.cluster.drain_pools();
                continue;
            }
            match replaced.remove(name) {
                Some(new) => {
                    e.cluster.drain_pools();
                    active.push(new);
                }
                None => active.push(e.clone()),
            }
        }
        // New clusters that are ready at once (STATIC, or EDS with a cached assignment), in update order.
        for r in &update.resources {
            if let Some(new) = replaced.remove(&r.resource.name) {
                active.push(new);
            }
        }
        for name in &removed {
            if let Some(w) = warming.remove(*name) {
                w.cluster.drain_pools();
            }
        }
        applied.removed = removed.iter().map(|s| s.to_string()).collect();
        applied.removed.sort();
        self.publish(Clusters::from_active(active, warming));
        self.forget_stats(&applied.removed);
        drop(_serial);
        for entry in to_warm {
            self.warm(entry);
        }
        Ok(applied)
    }

    /// Envoy drops a removed cluster's stats with the cluster: `/stats` stops listing them and
    /// cluster churn does not grow the store. A live cluster whose name merely extends a removed
    /// one's (`b` and `b.x`) keeps its own.
    fn forget_stats(&self, removed: &[String]) {
        if removed.is_empty() {
            return;
        }
        let doomed: Vec<String> = removed
            .iter()
            .map(|name| format!("cluster.{name}."))
            .collect();
        // Only a live cluster whose name extends a removed one's (`b.x` under `b`) has stats under a
        // doomed prefix; those keep theirs.
        let nested: Vec<String> = self
            .entries()
            .iter()
            .chain(self.warming().iter())
            .map(|e| format!("cluster.{}.", e.proto.name))
            .filter(|l| {
                doomed
                    .iter()
                    .any(|d| l.len() > d.len() && l.starts_with(d.as_str()))
            })
            .collect();
        self.inner.store.remove_prefixes(&doomed, |stat| {
            nested.iter().any(|l| stat.starts_with(l.as_str()))
        });
    }

    /// Builds a cluster; an EDS cluster starts with the assignment already known for its service
    /// name (read now from its file when its `eds_config` is a file).
    pub(super) fn build_for(&self, spec: ClusterSpec, proto: &ClusterProto) -> Arc<Cluster> {
        let service = spec.eds_service_name.clone();
        let eds = spec.discovery == Discovery::Eds;
        if eds {
            if let Some(path) = proto
                .eds_cluster_config
                .as_ref()
                .and_then(|e| e.eds_config.as_ref())
                .and_then(crate::xds::file::path_of)
            {
                self.watch_eds_file(path);
            }
        }
        let cluster = self.build(spec);
        if eds {
            if let Some(la) = self.cached_assignment(&service) {
                assign(&cluster, &la);
            }
        }
        cluster
    }

    fn watch_eds_file(&self, path: std::path::PathBuf) {
        let mut files = self
            .inner
            .eds_files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if files.contains_key(&path) {
            return;
        }
        let mut stamp = None;
        crate::xds::file::changed(&path, &mut stamp);
        files.insert(path.clone(), stamp);
        drop(files);
        self.load_eds_file(&path);
    }

    fn load_eds_file(&self, path: &std::path::Path) {
        let result =
            crate::xds::file::read_update(path, |l: &ClusterLoadAssignment| l.cluster_name.clone())
                .and_then(|mut u| {
                    // A file names the assignments it has; it removes none.
                    u.full_state = false;
                    self.apply_endpoints(&u)
                });
        if let Err(errors) = result {
            for e in errors {
                tracing::warn!(path = %path.display(), resource = %e.name, error = %e.message, "file-based EDS update rejected");
            }
        }
    }

    /// Reloads the EDS files that changed; returns whether any file is watched.
    pub fn poll_eds_files(&self) -> bool {
        let (changed, any): (Vec<std::path::PathBuf>, bool) = {
            let mut files = self
                .inner
                .eds_files
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let any = !files.is_empty();
            (
                files
                    .iter_mut()
                    .filter_map(|(p, stamp)| crate::xds::file::changed(p, stamp).then(|| p.clone()))
                    .collect(),
                any,
            )
        };
        for p in changed {
            self.load_eds_file(&p);
        }
        any
    }

    /// Promotes `entry` from warming to serving once it is initialized.
    fn warm(&self, entry: Arc<ClusterEntry>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mgr = self.clone();
        rt.spawn(async move {
            entry.cluster.initialized().await;
            mgr.promote(&entry);
        });
    }

    fn promote(&self, entry: &Arc<ClusterEntry>) {
        let _serial = self
            .inner
            .update
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.inner.state.load_full();
        let name = entry.proto.name.as_str();
        if !current
            .warming
            .get(name)
            .is_some_and(|w| Arc::ptr_eq(w, entry))
        {
            return;
        }
        let mut warming = current.warming.clone();
        warming.remove(name);
        let mut active = current.active.clone();
        match active.iter_mut().find(|e| e.proto.name == name) {
            Some(slot) => {
                slot.cluster.drain_pools();
                *slot = entry.clone();
            }
            None => active.push(entry.clone()),
        }
        tracing::info!(cluster = name, "cluster warmed");
        self.publish(Clusters::from_active(active, warming));
    }

    fn cached_assignment(&self, service: &str) -> Option<ClusterLoadAssignment> {
        self.inner
            .assignments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(service)
            .cloned()
    }

    /// Applies an EDS update: each `ClusterLoadAssignment` (named by its `cluster_name`, the EDS
    /// clusters' service name) replaces the endpoints of the clusters that use it, serving or
    /// warming; a warming cluster becomes serving with its first assignment. A removed name leaves
    /// its clusters without endpoints. Invalid assignments reject the whole update.
    pub fn apply_endpoints(
        &self,
        update: &Decoded<ClusterLoadAssignment>,
    ) -> Result<(), Vec<ResourceError>> {
        let mut errors = Vec::new();
        let mut built: Vec<(&ClusterLoadAssignment, Vec<EndpointSpec>, f64)> = Vec::new();
        for r in &update.resources {
            let la = &r.resource;
            let mut errs = ConfigErrors::default();
            if la.cluster_name.is_empty() {
                errs.push("cluster_name", "value length must be at least 1 characters");
            }
            let (eps, op) =
                endpoints::from_assignment(la, Discovery::Eds, &Path::default(), &mut errs);
            let name = if la.cluster_name.is_empty() {
                &r.name
            } else {
                &la.cluster_name
            };
            if errs.is_empty() {
                built.push((la, eps, op));
            } else {
                errors.extend(resource_errors(name, errs));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        {
            let mut cache = self
                .inner
                .assignments
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (la, _, _) in &built {
                cache.insert(la.cluster_name.clone(), (*la).clone());
            }
            for name in &update.removed {
                cache.remove(name);
            }
        }
        let state = self.inner.state.load_full();
        let eds_clusters = || {
            state
                .active
                .iter()
                .chain(state.warming.values())
                .filter(|e| e.cluster.spec().discovery == Discovery::Eds)
        };
        for (la, eps, op) in &built {
            for e in eds_clusters().filter(|e| e.cluster.spec().eds_service_name == la.cluster_name)
            {
                e.cluster.assign(eps, *op);
            }
        }
        for name in &update.removed {
            for e in eds_clusters().filter(|e| e.cluster.spec().eds_service_name == *name) {
                e.cluster.assign(&[], e.cluster.spec().overprovisioning);
            }
        }
        Ok(())
    }

    /// The EDS service names the clusters (serving and warming) want.
    pub fn eds_service_names(&self) -> Vec<String> {
        let state = self.inner.state.load();
        let mut names: Vec<String> = state
            .active
            .iter()
            .chain(state.warming.values())
            .filter(|e| e.cluster.spec().discovery == Discovery::Eds)
            .map(|e| e.cluster.spec().eds_service_name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

fn assign(cluster: &Cluster, la: &ClusterLoadAssignment) {
    let mut errs = ConfigErrors::default();
    let (eps, op) = endpoints::from_assignment(la, Discovery::Eds, &Path::default(), &mut errs);
    if errs.is_empty() {
        cluster.assign(&eps, op);
    }
}
