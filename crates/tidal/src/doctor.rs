//! `tidal doctor`: what this node can do, and what tidal does without each missing feature.

use crate::cli::{DoctorArgs, Global};
use crate::exit::fail;
use serde::Serialize;
use std::path::{Path, PathBuf};
use tidal_cgroupfs::caps::{controller_reach, kernel_release, knob_supported, preemption, Reach};
use tidal_cgroupfs::{detect_capabilities, Layout, Version};
use tidal_kube::{cpu_manager, paths, paths::Driver};
use tidal_model::{Knob, KnobValue, QosClass, Target};
use tidal_policy::kubernetes::{DriverSetting, KubernetesConfig};

#[derive(Debug, Serialize)]
pub struct Row {
    pub feature: String,
    pub available: bool,
    pub detail: String,
    /// What tidal does when the feature is missing.
    pub without: String,
}

fn row(feature: &str, available: bool, detail: impl Into<String>, without: &str) -> Row {
    Row {
        feature: feature.to_string(),
        available,
        detail: detail.into(),
        without: if available {
            String::new()
        } else {
            without.to_string()
        },
    }
}

/// Creates a one-entry BPF array map and closes it: proof that BPF programs' maps can be made here.
fn bpf_loadable() -> Result<(), String> {
    #[repr(C)]
    struct MapAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    let attr = MapAttr {
        map_type: 2, // BPF_MAP_TYPE_ARRAY
        key_size: 4,
        value_size: 8,
        max_entries: 1,
        map_flags: 0,
    };
    // SAFETY: attr is a valid, fully initialised prefix of `union bpf_attr` for BPF_MAP_CREATE (0),
    // and its size is passed alongside.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0,
            &attr as *const MapAttr,
            std::mem::size_of::<MapAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: fd was just returned by the kernel and is owned here.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

fn mounted(fstype: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| t.lines().any(|l| l.contains(&format!(" - {fstype} "))))
        .unwrap_or(false)
}

/// Where online memory protection stops above the tidal root (v2): the first ancestor with
/// neither memory.min nor memory.low, since protection holds only as far as every ancestor is
/// protected. None when every ancestor up to the hierarchy's root has some, or on v1.
pub fn protection_gap(layout: &Layout, caps: &tidal_model::Capabilities) -> Option<PathBuf> {
    let r = layout
        .owner("memory")
        .filter(|_| caps.has(Knob::MemoryLow))?;
    let mut d = r.root_dir.parent().map(Path::to_path_buf);
    while let Some(dir) = d {
        if dir == r.hierarchy.mount || !dir.starts_with(&r.hierarchy.mount) {
            return None;
        }
        let val = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .ok()
                .map(|s| s.trim().to_string())
        };
        if val("memory.low").as_deref() == Some("0") && val("memory.min").as_deref() == Some("0") {
            return Some(dir);
        }
        d = dir.parent().map(Path::to_path_buf);
    }
    None
}

/// Memory: protection up the chain, the offline ceiling, OOM ordering.
fn memory_rows(layout: &Layout, caps: &tidal_model::Capabilities, out: &mut Vec<Row>) {
    let v2 = caps.has(Knob::MemoryLow);
    let gap = protection_gap(layout, caps);
    out.push(row(
        "memory protection (online)",
        v2 && gap.is_none(),
        match (&gap, v2) {
            (_, false) => "no memory.low/memory.min (cgroup v1): offline gets a soft limit of 0 and a ceiling instead".to_string(),
            (Some(g), true) => format!(
                "memory.low/min set up to the tidal root, but {} has none, so the protection does not hold beyond it (on systemd: MemoryLow= on that unit)",
                g.display()
            ),
            (None, true) => "memory.min/memory.low from declared requests, summed up the chain to the tidal root".to_string(),
        },
        "online memory is not protected from reclaim; the offline ceiling and eviction still act",
    ));
    out.push(row(
        "offline memory ceiling",
        caps.has(Knob::MemoryHigh) || caps.has(Knob::MemoryMax),
        if caps.has(Knob::MemoryHigh) {
            "memory.high on the offline parent (throttles and reclaims, never kills)"
        } else {
            "memory.limit_in_bytes on the offline parent (v1: reclaims, then OOM-kills inside offline only)"
        },
        "no ceiling: eviction alone holds offline back",
    ));
    // Lowering oom_score_adj needs CAP_SYS_RESOURCE (bit 24 of the effective set).
    let sys_resource = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 24) != 0);
    out.push(row(
        "OOM ordering",
        sys_resource,
        "oom_score_adj: offline-low 1000, offline 999, online levels lower (pods need the host PID namespace)",
        "no CAP_SYS_RESOURCE: offline still gets 999/1000, but online levels keep the value they inherit",
    ));
}

