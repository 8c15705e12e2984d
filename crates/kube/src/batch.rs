//! Batch resources: how much CPU and memory the node can lend to offline (batch) work, in
//! Koordinator's shape:
//!
//! `batch = capacity − safety margin − max(system used, system reserved) − Σ online used (peak)`
//!
//! where system used is what runs outside pods, system reserved is capacity less allocatable, and
//! online usage is its peak over a recent window, not an instant. The published value falls at once
//! and rises at most a step per interval; changes under a threshold are not published; a missing
//! reading keeps the last value (it never drops to 0 because one sample was missing). Pure: readings
//! in, values out.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use tidal_model::Snapshot;
pub use tidal_policy::kubernetes::BatchConfig;

/// One set of inputs, each of which is also a metric and shown by `tidal status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub capacity_cpus: f64,
    pub capacity_bytes: f64,
    pub reserved_cpus: f64,
    pub reserved_bytes: f64,
    pub node_used_cpus: f64,
    pub node_used_bytes: f64,
    /// All pods' usage (system used = node used − this).
    pub pods_used_cpus: f64,
    pub pods_used_bytes: f64,
    /// Online pods' usage now, and its peak over the window.
    pub online_used_cpus: f64,
    pub online_used_bytes: f64,
    pub online_peak_cpus: f64,
    pub online_peak_bytes: f64,
}

/// What is lendable: `cpu_milli` (milli-cores) and `memory_bytes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub cpu_milli: u64,
    pub memory_bytes: u64,
}

/// The formula with its numbers, as `tidal status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchView {
    pub inputs: Inputs,
    /// The formula's value now.
    pub computed: Batch,
    /// What is published (after falling fast and rising slowly).
    pub published: Option<Batch>,
    pub formula: String,
}

/// The formula on one set of inputs (clamped at 0).
pub fn formula(i: &Inputs, cfg: &BatchConfig) -> Batch {
    let margin = cfg.safety_margin_percent / 100.0;
    let sys_cpu = (i.node_used_cpus - i.pods_used_cpus).max(0.0);
    let sys_mem = (i.node_used_bytes - i.pods_used_bytes).max(0.0);
    let cpu = i.capacity_cpus * (1.0 - margin) - sys_cpu.max(i.reserved_cpus) - i.online_peak_cpus;
    let mem =
        i.capacity_bytes * (1.0 - margin) - sys_mem.max(i.reserved_bytes) - i.online_peak_bytes;
    Batch {
        cpu_milli: (cpu.max(0.0) * 1000.0).floor() as u64,
        memory_bytes: mem.max(0.0).floor() as u64,
    }
}

/// Slots the peak window is kept in, at most.
const WINDOW_SLOTS: u64 = 512;

/// Keeps the online peak window and the published value.
#[derive(Debug, Clone, Default)]
pub struct BatchCalc {
    window: VecDeque<(u64, f64, f64)>,
    published: Option<Batch>,
    last_rise_ms: Option<u64>,
    /// The first inputs taken: rises wait until the peak window has filled since.
    first_ms: Option<u64>,
    /// What the Node showed when first read was taken as published (once).
    seeded: bool,
    /// The next value is published even if it changed little (the last publication failed).
    force: bool,
    pub view: BatchView,
}

/// Node facts the snapshot lacks: capacity and allocatable from the Node object.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeCapacity {
    pub capacity_cpus: f64,
    pub capacity_bytes: f64,
    pub allocatable_cpus: f64,
    pub allocatable_bytes: f64,
    /// The batch resources the Node shows now (a previous agent's), if any.
    pub published: Option<Batch>,
}

