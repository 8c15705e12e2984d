//! Readers of a group's statistics, one per measurement whatever the cgroup version: CPU time
//! (v1 `cpuacct.usage` or v2 `cpu.stat`), working set (usage less inactive file cache, as the kubelet
//! counts it), CFS throttling, PSI and task count. Each keeps its files open and re-reads them with
//! `pread` (see [`HotFile`]); what a file means on each version is its controller module's business.

use crate::error::{CgroupError, Result};
use crate::hierarchy::Version;
use crate::hot::HotFile;
use crate::layout::{Layout, PROCS};
use crate::psi::{parse_psi, Psi, PsiResource};
use crate::stat::{flat_key, Throttling};
use crate::{v1, v2};
use std::path::Path;
use tidal_model::Target;

type Parse<T> = fn(&[String]) -> std::result::Result<T, String>;

/// One measurement of one group: its files, kept open, and how to read them.
pub struct Reader<T> {
    files: Vec<HotFile>,
    parse: Parse<T>,
}

impl<T> std::fmt::Debug for Reader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.files.iter().map(|h| h.path()))
            .finish()
    }
}

impl<T> Reader<T> {
    fn new(dir: &Path, files: &[&str], parse: Parse<T>) -> Self {
        Reader {
            files: files.iter().map(|f| HotFile::new(dir.join(f))).collect(),
            parse,
        }
    }

    /// The first file (errors and logs name it).
    pub fn path(&self) -> &Path {
        self.files.first().map_or(Path::new(""), |h| h.path())
    }

    /// Reads every file and parses them; a failure names the file and its content.
    pub fn read(&mut self) -> Result<T> {
        let mut contents = Vec::with_capacity(self.files.len());
        for f in &mut self.files {
            contents.push(f.read()?.to_string());
        }
        (self.parse)(&contents).map_err(|reason| CgroupError::Parse {
            path: self.path().to_path_buf(),
            content: contents.join(" | ").chars().take(200).collect(),
            reason,
        })
    }
}

fn first(c: &[String]) -> &str {
    c.first().map_or("", String::as_str)
}

fn usage_v1(c: &[String]) -> std::result::Result<u64, String> {
    v1::cpuacct::parse_usage_ns(first(c))
}
fn usage_v2(c: &[String]) -> std::result::Result<u64, String> {
    v2::cpu::parse_usage_ns(first(c))
}
fn ws_v1(c: &[String]) -> std::result::Result<u64, String> {
    v1::memory::working_set(first(c), c.get(1).map_or("", String::as_str))
}
fn ws_v2(c: &[String]) -> std::result::Result<u64, String> {
    v2::memory::working_set(first(c), c.get(1).map_or("", String::as_str))
}
fn majfault_v1(c: &[String]) -> std::result::Result<u64, String> {
    flat_key(first(c), "total_pgmajfault")
        .ok_or_else(|| "memory.stat has no total_pgmajfault".into())
}
fn majfault_v2(c: &[String]) -> std::result::Result<u64, String> {
    flat_key(first(c), "pgmajfault").ok_or_else(|| "memory.stat has no pgmajfault".into())
}
fn throttle_v1(c: &[String]) -> std::result::Result<Option<Throttling>, String> {
    Ok(v1::cpu::parse_throttling(first(c)))
}
fn throttle_v2(c: &[String]) -> std::result::Result<Option<Throttling>, String> {
    Ok(v2::cpu::parse_throttling(first(c)))
}
fn psi(c: &[String]) -> std::result::Result<Psi, String> {
    parse_psi(first(c))
}
fn tasks(c: &[String]) -> std::result::Result<usize, String> {
    crate::layout::parse_procs(first(c)).map(|p| p.len())
}

/// CPU time in nanoseconds of the cgroup at `dir` in a hierarchy of `version` (v1: a cpuacct mount).
fn cpu_usage_at(dir: &Path, version: Version) -> Reader<u64> {
    match version {
        Version::V1 => Reader::new(dir, &[v1::cpuacct::USAGE], usage_v1),
        Version::V2 => Reader::new(dir, &[v2::cpu::STAT], usage_v2),
    }
}

impl Layout {
    /// The group's cumulative CPU time (ns): v1 `cpuacct.usage`, else v2 `cpu.stat` `usage_usec`.
    pub fn cpu_usage(&self, target: &Target) -> Option<Reader<u64>> {
        if let Some(r) = self.v1("cpuacct") {
            return Some(cpu_usage_at(&r.target_dir(target), Version::V1));
        }
        self.unified()
            .map(|u| cpu_usage_at(&u.target_dir(target), Version::V2))
    }

