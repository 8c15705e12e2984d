//! `tidal apply`: apply a plan file through the actuator, action by action.

use crate::cli::{ApplyArgs, Global};
use crate::exit::{describe, fail};
use tidal_actuator::Actuator;
use tidal_cgroupfs::{Layout, RootSpec};
use tidal_model::Plan;

pub fn main(g: &Global, a: &ApplyArgs) -> i32 {
    let text = match std::fs::read_to_string(&a.plan) {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot read plan {}: {e}", a.plan.display())),
    };
    let plan: Plan = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => return fail(format!("invalid plan {}: {e}", a.plan.display())),
    };
    let layout = match Layout::discover(&RootSpec::from_flag_or_env(g.root.as_deref())) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let mut act = match Actuator::new(layout, &g.state_dir, g.dry_run) {
        Ok(a) => a,
        Err(e) => return fail(describe(&e)),
    };
    let mut failures = 0;
    for (i, action) in plan.actions.iter().enumerate() {
        if i > 0 && a.pause_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(a.pause_ms));
        }
        match act.apply_one(action) {
            Ok(o) => println!("{action}: {o:?}"),
            Err(e) => {
                failures += 1;
                println!("{action}: FAILED: {}", describe(&e));
            }
        }
    }
    i32::from(failures > 0)
}
