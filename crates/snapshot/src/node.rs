//! Node-wide readings: memory from `/proc/meminfo`.

use std::path::Path;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub available: u64,
}

/// Parses MemTotal and MemAvailable (kB in the file) into bytes.
pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let mut m = MemInfo::default();
    let mut seen = 0;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let key = it.next()?;
        let kb = || -> Option<u64> { line.split_whitespace().nth(1)?.parse().ok() };
        match key {
            "MemTotal:" => {
                m.total = kb()? * 1024;
                seen += 1;
            }
            "MemAvailable:" => {
                m.available = kb()? * 1024;
                seen += 1;
            }
            _ => {}
        }
        if seen == 2 {
            return Some(m);
        }
    }
    None
}

pub fn read_meminfo() -> Option<MemInfo> {
    parse_meminfo(&std::fs::read_to_string(Path::new("/proc/meminfo")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let t = "MemTotal:       24583476 kB\nMemFree:        23000000 kB\nMemAvailable:   23797952 kB\n";
        let m = parse_meminfo(t).unwrap();
        assert_eq!(m.total, 24_583_476 * 1024);
        assert_eq!(m.available, 23_797_952 * 1024);
        assert!(parse_meminfo("MemTotal: 1 kB\n").is_none());
    }
}
