//! Run-queue latency as a signal: each tick the BPF program's per-cgroup histograms give every
//! online workload's waits since the last tick (its id: the inode of its group's directory in
//! the v1 cpu hierarchy where there is one, else in the v2 hierarchy; see [`read_key`]). The
//! program records only those ids (its watch map, set with each workload list). A
//! workload with enough samples gives a `SignalKind::RunqLatency` reading of its p99 against
//! `bpf.runq_p99_threshold`. An id's first read is its baseline, and the first window opens where
//! the agent's first tick ends ([`Runq::restart`]): the waits its own start causes are not
//! interference. Without BPF the agent says once why and runs on its other signals.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tidal_bpf::{cgroup_id, CgroupKey, Collector, Hist, IdKind, Scope};
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
    /// Each online workload's id as last found, and when every one was last looked up: ids are
    /// looked up (a `statx` each) for workloads without one, and for every one each
    /// [`LOOKUP_ALL_EVERY`], which finds a group removed and made again under the same path.
    known: HashMap<Target, CgroupKey>,
    looked_up_all: Option<Instant>,
    /// Why the program's watch map could not be set at the last list, once said (tried again
    /// with each list).
    watch_failed: Option<String>,
    /// The kernel refused batch reads (said once).
    said_unbatched: bool,
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

/// At least this often, every online workload's id is looked up again.
const LOOKUP_ALL_EVERY: Duration = Duration::from_secs(10);

