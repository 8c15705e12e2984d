//! Run-queue latency as a signal: each tick the BPF program's per-cgroup histograms give every
//! online workload's waits since the last tick (its id: the inode of its group's directory in
//! the v1 cpu hierarchy where there is one, else in the v2 hierarchy; see [`read_key`]). A
//! workload with enough samples gives a `SignalKind::RunqLatency` reading of its p99 against
//! `bpf.runq_p99_threshold`. An id's first read is its baseline, and the first window opens where
//! the agent's first tick ends ([`Runq::restart`]): the waits its own start causes are not
//! interference. Without BPF the agent says once why and runs on its other signals.

use std::collections::{HashMap, HashSet};
use tidal_bpf::{cgroup_id, CgroupKey, Collector, Hist, IdKind};
use tidal_cgroupfs::{Layout, Version};
use tidal_model::{QosLevel, Signal, SignalKind, Target, WorkloadSnapshot};
use tracing::{info, warn};

/// One online workload's waits over the last tick.
#[derive(Debug, Clone)]
pub struct Waits {
    pub workload: String,
    pub level: QosLevel,
    pub hist: Hist,
}

pub struct Runq {
    collector: Option<Collector>,
    /// Why there is no collector (for `/state` and doctor-like reports).
    pub unavailable: Option<String>,
    ids: HashMap<CgroupKey, (String, QosLevel)>,
    reads: u64,
    /// Waits of reads that had fewer than `min_samples`, carried into the next reads (at most
    /// [`CARRY_READS`] of them): short ticks (the watch after a release) or a quiet service still
    /// give a reading.
    pending: HashMap<String, (Hist, u32)>,
    /// The waits read since the last tick, per online workload, with its level.
    tick_waits: HashMap<String, (QosLevel, Hist)>,
    /// Ids learnt since the last read. A first read of an id is its baseline, not a reading: it
    /// holds every wait since its histogram began (the agent's own start among them, for a
    /// workload there when the agent started or a pod learnt once the watch synced).
    fresh: HashSet<CgroupKey>,
}

/// How many reads short of `min_samples` are carried before they are dropped.
const CARRY_READS: u32 = 10;

/// This read's waits with those carried from earlier reads: Some once they reach `min_samples`
/// (the carry is then spent), else None and they are carried (at most [`CARRY_READS`] reads).
fn carry(
    pending: &mut HashMap<String, (Hist, u32)>,
    name: &str,
    hist: &Hist,
    min_samples: u64,
) -> Option<Hist> {
    let mut acc = hist.clone();
    let mut carried = 0;
    if let Some((earlier, n)) = pending.remove(name) {
        acc.merge(&earlier);
        carried = n;
    }
    if acc.count >= min_samples {
        return Some(acc);
    }
    if carried < CARRY_READS {
        pending.insert(name.to_string(), (acc, carried + 1));
    }
    None
}

/// Every this many reads, histograms of cgroups that are not online workloads are deleted: the
/// program makes one for every cgroup that waits, and its map is bounded (8192).
const PRUNE_EVERY: u64 = 100;

impl Runq {
    /// Loads the program unless `enabled` is false, recording 1 in `sample` wakeups; says once
    /// why it is not there.
    pub fn start(enabled: bool, sample: u32) -> Runq {
        let (collector, unavailable) = if !enabled {
            (
                None,
                Some("turned off (--no-bpf or bpf.enabled: false)".to_string()),
            )
        } else {
            match Collector::start_sampled(sample) {
                Ok(c) => {
                    info!(
                        "run-queue latency from BPF ({}{}{})",
                        c.attach,
                        if sample > 1 {
                            format!(", 1 in {sample} wakeups")
                        } else {
                            String::new()
                        },
                        c.fallback
                            .as_ref()
                            .map(|f| format!("; not tp_btf: {f}"))
                            .unwrap_or_default()
                    );
                    (Some(c), None)
                }
                Err(e) => {
                    warn!("no run-queue latency: {e}; the agent runs on its other signals");
                    (None, Some(e))
                }
            }
        };
        Runq {
            collector,
            unavailable,
            ids: HashMap::new(),
            reads: 0,
            pending: HashMap::new(),
            tick_waits: HashMap::new(),
            fresh: HashSet::new(),
        }
    }

    pub fn active(&self) -> bool {
        self.collector.is_some()
    }

