//! A plan: the ordered list of actions the policy decided, each with the reason for it. The actuator
//! applies actions in order, which matters where the kernel demands it (v1 cpusets shrink bottom-up).

use crate::{Knob, KnobValue};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A group path relative to the tidal root, `/`-separated, without leading or trailing `/`.
/// The empty path is the tidal root itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroupPath(String);

impl GroupPath {
    pub fn root() -> Self {
        GroupPath(String::new())
    }
    /// Normalises `a//b/` to `a/b`; refuses `..` so a path can never leave the tidal root.
    pub fn new(p: &str) -> Option<Self> {
        let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        if parts.iter().any(|s| *s == ".." || *s == ".") {
            return None;
        }
        Some(GroupPath(parts.join("/")))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
    pub fn join(&self, child: &str) -> Self {
        let child = child.trim_matches('/');
        if self.0.is_empty() {
            GroupPath(child.to_string())
        } else {
            GroupPath(format!("{}/{}", self.0, child))
        }
    }
    pub fn parent(&self) -> Option<Self> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.rsplit_once('/') {
            Some((p, _)) => GroupPath(p.to_string()),
            None => GroupPath::root(),
        })
    }
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }
    pub fn depth(&self) -> usize {
        if self.0.is_empty() {
            0
        } else {
            self.0.split('/').count()
        }
    }
    /// This path and every ancestor below the root, outermost first (`a`, `a/b`, `a/b/c`).
    pub fn lineage(&self) -> Vec<GroupPath> {
        let mut out = Vec::new();
        let mut cur = Some(self.clone());
        while let Some(p) = cur {
            if p.is_root() {
                break;
            }
            cur = p.parent();
            out.push(p);
        }
        out.reverse();
        out
    }
}

impl fmt::Display for GroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("<root>")
        } else {
            f.write_str(&self.0)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum Op {
    /// Create the group in every hierarchy tidal uses, if missing.
    EnsureGroup,
    Set {
        knob: Knob,
        value: KnobValue,
    },
    /// Kill every task of the group (memory pressure).
    Kill,
    /// Remove the (empty) group from every hierarchy.
    RemoveGroup,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub group: GroupPath,
    #[serde(flatten)]
    pub op: Op,
    pub reason: String,
    /// A short, fixed category for the reason (metrics label): `static`, `confine`, `release`,
    /// `interference`, `memory`, `cleanup`, `shutdown`.
    #[serde(default = "default_cause")]
    pub cause: String,
}

fn default_cause() -> String {
    "static".to_string()
}

impl Action {
    /// Sets the cause category.
    pub fn because(mut self, cause: &str) -> Self {
        self.cause = cause.to_string();
        self
    }

    pub fn set(group: GroupPath, knob: Knob, value: KnobValue, reason: impl Into<String>) -> Self {
        Action {
            group,
            op: Op::Set { knob, value },
            reason: reason.into(),
            cause: default_cause(),
        }
    }
    pub fn ensure(group: GroupPath, reason: impl Into<String>) -> Self {
        Action {
            group,
            op: Op::EnsureGroup,
            reason: reason.into(),
            cause: default_cause(),
        }
    }
    pub fn kill(group: GroupPath, reason: impl Into<String>) -> Self {
        Action {
            group,
            op: Op::Kill,
            reason: reason.into(),
            cause: default_cause(),
        }
    }
    pub fn remove(group: GroupPath, reason: impl Into<String>) -> Self {
        Action {
            group,
            op: Op::RemoveGroup,
            reason: reason.into(),
            cause: default_cause(),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            Op::EnsureGroup => write!(f, "ensure group {} ({})", self.group, self.reason),
            Op::Set { knob, value } => {
                write!(f, "set {} {}={} ({})", self.group, knob, value, self.reason)
            }
            Op::Kill => write!(f, "kill {} ({})", self.group, self.reason),
            Op::RemoveGroup => write!(f, "remove group {} ({})", self.group, self.reason),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub actions: Vec<Action>,
}

impl Plan {
    pub fn push(&mut self, a: Action) {
        self.actions.push(a);
    }
    pub fn extend(&mut self, other: Plan) {
        self.actions.extend(other.actions);
    }
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_paths_normalise_and_refuse_escape() {
        assert_eq!(GroupPath::new("/a//b/").unwrap().as_str(), "a/b");
        assert!(GroupPath::new("a/../b").is_none());
        let p = GroupPath::new("offline/offline/job").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "offline/offline");
        assert_eq!(p.name(), "job");
        assert_eq!(p.depth(), 3);
        let l: Vec<_> = p.lineage().iter().map(|g| g.as_str().to_string()).collect();
        assert_eq!(l, vec!["offline", "offline/offline", "offline/offline/job"]);
        assert_eq!(GroupPath::root().join("x").as_str(), "x");
        assert!(GroupPath::new("x").unwrap().parent().unwrap().is_root());
    }

    #[test]
    fn actions_serialise_with_their_reason() {
        let a = Action::set(
            GroupPath::new("offline").unwrap(),
            Knob::CpuIdle,
            KnobValue::Bool(true),
            "offline parent is idle class",
        );
        let j = serde_json::to_string(&a).unwrap();
        assert!(
            j.contains("\"reason\":\"offline parent is idle class\""),
            "{j}"
        );
        let back: Action = serde_json::from_str(&j).unwrap();
        assert_eq!(back, a);
    }
}
