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

/// The real block devices under `sys_block` (normally `/sys/block`).
pub fn real_devices(sys_block: &Path) -> Vec<BlockDev> {
    let Ok(rd) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut out: Vec<BlockDev> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if virtual_name(&name) {
                return None;
            }
            let d = e.path();
            let size: u64 = std::fs::read_to_string(d.join("size"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            if size == 0 {
                return None;
            }
            let dev = std::fs::read_to_string(d.join("dev")).ok()?.parse().ok()?;
            let scheduler = std::fs::read_to_string(d.join("queue/scheduler"))
                .ok()
                .and_then(|l| active_scheduler(&l));
            Some(BlockDev {
                name,
                dev,
                scheduler,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_fs_real_devices_leave_out_loop_zram_and_empty_ones() {
        let t = tempfile::tempdir().unwrap();
        for (n, size, dev, sched) in [
            ("vda", "41943040", "254:0", "none [mq-deadline] kyber bfq"),
            ("sdb", "0", "8:16", "[none] bfq"),
            ("loop0", "100", "7:0", "[none]"),
            ("zram0", "100", "252:0", ""),
            ("nvme0n1", "2000", "259:0", "[bfq] none"),
        ] {
            let d = t.path().join(n);
            std::fs::create_dir_all(d.join("queue")).unwrap();
            std::fs::write(d.join("size"), size).unwrap();
            std::fs::write(d.join("dev"), format!("{dev}\n")).unwrap();
            std::fs::write(d.join("queue/scheduler"), sched).unwrap();
        }
        let v = real_devices(t.path());
        let names: Vec<&str> = v.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "vda"]);
        assert_eq!(v[0].scheduler.as_deref(), Some("bfq"));
        assert_eq!(v[1].dev.to_string(), "254:0");
        assert_eq!(active_scheduler("none"), None);
    }
}