    /// Learns the ids of the online workloads' groups (when the workload list changes).
    pub fn map(&mut self, layout: &Layout, workloads: &[WorkloadSnapshot]) {
        if self.collector.is_none() {
            return;
        }
        let before = std::mem::take(&mut self.ids);
        for w in workloads.iter().filter(|w| w.level.is_online()) {
            if let Some(key) = read_key(layout, &w.group) {
                self.ids.insert(key, (w.group.to_string(), w.level));
            }
        }
        self.fresh
            .extend(self.ids.keys().filter(|k| !before.contains_key(k)));
        self.fresh.retain(|k| self.ids.contains_key(k));
        // Waits carried for workloads that are gone go with them.
        let names: HashSet<&String> = self.ids.values().map(|(n, _)| n).collect();
        self.pending.retain(|n, _| names.contains(n));
        self.tick_waits.retain(|n, _| names.contains(n));
    }

    /// Reads the waits since the last read into this tick's, per online workload. False when the
    /// collector failed (it is then off).
    fn pull(&mut self) -> bool {
        let Some(c) = self.collector.as_mut() else {
            return false;
        };
        let mut deltas = match c.read_keys(self.ids.keys()) {
            Ok(d) => d,
            Err(e) => {
                warn!("run-queue latency: {e}; off from now on");
                self.unavailable = Some(e);
                self.collector = None;
                self.tick_waits.clear();
                return false;
            }
        };
        drop_first_reads(&mut deltas, &mut self.fresh);
        for (k, h) in deltas {
            let Some((name, level)) = self.ids.get(&k) else {
                continue;
            };
            match self.tick_waits.get_mut(name) {
                Some((_, w)) => w.merge(&h),
                None => {
                    self.tick_waits.insert(name.clone(), (*level, h));
                }
            }
        }
        true
    }

    /// Drops every wait read or carried so far: the next reading starts now (and says why the
    /// collector is off, if this read failed: see [`Runq::unavailable`]).
    pub fn restart(&mut self) {
        self.pull();
        self.tick_waits.clear();
        self.pending.clear();
    }

    /// The last tick's waits per online workload, and the signals they give (from the waits
    /// carried over too, while a workload's reads fall short of `min_samples`).
    pub fn read(&mut self, threshold_s: f64, min_samples: u64) -> (Vec<Signal>, Vec<Waits>) {
        // Pruned every PRUNE_EVERY ticks' reads (never by a sample's peek).
        self.reads += 1;
        if let Some(c) = self.collector.as_mut() {
            if self.reads.is_multiple_of(PRUNE_EVERY) {
                c.prune(&self.ids.keys().copied().collect());
            }
        }
        if !self.pull() {
            return (Vec::new(), Vec::new());
        }
        let mut signals = Vec::new();
        let mut waits = Vec::new();
        for (name, (level, hist)) in std::mem::take(&mut self.tick_waits) {
            let reading = carry(&mut self.pending, &name, &hist, min_samples);
            if let Some(s) = reading.and_then(|acc| signal_of(&name, &acc, threshold_s)) {
                signals.push(s);
            }
            waits.push(Waits {
                workload: name,
                level,
                hist,
            });
        }
        (signals, waits)
    }

    /// The signals the waits since the last tick give so far (with those carried), leaving them
    /// to the tick's [`Runq::read`]: a light sample between ticks sees a wait as it starts.
    pub fn peek(&mut self, threshold_s: f64, min_samples: u64) -> Vec<Signal> {
        if !self.pull() {
            return Vec::new();
        }
        self.tick_waits
            .iter()
            .filter_map(|(name, (_, hist))| {
                let mut acc = hist.clone();
                if let Some((earlier, _)) = self.pending.get(name) {
                    acc.merge(earlier);
                }
                (acc.count >= min_samples)
                    .then(|| signal_of(name, &acc, threshold_s))
                    .flatten()
            })
            .collect()
    }
}

/// The one id a workload's waits are read under. The program adds each wait under the task's v2
/// id and, where the cpu controller is on a v1 hierarchy, its v1 cpu-controller id too: on a host
/// with both, the v1 id (hybrid hosts put pods only there). Reading both would read the same waits
/// twice, with a syscall each. A task outside its workload's v1 cpu group (a move that failed
/// half-way) is not read: the v1 cpu controller does not count it as the workload's either.
fn read_key(layout: &Layout, group: &Target) -> Option<CgroupKey> {
    let id_in = |v1_cpu: bool| {
        layout
            .roots
            .iter()
            .filter(|r| match r.version() {
                Version::V1 => v1_cpu && r.hierarchy.has("cpu"),
                Version::V2 => !v1_cpu,
            })
            .find_map(|r| cgroup_id(&r.target_dir(group)))
    };
    pick_key(id_in(true), || id_in(false))
}

