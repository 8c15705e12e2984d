//! Which block devices are real (the ones an IO weight or limit is about): `/sys/block` without
//! loop, RAM, zram, nbd and optical devices, and without empty ones; with each device's `MAJ:MIN`
//! and active IO scheduler (an IO weight only acts under BFQ, or with blk-iocost enabled).

use std::path::Path;
use tidal_model::DevNum;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlockDev {
    pub name: String,
    /// `MAJ:MIN`, as `io.max` and `blkio.throttle.*` name a device.
    pub dev: DevNum,
    /// The bracketed entry of `queue/scheduler` (`none`, `mq-deadline`, `bfq`, …).
    pub scheduler: Option<String>,
}

fn virtual_name(n: &str) -> bool {
    ["loop", "ram", "zram", "nbd", "sr", "fd"]
        .iter()
        .any(|p| n.starts_with(p))
}

/// The active scheduler in a `queue/scheduler` line (`none [mq-deadline] bfq`).
pub fn active_scheduler(line: &str) -> Option<String> {
    let s = line.find('[')?;
    let e = line[s..].find(']')? + s;
    Some(line[s + 1..e].to_string())
}

/// The schedulers a `queue/scheduler` line offers, the active one included.
fn offered(line: &str) -> impl Iterator<Item = &str> {
    line.split_whitespace()
        .map(|w| w.trim_start_matches('[').trim_end_matches(']'))
}

/// Is BFQ in the kernel (built in, or its module loaded)? Then every device's scheduler list
/// offers it, and v2 groups have `io.bfq.weight`.
pub fn bfq_in_kernel(sys_block: &Path) -> bool {
    std::fs::read_dir(sys_block).is_ok_and(|rd| {
        rd.filter_map(|e| e.ok()).any(|e| {
            std::fs::read_to_string(e.path().join("queue/scheduler"))
                .is_ok_and(|l| offered(&l).any(|w| w == "bfq"))
        })
    })
}

/// A device from its `/sys/block` entry's name and files (`size`, `dev`, `queue/scheduler`); None
/// when it is virtual, empty or unreadable.
fn device(name: &str, size: &str, dev: &str, scheduler: Option<&str>) -> Option<BlockDev> {
    if virtual_name(name) || size.trim().parse::<u64>().ok()? == 0 {
        return None;
    }
    Some(BlockDev {
        name: name.to_string(),
        dev: dev.parse().ok()?,
        scheduler: scheduler.and_then(active_scheduler),
    })
}

/// The real block devices under `sys_block` (normally `/sys/block`).
pub fn real_devices(sys_block: &Path) -> Vec<BlockDev> {
    let Ok(rd) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut out: Vec<BlockDev> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let d = e.path();
            let read = |f: &str| std::fs::read_to_string(d.join(f)).ok();
            device(
                &name,
                &read("size")?,
                &read("dev")?,
                read("queue/scheduler").as_deref(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_devices_leave_out_loop_zram_and_empty_ones() {
        let vda = device(
            "vda",
            "41943040\n",
            "254:0\n",
            Some("none [mq-deadline] kyber bfq\n"),
        );
        let vda = vda.expect("a disk is real");
        assert_eq!(vda.dev.to_string(), "254:0");
        assert_eq!(vda.scheduler.as_deref(), Some("mq-deadline"));
        let nvme = device("nvme0n1", "2000", "259:0", Some("[bfq] none")).expect("real");
        assert_eq!(nvme.scheduler.as_deref(), Some("bfq"));
        assert_eq!(device("sdb", "0", "8:16", Some("[none] bfq")), None);
        assert_eq!(device("loop0", "100", "7:0", Some("[none]")), None);
        assert_eq!(device("zram0", "100", "252:0", None), None);
        assert_eq!(device("vdb", "100", "not a device", None), None);
        assert_eq!(active_scheduler("none"), None);
        assert!(offered("[none] mq-deadline kyber bfq").any(|w| w == "bfq"));
        assert!(offered("[bfq] none").any(|w| w == "bfq"));
        assert!(!offered("[none] mq-deadline").any(|w| w == "bfq"));
    }
}
