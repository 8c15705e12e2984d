//! Capability detection: which knobs tidal's root can use here, PSI, group kill, cpuset semantics, CPUs,
//! and the kernel's preemption model.
//! On v2 a controller is usable in the root only if the root's parent offers it and tidal may enable
//! it there: a parent that holds processes cannot pass controllers down (the no-internal-process
//! rule), which is why [`controller_reach`] says why not, for `tidal doctor`.

use crate::cpuset;
use crate::hierarchy::Version;
use crate::layout::{read_file, read_procs, HierarchyRoot, Layout, PROCS};
use crate::spec::Controller;
use crate::v2::core::{CONTROLLERS, SUBTREE_CONTROL};
use std::path::{Path, PathBuf};
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

/// The mode in `/sys/kernel/debug/sched/preempt`: the word in parentheses ("none (voluntary) full").
fn preempt_from_debugfs(text: &str) -> Option<String> {
    let open = text.find('(')?;
    let close = open + text[open..].find(')')?;
    let m = text[open + 1..close].trim();
    (!m.is_empty()).then(|| m.to_string())
}

/// The last "Dynamic Preempt: MODE" line of the kernel log (printed at boot on dynamic kernels).
fn preempt_from_log(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .filter_map(|l| l.split("Dynamic Preempt:").nth(1))
        .find_map(|m| m.split_whitespace().next())
        .map(str::to_string)
}

/// The model built in, from `uname -v`'s flags; None where it is chosen at boot (PREEMPT_DYNAMIC).
fn preempt_from_build(version: &str) -> Option<String> {
    if !version.starts_with('#') {
        return None;
    }
    let flags: Vec<&str> = version.split_whitespace().collect();
    if flags.contains(&"PREEMPT_RT") {
        Some("full (rt)".into())
    } else if flags.contains(&"PREEMPT_DYNAMIC") {
        None
    } else if flags.contains(&"PREEMPT") {
        Some("full".into())
    } else {
        Some("none or voluntary".into())
    }
}

