//! A plan: the ordered list of actions the policy decided, each with the reason for it. The actuator
//! applies actions in order, which matters where the kernel demands it (v1 cpusets shrink bottom-up).
//!
//! Only a set can address a group another manager owns ([`Target::Foreign`]); creating, removing and
//! killing take a [`GroupPath`] under the tidal root. The JSON form is flat:
//! `{"group": "offline", "op": "set", "knob": "cpu-idle", "value": {"bool": true}, "reason": "…"}`,
//! with `"foreign": "kubepods/besteffort/pod…"` instead of `"group"` for a foreign set.

use crate::path::{ForeignGroup, GroupPath, Target};
use crate::pod::PodRef;
use crate::{Knob, KnobValue};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The fixed category of an action's reason (a metrics label and the key of what the agent reports).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// Level settings (and their drift repair).
    #[default]
    Static,
    /// Offline pushed off CPUs online needs.
    Confine,
    /// Offline given CPUs back, or a tightening step released.
    Release,
    /// Online suffers interference (pressure, latency objective, run-queue latency).
    Interference,
    /// Node memory is short.
    Memory,
    /// Groups of ended workloads removed.
    Cleanup,
    /// The agent is stopping.
    Shutdown,
}

impl Cause {
    pub const ALL: [Cause; 7] = [
        Cause::Static,
        Cause::Confine,
        Cause::Release,
        Cause::Interference,
        Cause::Memory,
        Cause::Cleanup,
        Cause::Shutdown,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Cause::Static => "static",
            Cause::Confine => "confine",
            Cause::Release => "release",
            Cause::Interference => "interference",
            Cause::Memory => "memory",
            Cause::Cleanup => "cleanup",
            Cause::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create the group in every hierarchy tidal uses, if missing.
    EnsureGroup { group: GroupPath },
    Set {
        target: Target,
        knob: Knob,
        value: KnobValue,
    },
    /// Kill every task of the group: freeze, SIGKILL every task, thaw, check it is empty.
    Kill { group: GroupPath },
    /// Remove the (empty) group from every hierarchy.
    RemoveGroup { group: GroupPath },
    /// Ask the apiserver to evict a pod (the Eviction API, so PodDisruptionBudgets hold). Not a
    /// kernel change: the workload source carries it out, never the actuator.
    Evict { pod: PodRef, group: ForeignGroup },
    /// Set `oom_score_adj` on every task of the group (not journalled: it dies with the task).
    OomScoreAdj { target: Target, value: i32 },
}

impl Op {
    pub fn target(&self) -> Target {
        match self {
            Op::Set { target, .. } => target.clone(),
            Op::EnsureGroup { group } | Op::Kill { group } | Op::RemoveGroup { group } => {
                Target::Tidal(group.clone())
            }
            Op::Evict { group, .. } => Target::Foreign(group.clone()),
            Op::OomScoreAdj { target, .. } => target.clone(),
        }
    }
    /// The tidal group the action addresses (None for a foreign set).
    pub fn group(&self) -> Option<&GroupPath> {
        match self {
            Op::Set { target, .. } => target.tidal(),
            Op::EnsureGroup { group } | Op::Kill { group } | Op::RemoveGroup { group } => {
                Some(group)
            }
            Op::Evict { .. } => None,
            Op::OomScoreAdj { target, .. } => target.tidal(),
        }
    }
    /// A short name of the operation (metrics label): the knob for a set.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::EnsureGroup { .. } => "create-group",
            Op::Set { knob, .. } => knob.name(),
            Op::Kill { .. } => "kill",
            Op::RemoveGroup { .. } => "remove-group",
            Op::Evict { .. } => "evict",
            Op::OomScoreAdj { .. } => "oom-score-adj",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawAction", into = "RawAction")]
pub struct Action {
    pub op: Op,
    pub reason: String,
    pub cause: Cause,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawOp {
    EnsureGroup,
    Set,
    Kill,
    RemoveGroup,
    Evict,
    OomScoreAdj,
}

/// The flat wire form of an action.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<GroupPath>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    foreign: Option<ForeignGroup>,
    op: RawOp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    knob: Option<Knob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<KnobValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod: Option<PodRef>,
    reason: String,
    #[serde(default)]
    cause: Cause,
}

impl TryFrom<RawAction> for Action {
    type Error = String;
    fn try_from(r: RawAction) -> Result<Self, String> {
        let target = match (r.group, r.foreign) {
            (Some(g), None) => Target::Tidal(g),
            (None, Some(f)) => Target::Foreign(f),
            (Some(_), Some(_)) => {
                return Err("an action has either 'group' or 'foreign', not both".into())
            }
            (None, None) => return Err("an action needs 'group' (or 'foreign' for a set)".into()),
        };
        let tidal = |what: &str| match &target {
            Target::Tidal(g) => Ok(g.clone()),
            Target::Foreign(f) => Err(format!(
                "'{what}' is not allowed on a foreign group ({f}): tidal only sets values there"
            )),
        };
        let op = match r.op {
            RawOp::Set => match (r.knob, r.value) {
                (Some(knob), Some(value)) => Op::Set {
                    target,
                    knob,
                    value,
                },
                _ => return Err("a set needs 'knob' and 'value'".into()),
            },
            RawOp::EnsureGroup => Op::EnsureGroup {
                group: tidal("ensure-group")?,
            },
            RawOp::Kill => Op::Kill {
                group: tidal("kill")?,
            },
            RawOp::RemoveGroup => Op::RemoveGroup {
                group: tidal("remove-group")?,
            },
            RawOp::OomScoreAdj => match r.value {
                Some(KnobValue::Level(v)) if (-1000..=1000).contains(&v) => Op::OomScoreAdj {
                    target,
                    value: v as i32,
                },
                _ => {
                    return Err(
                        "'oom-score-adj' needs a value {\"level\": N} in [-1000, 1000]".into(),
                    )
                }
            },
            RawOp::Evict => match (&target, r.pod) {
                (Target::Foreign(group), Some(pod)) => Op::Evict {
                    pod,
                    group: group.clone(),
                },
                _ => return Err("'evict' needs 'pod' and the pod's 'foreign' group".into()),
            },
        };
        Ok(Action {
            op,
            reason: r.reason,
            cause: r.cause,
        })
    }
}

impl From<Action> for RawAction {
    fn from(a: Action) -> RawAction {
        let mut pod = None;
        let (target, op, knob, value) = match a.op {
            Op::EnsureGroup { group } => (Target::Tidal(group), RawOp::EnsureGroup, None, None),
            Op::Set {
                target,
                knob,
                value,
            } => (target, RawOp::Set, Some(knob), Some(value)),
            Op::Kill { group } => (Target::Tidal(group), RawOp::Kill, None, None),
            Op::RemoveGroup { group } => (Target::Tidal(group), RawOp::RemoveGroup, None, None),
            Op::Evict { pod: p, group } => {
                pod = Some(p);
                (Target::Foreign(group), RawOp::Evict, None, None)
            }
            Op::OomScoreAdj { target, value } => (
                target,
                RawOp::OomScoreAdj,
                None,
                Some(KnobValue::Level(i64::from(value))),
            ),
        };
        let (group, foreign) = match target {
            Target::Tidal(g) => (Some(g), None),
            Target::Foreign(f) => (None, Some(f)),
        };
        RawAction {
            group,
            foreign,
            op,
            knob,
            value,
            pod,
            reason: a.reason,
            cause: a.cause,
        }
    }
}

impl Action {
    /// Sets the cause category.
    pub fn because(mut self, cause: Cause) -> Self {
        self.cause = cause;
        self
    }
    fn new(op: Op, reason: impl Into<String>) -> Self {
        Action {
            op,
            reason: reason.into(),
            cause: Cause::Static,
        }
    }
    pub fn set(
        target: impl Into<Target>,
        knob: Knob,
        value: KnobValue,
        reason: impl Into<String>,
    ) -> Self {
        Action::new(
            Op::Set {
                target: target.into(),
                knob,
                value,
            },
            reason,
        )
    }
    pub fn ensure(group: GroupPath, reason: impl Into<String>) -> Self {
        Action::new(Op::EnsureGroup { group }, reason)
    }
    pub fn kill(group: GroupPath, reason: impl Into<String>) -> Self {
        Action::new(Op::Kill { group }, reason)
    }
    pub fn remove(group: GroupPath, reason: impl Into<String>) -> Self {
        Action::new(Op::RemoveGroup { group }, reason)
    }
    pub fn evict(pod: PodRef, group: ForeignGroup, reason: impl Into<String>) -> Self {
        Action::new(Op::Evict { pod, group }, reason)
    }
    pub fn oom_score_adj(target: impl Into<Target>, value: i32, reason: impl Into<String>) -> Self {
        Action::new(
            Op::OomScoreAdj {
                target: target.into(),
                value,
            },
            reason,
        )
    }
    /// Whether the actuator carries this action out (everything but an eviction).
    pub fn is_kernel(&self) -> bool {
        !matches!(self.op, Op::Evict { .. })
    }
    /// The tidal group the action addresses (None for a foreign set).
    pub fn group(&self) -> Option<&GroupPath> {
        self.op.group()
    }
    /// The knob and value of a set.
    pub fn setting(&self) -> Option<(Knob, &KnobValue)> {
        match &self.op {
            Op::Set { knob, value, .. } => Some((*knob, value)),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            Op::EnsureGroup { group } => write!(f, "ensure group {group} ({})", self.reason),
            Op::Set {
                target,
                knob,
                value,
            } => {
                write!(f, "set {target} {knob}={value} ({})", self.reason)
            }
            Op::Kill { group } => write!(f, "kill {group} ({})", self.reason),
            Op::RemoveGroup { group } => write!(f, "remove group {group} ({})", self.reason),
            Op::Evict { pod, .. } => write!(f, "evict pod {pod} ({})", self.reason),
            Op::OomScoreAdj { target, value } => {
                write!(
                    f,
                    "set oom_score_adj={value} on the tasks of {target} ({})",
                    self.reason
                )
            }
        }
    }
}

/// A knob whose original value the actuator should journal now, ahead of the urgent write that will
/// need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remember {
    pub target: Target,
    pub knob: Knob,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remember: Vec<Remember>,
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

