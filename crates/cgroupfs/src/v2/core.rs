//! v2 core files that need no controller: `cgroup.freeze`, `cgroup.kill`, `cgroup.subtree_control`.

use crate::knobs::{bad, bool01, KnobSpec};
use tidal_model::{Knob, KnobValue};

pub const FREEZE: &str = "cgroup.freeze";
pub const KILL: &str = "cgroup.kill";
pub const SUBTREE_CONTROL: &str = "cgroup.subtree_control";

pub fn spec(knob: Knob) -> Option<KnobSpec> {
    match knob {
        Knob::Freeze => Some(KnobSpec {
            controller: None,
            files: &[FREEZE],
        }),
        _ => None,
    }
}

pub fn encode(knob: Knob, v: &KnobValue) -> Option<Result<Vec<String>, String>> {
    spec(knob)?;
    Some(match v {
        KnobValue::Bool(b) => Ok(vec![u8::from(*b).to_string()]),
        _ => Err(bad(knob, v)),
    })
}

pub fn decode(knob: Knob, c: &[String]) -> Option<Result<KnobValue, String>> {
    spec(knob)?;
    Some(bool01(c))
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
