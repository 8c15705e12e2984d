//! v2 core files that need no controller: `cgroup.freeze`, `cgroup.kill`, `cgroup.subtree_control`,
//! `cgroup.controllers`, `cgroup.procs`, `cgroup.events`.

use crate::spec::{bad, bool01, not_mine, Controller};
use tidal_model::{Knob, KnobValue};

pub const FREEZE: &str = "cgroup.freeze";
pub const KILL: &str = "cgroup.kill";
pub const SUBTREE_CONTROL: &str = "cgroup.subtree_control";
pub const CONTROLLERS: &str = "cgroup.controllers";
pub const EVENTS: &str = "cgroup.events";

pub struct Core;

impl Controller for Core {
    fn controller(&self) -> Option<&'static str> {
        None
    }
    fn knobs(&self) -> &'static [Knob] {
        &[Knob::Freeze]
    }
    fn files(&self, knob: Knob) -> &'static [&'static str] {
        match knob {
            Knob::Freeze => &[FREEZE],
            _ => &[],
        }
    }
    fn encode(&self, knob: Knob, v: &KnobValue) -> Result<Vec<String>, String> {
        match (knob, v) {
            (Knob::Freeze, KnobValue::Bool(b)) => Ok(vec![u8::from(*b).to_string()]),
            _ => Err(bad(knob, v)),
        }
    }
    fn decode(&self, knob: Knob, c: &[String]) -> Result<KnobValue, String> {
        match knob {
            Knob::Freeze => bool01(c),
            _ => Err(not_mine(knob, "v2 core")),
        }
    }
}

/// `cgroup.events`: is anything alive in the group or below it?
pub fn parse_populated(text: &str) -> Option<bool> {
    text.lines().find_map(|l| match l.trim() {
        "populated 1" => Some(true),
        "populated 0" => Some(false),
        _ => None,
    })
}

/// The writes that turn the `current` subtree_control into `wanted` (`+cpu -io`), or None if equal.
pub fn subtree_delta(current: &str, wanted: &str) -> Option<String> {
    let cur: Vec<&str> = current.split_whitespace().collect();
    let want: Vec<&str> = wanted.split_whitespace().collect();
    let mut ops: Vec<String> = want
        .iter()
        .filter(|c| !cur.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    ops.extend(
        cur.iter()
            .filter(|c| !want.contains(c))
            .map(|c| format!("-{c}")),
    );
    if ops.is_empty() {
        None
    } else {
        Some(ops.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_delta_adds_and_removes() {
        assert_eq!(subtree_delta("cpu memory", "memory cpu"), None);
        assert_eq!(
            subtree_delta("memory io", "cpu memory").as_deref(),
            Some("+cpu -io")
        );
        assert_eq!(subtree_delta("cpu", "").as_deref(), Some("-cpu"));
    }
}
