//! What a controller module is: the [`Controller`] trait each controller and version implements, and
//! the value codecs they share. The registry (`controller`) lists the implementations; they depend on
//! this module only.

use tidal_model::{CpuSet, Knob, KnobValue};

/// One controller on one cgroup version.
pub trait Controller: Sync {
    /// The controller a hierarchy must carry; `None` for v2 core files (`cgroup.freeze`).
    fn controller(&self) -> Option<&'static str>;
    /// The knobs it serves.
    fn knobs(&self) -> &'static [Knob];
    /// The file(s) of `knob`, in write order.
    fn files(&self, knob: Knob) -> &'static [&'static str];
    /// File contents to write, one per file, in file order.
    fn encode(&self, knob: Knob, value: &KnobValue) -> Result<Vec<String>, String>;
    /// Parses the files' contents (in file order) into a value.
    fn decode(&self, knob: Knob, contents: &[String]) -> Result<KnobValue, String>;
}

/// Parses one trimmed integer, naming what was expected.
pub(crate) fn int<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("expected {what}, got '{}'", s.trim()))
}

/// The single content of a one-file knob.
pub(crate) fn one(contents: &[String]) -> Result<&str, String> {
    contents
        .first()
        .map(|s| s.trim())
        .ok_or_else(|| "no content".to_string())
}

/// A `0`/`1` flag file (`cpu.idle`, `cgroup.freeze`).
pub(crate) fn bool01(contents: &[String]) -> Result<KnobValue, String> {
    one(contents).and_then(|s| match s {
        "0" => Ok(KnobValue::Bool(false)),
        "1" => Ok(KnobValue::Bool(true)),
        o => Err(format!("expected 0 or 1, got '{o}'")),
    })
}

pub(crate) fn cpus_decode(contents: &[String]) -> Result<KnobValue, String> {
    one(contents).and_then(|s| {
        s.parse::<CpuSet>()
            .map(KnobValue::Cpus)
            .map_err(|e| e.to_string())
    })
}

pub(crate) fn bad(knob: Knob, v: &KnobValue) -> String {
    format!("{knob} cannot take {v}")
}

pub(crate) fn not_mine(knob: Knob, what: &str) -> String {
    format!("{knob} is not a {what} knob")
}

/// `bytes` rounded down to the page size: the kernel keeps memory limits in pages (and reads them
/// back so), so writing an unaligned value would read back different and look like drift.
pub(crate) fn page_floor(bytes: u64) -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let page = *PAGE.get_or_init(|| {
        // SAFETY: sysconf reads a constant of the running system.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(p)
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096)
    });
    bytes / page * page
}
