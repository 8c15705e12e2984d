//! Capability detection: which knobs have files here, PSI, group kill, cpuset semantics, CPUs.

use crate::hierarchy::Version;
use crate::layout::{read_file, Layout};
use std::path::Path;
use tidal_model::{Capabilities, CpuSet, Knob};

/// Kernel release as (major, minor), from uname.
pub fn kernel_version() -> Option<(u32, u32)> {
    let rel = kernel_release()?;
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Does `knob` have its file(s) where tidal's groups will be? Checks the tidal root if it exists, else
/// the group it will be created in. A v2 root cgroup lacks controller files, so there the controller's
/// presence in `cgroup.controllers` decides.
pub fn knob_supported(layout: &Layout, knob: Knob) -> bool {
    let Some((r, version, spec)) = layout.knob_target(knob) else {
        return false;
    };
    let probe = nearest_existing(&r.root_dir, &r.hierarchy.mount);
    if spec.files.iter().all(|f| probe.join(f).exists()) {
        return true;
    }
    if version == Version::V2 && probe == r.hierarchy.mount {
        return match spec.controller {
            None => kernel_version().is_some_and(|v| v >= (5, 2)),
            Some(c) => read_file(&probe.join("cgroup.controllers"))
                .map(|s| s.split_whitespace().any(|x| x == c))
                .unwrap_or(false),
        };
    }
    false
}

/// The tidal root if it exists, else its nearest existing ancestor (the root may be created later,
/// several levels down), never above the hierarchy's mount.
fn nearest_existing(dir: &Path, mount: &Path) -> std::path::PathBuf {
    let mut d = dir;
    while !d.exists() && d != mount {
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    d.to_path_buf()
}

fn read_set(p: &Path) -> Option<CpuSet> {
    read_file(p)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|c: &CpuSet| !c.is_empty())
}

pub fn detect_capabilities(layout: &Layout) -> Capabilities {
    let knobs = Knob::ALL
        .into_iter()
        .filter(|k| knob_supported(layout, *k))
        .collect();
    let psi = layout.unified().is_some_and(|u| {
        nearest_existing(&u.root_dir, &u.hierarchy.mount)
            .join("cpu.pressure")
            .exists()
    });
    let group_kill = layout.unified().is_some() && kernel_version().is_some_and(|v| v >= (5, 14));
    let cpuset = layout.owner("cpuset");
    let (cpus, mems) = match cpuset {
        Some(r) => {
            let base = nearest_existing(&r.base_dir(), &r.hierarchy.mount);
            let (c, m) = match r.version() {
                Version::V1 => ("cpuset.effective_cpus", "cpuset.effective_mems"),
                Version::V2 => ("cpuset.cpus.effective", "cpuset.mems.effective"),
            };
            (read_set(&base.join(c)), read_set(&base.join(m)))
        }
        None => (None, None),
    };
    let cpus = cpus
        .or_else(|| read_set(Path::new("/sys/devices/system/cpu/online")))
        .unwrap_or_else(|| CpuSet::first_n(1));
    let mems = mems
        .or_else(|| read_set(Path::new("/sys/devices/system/node/online")))
        .unwrap_or_else(|| CpuSet::first_n(1));
    Capabilities {
        knobs,
        psi,
        group_kill,
        cpuset_v1: cpuset.is_some_and(|r| r.version() == Version::V1),
        cpus,
        mems,
    }
}
