//! What tidal reads from `/proc` about processes: the state, CPU time and resident memory of a task
//! (`/proc/<pid>/stat`, through the `procfs` crate), which cgroup a task is in (`/proc/<pid>/cgroup`),
//! and node memory (`/proc/meminfo`).

use crate::error::{CgroupError, Result};
use crate::hierarchy::{Hierarchy, Version};
use crate::mountinfo::parse_proc_cgroup;
use std::path::PathBuf;

/// One reading of `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskStat {
    /// `R`, `S`, `T` (stopped), `Z`, …
    pub state: char,
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

fn proc_err(pid: i32, e: impl std::fmt::Display) -> CgroupError {
    CgroupError::Read {
        path: PathBuf::from(format!("/proc/{pid}/stat")),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Reads `/proc/<pid>/stat`.
pub fn task_stat(pid: i32) -> Result<TaskStat> {
    let p = procfs::process::Process::new(pid).map_err(|e| proc_err(pid, e))?;
    let s = p.stat().map_err(|e| proc_err(pid, e))?;
    let hz = procfs::ticks_per_second().max(1) as f64;
    let page = procfs::page_size().max(1);
    Ok(TaskStat {
        state: s.state,
        cpu_seconds: (s.utime.saturating_add(s.stime)) as f64 / hz,
        rss_bytes: s.rss.saturating_mul(page),
    })
}

/// Reads this process's `/proc/self/stat`.
pub fn self_stat() -> Result<TaskStat> {
    task_stat(std::process::id() as i32)
}

/// The cgroup `pid` is in within hierarchy `h`, relative to its mount (`/a/b`).
pub fn cgroup_of(pid: i32, h: &Hierarchy) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_proc_cgroup(&text).into_iter().find_map(|m| {
        let matches = match h.version {
            Version::V2 => m.id == 0 && m.controllers.is_empty(),
            Version::V1 => {
                !m.controllers.is_empty()
                    && m.controllers.len() == h.controllers.len()
                    && h.controllers.iter().all(|c| m.controllers.contains(c))
            }
        };
        matches.then_some(m.path)
    })
}

/// MemTotal and MemAvailable, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub available: u64,
}

/// Parses MemTotal and MemAvailable (kB in the file) into bytes; both must be present.
pub fn parse_meminfo(text: &str) -> std::result::Result<MemInfo, String> {
    let (mut total, mut available) = (None, None);
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(v)) = (it.next(), it.next()) else {
            continue;
        };
        let slot = match key {
            "MemTotal:" => &mut total,
            "MemAvailable:" => &mut available,
            _ => continue,
        };
        let kb: u64 = v
            .parse()
            .map_err(|_| format!("bad number in '{}'", line.trim()))?;
        *slot = Some(kb.saturating_mul(1024));
    }
    match (total, available) {
        (Some(total), Some(available)) => Ok(MemInfo { total, available }),
        _ => Err("no MemTotal or MemAvailable line".to_string()),
    }
}

/// Pages the kernel has scanned for reclaim since boot, by kswapd and by allocating tasks
/// (`pgscan_kswapd` + `pgscan_direct` of `/proc/vmstat`); None without either line.
pub fn parse_vmstat_scanned(text: &str) -> Option<u64> {
    let mut total: Option<u64> = None;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(v)) = (it.next(), it.next()) else {
            continue;
        };
        if key == "pgscan_kswapd" || key == "pgscan_direct" {
            let n: u64 = v.parse().ok()?;
            total = Some(total.unwrap_or(0).saturating_add(n));
        }
    }
    total
}

/// Open file descriptors of these tasks (entries of `/proc/<pid>/fd`); None if none could be read.
pub fn open_files(pids: &[i32]) -> Option<u64> {
    let mut total = None;
    for pid in pids.iter().filter(|p| **p > 0) {
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            let n = rd.count() as u64;
            total = Some(total.unwrap_or(0u64).saturating_add(n));
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn open_files_counts_the_descriptors_a_task_holds() {
        let me = std::process::id() as i32;
        let before = open_files(&[me]).unwrap();
        let held: Vec<std::fs::File> = (0..5)
            .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
            .collect();
        // Other test threads may open files meanwhile: at least the five held.
        assert!(open_files(&[me]).unwrap() >= before + 5);
        drop(held);
        // The same task twice counts twice; tasks that are gone, or no task, count as unread.
        assert!(open_files(&[me, me]).unwrap() >= 2 * before.min(1));
        assert_eq!(open_files(&[i32::MAX]), None);
        assert_eq!(open_files(&[]), None);
        assert_eq!(open_files(&[0, -1]), None);
    }

    #[test]
    fn meminfo() {
        let t = "MemTotal:       24583476 kB\nMemFree:        23000000 kB\nMemAvailable:   23797952 kB\n";
        let m = parse_meminfo(t).unwrap();
        assert_eq!(m.total, 24_583_476 * 1024);
        assert_eq!(m.available, 23_797_952 * 1024);
        assert!(parse_meminfo("MemTotal: 1 kB\n").is_err());
        assert!(parse_meminfo("MemTotal: x kB\nMemAvailable: 1 kB\n").is_err());
    }

    #[test]
    fn reads_this_process() {
        let s = self_stat().unwrap();
        assert!(s.rss_bytes > 0 && s.cpu_seconds >= 0.0);
        assert!(task_stat(i32::MAX).is_err());
    }

    #[test]
    fn vmstat_reclaim_scans_add_kswapd_and_direct() {
        let t = "pgfault 10\npgscan_kswapd 1200\npgscan_direct 34\npgscan_khugepaged 9\n";
        assert_eq!(parse_vmstat_scanned(t), Some(1234));
        assert_eq!(parse_vmstat_scanned("pgfault 10\n"), None);
        assert_eq!(parse_vmstat_scanned("pgscan_kswapd x\n"), None);
        // This machine's own file has them.
        let own = std::fs::read_to_string("/proc/vmstat").unwrap();
        assert!(parse_vmstat_scanned(&own).is_some());
    }

    proptest! {
        #[test]
        fn meminfo_never_panics(t in "\\PC{0,200}") {
            let _ = parse_meminfo(&t);
            let _ = parse_vmstat_scanned(&t);
        }
    }
}