/// The kernel's own records (facility 0) that the log holds now: /dev/kmsg read without waiting,
/// at most 4 MiB and 100000 records of it.
fn kernel_log() -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    let mut out = String::new();
    // One record per read; a record longer than the buffer is skipped with EINVAL.
    let mut buf = vec![0u8; 8192];
    for _ in 0..100_000 {
        if out.len() >= 4 << 20 {
            break;
        }
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                // "PRI,SEQ,TS,FLAGS;MESSAGE": PRI = facility × 8 + level; users write facility 1.
                let pri = rec.split(',').next().and_then(|p| p.parse::<u32>().ok());
                if pri.is_some_and(|p| p < 8) {
                    out.push_str(&rec);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => continue,
            // EAGAIN: the end of the log; EPIPE: records overwritten while reading.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    Some(out)
}

/// The kernel's preemption model and where it was read. Under `none` or `voluntary`, offline work
/// running inside the kernel keeps its CPU until it yields, whatever its scheduling class.
pub fn preemption() -> (Option<String>, &'static str) {
    if let Some(m) = std::fs::read_to_string("/sys/kernel/debug/sched/preempt")
        .ok()
        .and_then(|t| preempt_from_debugfs(&t))
    {
        return (Some(m), "debugfs");
    }
    // Dynamic kernels say at boot which model they took; before 5.18 their version string does
    // not say that they are dynamic, so the log comes before the build flags.
    if let Some(m) = kernel_log().and_then(|t| preempt_from_log(&t)) {
        return (Some(m), "boot log");
    }
    let version = std::fs::read_to_string("/proc/sys/kernel/version").unwrap_or_default();
    match preempt_from_build(&version) {
        Some(m) => (Some(m), "build"),
        None => (
            None,
            "neither debugfs, the kernel log nor the version string says which",
        ),
    }
}

/// The first kernel with each v2 file that exists only on newer kernels.
fn v2_min_kernel(knob: Knob) -> (u32, u32) {
    match knob {
        Knob::CpuIdle => (5, 15),
        Knob::CpuBurst => (5, 14),
        Knob::Freeze => (5, 2),
        _ => (4, 5),
    }
}

/// The root if it exists, else its nearest existing ancestor (the root may be created later,
/// several levels down), never above the hierarchy's mount.
pub fn nearest_existing(dir: &Path, mount: &Path) -> PathBuf {
    let mut d = dir;
    while !d.exists() && d != mount {
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    d.to_path_buf()
}

/// Whether a v2 controller can reach tidal's root, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The root has it, or tidal can enable it on the way down.
    Yes,
    /// Where the chain breaks and why.
    No { at: PathBuf, why: String },
}

fn words(p: &Path) -> Vec<String> {
    read_file(p)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Can `controller` be had in the unified root? Walks from the nearest existing directory: it must be
/// offered there (`cgroup.controllers`) and, below the mount, either already passed down
/// (`cgroup.subtree_control`) or passable (no processes there).
pub fn controller_reach(layout: &Layout, controller: &str) -> Reach {
    let Some(u) = layout.unified() else {
        return Reach::No {
            at: PathBuf::from("/proc/self/mountinfo"),
            why: "no cgroup2 mount".into(),
        };
    };
    let mount = &u.hierarchy.mount;
    // A delegated scope that does not exist yet gets every controller systemd has at the top.
    let probe = if layout.scope.is_some() && !u.root_dir.exists() {
        mount.clone()
    } else {
        nearest_existing(&u.root_dir, mount)
    };
    if !words(&probe.join(CONTROLLERS))
        .iter()
        .any(|c| c == controller)
    {
        return Reach::No {
            why: format!(
                "not offered to {} (its parent does not delegate it)",
                probe.display()
            ),
            at: probe,
        };
    }
    if probe == u.root_dir || probe == *mount || layout.scope.is_some() {
        return Reach::Yes;
    }
    if words(&probe.join(SUBTREE_CONTROL))
        .iter()
        .any(|c| c == controller)
    {
        return Reach::Yes;
    }
    match read_procs(&probe.join(PROCS)) {
        Ok(p) if !p.is_empty() => Reach::No {
            why: format!(
                "{} holds {} process(es), so it cannot pass controllers to child groups (cgroup v2's no-internal-process rule)",
                probe.display(),
                p.len()
            ),
            at: probe,
        },
        _ => Reach::Yes,
    }
}

/// Does `knob` have its file(s) where tidal's groups will be?
pub fn knob_supported(layout: &Layout, knob: Knob) -> bool {
    let Some((r, c)) = layout.knob_target(knob) else {
        return false;
    };
    // BFQ's v2 file exists only while BFQ is in the kernel (built in or its module loaded), which
    // a group's controllers do not say: a root that has the io controller shows it; else the
    // devices' scheduler lists do.
    if knob == Knob::IoBfqWeight {
        return if offered_below_root(r, c) {
            r.root_dir.join(crate::v2::io::BFQ_WEIGHT).exists()
        } else {
            crate::blockdev::bfq_in_kernel(Path::new("/sys/block"))
                && c.controller()
                    .is_none_or(|name| controller_reach(layout, name) == Reach::Yes)
        };
    }
    let files = c.files(knob);
    if r.root_dir.exists() {
        return files.iter().all(|f| r.root_dir.join(f).exists())
            || (r.version() == Version::V2 && offered_below_root(r, c));
    }
    match r.version() {
        Version::V1 => {
            let probe = nearest_existing(&r.root_dir, &r.hierarchy.mount);
            let at_mount = probe == r.hierarchy.mount;
            files.iter().all(|f| {
                probe
                    .join(if at_mount { v1_on_root(f) } else { f })
                    .exists()
            })
        }
        Version::V2 => {
            kernel_version().is_some_and(|v| v >= v2_min_kernel(knob))
                && c.controller()
                    .is_none_or(|name| controller_reach(layout, name) == Reach::Yes)
        }
    }
}

/// Files a v1 hierarchy's root group lacks (the kernel's CFTYPE_NOT_ON_ROOT), each with a file of
/// the same controller the root has: where tidal's root does not exist yet and the nearest group
/// is the hierarchy's root, that file says whether child groups will have theirs.
fn v1_on_root(file: &str) -> &str {
    match file {
        // BFQ's v1 statistics are on the root; its weight is on every child.
        crate::v1::blkio::BFQ_WEIGHT => "blkio.bfq.io_service_bytes",
        // The freezer's root has no state: it cannot be frozen.
        crate::v1::freezer::STATE => PROCS,
        f => f,
    }
}

/// An existing v2 root whose children will get the controller (tidal enables it in the root).
fn offered_below_root(r: &HierarchyRoot, c: &dyn Controller) -> bool {
    match c.controller() {
        None => true,
        Some(name) => words(&r.root_dir.join(CONTROLLERS))
            .iter()
            .any(|x| x == name),
    }
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
    let owner = layout.owner("cpuset");
    let (cpus, mems) = match owner {
        Some(r) => {
            let base = nearest_existing(&r.base_dir(), &r.hierarchy.mount);
            let (c, m) = match r.version() {
                Version::V1 => (cpuset::V1_EFFECTIVE_CPUS, cpuset::V1_EFFECTIVE_MEMS),
                Version::V2 => (cpuset::V2_EFFECTIVE_CPUS, cpuset::V2_EFFECTIVE_MEMS),
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
        cpuset_v1: owner.is_some_and(|r| r.version() == Version::V1),
        io_flat: layout
            .knob_target(Knob::IoMax)
            .is_some_and(|(r, _)| r.version() == Version::V1),
        cpus,
        mems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preemption_model_is_read_from_each_source() {
        assert_eq!(
            preempt_from_debugfs("none (voluntary) full lazy\n").as_deref(),
            Some("voluntary")
        );
        assert_eq!(preempt_from_debugfs("full lazy\n"), None);
        let log =
            "6,1,0,-;Linux version 6.18\n6,2,243469,-;Dynamic Preempt: none\n6,3,1,-;rcu: x\n";
        assert_eq!(preempt_from_log(log).as_deref(), Some("none"));
        assert_eq!(
            preempt_from_log("[    0.2] Dynamic Preempt: lazy").as_deref(),
            Some("lazy")
        );
        assert_eq!(preempt_from_log("nothing here"), None);
        assert_eq!(preempt_from_build("#1 SMP PREEMPT_DYNAMIC @0"), None);
        assert_eq!(
            preempt_from_build("#1 SMP PREEMPT_RT Debian").as_deref(),
            Some("full (rt)")
        );
        assert_eq!(
            preempt_from_build("#1 SMP PREEMPT Thu").as_deref(),
            Some("full")
        );
        assert_eq!(
            preempt_from_build("#1 SMP Debian 6.1.0").as_deref(),
            Some("none or voluntary")
        );
        assert_eq!(preempt_from_build(""), None);
    }
    use crate::hierarchy::Hierarchies;
    use crate::layout::{Host, RootSpec};
    use crate::mountinfo::{parse_mountinfo, parse_proc_cgroup};

    /// A fake v2 tree laid out as systemd does for an ssh session, with only memory and pids
    /// delegated below the top.
    fn fake_session_tree(m: &Path) -> Hierarchies {
        let session = m.join("user.slice/user-0.slice/session-1.scope");
        std::fs::create_dir_all(&session).unwrap();
        std::fs::write(m.join(CONTROLLERS), "cpuset cpu io memory pids\n").unwrap();
        std::fs::write(m.join(SUBTREE_CONTROL), "cpuset cpu io memory pids\n").unwrap();
        for d in ["user.slice", "user.slice/user-0.slice"] {
            std::fs::write(m.join(d).join(CONTROLLERS), "memory pids\n").unwrap();
            std::fs::write(m.join(d).join(SUBTREE_CONTROL), "memory pids\n").unwrap();
        }
        std::fs::write(session.join(CONTROLLERS), "memory pids\n").unwrap();
        std::fs::write(session.join(SUBTREE_CONTROL), "").unwrap();
        std::fs::write(session.join(PROCS), "1\n77\n").unwrap();
        let mi = format!("1 1 0:1 / {} rw - cgroup2 cgroup2 rw\n", m.display());
        Hierarchies::from_parts(
            &parse_mountinfo(&mi),
            &parse_proc_cgroup("0::/user.slice/user-0.slice/session-1.scope\n"),
            |_| {
                vec![
                    "cpuset".into(),
                    "cpu".into(),
                    "io".into(),
                    "memory".into(),
                    "pids".into(),
                ]
            },
        )
    }

    #[test]
    fn fake_fs_session_scope_explains_why_cpu_is_missing_under_it() {
        let tmp = tempfile::tempdir().unwrap();
        let h = fake_session_tree(tmp.path());
        // A root under the session scope cannot get cpu: the scope is not offered it.
        let l = Layout::new(
            h.clone(),
            &RootSpec::Relative("tidal".into()),
            Host::default(),
        );
        match controller_reach(&l, "cpu") {
            Reach::No { why, at } => {
                assert!(why.contains("not offered"), "{why}");
                assert!(at.ends_with("session-1.scope"), "{}", at.display());
            }
            Reach::Yes => panic!("cpu reachable under a session scope"),
        }
        // memory is offered, but the scope holds processes: it cannot be passed down.
        match controller_reach(&l, "memory") {
            Reach::No { why, .. } => assert!(why.contains("no-internal-process"), "{why}"),
            Reach::Yes => panic!("memory reachable under a populated scope"),
        }
        assert!(!knob_supported(&l, Knob::CpuWeight));
        // The default root on this host (no systemd) is a top-level group: everything reachable.
        let l = Layout::new(h.clone(), &RootSpec::default(), Host { systemd: false });
        assert_eq!(controller_reach(&l, "cpu"), Reach::Yes);
        assert!(knob_supported(&l, Knob::CpuWeight));
        // Under systemd, a delegated scope gets what the top has.
        let l = Layout::new(h, &RootSpec::default(), Host { systemd: true });
        assert_eq!(controller_reach(&l, "cpuset"), Reach::Yes);
    }
}
