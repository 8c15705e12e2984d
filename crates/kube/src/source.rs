//! The pod source: the pods the apiserver says run on this node, each classified, with its group
//! and containers found in the kubelet's own tree. A pod the tree has but the store does not know is
//! left alone until the store knows it; a pod the store has but the tree lacks (not started, or
//! gone) is not a workload yet. While the apiserver is unreachable the store keeps its last state,
//! so enforcement goes on, and [`WorkloadSource::health`] says so.

use crate::batch::BatchCalc;
use crate::classify::{classify, settle};
use crate::client::{self, Connect, Handle, Request};
use crate::cpu_manager;
use crate::paths::{self, Driver};
use crate::pods::{self, PodView};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use tidal_cgroupfs::Layout;
use tidal_model::{
    CpuManagerPolicy, ForeignGroup, Knob, KnobValue, KubeletFacts, PodInfo, PodRef, QosClass,
    QosLevel, Snapshot, Target,
};
use tidal_policy::kubernetes::{DriverSetting, KubernetesConfig};
use tidal_source::{Eviction, Inventory, SourceError, SourceHealth, WorkloadRef, WorkloadSource};
use tracing::{info, warn};

const NAME: &str = "kubernetes";

fn err(reason: String) -> SourceError {
    SourceError::Other {
        source_name: NAME,
        reason,
    }
}

pub struct PodSource {
    cfg: KubernetesConfig,
    node: String,
    layout: Layout,
    handle: Handle,
    /// Each pod's level once settled (a running offline pod stays offline unless allowed).
    levels: HashMap<String, QosLevel>,
    /// Pods whose invalid marking was reported (once each).
    reported: HashSet<String>,
    invalid_markings: u64,
    reported_slo: HashSet<String>,
    invalid_slos: u64,
    driver: Option<Driver>,
    logged: BTreeSet<&'static str>,
    batch: BatchCalc,
    kubelet: Option<KubeletFacts>,
}

/// The node name: the config's, else `NODE_NAME`.
pub fn node_name(cfg: &KubernetesConfig) -> Result<String, String> {
    match &cfg.node_name {
        Some(n) => Ok(n.clone()),
        None => match std::env::var("NODE_NAME") {
            Ok(n) if !n.trim().is_empty() => {
                let n = n.trim().to_string();
                let mut probe = cfg.clone();
                probe.node_name = Some(n.clone());
                let mut e = Vec::new();
                probe.validate(&mut e);
                match e.into_iter().find(|x| x.field == "kubernetes.node_name") {
                    Some(x) => Err(format!("NODE_NAME: {}", x.reason)),
                    None => Ok(n),
                }
            }
            _ => Err("no node name: set kubernetes.node_name in the config, or NODE_NAME (the DaemonSet sets it from spec.nodeName)".into()),
        },
    }
}