    #[test]
    fn plans_cannot_express_an_escape_or_a_foreign_kill() {
        for bad in [
            r#"{"group":"../esc-sibling","op":"ensure-group","reason":"x"}"#,
            r#"{"group":"..","op":"kill","reason":"x"}"#,
            r#"{"group":"/etc","op":"remove-group","reason":"x"}"#,
            r#"{"foreign":"kubepods/pod1","op":"kill","reason":"x"}"#,
            r#"{"foreign":"kubepods/pod1","op":"ensure-group","reason":"x"}"#,
            r#"{"group":"a","foreign":"b","op":"set","knob":"cpu-idle","value":{"bool":true},"reason":"x"}"#,
            r#"{"group":"a","op":"set","reason":"x"}"#,
            r#"{"group":"a","op":"kill","reason":"x","extra":1}"#,
            r#"{"group":"a","op":"evict","pod":{"namespace":"n","name":"p","uid":"u"},"reason":"x"}"#,
            r#"{"foreign":"kubepods/pod1","op":"evict","reason":"x"}"#,
        ] {
            assert!(
                serde_json::from_str::<Action>(bad).is_err(),
                "{bad} accepted"
            );
        }
        let ok: Action = serde_json::from_str(
            r#"{"foreign":"kubepods/besteffort/pod1","op":"set","knob":"cpu-idle","value":{"bool":true},"reason":"x","cause":"confine"}"#,
        )
        .unwrap();
        assert_eq!(ok.cause, Cause::Confine);
        assert!(ok.group().is_none());
    }

