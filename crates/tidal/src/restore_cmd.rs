//! `tidal restore`: put back every original value and remove the empty groups tidal created, for the
//! tidal root of this invocation. Refuses while an agent holds the root, unless `--force`.

use crate::cli::{Global, RestoreArgs};
use crate::exit::{self, fail};
use serde_json::json;
use std::time::Duration;
use tidal_actuator::RootLock;

pub fn main(g: &Global, a: &RestoreArgs) -> i32 {
    let layout = match g.layout() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let state_dir = g.state_dir();
    let lock = if a.force && !g.dry_run {
        RootLock::acquire_stopping_holder(&layout, &state_dir, Duration::from_secs(30))
    } else {
        RootLock::acquire(&layout, &state_dir)
    };
    let _lock = match lock {
        Ok(l) => Some(l),
        // A dry run changes nothing: it stops no agent, and reads the journal beside it.
        Err(tidal_actuator::ActError::Locked { pid, .. }) if a.force && g.dry_run => {
            eprintln!(
                "tidal: dry-run: an agent (pid {pid}) holds this root; --force would stop it first"
            );
            None
        }
        Err(e) => return exit::act(&e),
    };
    // No `tidal run` is between making sure of a level and filling it while groups are removed.
    let _setup = match g.setup_lock(&layout, true) {
        Ok(l) => l,
        Err(e) => return exit::act(&e),
    };
    let rep = match tidal_actuator::restore(&layout, &state_dir, g.dry_run) {
        Ok(r) => r,
        Err(e) => return exit::act(&e),
    };
    let verb = if g.dry_run {
        "would restore"
    } else {
        "restored"
    };
    if a.json {
        let v = json!({
            "dry_run": g.dry_run,
            "restored": rep.restored.iter().map(|(p, v)| json!({"path": p, "value": v})).collect::<Vec<_>>(),
            "unchanged": rep.unchanged,
            "vanished": rep.vanished,
            "removed_groups": rep.removed_groups,
            "busy_groups": rep.busy_groups.iter().map(|(p, n)| json!({"path": p, "tasks": n})).collect::<Vec<_>>(),
            "skipped": rep.skipped.iter().map(|(p, why)| json!({"path": p, "why": why})).collect::<Vec<_>>(),
            "deferred": rep.deferred.iter().map(|(p, why)| json!({"path": p, "why": why})).collect::<Vec<_>>(),
            "failed": rep.failed.iter().map(|(p, e)| json!({"path": p, "error": e})).collect::<Vec<_>>(),
            "bad_entries": rep.bad_entries.iter().map(|(l, t, e)| json!({"line": l, "text": t, "error": e})).collect::<Vec<_>>(),
        });
        println!("{v:#}");
    } else {
        for (p, v) in &rep.restored {
            println!("{verb} {} = {v}", p.display());
        }
        for p in &rep.removed_groups {
            println!(
                "{} group {}",
                if g.dry_run { "would remove" } else { "removed" },
                p.display()
            );
        }
        for (p, n) in &rep.busy_groups {
            println!(
                "kept group {}: {n} task(s) still running in it (thawed, given every CPU)",
                p.display()
            );
        }
        for (p, why) in &rep.skipped {
            println!("skipped {}: {why}", p.display());
        }
        for (p, why) in &rep.deferred {
            println!("kept {}: {why}", p.display());
        }
        for (p, e) in &rep.failed {
            println!("FAILED {}: {e}", p.display());
        }
        for (l, t, e) in &rep.bad_entries {
            println!("bad journal entry at line {l}: {e}: {t}");
        }
        println!(
            "{verb} {} value(s), {} already original, {} gone with their group; removed {} group(s), kept {} busy; {} skipped, {} failure(s), {} bad entr{}",
            rep.restored.len(),
            rep.unchanged.len(),
            rep.vanished.len(),
            rep.removed_groups.len(),
            rep.busy_groups.len(),
            rep.skipped.len(),
            rep.failed.len(),
            rep.bad_entries.len(),
            if rep.bad_entries.len() == 1 { "y" } else { "ies" }
        );
    }
    if rep.failed.is_empty() && rep.bad_entries.is_empty() && rep.skipped.is_empty() {
        0
    } else {
        1
    }
}