/// The online workloads' ids by id, looked up with `lookup` where `known` has none (or for every
/// one when `all`); `known` is left holding this list's.
fn online_ids(
    known: &mut HashMap<Target, CgroupKey>,
    all: bool,
    workloads: &[WorkloadSnapshot],
    mut lookup: impl FnMut(&Target) -> Option<CgroupKey>,
) -> HashMap<CgroupKey, (String, QosLevel)> {
    let mut last = std::mem::take(known);
    if all {
        last.clear();
    }
    let mut ids = HashMap::new();
    for w in workloads.iter().filter(|w| w.level.is_online()) {
        if let Some(key) = last.remove(&w.group).or_else(|| lookup(&w.group)) {
            ids.insert(key, (w.group.to_string(), w.level));
            known.insert(w.group.clone(), key);
        }
    }
    ids
}

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
            match Collector::start_sampled(sample, Scope::Watched) {
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
            known: HashMap::new(),
            looked_up_all: None,
            watch_failed: None,
            said_unbatched: false,
            pending: HashMap::new(),
            tick_waits: HashMap::new(),
            fresh: HashSet::new(),
        }
    }

    pub fn active(&self) -> bool {
        self.collector.is_some()
    }

    /// Learns the ids of the online workloads' groups (each time the workload list is read).
    pub fn map(&mut self, layout: &Layout, workloads: &[WorkloadSnapshot]) {
        if self.collector.is_none() {
            return;
        }
        let all = self
            .looked_up_all
            .is_none_or(|t| t.elapsed() >= LOOKUP_ALL_EVERY);
        if all {
            self.looked_up_all = Some(Instant::now());
        }
        let before = std::mem::replace(
            &mut self.ids,
            online_ids(&mut self.known, all, workloads, |t| read_key(layout, t)),
        );
        // The program records these workloads' waits and no others. A failure (the map full)
        // leaves those already watched read, and is tried again with the next list.
        if let Some(c) = self.collector.as_mut() {
            match c.watch(self.ids.keys()) {
                Ok(()) => {
                    if self.watch_failed.take().is_some() {
                        info!("run-queue latency: every online workload is watched again");
                    }
                }
                Err(e) => {
                    if self.watch_failed.is_none() {
                        warn!("run-queue latency: {e}; the workloads not watched give no reading (tried again with each workload list)");
                    }
                    self.watch_failed = Some(e);
                    // Not watched, not read: once watched, its first read is its baseline.
                    self.ids.retain(|k, _| c.is_watched(k));
                }
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
        let mut deltas = match c.read_watched() {
            Ok(d) => d,
            Err(e) => {
                self.off(e);
                return false;
            }
        };
        if !self.said_unbatched {
            if let Some(why) = c.unbatched() {
                info!("run-queue latency: one lookup per online workload ({why})");
                self.said_unbatched = true;
            }
        }
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

    /// Turns the reader off for good, saying why.
    fn off(&mut self, why: String) {
        warn!("run-queue latency: {why}; off from now on");
        self.unavailable = Some(why);
        self.collector = None;
        self.tick_waits.clear();
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

/// The one id a workload's waits are read under, the one the program, watching, adds them under:
/// where the cpu controller is on a v1 hierarchy, the v1 cpu id (hybrid hosts put pods only
/// there), else the v2 id. None while the workload's directory there is missing (looked up again
/// with the next list). A task outside its workload's v1 cpu group (a move that failed half-way) is
/// not read: the v1 cpu controller does not count it as the workload's either.
fn read_key(layout: &Layout, group: &Target) -> Option<CgroupKey> {
    let id_in = |version: Version| {
        layout
            .roots
            .iter()
            .filter(|r| match r.version() {
                Version::V1 => version == Version::V1 && r.hierarchy.has("cpu"),
                Version::V2 => version == Version::V2,
            })
            .find_map(|r| cgroup_id(&r.target_dir(group)))
    };
    pick_key(
        layout.hierarchies.v1("cpu").is_some(),
        || id_in(Version::V1),
        || id_in(Version::V2),
    )
}

/// See [`read_key`]: only the v1 cpu id where the host has a v1 cpu hierarchy, else only the v2
/// id. Inode numbers of two hierarchies are never compared: each numbers its own.
fn pick_key(
    v1_cpu_host: bool,
    v1_cpu: impl FnOnce() -> Option<u64>,
    v2: impl FnOnce() -> Option<u64>,
) -> Option<CgroupKey> {
    if v1_cpu_host {
        v1_cpu().map(|id| CgroupKey {
            id,
            kind: IdKind::V1Cpu,
        })
    } else {
        v2().map(|id| CgroupKey {
            id,
            kind: IdKind::V2,
        })
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
        // Hybrid: the v1 one; the v2 id is not looked up.
        assert_eq!(
            pick_key(true, || Some(9), || panic!("v2 looked up")),
            key(9, IdKind::V1Cpu)
        );
        // Its v1 cpu directory missing (not made yet, a move half done): none, not the v2 id,
        // which the program does not add under there.
        assert_eq!(pick_key(true, || None, || Some(5)), None);
        // Pure v2, or no cpu controller in v1.
        assert_eq!(
            pick_key(false, || panic!("v1 looked up"), || Some(5)),
            key(5, IdKind::V2)
        );
        assert_eq!(pick_key(false, || None, || None), None);
        // The same inode number in both hierarchies is two cgroups: still the v1 one.
        assert_eq!(
            pick_key(true, || Some(7), || Some(7)),
            key(7, IdKind::V1Cpu)
        );
    }

    #[test]
    fn ids_are_looked_up_for_new_workloads_and_for_all_when_asked() {
        let wl = |name: &str, level: QosLevel| {
            let g = level.group_path().join(name).unwrap();
            WorkloadSnapshot::unread(Target::Tidal(g), level, name)
        };
        let key = |id| CgroupKey {
            id,
            kind: IdKind::V2,
        };
        let web = wl("web", QosLevel::Online);
        let db = wl("db", QosLevel::OnlineHigh);
        let batch = wl("batch", QosLevel::Offline);
        let mut known = HashMap::new();
        let mut asked = Vec::new();
        let mut next = 10;
        let mut map = |known: &mut HashMap<Target, CgroupKey>, all, wls: &[WorkloadSnapshot]| {
            online_ids(known, all, wls, |t| {
                asked.push(t.to_string());
                next += 1;
                // db's group cannot be looked up the first time (not made yet).
                (next != 12).then_some(key(next))
            })
        };
        let ids = map(&mut known, false, &[web.clone(), db.clone(), batch.clone()]);
        assert_eq!(ids.len(), 1);
        assert_eq!(
            ids.get(&key(11)).map(|(n, _)| n.as_str()),
            Some("online/web")
        );
        // Known ids are kept; the failed one is tried again; offline is never looked up.
        let ids = map(&mut known, false, &[web.clone(), db.clone(), batch.clone()]);
        assert_eq!(ids.len(), 2);
        assert!(ids.contains_key(&key(11)) && ids.contains_key(&key(13)));
        // A workload gone is forgotten: back, it is looked up again.
        map(&mut known, false, std::slice::from_ref(&db));
        let ids = map(&mut known, false, &[web.clone(), db.clone()]);
        assert!(ids.contains_key(&key(14)) && ids.contains_key(&key(13)));
        // Every one when asked (a group made again under its path has a new id).
        let ids = map(&mut known, true, &[web.clone(), db.clone()]);
        assert!(ids.contains_key(&key(15)) && ids.contains_key(&key(16)));
        let n = |name: &str| asked.iter().filter(|a| a.ends_with(name)).count();
        assert_eq!((n("web"), n("db"), n("batch")), (3, 3, 0), "{asked:?}");
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