    #[test]
    fn an_eviction_round_trips_and_is_not_for_the_actuator() {
        let a = Action::evict(
            crate::PodRef {
                namespace: "batch".into(),
                name: "etl-1".into(),
                uid: "u-1".into(),
            },
            ForeignGroup::new("kubepods/besteffort/podu-1").unwrap(),
            "memory",
        )
        .because(Cause::Memory);
        let j = serde_json::to_string(&a).unwrap();
        assert!(
            j.contains(r#""op":"evict""#) && j.contains(r#""name":"etl-1""#),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<Action>(&j).unwrap(), a);
        assert!(!a.is_kernel());
        assert!(a.group().is_none());
    }

    #[test]
    fn causes_serialise_as_their_names() {
        for c in Cause::ALL {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.name())
            );
        }
        // A plan without a cause (the older form) reads as static.
        let a: Action =
            serde_json::from_str(r#"{"group":"x","op":"ensure-group","reason":"r"}"#).unwrap();
        assert_eq!(a.cause, Cause::Static);
    }

    proptest::proptest! {
        #[test]
        fn plan_json_never_panics(t in "\\PC{0,300}") {
            let _ = serde_json::from_str::<Plan>(&t);
        }

        #[test]
        fn plans_round_trip(
            groups in proptest::collection::vec("[a-z]{1,6}(/[a-z0-9-]{1,6}){0,3}", 1..6),
            shares in proptest::collection::vec(2u64..262_144, 6),
        ) {
            let plan = Plan {
                actions: groups
                    .iter()
                    .zip(shares)
                    .map(|(g, s)| {
                        Action::set(
                            GroupPath::new(g).unwrap(),
                            Knob::CpuWeight,
                            KnobValue::Shares(s),
                            "p",
                        )
                        .because(Cause::Confine)
                    })
                    .collect(),
                remember: Vec::new(),
            };
            let back: Plan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
            proptest::prop_assert_eq!(back, plan);
        }
    }
}
