//! `tidal run`: create the workload's group at its level, move this process in, exec the command.

use crate::cli::{Global, RunArgs};
use crate::exit::{self, fail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use tidal_actuator::Actuator;
use tidal_cgroupfs::detect_capabilities;
use tidal_model::{GroupPath, Plan};
use tidal_policy::{level_plan, workload_limits, Limits};

/// Finds `cmd` the way execvp would, so a typo fails before any group is created.
fn resolve(cmd: &str) -> Option<PathBuf> {
    if cmd.contains('/') {
        let p = PathBuf::from(cmd);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// A group name: the given one or the command's file name, reduced to safe characters.
fn workload_name(given: Option<&str>, cmd: &str) -> String {
    let raw = given.unwrap_or_else(|| {
        Path::new(cmd)
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("job")
    });
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.').to_string();
    if clean.is_empty() {
        "job".to_string()
    } else {
        clean.chars().take(64).collect()
    }
}

/// Applies a plan, stopping at the first failure (run sets up everything or nothing).
fn apply_all(act: &mut Actuator, plan: &Plan) -> Result<(), tidal_actuator::ActError> {
    for a in &plan.actions {
        act.apply_one(a)?;
    }
    Ok(())
}

/// A memory request no larger than the workload's own limit, nor than the machine's memory
/// (`mem_total`, when known): protection beyond it would protect the whole tree.
fn request_within_limit(
    request: Option<u64>,
    memory: Option<u64>,
    mem_total: Option<u64>,
) -> Result<(), String> {
    match (request, memory, mem_total) {
        (Some(r), Some(m), _) if r > m => Err(format!(
            "--memory-request {r} is over --memory {m}: a workload cannot be protected beyond its limit"
        )),
        (Some(r), _, Some(t)) if r > t => Err(format!(
            "--memory-request {r} is over this machine's {t} bytes of memory"
        )),
        _ => Ok(()),
    }
}

pub fn main(g: &Global, a: &RunArgs) -> i32 {
    let Some(cmd) = a.cmd.first() else {
        return fail("missing command after `--`");
    };
    let mem_total = a.memory_request.and_then(|_| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| tidal_cgroupfs::proc::parse_meminfo(&t).ok())
            .map(|m| m.total)
    });
    if let Err(e) = request_within_limit(a.memory_request, a.memory, mem_total) {
        return fail(e);
    }
    if resolve(cmd).is_none() {
        eprintln!("tidal: command not found: {cmd}");
        return 127;
    }
    let name = workload_name(a.name.as_deref(), cmd);
    // Before anything is created: a bad config changes nothing.
    let cfg = match crate::agent::load_config(a.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return crate::agent::print_lines(&e),
    };
    let layout = match g.layout() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let caps = detect_capabilities(&layout);
    // Until the command's group holds it: a restore meanwhile would remove the level under it.
    let setup_lock = match g.setup_lock(&layout, false) {
        Ok(l) => l,
        Err(e) => return exit::act(&e),
    };
    let mut act = match Actuator::new(layout, &g.state_dir(), g.dry_run) {
        Ok(a) => a,
        Err(e) => return exit::act(&e),
    };
    let group = match setup(&mut act, &caps, &cfg, a, &name) {
        Ok(gp) => gp,
        Err((claimed, e)) => {
            if let Some(g) = claimed {
                act.rollback_created(&g);
            }
            return exit::act(&e);
        }
    };
    if g.dry_run {
        // Nothing was created, so the command would run outside any group: do not run it.
        println!(
            "dry-run: would run {:?} in {group} at level {} (the command is not started)",
            a.cmd, a.qos
        );
        return 0;
    }
    let me = std::process::id();
    if let Err(e) = act.move_pid(&group, me) {
        let _ = act.move_pid_home(me);
        act.rollback_created(&group);
        return exit::act(&e);
    }
    drop(setup_lock);
    tracing::info!("running {:?} in {} at level {}", a.cmd, group, a.qos);
    let err = std::process::Command::new(cmd).args(&a.cmd[1..]).exec();
    // exec failed: leave no empty group behind.
    let _ = act.move_pid_home(me);
    act.rollback_created(&group);
    eprintln!("tidal: cannot run {cmd}: {err}");
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// Sets the level up and claims the workload's group. On failure, returns the group if it was
/// already claimed (to roll it back). On a systemd host the delegated scope holding the root is
/// started with this process in it, if it is not running yet.
fn setup(
    act: &mut Actuator,
    caps: &tidal_model::Capabilities,
    cfg: &tidal_policy::Config,
    a: &RunArgs,
    name: &str,
) -> Result<GroupPath, (Option<GroupPath>, tidal_actuator::ActError)> {
    act.ensure_root(None).map_err(|e| (None, e))?;
    let plan: Plan = level_plan(a.qos, caps);
    apply_all(act, &plan).map_err(|e| (None, e))?;
    let group = act
        .create_unique(&a.qos.group_path(), name)
        .map_err(|e| (None, e))?;
    let limits = Limits {
        cpus: a.cpus,
        memory: a.memory,
    };
    apply_all(act, &workload_limits(&group, limits, caps)).map_err(|e| (Some(group.clone()), e))?;
    if let Some(r) = a.memory_request {
        act.set_memory_request(&group, r)
            .map_err(|e| (Some(group.clone()), e))?;
        if a.qos.is_online() && caps.has(tidal_model::Knob::MemoryLow) {
            let (min, low) = tidal_policy::agent::memqos::protection_of(r, cfg);
            let why = format!(
                "--memory-request {r}: protected (the agent also protects the level and the root)"
            );
            let mut actions = vec![tidal_model::Action::set(
                group.clone(),
                tidal_model::Knob::MemoryLow,
                tidal_model::KnobValue::Bytes(Some(low)),
                why.clone(),
            )];
            if min > 0 && caps.has(tidal_model::Knob::MemoryMin) {
                actions.push(tidal_model::Action::set(
                    group.clone(),
                    tidal_model::Knob::MemoryMin,
                    tidal_model::KnobValue::Bytes(Some(min)),
                    why,
                ));
            }
            let p = Plan {
                actions,
                remember: Vec::new(),
            };
            apply_all(act, &p).map_err(|e| (Some(group.clone()), e))?;
        }
    }
    // The OOM killer takes offline first: the command and its children inherit this.
    let adj = cfg.memory.oom_score_adj.of(a.qos);
    if act
        .oom_score_adj_self(adj)
        .map_err(|e| (Some(group.clone()), e))?
        == tidal_actuator::Outcome::Unsupported
    {
        tracing::info!(
            "oom_score_adj {adj} not set: lowering it needs CAP_SYS_RESOURCE (the command keeps the value it inherits)"
        );
    }
    Ok(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_request_over_the_workload_s_limit_is_rejected() {
        assert!(request_within_limit(Some(64 << 20), Some(32 << 20), None)
            .is_err_and(|e| e.contains("--memory-request 67108864 is over --memory 33554432")));
        assert_eq!(
            request_within_limit(Some(32 << 20), Some(32 << 20), None),
            Ok(())
        );
        assert_eq!(request_within_limit(Some(1 << 20), None, None), Ok(()));
        assert_eq!(request_within_limit(None, Some(32 << 20), None), Ok(()));
        // Over the machine's memory: refused, limit or not.
        assert!(request_within_limit(Some(8 << 30), None, Some(4 << 30))
            .is_err_and(|e| e.contains("over this machine's 4294967296 bytes")));
        assert_eq!(
            request_within_limit(Some(1 << 30), None, Some(4 << 30)),
            Ok(())
        );
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(workload_name(None, "/usr/bin/stress-ng"), "stress-ng");
        assert_eq!(workload_name(Some("my job/1"), "x"), "my_job_1");
        assert_eq!(workload_name(Some(".."), "x"), "job");
    }

    #[test]
    fn resolves_like_execvp() {
        assert!(resolve("sh").is_some());
        assert!(resolve("definitely-not-a-command-xyz").is_none());
    }
}
