//! The agent on real cgroups: confine offline work under online load, give CPUs back after, survive a
//! SIGKILL, stop cleanly on SIGTERM, and leave every original value restorable.

mod common;

use common::{cgroups_usable, free_addr, get, wait_cgroup, wait_for, TestRoot};
use std::process::Child;
use std::time::Duration;
use tidal_model::{CpuSet, Knob, KnobValue};

fn offline_cpus(t: &TestRoot) -> CpuSet {
    t.read("cpuset", "offline", "cpuset.cpus").parse().unwrap()
}

/// Journal entries as (kind, path), and whether any appears twice.
/// Every directory left under the test root, in every hierarchy (for failure messages).
fn tree(t: &TestRoot) -> Vec<String> {
    fn walk(d: &std::path::Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|x| x.is_dir()) {
                    let procs =
                        std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
                    out.push(format!(
                        "{} [{}]",
                        e.path().display(),
                        procs.split_whitespace().collect::<Vec<_>>().join(",")
                    ));
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut out = Vec::new();
    for r in &t.layout.roots {
        walk(&r.root_dir, &mut out);
    }
    out
}

fn journal_entries(t: &TestRoot) -> (Vec<(String, String)>, bool) {
    let text = std::fs::read_to_string(t.state.path().join("journal.jsonl")).unwrap_or_default();
    let entries: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["kind"].as_str().unwrap_or("").to_string(),
                v["path"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let unique: std::collections::HashSet<_> = entries.iter().collect();
    let dup = unique.len() != entries.len();
    (entries, dup)
}

#[test]
fn agent_confines_offline_under_online_load_and_gives_cpus_back() {
    if !cgroups_usable("agent_confines_offline_under_online_load_and_gives_cpus_back") {
        return;
    }
    let mut t = TestRoot::new("agent");
    let all: CpuSet = tidal_cgroupfs::detect_capabilities(&t.layout).cpus;
    let n = all.len();
    // The offline parent exists before tidal, with known values, so restore has originals to return.
    t.make_group("offline");
    t.write_knob("offline", Knob::CpusetCpus, KnobValue::Cpus(all.clone()));

    let cfg = t.state.path().join("tidal.yaml");
    std::fs::write(
        &cfg,
        "tick: 100ms\nstats_interval: 200ms\ncpu:\n  grow_after: 500ms\n  confine_min_cpus: 1\n  # Slow hosts (an emulated CPU) run the test harness and a debug agent above the default floor\n  # (at 0.5, and once at 0.9, the VM harness kept one CPU for them after the load ended); the\n  # online load here is a spinner per CPU, well above it.\n  noise_floor_cpus: 1.2\n# This test is about confinement: no interference step may change the reasons it reads.\ninterference:\n  psi_threshold: 100\nbpf:\n  runq_p99_threshold: 10s\n",
    )
    .unwrap();
    let addr = free_addr();
    let mut agent = t.spawn_agent(t.agent_cmd(&cfg, &addr), &addr);

    let hog = t.spin("offline", "hog");
    wait_cgroup(hog, "/offline/offline/hog").expect("hog in its group");
    wait_for("offline to have every CPU while online is idle", 15, || {
        offline_cpus(&t) == all
    });

    // Online load on every CPU: offline must shrink to its minimum (one CPU).
    let spinners: Vec<u32> = (0..n)
        .map(|i| t.spin("online", &format!("load{i}")))
        .collect();
    wait_for("offline to shrink under online load", 10, || {
        offline_cpus(&t).len() < n.max(2)
    });
    let confined = offline_cpus(&t);
    assert!(
        confined.len() <= n.saturating_sub(n).max(1),
        "offline kept {confined}"
    );
    // Every offline workload follows its parent (v1 cpusets are per group; v2 ones inherit).
    let hog_cpus: CpuSet = t.effective_cpus("offline/offline/hog");
    assert!(
        hog_cpus.is_subset(&confined),
        "hog {hog_cpus} not within {confined}"
    );

    // Endpoints while confined; counters are published at the tick's end, after its writes.
    let confine_counted =
        |m: &str| m.contains("tidal_actions_total{kind=\"cpuset-cpus\",reason=\"confine\"}");
    wait_for("the confine counted in /metrics", 5, || {
        get(&addr, "/metrics").is_some_and(|(_, m)| confine_counted(&m))
    });
    let (code, metrics) = get(&addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("tidal_tick_duration_seconds_count"),
        "{metrics}"
    );
    assert!(metrics.contains("tidal_agent_resident_bytes"), "{metrics}");
    // OOM ordering and the IO limits in force are exported too.
    assert!(
        metrics.contains("tidal_oom_score_adj{level=\"offline-low\"} 1000")
            && metrics.contains("tidal_offline_io_limited_groups"),
        "{metrics}"
    );
    wait_for("per-workload metrics", 5, || {
        get(&addr, "/metrics").is_some_and(|(_, m)| m.contains("workload=\"offline/offline/hog\""))
    });
    let (_, state) = get(&addr, "/state").unwrap();
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    let hog_view = v["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["group"] == "offline/offline/hog")
        .expect("hog in /state")
        .clone();
    assert!(
        hog_view["last_action"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("online needs"),
        "{hog_view}"
    );
    let out = t.tidal(&["status", "--listen", &addr]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains("offline/offline/hog")
            && text.contains("online/load0")
            && text.contains("FILES")
            && text.contains("oom_score_adj: online-critical -900")
            && text.contains("offline-low 1000 (set on"),
        "{text}"
    );

    // SIGKILL mid-run, restart: the new agent adopts the tree without duplicating journal entries.
    let (before, _) = journal_entries(&t);
    agent.kill().unwrap();
    let _ = agent.wait();
    let mut agent = t.spawn_agent(t.agent_cmd(&cfg, &addr), &addr);
    std::thread::sleep(Duration::from_millis(500));
    let (after, dup) = journal_entries(&t);
    assert!(
        !dup,
        "a restart must not record an original twice: {after:?}"
    );
    // What was recorded before the crash is all still there: no original is lost.
    assert!(before.iter().all(|e| after.contains(e)), "lost entries");
    assert!(
        offline_cpus(&t).len() < n.max(2),
        "still confined after restart"
    );

    // Load ends: offline grows back to every CPU.
    for pid in spinners {
        // SAFETY: kill(2); these are processes this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while offline_cpus(&t) != all {
        assert!(
            std::time::Instant::now() < deadline,
            "offline did not grow back: {} of {all}; /state: {}\nagent log:\n{}\nnode now: {}",
            offline_cpus(&t),
            get(&addr, "/state").map(|(_, b)| b).unwrap_or_default(),
            t.agent_log(),
            common::state(&addr)["node"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // SIGTERM: clean exit 0.
    // SAFETY: kill(2) on the agent this test started.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = common::wait_exit(&mut agent, 10, "the agent to stop on SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        offline_cpus(&t),
        all,
        "offline has every CPU after shutdown"
    );

    // Confined again, then the agent dies: restore alone must bring back the original cpuset of the
    // pre-existing group and remove every group tidal created.
    let mut agent = t.spawn_agent(t.agent_cmd(&cfg, &addr), &addr);
    for i in 0..n {
        t.spin("online", &format!("again{i}"));
    }
    wait_for("offline to shrink again", 10, || {
        offline_cpus(&t).len() < n.max(2)
    });
    agent.kill().unwrap();
    let _ = agent.wait();
    t.kill_children();
    let out = t.tidal(&["restore"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\nleft: {:?}\njournal: {:?}",
        tree(&t),
        journal_entries(&t).0
    );
    assert_eq!(offline_cpus(&t), all, "{text}");
    assert!(!t.dir("cpu", "offline/offline/hog").exists(), "{text}");
}

#[test]
fn agent_refuses_an_invalid_config_before_touching_anything() {
    // Needs no root: the config is checked before any cgroup is read or written.
    let t = TestRoot::new("badcfg");
    let cfg = t.state.path().join("bad.yaml");
    std::fs::write(&cfg, "tick: 1ms\ncpu:\n  headroom_cpus: -2\n").unwrap();
    let out = t
        .cmd()
        .args(["agent", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("tick") && err.contains("cpu.headroom_cpus"),
        "{err}"
    );
    assert!(t.leftovers().is_empty());
    assert!(!t.state.path().join("journal.jsonl").exists());
}

#[test]
fn agent_reloads_its_config_on_sighup_and_keeps_the_last_good_one() {
    if !cgroups_usable("agent_reloads_its_config_on_sighup_and_keeps_the_last_good_one") {
        return;
    }
    let t = TestRoot::new("sighup");
    let cfg = t.state.path().join("tidal.yaml");
    std::fs::write(&cfg, "cpu:\n  headroom_cpus: 0.5\n").unwrap();
    let addr = free_addr();
    let mut agent = t.spawn_agent(t.agent_cmd(&cfg, &addr), &addr);
    let headroom = || -> f64 {
        let (_, s) = get(&addr, "/state").unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        v["config"]["cpu"]["headroom_cpus"].as_f64().unwrap()
    };
    assert_eq!(headroom(), 0.5);
    let hup = |a: &Child| {
        // SAFETY: kill(2) on the agent this test started.
        unsafe { libc::kill(a.id() as i32, libc::SIGHUP) };
    };
    // An invalid file: the agent keeps running with the last good config and says why.
    std::fs::write(&cfg, "cpu:\n  headroom_cpus: -3\n").unwrap();
    hup(&agent);
    // Read before the next file is written: two signals before the agent looks would be one.
    let log = || std::fs::read_to_string(t.state.path().join("agent.log")).unwrap_or_default();
    wait_for("the bad reload refused", 30, || {
        log().contains("config reload failed") || agent.try_wait().is_ok_and(|s| s.is_some())
    });
    assert!(
        agent.try_wait().unwrap().is_none(),
        "agent died on a bad reload"
    );
    assert_eq!(headroom(), 0.5);
    // Valid in itself but not on this machine (more CPUs than it has): refused as at start.
    std::fs::write(
        &cfg,
        "cpu:\n  headroom_cpus: 1.0\n  min_offline_cpus: 1000\n",
    )
    .unwrap();
    hup(&agent);
    wait_for("the reload refused for this machine", 30, || {
        log().contains("CPUs of this machine") || agent.try_wait().is_ok_and(|s| s.is_some())
    });
    assert!(
        agent.try_wait().unwrap().is_none(),
        "agent died on a bad reload"
    );
    assert_eq!(headroom(), 0.5);
    // A valid one is taken.
    std::fs::write(&cfg, "cpu:\n  headroom_cpus: 1.5\n").unwrap();
    hup(&agent);
    wait_for("the new config", 30, || headroom() == 1.5);
    agent.kill().unwrap();
    let _ = agent.wait();
    let log = log();
    assert!(
        log.contains("config reload failed") && log.contains("cpu.headroom_cpus"),
        "{log}"
    );
}

/// A first setting is not drift; the same setting changed behind the agent's back and written again
/// is, and the log says so.
#[test]
fn only_a_setting_changed_behind_the_agents_back_is_reported_as_drift() {
    if !cgroups_usable("only_a_setting_changed_behind_the_agents_back_is_reported_as_drift") {
        return;
    }
    let mut t = TestRoot::new("drift");
    let caps = tidal_cgroupfs::detect_capabilities(&t.layout);
    // The offline parent's CPU setting, where this root has the cpu controller (a systemd scope
    // with only memory and pids delegated has none: then only the first half holds).
    // In the order the offline parent's plan picks them.
    let cpu_knob = if caps.has(Knob::CpuQosLevel) {
        Some((Knob::CpuQosLevel, KnobValue::Level(-1), KnobValue::Level(0)))
    } else if caps.has(Knob::CpuIdle) {
        Some((Knob::CpuIdle, KnobValue::Bool(true), KnobValue::Bool(false)))
    } else if caps.has(Knob::CpuWeight) {
        Some((
            Knob::CpuWeight,
            t.as_kernel_shows(Knob::CpuWeight, KnobValue::Shares(2)),
            KnobValue::Shares(1024),
        ))
    } else {
        None
    };
    let addr = free_addr();
    // Online work first, so the agent's first static pass comes before offline work appears.
    let pid = t.spawn(&["run", "--qos", "online", "--name", "s", "--", "sleep", "60"]);
    wait_cgroup(pid, "/online/s").expect("the online workload in its group");
    let agent = common::start_agent(
        &t,
        "tick: 100ms\nstatic_interval: 300ms\ninterference:\n  psi_threshold: 100\nbpf:\n  runq_p99_threshold: 10s\n",
        &addr,
    );
    std::thread::sleep(Duration::from_millis(1000));
    let pid = t.spawn(&[
        "run", "--qos", "offline", "--name", "w", "--", "sleep", "60",
    ]);
    wait_cgroup(pid, "/offline/offline/w").expect("the workload in its group");
    if let Some((knob, want, _)) = &cpu_knob {
        wait_for("the offline parent's setting", 10, || {
            t.knob("offline", *knob) == *want
        });
    }
    // Several static intervals over groups that got their first settings, and a workload that
    // comes after the first of them: nothing to repair.
    std::thread::sleep(Duration::from_millis(1000));
    let pid = t.spawn(&[
        "run", "--qos", "offline", "--name", "w2", "--", "sleep", "60",
    ]);
    wait_cgroup(pid, "/offline/offline/w2").expect("the second workload in its group");
    std::thread::sleep(Duration::from_millis(1500));
    let log = t.agent_log();
    assert!(!log.contains("drift repaired"), "{log}");
    match cpu_knob {
        Some((knob, want, other)) => {
            t.write_knob("offline", knob, other);
            wait_for("the setting written back, as drift", 10, || {
                t.knob("offline", knob) == want && t.agent_log().contains("drift repaired")
            });
        }
        None => println!("no cpu controller in this root: drift itself not exercised"),
    }
    common::stop(agent);
    t.kill_children();
    t.restore_ok();
}

#[test]
fn agent_runs_in_its_own_group_at_online_critical_weight_unless_told_not_to() {
    if !cgroups_usable("agent_runs_in_its_own_group_at_online_critical_weight_unless_told_not_to") {
        return;
    }
    let t = TestRoot::new("agentgrp");
    let h = t
        .layout
        .hierarchies
        .owner("cpu")
        .expect("a cpu hierarchy")
        .clone();
    let here = tidal_cgroupfs::proc::cgroup_of(std::process::id() as i32, &h);
    assert!(here.is_some());
    // Where an agent is once it answers /healthz (it moves before that).
    let cgroup_of_agent = |cfg: &str| {
        let addr = free_addr();
        let a = common::start_agent(&t, cfg, &addr);
        let there = tidal_cgroupfs::proc::cgroup_of(a.id() as i32, &h);
        common::stop(a);
        there
    };
    let systemd_v2 = t.layout.hierarchies.mode() == tidal_cgroupfs::CgroupMode::V2
        && tidal_cgroupfs::Host::detect().systemd;
    let placed = cgroup_of_agent("bpf:\n  enabled: false\n");
    if systemd_v2 {
        // The agent belongs to its systemd unit there.
        assert_eq!(placed, here, "the agent left its unit under systemd");
    } else {
        let placed = placed.unwrap_or_default();
        assert!(
            placed.ends_with("/agent") && placed.contains(&t.root_arg()),
            "the agent is in {placed}, not in the test root's agent group: {:?}",
            tree(&t)
        );
        let want = KnobValue::Shares(tidal_policy::levels::level_shares(
            tidal_model::QosLevel::OnlineCritical,
        ));
        assert_eq!(
            t.knob("agent", Knob::CpuWeight),
            t.as_kernel_shows(Knob::CpuWeight, want)
        );
    }
    // Told not to, it stays in the cgroup it was started in (this test's).
    assert_eq!(
        cgroup_of_agent("agent_group: false\nbpf:\n  enabled: false\n"),
        here,
        "agent_group: false moved the agent"
    );
    // Restore removes the group with the rest of the tree.
    t.restore_ok();
    assert!(
        !t.dir("cpu", "agent").exists(),
        "restore left the agent's group: {:?}",
        tree(&t)
    );
}

#[test]
fn a_workload_over_its_level_s_open_files_ceiling_is_named_and_offline_is_stopped() {
    if !cgroups_usable(
        "a_workload_over_its_level_s_open_files_ceiling_is_named_and_offline_is_stopped",
    ) {
        return;
    }
    let mut t = TestRoot::new("files");
    let addr = free_addr();
    let a = common::start_agent(
        &t,
        "tick: 100ms\nstats_interval: 200ms\nbpf:\n  enabled: false\nfiles:\n  online_max: 8\n  offline_max: 8\n  stop: true\n",
        &addr,
    );
    // Ten descriptors each at least (0-2 and 3-9, kept across exec, and what the test runner
    // passes down), against a ceiling of 8; `sleep` alone holds three and what is passed down.
    let many = "exec 3</dev/null 4</dev/null 5</dev/null 6</dev/null 7</dev/null 8</dev/null 9</dev/null; exec sleep 60";
    for (qos, name, cmd) in [
        ("offline", "hoarder", many),
        ("online", "reader", many),
        ("offline", "modest", "exec sleep 60"),
    ] {
        t.spawn(&["run", "--qos", qos, "--name", name, "--", "sh", "-c", cmd]);
    }
    // A group not made yet is not frozen.
    let frozen = |g: &str| {
        t.knob_file(g, Knob::Freeze).exists() && t.knob(g, Knob::Freeze) == KnobValue::Bool(true)
    };
    let over = || {
        get(&addr, "/metrics").and_then(|(_, m)| {
            m.lines()
                .find_map(|l| l.strip_prefix("tidal_workloads_over_open_files "))
                .and_then(|v| v.parse::<f64>().ok())
        })
    };
    wait_for("two workloads over their ceilings", 20, || {
        over() == Some(2.0)
    });
    let can_freeze = tidal_cgroupfs::detect_capabilities(&t.layout).has(Knob::Freeze);
    if can_freeze {
        wait_for("the offline hoarder frozen", 20, || {
            frozen("offline/offline/hoarder")
        });
    }
    common::stop(a);
    let log = t.agent_log();
    // Stopping the agent runs it again.
    assert!(!frozen("offline/offline/hoarder"), "{log}");
    assert!(
        log.contains("offline/offline/hoarder holds ")
            && log.contains("online/reader holds ")
            && (log.contains(": stopped") == can_freeze),
        "{log}"
    );
    // Online work over its ceiling is named, never stopped; the one under it is left alone.
    assert!(!frozen("online/reader"));
    assert!(!frozen("offline/offline/modest"));
    t.restore_ok();
    t.kill_children();
}

/// The number in the stall guard's log line "offline frozen (N group file(s) written, …)".
fn braked_files(log: &str) -> Option<usize> {
    let l = log.lines().find(|l| l.contains("has not come round for"))?;
    l.split("offline frozen (")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `tidal_stall_brakes_total` from the agent's /metrics.
fn brakes(addr: &str) -> Option<u64> {
    let (_, m) = get(addr, "/metrics")?;
    m.lines()
        .find_map(|l| l.strip_prefix("tidal_stall_brakes_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// The stall tests' agent: a guard acting past 300 ms, freezes released after a second.
const STALL_CFG: &str =
    "tick: 100ms\nbpf:\n  enabled: false\ninterference:\n  stall_after: 300ms\n  calm_period: 1s\n";

/// A test root with one offline workload spinning and no online one.
fn offline_spinning(tag: &str) -> TestRoot {
    let mut t = TestRoot::new(tag);
    t.spin("offline", "batch");
    t.wait_running(&["offline/offline/batch"]);
    t
}

/// Whether the offline level's group is frozen.
fn frozen(t: &TestRoot) -> bool {
    let offline = tidal_model::QosLevel::Offline.group_path().to_string();
    t.knob(&offline, Knob::Freeze) == KnobValue::Bool(true)
}

/// The agent's loop stops (`--inject-stall`: it sleeps 5 s after its tenth tick, as if its CPU
/// were taken): its stall guard freezes offline while the loop still sleeps, the next tick takes
/// the freeze into the ladder, and once the loop comes round for `calm_period` the ladder releases
/// it, with no other signal speaking (no online workload).
#[test]
fn the_stall_guard_freezes_offline_while_the_agents_loop_stops_and_the_ladder_releases_it() {
    if !cgroups_usable(
        "the_stall_guard_freezes_offline_while_the_agents_loop_stops_and_the_ladder_releases_it",
    ) {
        return;
    }
    let t = offline_spinning("stall");
    let cfg = t.write_config(STALL_CFG);
    let addr = free_addr();
    let mut cmd = t.agent_cmd(&cfg, &addr);
    cmd.args(["--inject-stall", "10:5000"]);
    let a = t.spawn_agent(cmd, &addr);
    assert!(!frozen(&t), "offline frozen before any stall");
    wait_for("the loop to stall", 30, || {
        t.agent_log().contains("stalling the loop")
    });
    // While the loop sleeps (5 s; the guard acts within 1.25 × 300 ms): the guard, not the loop.
    wait_for(
        "the stall guard to freeze offline while the loop sleeps",
        3,
        || frozen(&t),
    );
    // The guard says what it froze once its writes are done: its line can trail the freeze.
    wait_for("the stall guard to say what it froze", 3, || {
        braked_files(&t.agent_log()).is_some()
    });
    let log = t.agent_log();
    let guard_said = log.find("has not come round for").unwrap_or(log.len());
    assert!(
        !log[..guard_said].contains("interference ladder"),
        "the loop acted before the guard:\n{log}"
    );
    assert!(braked_files(&log).is_some_and(|n| n >= 1), "{log}");
    // The loop comes round: the ladder holds the freeze, then releases it after the calm period.
    wait_for("the ladder to take the stall over", 10, || {
        t.agent_log().contains("the agent's loop stopped for")
    });
    wait_for("offline thawed after the calm period", 30, || !frozen(&t));
    // The ladder's line is written after its writes: it can trail the thaw.
    wait_for("the ladder to say why it released", 5, || {
        t.agent_log().contains("the agent's loop comes round")
    });
    assert!(brakes(&addr).is_some_and(|n| n >= 1), "a brake counted");
    common::stop(a);
    t.restore_ok();
}

/// The scheduling policy of a process's thread named `name` (`/proc/PID/task/TID/stat`, field 41).
fn thread_policy(pid: u32, name: &str) -> Option<u32> {
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let dir = e.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let after_comm = stat.rsplit_once(')')?.1;
        // Fields from the third (state) on: the policy is the 41st.
        return after_comm.split_whitespace().nth(41 - 3)?.parse().ok();
    }
    None
}

/// Whether the agent can give its group real-time time here: the kernel does not schedule
/// real-time by group (no v1 `cpu.rt_runtime_us`), or the group above the test's root has some.
fn real_time_possible(t: &TestRoot) -> bool {
    let Some(parent) = t.dir("cpu", "").parent().map(std::path::Path::to_path_buf) else {
        return false;
    };
    match std::fs::read_to_string(parent.join("cpu.rt_runtime_us")) {
        Ok(v) => v.trim().parse::<i64>().is_ok_and(|us| us != 0),
        Err(_) => true,
    }
}

/// The agent's CPU taken: a CFS quota of 1 ms a second on its group starves its loop for most of
/// each second, and the stall guard freezes offline; given its CPU back, the ladder releases it.
/// The guard thread runs at real-time priority (SCHED_FIFO; the agent gives its group real-time
/// time where the kernel schedules real-time by group and the group above has some), which CFS
/// starvation cannot hold back; where it cannot, it says so. On a pure v2 host under systemd the
/// agent stays in its unit, outside this test's tree: there only the priority is checked.
#[test]
fn the_stall_guard_runs_at_real_time_priority_and_freezes_offline_when_the_agents_cpu_is_taken() {
    if !cgroups_usable(
        "the_stall_guard_runs_at_real_time_priority_and_freezes_offline_when_the_agents_cpu_is_taken",
    ) {
        return;
    }
    let t = offline_spinning("starve");
    let addr = free_addr();
    let a = common::start_agent(&t, STALL_CFG, &addr);
    wait_for("the stall guard to start", 10, || {
        t.agent_log().contains("stall guard at")
    });
    let log = t.agent_log();
    if real_time_possible(&t) {
        assert!(
            log.contains("stall guard at real-time priority"),
            "the guard did not get real-time priority:\n{log}"
        );
        assert_eq!(
            thread_policy(a.id(), "stall-guard"),
            Some(libc::SCHED_FIFO as u32),
            "the guard thread's policy"
        );
    } else {
        assert!(
            log.contains("stall guard at normal priority"),
            "the guard claims a priority it cannot have:\n{log}"
        );
    }
    let systemd_v2 = t.layout.hierarchies.mode() == tidal_cgroupfs::CgroupMode::V2
        && tidal_cgroupfs::Host::detect().systemd;
    if !systemd_v2 {
        assert!(!frozen(&t), "offline frozen before any stall");
        t.write_knob(
            "agent",
            Knob::CpuMax,
            KnobValue::Quota {
                quota_us: Some(1_000),
                period_us: 1_000_000,
            },
        );
        wait_for("the stall guard to freeze offline", 20, || frozen(&t));
        t.write_knob(
            "agent",
            Knob::CpuMax,
            KnobValue::Quota {
                quota_us: None,
                period_us: 100_000,
            },
        );
        // Its line can trail the freeze.
        wait_for("the stall guard to say what it froze", 10, || {
            braked_files(&t.agent_log()).is_some()
        });
        let log = t.agent_log();
        assert!(braked_files(&log).is_some_and(|n| n >= 1), "{log}");
        wait_for("offline thawed once the loop runs again", 30, || {
            !frozen(&t)
        });
    }
    common::stop(a);
    t.restore_ok();
}