impl BatchCalc {
    /// The inputs from a snapshot with full per-workload readings; None if any is missing.
    pub fn inputs(
        &mut self,
        snap: &Snapshot,
        node: &NodeCapacity,
        window_ms: u64,
    ) -> Option<Inputs> {
        let node_used_cpus = snap.node_busy_cpus?;
        let node_used_bytes = snap
            .mem_total_bytes?
            .checked_sub(snap.mem_available_bytes?)? as f64;
        let (mut pods_cpu, mut pods_mem, mut on_cpu, mut on_mem) = (0.0, 0.0, 0.0, 0.0);
        for w in snap.workloads.iter().filter(|w| w.pod.is_some()) {
            let (c, m) = (w.cpu_usage_cpus?, w.memory_bytes? as f64);
            pods_cpu += c;
            pods_mem += m;
            if w.level.is_online() {
                on_cpu += c;
                on_mem += m;
            }
        }
        let now = snap.now_ms;
        // Readings share a slot of 1/WINDOW_SLOTS of the window (its peaks kept): a long window
        // read often stays a few hundred entries.
        let slot = (window_ms / WINDOW_SLOTS).max(1);
        match self.window.back_mut() {
            // Stamped with its last reading: a peak leaves the window no earlier than it should.
            Some((t, c, m)) if now / slot == *t / slot => {
                (*t, *c, *m) = (now, c.max(on_cpu), m.max(on_mem));
            }
            _ => self.window.push_back((now, on_cpu, on_mem)),
        }
        while self
            .window
            .front()
            .is_some_and(|(t, _, _)| now.saturating_sub(*t) > window_ms)
        {
            self.window.pop_front();
        }
        let peak_cpu = self.window.iter().map(|x| x.1).fold(0.0, f64::max);
        let peak_mem = self.window.iter().map(|x| x.2).fold(0.0, f64::max);
        Some(Inputs {
            capacity_cpus: node.capacity_cpus,
            capacity_bytes: node.capacity_bytes,
            reserved_cpus: (node.capacity_cpus - node.allocatable_cpus).max(0.0),
            reserved_bytes: (node.capacity_bytes - node.allocatable_bytes).max(0.0),
            node_used_cpus,
            node_used_bytes,
            pods_used_cpus: pods_cpu,
            pods_used_bytes: pods_mem,
            online_used_cpus: on_cpu,
            online_used_bytes: on_mem,
            online_peak_cpus: peak_cpu,
            online_peak_bytes: peak_mem,
        })
    }

    /// Takes new inputs (None: a reading was missing) at `now_ms`; returns a value to publish if one
    /// is due.
    pub fn step(
        &mut self,
        now_ms: u64,
        inputs: Option<Inputs>,
        cfg: &BatchConfig,
    ) -> Option<Batch> {
        let i = inputs?;
        let first = *self.first_ms.get_or_insert(now_ms);
        let computed = formula(&i, cfg);
        self.view.inputs = i;
        self.view.computed = computed;
        self.view.formula = format!(
            "batch-cpu = {:.2} × (1 − {}%) − max(system used {:.2}, reserved {:.2}) − online peak {:.2} = {} m; \
             batch-memory = {} MiB × (1 − {}%) − max({} MiB, {} MiB) − {} MiB = {} MiB",
            i.capacity_cpus,
            cfg.safety_margin_percent,
            (i.node_used_cpus - i.pods_used_cpus).max(0.0),
            i.reserved_cpus,
            i.online_peak_cpus,
            computed.cpu_milli,
            (i.capacity_bytes as u64) >> 20,
            cfg.safety_margin_percent,
            ((i.node_used_bytes - i.pods_used_bytes).max(0.0) as u64) >> 20,
            (i.reserved_bytes as u64) >> 20,
            (i.online_peak_bytes as u64) >> 20,
            computed.memory_bytes >> 20
        );
        let next = match self.published {
            None => computed,
            Some(p) => {
                // Not before the peak window has filled: an agent started in an online trough
                // would lend what the online peak it has not seen needs.
                let may_rise = now_ms.saturating_sub(first) >= cfg.peak_window.0
                    && self
                        .last_rise_ms
                        .is_none_or(|t| now_ms.saturating_sub(t) >= cfg.rise_interval.0);
                let step_cpu = (i.capacity_cpus * 1000.0 * cfg.rise_step_percent / 100.0) as u64;
                let step_mem = (i.capacity_bytes * cfg.rise_step_percent / 100.0) as u64;
                let rise = |cur: u64, new: u64, step: u64| {
                    if new <= cur {
                        new
                    } else if may_rise {
                        new.min(cur.saturating_add(step))
                    } else {
                        cur
                    }
                };
                Batch {
                    cpu_milli: rise(p.cpu_milli, computed.cpu_milli, step_cpu),
                    memory_bytes: rise(p.memory_bytes, computed.memory_bytes, step_mem),
                }
            }
        };
        let changed = |a: u64, b: u64| {
            let base = a.max(1) as f64;
            (a.abs_diff(b) as f64) / base * 100.0 >= cfg.min_change_percent
        };
        let due = std::mem::take(&mut self.force)
            || match self.published {
                None => true,
                Some(p) => {
                    changed(p.cpu_milli, next.cpu_milli)
                        || changed(p.memory_bytes, next.memory_bytes)
                }
            };
        if !due {
            return None;
        }
        if self
            .published
            .is_some_and(|p| next.cpu_milli > p.cpu_milli || next.memory_bytes > p.memory_bytes)
        {
            self.last_rise_ms = Some(now_ms);
        }
        self.published = Some(next);
        self.view.published = Some(next);
        Some(next)
    }

