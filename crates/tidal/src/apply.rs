//! `tidal apply`: apply a plan file through the actuator, action by action. The file is a plan
//! (`{"actions": [...]}`), the `last_plan` object of the agent's `/state`, or a whole `/state`
//! document (its `last_plan` is taken).

use crate::agent::view::{PlanView, StateView};
use crate::cli::{ApplyArgs, Global};
use crate::exit::{self, fail};
use std::io::Read;
use tidal_actuator::Actuator;
use tidal_model::Plan;

/// Largest plan file read: a plan is a list of small actions.
const MAX_PLAN: u64 = 16 << 20;

/// Parses a plan in any of the forms `apply` takes.
pub fn parse_plan(text: &str) -> Result<Plan, String> {
    if let Ok(p) = serde_json::from_str::<PlanView>(text) {
        return Ok(p.plan());
    }
    if let Ok(s) = serde_json::from_str::<StateView>(text) {
        return s
            .last_plan
            .map(|p| p.plan())
            .ok_or_else(|| "the /state document has no last_plan".to_string());
    }
    // Report the error of the plain plan form: what most files are.
    serde_json::from_str::<Plan>(text).map_err(|e| e.to_string())
}

pub fn main(g: &Global, a: &ApplyArgs) -> i32 {
    let f = match std::fs::File::open(&a.plan) {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot read plan {}: {e}", a.plan.display())),
    };
    let mut text = String::new();
    if let Err(e) = f.take(MAX_PLAN + 1).read_to_string(&mut text) {
        return fail(format!("cannot read plan {}: {e}", a.plan.display()));
    }
    if text.len() as u64 > MAX_PLAN {
        return fail(format!(
            "plan {} is larger than 16 MiB: not a plan",
            a.plan.display()
        ));
    }
    let plan = match parse_plan(&text) {
        Ok(p) => p,
        Err(e) => return fail(format!("invalid plan {}: {e}", a.plan.display())),
    };
    let cfg = match crate::agent::load_config(a.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return crate::agent::print_lines(&e),
    };
    let layout = match g.layout() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    // A plan can make groups: a restore waits for it as for a run setting up.
    let _setup = match g.setup_lock(&layout, false) {
        Ok(l) => l,
        Err(e) => return exit::act(&e),
    };
    let mut act = match Actuator::new(layout, &g.state_dir(), g.dry_run) {
        Ok(a) => a,
        Err(e) => return exit::act(&e),
    };
    // Whatever the plan says, never the kubelet's tiers.
    act.protect(tidal_kube::paths::tiers(
        &cfg.kubernetes.kubelet_cgroup_root,
    ));
    let mut failures = 0;
    for (i, action) in plan.actions.iter().enumerate() {
        if i > 0 && a.pause_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(a.pause_ms));
        }
        match act.apply_one(action) {
            Ok(o) => println!("{action}: {o:?}"),
            Err(e) => {
                failures += 1;
                println!("{action}: FAILED: {}", exit::describe(&e));
            }
        }
    }
    i32::from(failures > 0)
}
