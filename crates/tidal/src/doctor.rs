//! `tidal doctor`: what this node can do, and what tidal does without each missing feature.

use crate::cli::{DoctorArgs, Global};
use crate::exit::fail;
use serde::Serialize;
use std::path::Path;
use tidal_cgroupfs::caps::{controller_reach, kernel_release, knob_supported, Reach};
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

/// The kubelet's facts on this node, as pod mode would find them.
fn kubelet_rows(layout: &Layout, k: &KubernetesConfig, out: &mut Vec<Row>) {
    let root = k.kubelet_cgroup_root.clone();
    let driver = match k.cgroup_driver {
        DriverSetting::Systemd => Some(Driver::Systemd),
        DriverSetting::Cgroupfs => Some(Driver::Cgroupfs),
        DriverSetting::Auto => layout
            .roots
            .iter()
            .find_map(|r| paths::detect_driver(&r.hierarchy.mount, &root)),
    };
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
        Knob::Freeze,
        "freezer",
        "offline work cannot be frozen under interference; it is only confined",
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
            for line in e.lines() {
                eprintln!("tidal: {line}");
            }
            return crate::exit::USAGE;
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
