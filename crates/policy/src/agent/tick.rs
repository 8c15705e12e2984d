//! What one control step works out on its way, passed between its concerns: online's CPU need and
//! offline's share ([`CpuDecision`]), and what the interference ladder did ([`LadderTick`]).

use tidal_model::Cause;

/// What online needs and what that leaves offline, before interference.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuDecision {
    pub n: u32,
    /// Dynamic confinement is in effect on this machine.
    pub confine: bool,
    pub min_off: u32,
    /// CPUs offline gets after hysteresis.
    pub target: u32,
    pub why: String,
    pub cause: Cause,
}

/// What the ladder did this tick, for the actions' reasons.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LadderTick {
    /// Why online is judged to suffer (the first tightening verdict), if it is.
    pub pressure: Option<String>,
    /// Why steps in force are kept (the first holding verdict), if one holds.
    pub held: Option<String>,
    /// A step was undone because it did not help.
    pub undone: bool,
    /// A step was released to probe whether offline can have it back (the objective that held).
    pub probe: Option<String>,
    /// The step released this tick (calm, or a probe).
    pub released: Option<super::state::Step>,
    /// What was calm, and how long, when a step was released for calm (not a probe).
    pub calm: Option<String>,
}