/// See [`read_key`]: the v1 cpu id where there is one, else the v2 id (looked up only then).
/// Inode numbers of two hierarchies are never compared: each numbers its own.
fn pick_key(v1_cpu: Option<u64>, v2: impl FnOnce() -> Option<u64>) -> Option<CgroupKey> {
    match v1_cpu {
        Some(id) => Some(CgroupKey {
            id,
            kind: IdKind::V1Cpu,
        }),
        None => v2().map(|id| CgroupKey {
            id,
            kind: IdKind::V2,
        }),
    }
}

/// Takes the deltas of ids read for the first time out of a read: they are baselines.
fn drop_first_reads(deltas: &mut tidal_bpf::Deltas, fresh: &mut HashSet<CgroupKey>) {
    for k in fresh.drain() {
        deltas.remove(&k);
    }
}

/// A workload's run-queue reading from its waits: p99 against the threshold, with how far the
/// count over it exceeds p99's allowance.
fn signal_of(name: &str, acc: &Hist, threshold_s: f64) -> Option<Signal> {
    let observed = acc.quantile_ns(0.99)? / 1e9;
    Some(Signal {
        kind: SignalKind::RunqLatency,
        workload: name.to_string(),
        what: "run-queue p99".into(),
        observed,
        target: threshold_s,
        slack: Signal::slack_of(observed, threshold_s),
        age_ms: None,
        excess_z: Signal::excess_z(
            acc.count_above_ns(threshold_s * 1e9),
            acc.total() as f64,
            0.99,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits(n: u64) -> Hist {
        Hist {
            count: n,
            ..Hist::default()
        }
    }

    #[test]
    fn an_ids_first_read_is_its_baseline_and_the_next_is_a_reading() {
        let key = |id| CgroupKey {
            id,
            kind: IdKind::V1Cpu,
        };
        let read = || -> tidal_bpf::Deltas { [(key(1), waits(7)), (key(2), waits(3))].into() };
        let mut fresh: HashSet<CgroupKey> = [key(2), key(3)].into();
        let mut d = read();
        drop_first_reads(&mut d, &mut fresh);
        assert_eq!(d.keys().copied().collect::<Vec<_>>(), vec![key(1)]);
        assert!(fresh.is_empty());
        let mut d = read();
        drop_first_reads(&mut d, &mut fresh);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn a_workload_is_read_under_one_id_the_one_its_waits_are_added_under() {
        let key = |id, kind| Some(CgroupKey { id, kind });
        // Hybrid: both ids; the v1 one.
        assert_eq!(pick_key(Some(9), || Some(5)), key(9, IdKind::V1Cpu));
        // A pod only in v1.
        assert_eq!(pick_key(Some(9), || None), key(9, IdKind::V1Cpu));
        // Pure v2, or no cpu controller in v1.
        assert_eq!(pick_key(None, || Some(5)), key(5, IdKind::V2));
        // The same inode number in both hierarchies is two cgroups: still the v1 one.
        assert_eq!(pick_key(Some(7), || Some(7)), key(7, IdKind::V1Cpu));
        assert_eq!(pick_key(None, || None), None);
        // The v2 id is not looked up where there is a v1 one.
        assert_eq!(
            pick_key(Some(9), || panic!("v2 looked up")),
            key(9, IdKind::V1Cpu)
        );
    }

    #[test]
    fn short_reads_are_carried_until_they_make_a_reading_and_no_longer() {
        let mut p = HashMap::new();
        // 8 + 8 waits: short twice, a reading of 24 at the third.
        assert!(carry(&mut p, "web", &waits(8), 20).is_none());
        assert!(carry(&mut p, "web", &waits(8), 20).is_none());
        assert_eq!(
            carry(&mut p, "web", &waits(8), 20).map(|h| h.count),
            Some(24)
        );
        // The carry was spent.
        assert!(p.is_empty());
        // A trickle is carried CARRY_READS times, then dropped.
        for _ in 0..=CARRY_READS {
            assert!(carry(&mut p, "db", &waits(1), 20).is_none());
        }
        assert!(p.is_empty(), "{:?}", p.keys());
        // A full read is a reading at once.
        assert_eq!(
            carry(&mut p, "db", &waits(20), 20).map(|h| h.count),
            Some(20)
        );
    }
}