impl PodSource {
    /// Connects (in the background) and starts watching this node's pods.
    pub fn start(
        cfg: KubernetesConfig,
        layout: Layout,
        connect: Connect,
    ) -> Result<PodSource, String> {
        let node = node_name(&cfg)?;
        let handle = client::start(connect, node.clone(), cfg.events)?;
        info!("watching the pods of node {node}");
        Ok(PodSource {
            cfg,
            node,
            layout,
            handle,
            levels: HashMap::new(),
            reported: HashSet::new(),
            invalid_markings: 0,
            reported_slo: HashSet::new(),
            invalid_slos: 0,
            driver: None,
            logged: BTreeSet::new(),
            batch: BatchCalc::default(),
            kubelet: None,
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn shared(&self) -> &client::Shared {
        &self.handle.shared
    }

    fn log_once(&mut self, key: &'static str, msg: String) {
        if self.logged.insert(key) {
            warn!("{msg} (logged once)");
        }
    }

    fn root(&self) -> &str {
        &self.cfg.kubelet_cgroup_root
    }

    /// The mounts to look in: every hierarchy tidal uses.
    fn mounts(&self) -> Vec<PathBuf> {
        self.layout
            .roots
            .iter()
            .map(|r| r.hierarchy.mount.clone())
            .collect()
    }

    fn driver(&mut self) -> Option<Driver> {
        match self.cfg.cgroup_driver {
            DriverSetting::Systemd => return Some(Driver::Systemd),
            DriverSetting::Cgroupfs => return Some(Driver::Cgroupfs),
            DriverSetting::Auto => {}
        }
        if self.driver.is_none() {
            let root = self.root().to_string();
            self.driver = self
                .mounts()
                .iter()
                .find_map(|m| paths::detect_driver(m, &root));
            if let Some(d) = self.driver {
                info!("kubelet cgroup driver: {d:?} (detected from its tree)");
            }
        }
        self.driver
    }

    fn exists(&self, g: &ForeignGroup) -> bool {
        self.layout
            .target_dirs(&Target::Foreign(g.clone()))
            .iter()
            .any(|d| d.is_dir())
    }

    /// The pod's container groups: those its statuses name, and any other group under it (the
    /// sandbox), that exist now.
    fn containers(&self, pod: &ForeignGroup, driver: Driver, ids: &[String]) -> Vec<ForeignGroup> {
        let mut out: BTreeSet<ForeignGroup> = ids
            .iter()
            .filter_map(|id| paths::container_group(pod, driver, id).ok())
            .filter(|c| self.exists(c))
            .collect();
        if let Some(dir) = self
            .layout
            .target_dirs(&Target::Foreign(pod.clone()))
            .into_iter()
            .find(|d| d.is_dir())
        {
            for name in subdirs(&dir) {
                if let Ok(c) = pod.join(&name) {
                    out.insert(c);
                }
            }
        }
        out.into_iter().collect()
    }

    fn tier_idle(&self, driver: Driver, qos: QosClass) -> bool {
        let Ok(tier) = paths::tier_group(self.root(), driver, qos) else {
            return false;
        };
        matches!(
            self.layout.read_knob(&Target::Foreign(tier), Knob::CpuIdle),
            Ok(KnobValue::Bool(true))
        )
    }

    fn read_kubelet(&mut self) -> KubeletFacts {
        let path = PathBuf::from(&self.cfg.cpu_manager_state);
        match cpu_manager::read(&path) {
            Ok(m) => {
                if m.replaced {
                    self.log_once(
                        "cpu_manager_replaced",
                        format!(
                            "the kubelet's CPU manager state {} was rewritten on the host since it was mounted (the kubelet renames a new file over it, and a mount of the file keeps showing the old one): CPUs given out exclusively since then are not seen; restart the agent to read it again",
                            path.display()
                        ),
                    );
                }
                KubeletFacts {
                    cpu_manager: Some(if m.is_static() {
                        CpuManagerPolicy::Static
                    } else {
                        CpuManagerPolicy::None
                    }),
                    exclusive_cpus: m.exclusive,
                }
            }
            Err(e) => {
                self.log_once(
                    "cpu_manager",
                    format!(
                        "cannot read the kubelet's CPU manager state: {e}; assuming policy none"
                    ),
                );
                KubeletFacts {
                    cpu_manager: None,
                    exclusive_cpus: Default::default(),
                }
            }
        }
    }

    /// The workload a pod is, if its group exists.
    fn workload(&mut self, v: &PodView, driver: Driver) -> Option<WorkloadRef> {
        let qos = v.qos_class?;
        let group = paths::pod_group(self.root(), driver, qos, &v.uid).ok()?;
        if !self.exists(&group) {
            return None;
        }
        let c = classify(&v.facts, &self.cfg.classify);
        let level = settle(
            self.levels.get(&v.uid).copied(),
            c.level,
            &self.cfg.classify,
        );
        self.levels.insert(v.uid.clone(), level);
        let pod = PodRef {
            namespace: v.facts.namespace.clone(),
            name: v.facts.name.clone(),
            uid: v.uid.clone(),
        };
        let slo = match crate::slo::pod_slo(&v.facts.annotations, &v.ports, v.host_network) {
            Ok(s) => s,
            Err(why) => {
                let why = plain(&why);
                if self.reported_slo.insert(v.uid.clone()) {
                    self.invalid_slos += 1;
                    warn!("pod {pod}: {why}");
                    self.handle.send(Request::Event {
                        pod: pod.clone(),
                        warning: true,
                        reason: "TidalInvalidSlo".into(),
                        note: why,
                    });
                }
                None
            }
        };
        if let Some(why) = &c.invalid {
            if self.reported.insert(v.uid.clone()) {
                let why = plain(why);
                self.invalid_markings += 1;
                warn!("pod {pod}: {why}");
                self.handle.send(Request::Event {
                    pod: pod.clone(),
                    warning: true,
                    reason: "TidalInvalidQosLevel".into(),
                    note: why,
                });
            }
        }
        Some(WorkloadRef {
            group: Target::Foreign(group.clone()),
            level,
            name: pod.to_string(),
            managed: false,
            pod: Some(PodInfo {
                qos_class: qos,
                containers: self.containers(&group, driver, &v.container_ids),
                liveness_probe: v.liveness_probe,
                tier_idle: self.tier_idle(driver, qos),
                cpu_limit_milli: v.cpu_limit_milli,
                terminating: v.terminating,
                node_daemon: v.facts.node_daemon,
                eviction_refused: self.handle.shared.refused_recently(&v.uid),
                memory_request: v.memory_request,
                ip: v.ip.clone(),
                slo,
                pod,
            }),
        })
    }
}

fn subdirs(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect()
}

impl WorkloadSource for PodSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn scan(&mut self) -> Result<Inventory, SourceError> {
        let h = self.handle.shared.health();
        if !h.synced {
            // No pods known yet (health says why), but the kubelet's own files are: its exclusive
            // CPUs stay out of offline work from the first tick.
            let kubelet = Some(self.read_kubelet());
            self.kubelet = kubelet.clone();
            return Ok(Inventory {
                kubelet,
                ..Inventory::default()
            });
        }
        let Some(driver) = self.driver() else {
            let where_ = self
                .mounts()
                .iter()
                .map(|m| {
                    m.join(self.root().trim_start_matches('/'))
                        .display()
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(err(format!(
                "no kubelet tree (kubepods or kubepods.slice) under {where_}: check kubernetes.kubelet_cgroup_root"
            )));
        };
        let pods = self.handle.shared.store.state();
        let mut out = Inventory {
            kubelet: Some(self.read_kubelet()),
            ..Inventory::default()
        };
        let mut live = HashSet::new();
        for p in pods {
            let v = pods::view(&p);
            if v.finished || v.uid.is_empty() {
                continue;
            }
            live.insert(v.uid.clone());
            if let Some(w) = self.workload(&v, driver) {
                out.workloads.push(w);
            }
        }
        self.levels.retain(|u, _| live.contains(u));
        self.reported.retain(|u| live.contains(u));
        self.reported_slo.retain(|u| live.contains(u));
        self.kubelet = out.kubelet.clone();
        Ok(out)
    }

    fn wants_usage(&self) -> bool {
        // Batch resources are computed from every pod's usage.
        self.cfg.batch.publish
    }

    fn evict(
        &mut self,
        pod: &PodRef,
        reason: &str,
        dry_run: bool,
    ) -> Result<Eviction, SourceError> {
        if dry_run {
            info!("dry-run: would evict pod {pod} through the Eviction API: {reason}");
            return Ok(Eviction::Logged);
        }
        if self.handle.send(Request::Evict {
            pod: pod.clone(),
            reason: reason.to_string(),
        }) {
            Ok(Eviction::Requested)
        } else {
            Err(err(format!(
                "cannot evict pod {pod}: the apiserver client has stopped"
            )))
        }
    }

    fn observe(&mut self, snap: &Snapshot, dry_run: bool) {
        let Some(node) = self.handle.shared.node() else {
            return;
        };
        if self.handle.shared.republish.swap(false, Ordering::Relaxed) {
            self.batch.forget_published();
        }
        self.batch.seed(node.published);
        let inputs = self.batch.inputs(snap, &node, self.cfg.batch.peak_window.0);
        let Some(b) = self.batch.step(snap.now_ms, inputs, &self.cfg.batch) else {
            return;
        };
        if !self.cfg.batch.publish {
            return;
        }
        if dry_run {
            info!(
                "dry-run: would publish {}={} {}={} on node {}",
                client::BATCH_CPU,
                b.cpu_milli,
                client::BATCH_MEMORY,
                b.memory_bytes,
                self.node
            );
            return;
        }
        self.handle.send(Request::Publish(b));
    }

    fn health(&self) -> SourceHealth {
        let h = self.handle.shared.health();
        let mut counters: BTreeMap<String, u64> = self
            .handle
            .shared
            .counters()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        counters.insert("invalid_markings".into(), self.invalid_markings);
        counters.insert("invalid_slos".into(), self.invalid_slos);
        let mut gauges = BTreeMap::new();
        let i = &self.batch.view.inputs;
        for (k, v) in [
            ("batch_capacity_cpus", i.capacity_cpus),
            ("batch_capacity_bytes", i.capacity_bytes),
            ("batch_reserved_cpus", i.reserved_cpus),
            ("batch_reserved_bytes", i.reserved_bytes),
            ("batch_node_used_cpus", i.node_used_cpus),
            ("batch_node_used_bytes", i.node_used_bytes),
            ("batch_pods_used_cpus", i.pods_used_cpus),
            ("batch_pods_used_bytes", i.pods_used_bytes),
            ("batch_online_used_cpus", i.online_used_cpus),
            ("batch_online_used_bytes", i.online_used_bytes),
            ("batch_online_peak_cpus", i.online_peak_cpus),
            ("batch_online_peak_bytes", i.online_peak_bytes),
            (
                "batch_safety_margin_percent",
                self.cfg.batch.safety_margin_percent,
            ),
        ] {
            gauges.insert(k.to_string(), v);
        }
        if let Some(p) = self.batch.published() {
            gauges.insert("batch_cpu_milli".into(), p.cpu_milli as f64);
            gauges.insert("batch_memory_bytes".into(), p.memory_bytes as f64);
        }
        let detail = match (&h.error, h.synced) {
            (Some(e), _) => Some(format!(
                "apiserver unreachable for {}s ({e}): enforcing the last known pods",
                h.error_since.map_or(0, |t| t.elapsed().as_secs())
            )),
            (None, false) => Some("waiting for the first pod list".into()),
            (None, true) => None,
        };
        SourceHealth {
            degraded: h.error.is_some() || !h.synced,
            detail,
            report: serde_json::json!({
                "node": self.node,
                "driver": self.driver,
                "kubelet": self.kubelet,
                "batch": self.batch.view,
            }),
            counters,
            gauges,
        }
    }
}

/// A message that quotes a pod's annotations, fit for one log line: control characters (a newline
/// would start a forged line) become spaces, and it ends after 500 characters.
fn plain(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(500)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(500).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pod_s_words_fit_one_log_line() {
        let forged = "5\n2025-01-01T00:00:00Z ERROR forged\r";
        assert_eq!(super::plain(forged), "5 2025-01-01T00:00:00Z ERROR forged ");
        let long = "x".repeat(900);
        let p = super::plain(&long);
        assert_eq!(p.chars().count(), 501);
        assert!(p.ends_with('…'));
    }
}