    /// Publish the next value even if it changed little (the last publication failed); its rise
    /// is still bounded from the value last handed out.
    pub fn forget_published(&mut self) {
        self.force = true;
    }

    /// Takes what the Node shows (a previous agent's value) as published, once, before anything
    /// was handed out: a restarted agent then falls at once and rises by steps from it, instead of
    /// publishing its first reading whole.
    pub fn seed(&mut self, on_node: Option<Batch>) {
        if self.seeded || self.published.is_some() {
            return;
        }
        self.seeded = true;
        self.published = on_node;
    }

    /// What was last handed out for publishing.
    pub fn published(&self) -> Option<Batch> {
        self.published
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(online_peak: f64) -> Inputs {
        Inputs {
            capacity_cpus: 8.0,
            capacity_bytes: 16e9,
            reserved_cpus: 0.5,
            reserved_bytes: 1e9,
            node_used_cpus: 3.0,
            node_used_bytes: 6e9,
            pods_used_cpus: 2.5,
            pods_used_bytes: 5e9,
            online_used_cpus: online_peak,
            online_used_bytes: 2e9,
            online_peak_cpus: online_peak,
            online_peak_bytes: 2e9,
        }
    }

    /// A snapshot with one online pod using `cpu` CPUs, at `now_ms`.
    fn snap(now_ms: u64, cpu: f64) -> Snapshot {
        use tidal_model::{ForeignGroup, PodInfo, PodRef, QosClass, QosLevel, Target};
        let g = ForeignGroup::new("kubepods/podweb").unwrap();
        let mut w =
            tidal_model::WorkloadSnapshot::unread(Target::Foreign(g), QosLevel::Online, "ns/web");
        w.cpu_usage_cpus = Some(cpu);
        w.memory_bytes = Some(1 << 30);
        w.pod = Some(PodInfo {
            pod: PodRef {
                namespace: "ns".into(),
                name: "web".into(),
                uid: "u".into(),
            },
            qos_class: QosClass::Burstable,
            containers: vec![],
            liveness_probe: false,
            tier_idle: false,
            cpu_limit_milli: None,
            terminating: false,
            node_daemon: false,
            eviction_refused: false,
            memory_request: None,
            ip: None,
            slo: None,
        });
        Snapshot {
            now_ms,
            node_busy_cpus: Some(1.0),
            mem_total_bytes: Some(16 << 30),
            mem_available_bytes: Some(8 << 30),
            workloads: vec![w],
            ..Default::default()
        }
    }

    #[test]
    fn a_day_long_peak_window_read_every_10_ms_stays_small_and_keeps_its_peak() {
        let node = NodeCapacity {
            capacity_cpus: 8.0,
            capacity_bytes: 16e9,
            allocatable_cpus: 7.5,
            allocatable_bytes: 15e9,
            published: None,
        };
        let day = 86_400_000;
        let mut c = BatchCalc::default();
        let mut peak = None;
        // Two days of readings 10 ms apart, thinned to every 997th (the window's bookkeeping is
        // what is tested, not 17 million readings); one spike to 6 CPUs at 1.5 days.
        for i in 0..(2 * day / 10 / 997) {
            let now = i * 10 * 997;
            let cpu = if (3 * day / 2..3 * day / 2 + 9_970).contains(&now) {
                6.0
            } else {
                1.0
            };
            peak = c
                .inputs(&snap(now, cpu), &node, day)
                .map(|x| x.online_peak_cpus);
            assert!(
                c.window.len() <= WINDOW_SLOTS as usize + 1,
                "{}",
                c.window.len()
            );
        }
        assert_eq!(peak, Some(6.0), "the spike half a day ago is the peak");
        // A day after the spike it has left the window.
        let later = 3 * day / 2 + day + 200_000;
        let p = c
            .inputs(&snap(later, 1.0), &node, day)
            .map(|x| x.online_peak_cpus);
        assert_eq!(p, Some(1.0));
    }

    #[test]
    fn a_restarted_agent_rises_by_steps_from_what_the_node_shows_after_its_window_fills() {
        let cfg = BatchConfig::default();
        let on_node = Batch {
            cpu_milli: 2000,
            memory_bytes: 11_400_000_000,
        };
        let mut c = BatchCalc::default();
        c.seed(Some(on_node));
        // An online trough: the formula says 4.7 CPUs, but the window has not filled.
        assert_eq!(c.step(0, Some(inputs(2.0)), &cfg), None, "no rise yet");
        assert_eq!(
            c.step(100_000, Some(inputs(2.0)), &cfg),
            None,
            "still filling"
        );
        // Filled: one step of 10% of 8 CPUs.
        assert_eq!(
            c.step(cfg.peak_window.0, Some(inputs(2.0)), &cfg)
                .map(|b| b.cpu_milli),
            Some(2800)
        );
        // A fall is published at once, filled or not.
        let mut d = BatchCalc::default();
        d.seed(Some(Batch {
            cpu_milli: 6000,
            memory_bytes: 11_400_000_000,
        }));
        assert_eq!(
            d.step(0, Some(inputs(2.0)), &cfg).map(|b| b.cpu_milli),
            Some(4700)
        );
        // Seeded once: a later value on the node is not taken.
        d.seed(Some(on_node));
        assert_eq!(d.published().map(|b| b.cpu_milli), Some(4700));
        // A failed publication is published again, its rise still bounded.
        d.forget_published();
        assert_eq!(
            d.step(1_000, Some(inputs(2.0)), &cfg).map(|b| b.cpu_milli),
            Some(4700),
            "the same value again after a failure"
        );
    }

    #[test]
    fn the_formula() {
        let cfg = BatchConfig::default();
        // 8 × 0.9 − max(0.5, 0.5) − 2 = 4.7 CPUs; 16e9 × 0.9 − max(1e9, 1e9) − 2e9 = 11.4e9 bytes.
        let b = formula(&inputs(2.0), &cfg);
        assert_eq!(b.cpu_milli, 4700);
        assert_eq!(b.memory_bytes, 11_400_000_000);
        // Never below 0.
        assert_eq!(formula(&inputs(100.0), &cfg).cpu_milli, 0);
    }

    #[test]
    fn falls_fast_rises_slowly_skips_small_changes_and_holds_on_missing_data() {
        // A window of a second: rises are judged here, not the window's filling.
        let cfg = BatchConfig {
            peak_window: tidal_policy::config::Millis(1_000),
            ..BatchConfig::default()
        };
        let mut c = BatchCalc::default();
        assert_eq!(
            c.step(0, Some(inputs(2.0)), &cfg).map(|b| b.cpu_milli),
            Some(4700)
        );
        // Online jumps: the value falls at once.
        assert_eq!(
            c.step(1_000, Some(inputs(4.0)), &cfg).map(|b| b.cpu_milli),
            Some(2700)
        );
        // Online falls back: the value rises by at most 10% of capacity (800 m) per interval.
        assert_eq!(
            c.step(2_000, Some(inputs(2.0)), &cfg).map(|b| b.cpu_milli),
            Some(3500)
        );
        assert_eq!(
            c.step(3_000, Some(inputs(2.0)), &cfg),
            None,
            "one rise per interval"
        );
        assert_eq!(
            c.step(62_000, Some(inputs(2.0)), &cfg).map(|b| b.cpu_milli),
            Some(4300)
        );
        // A change under 5% is not published.
        assert_eq!(
            c.step(130_000, Some(inputs(2.0)), &cfg)
                .map(|b| b.cpu_milli),
            Some(4700)
        );
        assert_eq!(c.step(131_000, Some(inputs(2.05)), &cfg), None);
        // A missing reading keeps the last value: nothing published, certainly not 0.
        assert_eq!(c.step(132_000, None, &cfg), None);
        assert_eq!(c.published().map(|b| b.cpu_milli), Some(4700));
        assert!(c.view.formula.contains("online peak"));
    }
}