    /// The whole node's cumulative CPU time (ns), from the top of the hierarchy.
    pub fn node_cpu_usage(&self) -> Option<Reader<u64>> {
        if let Some(h) = self.hierarchies.v1("cpuacct") {
            return Some(cpu_usage_at(&h.mount, Version::V1));
        }
        self.hierarchies
            .unified()
            .map(|u| cpu_usage_at(&u.mount, Version::V2))
    }

    /// The group's working set in bytes.
    pub fn memory_working_set(&self, target: &Target) -> Option<Reader<u64>> {
        let r = self.owner("memory")?;
        let dir = r.target_dir(target);
        Some(match r.version() {
            Version::V1 => Reader::new(&dir, &[v1::memory::USAGE, v1::memory::STAT], ws_v1),
            Version::V2 => Reader::new(&dir, &[v2::memory::CURRENT, v2::memory::STAT], ws_v2),
        })
    }

    /// Major page faults of the group and its descendants (`memory.stat`).
    pub fn major_faults(&self, target: &Target) -> Option<Reader<u64>> {
        let r = self.owner("memory")?;
        let dir = r.target_dir(target);
        Some(match r.version() {
            Version::V1 => Reader::new(&dir, &[v1::memory::STAT], majfault_v1),
            Version::V2 => Reader::new(&dir, &[v2::memory::STAT], majfault_v2),
        })
    }

    /// Tasks of the group and its descendants killed by any OOM killer since the groups were made.
    /// v2 counts up the tree itself (`memory.events`), unless cgroup2 is mounted with
    /// `memory_localevents`; v1 counts each group alone (`memory.oom_control`). Those are summed
    /// down the tree (see [`crate::layout::visit_tree`]; a group removed takes its count with it).
    /// None without a memory hierarchy; an error where a file has no `oom_kill` line (v1 before
    /// 4.13).
    pub fn oom_kills(&self, target: &Target) -> Option<Result<u64>> {
        let r = self.owner("memory")?;
        let dir = r.target_dir(target);
        let (file, hierarchical) = match r.version() {
            Version::V1 => ("memory.oom_control", false),
            Version::V2 if local_events() => ("memory.events", false),
            Version::V2 => ("memory.events", true),
        };
        let one = |d: &Path| -> Result<u64> {
            let p = d.join(file);
            let text = crate::layout::read_file(&p)?;
            flat_key(&text, "oom_kill").ok_or_else(|| CgroupError::Parse {
                path: p,
                content: text.chars().take(200).collect(),
                reason: "no oom_kill line".into(),
            })
        };
        if hierarchical {
            return Some(one(&dir));
        }
        let mut sum = 0u64;
        Some(
            crate::layout::visit_tree(&dir, |d| {
                sum = sum.saturating_add(one(d)?);
                Ok(())
            })
            .map(|()| sum),
        )
    }

    /// CFS bandwidth statistics (None inside when the cpu controller is not enabled there).
    pub fn throttling(&self, target: &Target) -> Option<Reader<Option<Throttling>>> {
        let r = self.owner("cpu")?;
        let dir = r.target_dir(target);
        Some(match r.version() {
            Version::V1 => Reader::new(&dir, &[v1::cpu::STAT], throttle_v1),
            Version::V2 => Reader::new(&dir, &[v2::cpu::STAT], throttle_v2),
        })
    }

    /// The group's PSI for one resource (per-cgroup PSI needs a v2 mount).
    pub fn psi(&self, target: &Target, res: PsiResource) -> Option<Reader<Psi>> {
        let u = self.unified()?;
        Some(Reader::new(&u.target_dir(target), &[res.file()], psi))
    }

    /// The number of processes in the group (primary hierarchy). On v1 the file is opened for
    /// each read: a kept descriptor is served the pid list of its first read while reads come
    /// within a second of each other.
    pub fn tasks(&self, target: &Target) -> Option<Reader<usize>> {
        let r = self.primary()?;
        let path = r.target_dir(target).join(PROCS);
        Some(Reader {
            files: vec![match r.version() {
                Version::V1 => HotFile::fresh(path),
                Version::V2 => HotFile::new(path),
            }],
            parse: tasks,
        })
    }
}

/// The extended attribute `tidal run --memory-request` leaves on a workload's group.
pub const MEMORY_REQUEST_XATTR: &str = "trusted.tidal.memory_request";