/// Whether the level IO weights act here and how, after the real devices and their schedulers
/// (what `tidal doctor` and `tidal status` say).
pub fn io_weights(layout: &Layout, caps: &tidal_model::Capabilities) -> (bool, String) {
    let devs = tidal_cgroupfs::blockdev::real_devices(Path::new("/sys/block"));
    let bfq: Vec<String> = devs
        .iter()
        .filter(|d| d.scheduler.as_deref() == Some("bfq"))
        .map(|d| d.name.clone())
        .collect();
    let iocost = layout
        .hierarchies
        .unified()
        .and_then(|h| std::fs::read_to_string(h.mount.join("io.cost.qos")).ok())
        .is_some_and(|t| t.lines().any(|l| l.contains("enable=1")));
    let list = devs
        .iter()
        .map(|d| {
            format!(
                "{} ({}, {})",
                d.name,
                d.dev,
                d.scheduler.as_deref().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    // Where the io controller is (a hybrid host's blkio is v1).
    let v1 = layout.knob_target(Knob::IoWeight).map_or(
        layout.hierarchies.mode() == tidal_cgroupfs::CgroupMode::V1,
        |(r, _)| r.version() == Version::V1,
    );
    let (ok, how) = io_weight_in_force(v1, caps, &bfq, iocost);
    (
        ok,
        format!(
            "devices: {}; {how}",
            if list.is_empty() {
                "none found".into()
            } else {
                list
            }
        ),
    )
}

/// IO: which devices are real, their schedulers, blk-iocost, writeback isolation.
fn io_rows(layout: &Layout, caps: &tidal_model::Capabilities, out: &mut Vec<Row>) {
    let (ok, detail) = io_weights(layout, caps);
    out.push(row(
        "IO weight in force",
        ok,
        detail,
        "level IO weights are written but do nothing: use the BFQ scheduler, or enable blk-iocost (node-wide: `io.iocost: true` in the config has tidal do it on cgroup v2)",
    ));
    // Cgroup writeback needs memory and io on the same v2 hierarchy.
    let on_v2 = |c: &str| {
        layout
            .owner(c)
            .is_some_and(|r| r.version() == tidal_cgroupfs::Version::V2)
    };
    let v2 = layout.hierarchies.mode() == tidal_cgroupfs::CgroupMode::V2;
    out.push(row(
        "buffered-write isolation",
        v2 && on_v2("memory") && on_v2("io"),
        "cgroup v2 writeback: dirty pages are charged to the writer's group",
        if v2 {
            "cgroup v2 without both the memory and io controllers on tidal's groups: buffered writes are not charged to the writer's group, so IO weights and limits miss them"
        } else {
            "cgroup v1 and hybrid: buffered writes are flushed by the kernel's writeback threads, outside any group, so IO weights and limits miss them"
        },
    ));
}

/// Whether the level IO weights act, and how: BFQ reads `blkio.bfq.weight` on v1 and
/// `io.bfq.weight` on v2; blk-iocost (v2 only) reads `io.weight`.
fn io_weight_in_force(
    v1: bool,
    caps: &tidal_model::Capabilities,
    bfq: &[String],
    iocost: bool,
) -> (bool, String) {
    let bfq_file = if v1 {
        caps.has(Knob::IoWeight)
    } else {
        caps.has(Knob::IoBfqWeight)
    };
    let file = if v1 {
        "blkio.bfq.weight"
    } else {
        "io.bfq.weight"
    };
    let by_iocost = !v1 && iocost && caps.has(Knob::IoWeight);
    let by_bfq = !bfq.is_empty() && bfq_file;
    let mut how = Vec::new();
    if by_iocost {
        how.push("blk-iocost enabled (io.cost.qos) reads io.weight".to_string());
    }
    if !bfq.is_empty() {
        how.push(if bfq_file {
            format!("BFQ on {} reads {file}", bfq.join(", "))
        } else {
            format!(
                "BFQ on {} but tidal's groups have no {file}",
                bfq.join(", ")
            )
        });
    }
    if how.is_empty() {
        how.push(if v1 {
            "no device uses BFQ (blk-iocost is v2 only)".to_string()
        } else {
            "no device uses BFQ and blk-iocost is off".to_string()
        });
    }
    (by_iocost || by_bfq, how.join("; "))
}

/// The kubelet's cgroup driver: configured, or detected from its tree.
pub fn kubelet_driver(layout: &Layout, k: &KubernetesConfig) -> Option<Driver> {
    match k.cgroup_driver {
        DriverSetting::Systemd => Some(Driver::Systemd),
        DriverSetting::Cgroupfs => Some(Driver::Cgroupfs),
        DriverSetting::Auto => layout
            .roots
            .iter()
            .find_map(|r| paths::detect_driver(&r.hierarchy.mount, &k.kubelet_cgroup_root)),
    }
}

/// The kubelet's tiers online pods sit under (Guaranteed at the top, Burstable) that carry no
/// memory protection, and how many tiers could be read. Pod memory protection only holds if they
/// are protected too (the kubelet's MemoryQoS feature gate sets memory.min on them); tidal does
/// not write them.
pub fn unprotected_tiers(layout: &Layout, root: &str, d: Driver) -> (usize, Vec<String>) {
    let mut missing = Vec::new();
    let mut read = 0;
    for class in [QosClass::Guaranteed, QosClass::Burstable] {
        let Ok(g) = paths::tier_group(root, d, class) else {
            continue;
        };
        let t = Target::Foreign(g.clone());
        if let (Ok(KnobValue::Bytes(l)), Ok(KnobValue::Bytes(m))) = (
            layout.read_knob(&t, Knob::MemoryLow),
            layout.read_knob(&t, Knob::MemoryMin),
        ) {
            read += 1;
            // None is "max": protected.
            if l.unwrap_or(u64::MAX) == 0 && m.unwrap_or(u64::MAX) == 0 {
                missing.push(g.as_str().to_string());
            }
        }
    }
    (read, missing)
}

/// The kubelet's facts on this node, as pod mode would find them.
fn kubelet_rows(layout: &Layout, k: &KubernetesConfig, out: &mut Vec<Row>) {
    let root = k.kubelet_cgroup_root.clone();
    let driver = kubelet_driver(layout, k);
    out.push(row(
        "kubelet cgroup driver",
        driver.is_some(),
        match driver {
            Some(d) => format!(
                "{d:?} ({}), under {root}",
                if k.cgroup_driver == DriverSetting::Auto {
                    "detected"
                } else {
                    "configured"
                }
            )
            .to_lowercase(),
            None => format!("no kubepods tree under {root}"),
        },
        "local mode only (no Kubernetes pods on this node)",
    ));
    let Some(d) = driver else {
        return;
    };
    let state = std::path::PathBuf::from(&k.cpu_manager_state);
    let (ok, detail) = match cpu_manager::read(&state) {
        Ok(m) if m.is_static() => (
            true,
            format!(
                "static: the kubelet owns container cpusets, so offline pods are confined by a CPU-time cap (cpu.max), not cpusets; exclusive CPUs [{}] never run offline work",
                m.exclusive
            ),
        ),
        Ok(m) if state.exists() => (true, format!("{}: offline pods are confined by cpusets", m.policy)),
        Ok(_) => (true, format!("no state file at {} (policy none assumed): cpusets", state.display())),
        Err(e) => (false, e),
    };
    out.push(row(
        "kubelet CPU manager",
        ok,
        detail,
        "policy none assumed: offline pods confined by cpusets",
    ));
    let (read, missing) = unprotected_tiers(layout, &root, d);
    const NO_QOS: &str = "tidal's memory.low on online pods does not hold beyond the pod: enable the kubelet's MemoryQoS feature gate";
    out.push(if read == 0 {
        row(
            "pod memory protection",
            false,
            "no memory.min/low to read on the kubelet's tiers (cgroup v1, or no kubelet tree at this root)",
            "online pods get no memory protection from tidal on this host",
        )
    } else if missing.is_empty() {
        row(
            "pod memory protection",
            true,
            "the kubelet's tiers carry memory.min/low (MemoryQoS): protection on online pods holds",
            "",
        )
    } else {
        row(
            "pod memory protection",
            false,
            format!("no memory.min/low on the kubelet's tier(s) {}", missing.join(", ")),
            NO_QOS,
        )
    });
    let tier_idle = paths::tier_group(&root, d, QosClass::BestEffort)
        .ok()
        .is_some_and(|t| {
            matches!(
                layout.read_knob(&Target::Foreign(t), Knob::CpuIdle),
                Ok(KnobValue::Bool(true))
            )
        });
    out.push(row(
        "besteffort tier idle (kubelet)",
        tier_idle,
        if tier_idle {
            "the kubelet set cpu.idle=1 on the BestEffort tier: tidal relies on it"
        } else {
            "not set: tidal sets cpu.idle=1 on each offline pod group (never on a tier)"
        },
        "",
    ));
}

pub fn rows(layout: &Layout, k: &KubernetesConfig) -> Vec<Row> {
    let caps = detect_capabilities(layout);
    let mut out = Vec::new();
    out.push(row(
        "kernel",
        true,
        kernel_release().unwrap_or_else(|| "unknown".into()),
        "",
    ));
    out.push(row(
        "cgroup mode",
        true,
        layout.hierarchies.mode().to_string(),
        "",
    ));
    let (model, source) = preemption();
    out.push(row(
        "kernel preemption",
        model
            .as_deref()
            .is_some_and(|m| m.starts_with("full") || m == "lazy"),
        match &model {
            Some(m) => format!("{m} ({source})"),
            None => format!("unknown ({source})"),
        },
        "offline work running inside the kernel (page-cache reads, reclaim, large copies) keeps its CPU \
         until it yields, whatever its priority, and woken online tasks wait behind it: boot with \
         preempt=full (or preempt=lazy, 6.13+) where the kernel is PREEMPT_DYNAMIC",
    ));
    for h in &layout.hierarchies.list {
        let ver = match h.version {
            Version::V1 => "v1",
            Version::V2 => "v2",
        };
        let ctrls = if h.controllers.is_empty() {
            "(no controllers)".to_string()
        } else {
            h.controllers.join(",")
        };
        out.push(row(
            &format!("hierarchy {}", h.name()),
            true,
            format!(
                "{ver} at {} [{ctrls}], tidal process in {}",
                h.mount.display(),
                h.self_path
            ),
            "",
        ));
    }
    // The root tidal will use, and how it comes to exist.
    let root_dir = layout
        .primary()
        .map(|r| r.root_dir.display().to_string())
        .unwrap_or_else(|| "none".into());
    let root_detail = match &layout.scope {
        Some(sc) => format!(
            "{root_dir}: systemd scope {} in {} with Delegate=yes, {}",
            sc.unit,
            sc.slice,
            if layout.root_exists() {
                "running"
            } else {
                "started by the first `tidal run` (systemd removes it when nothing runs in it)"
            }
        ),
        None => format!(
            "{root_dir}{}",
            if layout.root_exists() {
                ""
            } else {
                " (created on first use)"
            }
        ),
    };
    out.push(row("tidal root", true, root_detail, ""));
    let v2 = layout.hierarchies.mode() == tidal_cgroupfs::CgroupMode::V2;
    let ctrls: &[&str] = if v2 {
        &["cpu", "cpuset", "memory", "io"]
    } else {
        &["cpu", "cpuacct", "cpuset", "memory", "blkio"]
    };
    for c in ctrls {
        let without = match *c {
            "cpu" => "no CPU priority: offline work cannot be isolated",
            "cpuacct" => "CPU usage is read from cpu.stat instead",
            "cpuset" => "no dynamic CPU confinement: the idle class only",
            "memory" => "no memory limits; the memory watermark eviction still works",
            _ => "offline IO is not deprioritised",
        };
        let (ok, detail) = match layout.owner(c) {
            Some(r) if r.version() == Version::V1 => {
                (true, format!("v1 at {}", r.hierarchy.mount.display()))
            }
            Some(_) => match controller_reach(layout, c) {
                Reach::Yes => (true, "reaches the root (v2)".to_string()),
                Reach::No { why, .. } => (false, why),
            },
            None if *c == "cpuacct" && layout.unified().is_some() => {
                (true, "v2 cpu.stat".to_string())
            }
            None => (false, "not mounted".to_string()),
        };
        let without = if ok || layout.owner(c).is_none() || !v2 {
            without.to_string()
        } else {
            format!(
                "{without}. To get it: use the default root (tidal picks a top-level group, or a delegated systemd scope), or --root /tidal.slice"
            )
        };
        out.push(Row {
            feature: format!("controller {c} for the root"),
            available: ok,
            detail,
            without: if ok { String::new() } else { without },
        });
    }
    let knob_row = |k: Knob, feature: &str, without: &str| {
        let detail = match layout.knob_target(k) {
            Some((r, c)) => format!("{} in {}", c.files(k).join(" + "), r.hierarchy.name()),
            None => "no hierarchy carries it".into(),
        };
        row(feature, knob_supported(layout, k), detail, without)
    };
    out.push(knob_row(
        Knob::CpuIdle,
        "cpu.idle",
        "offline parent gets cpu.qos_level=-1 if present, else the minimum weight (shares 2)",
    ));
    out.push(knob_row(
        Knob::CpuQosLevel,
        "cpu.qos_level (openEuler)",
        "cpu.idle is used instead (this is normal outside openEuler)",
    ));
    out.push(knob_row(
        Knob::CpuBurst,
        "cpu burst (cpu.max.burst / cfs_burst_us)",
        "no burst allowance for CPU-limited online work",
    ));
    out.push(knob_row(
        Knob::CpuMax,
        "cfs quota",
        "--cpus limits are not applied",
    ));
    out.push(knob_row(
        Knob::CpusetCpus,
        "cpuset",
        "offline work is not confined to spare CPUs; idle class only",
    ));
    out.push(knob_row(
        Knob::MemoryHigh,
        "memory.high (v2)",
        "no soft memory throttling; hard limits and watermark eviction only",
    ));
    out.push(knob_row(
        Knob::IoWeight,
        "io weight",
        "offline IO is not deprioritised",
    ));
    out.push(knob_row(
        Knob::IoBfqWeight,
        "io.bfq.weight (v2, BFQ in the kernel)",
        "BFQ does not see the level IO weights on v2 (io.weight is blk-iocost's)",
    ));
    out.push(knob_row(
        Knob::IoMax,
        "io limits (io.max / blkio.throttle)",
        "io.offline_max / offline_low_max cannot be applied",
    ));
    out.push(knob_row(
        Knob::Freeze,
        "freezer",
        "offline work cannot be frozen under interference (and the duty-cycle cap is a CFS quota); it is only confined and capped",
    ));
    out.push(row(
        "group kill (cgroup.kill)",
        caps.group_kill,
        "kills a whole group at once",
        "tasks are killed one by one with SIGKILL",
    ));
    out.push(row(
        "per-cgroup PSI",
        caps.psi,
        layout
            .unified()
            .map(|u| {
                u.hierarchy
                    .mount
                    .join("<group>/cpu.pressure")
                    .display()
                    .to_string()
            })
            .unwrap_or_else(|| "no cgroup2 mount".into()),
        "interference is judged from CPU usage only",
    ));
    out.push(row(
        "system PSI",
        Path::new("/proc/pressure/cpu").exists(),
        "/proc/pressure",
        "no node-level pressure signal",
    ));
    out.push(row(
        "resctrl (RDT)",
        mounted("resctrl") || Path::new("/sys/fs/resctrl/schemata").exists(),
        "/sys/fs/resctrl",
        "no cache or memory-bandwidth partitioning",
    ));
    let bpf = bpf_loadable();
    out.push(row(
        "BPF",
        bpf.is_ok(),
        match &bpf {
            Ok(()) => "map creation works".to_string(),
            Err(e) => e.clone(),
        },
        "no run-queue latency probe; PSI and usage only",
    ));
    let runq = tidal_bpf::Collector::start();
    out.push(row(
        "run-queue latency (eBPF)",
        runq.is_ok(),
        match &runq {
            Ok(c) => match &c.fallback {
                None => format!("the program loads and attaches ({})", c.attach),
                Some(why) => format!(
                    "the program loads and attaches ({}; not tp_btf: {why})",
                    c.attach
                ),
            },
            Err(e) => e.clone(),
        },
        "no run-queue latency signal: pressure and latency objectives only (`tidal agent --no-bpf` says the same)",
    ));
    drop(runq);
    out.push(row(
        "BTF",
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        "/sys/kernel/btf/vmlinux",
        "CO-RE BPF programs cannot load",
    ));
    out.push(row(
        "tracefs",
        mounted("tracefs") || Path::new("/sys/kernel/tracing/events").exists(),
        "/sys/kernel/tracing",
        "mount it: mount -t tracefs nodev /sys/kernel/tracing",
    ));
    memory_rows(layout, &caps, &mut out);
    io_rows(layout, &caps, &mut out);
    kubelet_rows(layout, k, &mut out);
    out.push(row(
        "online CPUs",
        true,
        format!("{} ({})", caps.cpus, caps.cpus.len()),
        "",
    ));
    out
}

pub fn main(g: &Global, a: &DoctorArgs) -> i32 {
    let layout = match g.layout() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let cfg = match crate::agent::load_config(a.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            return crate::agent::print_lines(&e);
        }
    };
    let rows = rows(&layout, &cfg.kubernetes);
    if a.json {
        match serde_json::to_string_pretty(&rows) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(e),
        }
        return 0;
    }
    let w = rows.iter().map(|r| r.feature.len()).max().unwrap_or(10);
    println!("{:w$}  {:3}  DETAIL", "FEATURE", "OK");
    for r in &rows {
        let ok = if r.available { "yes" } else { "no" };
        println!("{:w$}  {ok:3}  {}", r.feature, r.detail);
        if !r.available && !r.without.is_empty() {
            println!("{:w$}       -> without it: {}", "", r.without);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_model::Capabilities;

    fn caps(knobs: &[Knob]) -> Capabilities {
        Capabilities {
            knobs: knobs.iter().copied().collect(),
            ..Capabilities::default()
        }
    }

    #[test]
    fn io_weights_are_in_force_only_where_the_scheduler_reads_their_file() {
        let vda = ["vda".to_string()];
        // v2 under BFQ: io.weight alone is not read; io.bfq.weight is.
        let (ok, how) = io_weight_in_force(false, &caps(&[Knob::IoWeight]), &vda, false);
        assert!(!ok, "{how}");
        assert!(how.contains("no io.bfq.weight"), "{how}");
        let both = caps(&[Knob::IoWeight, Knob::IoBfqWeight]);
        let (ok, how) = io_weight_in_force(false, &both, &vda, false);
        assert!(ok && how.contains("reads io.bfq.weight"), "{how}");
        // v2 blk-iocost reads io.weight, whatever the scheduler.
        let (ok, how) = io_weight_in_force(false, &caps(&[Knob::IoWeight]), &[], true);
        assert!(ok && how.contains("blk-iocost"), "{how}");
        let (ok, _) = io_weight_in_force(false, &both, &[], false);
        assert!(!ok);
        // v1: blkio.bfq.weight is the weight; there is no blk-iocost.
        let (ok, how) = io_weight_in_force(true, &caps(&[Knob::IoWeight]), &vda, false);
        assert!(ok && how.contains("blkio.bfq.weight"), "{how}");
        let (ok, how) = io_weight_in_force(true, &caps(&[Knob::IoWeight]), &[], true);
        assert!(!ok && how.contains("v2 only"), "{how}");
    }
}