/// A workload's declared memory request, from its group's extended attribute in any hierarchy.
pub fn memory_request(dirs: &[std::path::PathBuf]) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(MEMORY_REQUEST_XATTR).ok()?;
    for d in dirs {
        let Ok(p) = std::ffi::CString::new(d.as_os_str().as_bytes()) else {
            continue;
        };
        let mut buf = [0u8; 32];
        // SAFETY: both strings are NUL-terminated; buf is writable for its length.
        let n = unsafe {
            libc::getxattr(
                p.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n > 0 {
            if let Some(v) = std::str::from_utf8(&buf[..n as usize])
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return Some(v);
            }
        }
    }
    None
}

/// Is cgroup2 mounted with `memory_localevents` (`memory.events` then counts each group alone)?
/// Read once: the option is a mount-wide setting.
fn local_events() -> bool {
    static LOCAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOCAL.get_or_init(|| {
        std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|t| mounted_with_local_events(&t))
    })
}

/// Whether a mountinfo text has a cgroup2 mount whose super options carry `memory_localevents`.
fn mounted_with_local_events(mountinfo: &str) -> bool {
    mountinfo.lines().any(|l| {
        let Some((_, rest)) = l.split_once(" - ") else {
            return false;
        };
        let mut f = rest.split_whitespace();
        f.next() == Some("cgroup2")
            && f.nth(1)
                .is_some_and(|opts| opts.split(',').any(|o| o == "memory_localevents"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hierarchy::Hierarchies;
    use crate::layout::{Host, RootSpec};
    use crate::mountinfo::{parse_mountinfo, parse_proc_cgroup};
    use tidal_model::GroupPath;

    #[test]
    fn memory_localevents_is_found_in_the_cgroup2_mount_options() {
        let plain = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let local = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_localevents\n";
        let v1 = "31 23 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert!(!mounted_with_local_events(plain));
        assert!(mounted_with_local_events(local));
        assert!(!mounted_with_local_events(v1));
        assert!(!mounted_with_local_events("garbage"));
    }

    #[test]
    fn fake_fs_readers_follow_the_version() {
        let tmp = tempfile::tempdir().unwrap();
        let m = tmp.path();
        let g = m.join("tidal/online/web");
        std::fs::create_dir_all(&g).unwrap();
        std::fs::write(m.join("cpu.stat"), "usage_usec 5000\n").unwrap();
        std::fs::write(
            g.join("cpu.stat"),
            "usage_usec 7\nnr_periods 1\nnr_throttled 0\nthrottled_usec 0\n",
        )
        .unwrap();
        std::fs::write(g.join("memory.current"), "10000\n").unwrap();
        std::fs::write(g.join("memory.stat"), "anon 1\ninactive_file 4000\n").unwrap();
        std::fs::write(g.join("cgroup.procs"), "1\n2\n").unwrap();
        std::fs::write(g.join("cpu.pressure"), "some avg10=1.00 avg60=0.00 avg300=0.00 total=9\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1\n").unwrap();
        let mi = format!("1 1 0:1 / {} rw - cgroup2 cgroup2 rw\n", m.display());
        let h =
            Hierarchies::from_parts(&parse_mountinfo(&mi), &parse_proc_cgroup("0::/\n"), |_| {
                vec!["cpu".into(), "memory".into()]
            });
        let l = Layout::new(h, &RootSpec::default(), Host { systemd: false });
        let t = Target::Tidal(GroupPath::new("online/web").unwrap());
        assert_eq!(l.cpu_usage(&t).unwrap().read().unwrap(), 7000);
        assert_eq!(l.node_cpu_usage().unwrap().read().unwrap(), 5_000_000);
        assert_eq!(l.memory_working_set(&t).unwrap().read().unwrap(), 6000);
        assert_eq!(l.tasks(&t).unwrap().read().unwrap(), 2);
        assert_eq!(
            l.throttling(&t)
                .unwrap()
                .read()
                .unwrap()
                .map(|x| x.nr_periods),
            Some(1)
        );
        let p = l.psi(&t, PsiResource::Cpu).unwrap().read().unwrap();
        assert_eq!(p.some.total_us, 9);
        // A missing file is an error naming it, never a zero.
        let gone = Target::Tidal(GroupPath::new("online/gone").unwrap());
        let e = l.cpu_usage(&gone).unwrap().read().unwrap_err();
        assert!(
            e.is_vanished() && e.to_string().contains("online/gone"),
            "{e}"
        );
        std::fs::write(g.join("memory.stat"), "anon 1\n").unwrap();
        let e = l.memory_working_set(&t).unwrap().read().unwrap_err();
        assert!(e.to_string().contains("inactive_file"), "{e}");
    }
}
