//! Hardening on real cgroups: one agent per root and restore away from it and from a run setting
//! up, no re-pinning, kills that leave nothing, knobs the kernel refuses, cpuset restore order, a frozen lock holder, no write
//! without a journal, and a seeded series of SIGKILLs that restore must undo whole.

mod common;

use common::{cgroups_usable, free_addr, get, start_agent, wait_cgroup, wait_for, TestRoot};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;
use tidal_actuator::{Actuator, Outcome};
use tidal_model::{CpuSet, GroupPath, Knob, KnobValue, Target};

/// An agent that confines on any machine size and reacts fast, with no interference steps.
const CONFINING: &str = "tick: 100ms\nstats_interval: 200ms\ncpu:\n  grow_after: 500ms\n  confine_min_cpus: 1\n  noise_floor_cpus: 0.5\ninterference:\n  psi_threshold: 100\nbpf:\n  runq_p99_threshold: 10s\n";

fn all_cpus(t: &TestRoot) -> CpuSet {
    tidal_cgroupfs::detect_capabilities(&t.layout).cpus
}

fn offline_cpus(t: &TestRoot) -> CpuSet {
    match t.knob("offline", Knob::CpusetCpus) {
        KnobValue::Cpus(c) if !c.is_empty() => c,
        _ => t.effective_cpus("offline"),
    }
}

fn sigkill(pid: u32) {
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

#[test]
fn one_agent_per_root_and_restore_waits_for_it_or_stops_it_with_force() {
    if !cgroups_usable("one_agent_per_root_and_restore_waits_for_it_or_stops_it_with_force") {
        return;
    }
    let mut t = TestRoot::new("lock");
    let addr = free_addr();
    let mut agent = start_agent(&t, CONFINING, &addr);
    t.spin("offline", "hog");
    wait_for("the hog's group", 10, || {
        t.dir("cpu", "offline/offline/hog").exists()
    });
    // A second agent on the same root refuses, naming the holder.
    let out = t
        .cmd()
        .args(["agent", "--listen", &free_addr()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("held by a running agent") && err.contains(&agent.id().to_string()),
        "{err}"
    );
    // restore refuses too, and changes nothing.
    let out = t.tidal(&["restore"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(t.dir("cpu", "offline/offline/hog").exists());
    assert!(
        agent.try_wait().unwrap().is_none(),
        "restore must not touch the agent"
    );
    // `tidal release` finds the holder (a pid the kernel shows holding the lock) and waits for it
    // to say offline has everything back; the agent stays, paused.
    let out = t.tidal(&["release", "--wait", "20"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&format!("pid {}", agent.id())),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        agent.try_wait().unwrap().is_none(),
        "release stopped the agent"
    );
    // --force stops the agent (it gives offline its CPUs back and thaws it), then restores.
    let out = t.tidal(&["restore", "--force"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let status = agent.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the agent stopped cleanly");
    assert!(text.contains("kept group"), "{text}");
    assert_eq!(
        t.knob("offline/offline", Knob::Freeze),
        KnobValue::Bool(false),
        "nothing left frozen"
    );
}

#[test]
fn restore_does_not_pin_a_workload_started_while_offline_was_confined() {
    if !cgroups_usable("restore_does_not_pin_a_workload_started_while_offline_was_confined") {
        return;
    }
    let mut t = TestRoot::new("repin");
    let all = all_cpus(&t);
    let n = all.len();
    if n < 2 {
        eprintln!("one CPU: nothing to confine");
        return;
    }
    let addr = free_addr();
    let mut agent = start_agent(&t, CONFINING, &addr);
    t.spin("offline", "first");
    wait_for("offline to exist", 10, || {
        t.dir("cpuset", "offline").exists()
    });
    for i in 0..n {
        t.spin("online", &format!("load{i}"));
    }
    wait_for("offline to shrink", 15, || offline_cpus(&t).len() < n);
    // Started while offline is confined: on v1 it inherits the confined set.
    let late = t.spin("offline", "late");
    wait_cgroup(late, "/offline/offline/late").expect("late workload placed");
    std::thread::sleep(Duration::from_millis(600));
    // The agent dies without giving CPUs back; restore alone must not leave "late" pinned.
    agent.kill().unwrap();
    let _ = agent.wait();
    let out = t.tidal(&["restore"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        t.effective_cpus("offline/offline/late"),
        all,
        "the workload kept running pinned after restore:\n{text}"
    );
    assert_eq!(
        t.knob("offline/offline", Knob::Freeze),
        KnobValue::Bool(false),
        "{text}"
    );
}

#[test]
fn kill_leaves_no_task_even_when_the_group_forks() {
    if !cgroups_usable("kill_leaves_no_task_even_when_the_group_forks") {
        return;
    }
    let t = TestRoot::new("kill");
    let mut act = Actuator::new(t.layout.clone(), t.state.path(), false).unwrap();
    let g = GroupPath::new("forker").unwrap();
    act.ensure_group(&g).unwrap();
    // A process that keeps forking short-lived children.
    let mut child = Command::new("sh")
        .args(["-c", "while :; do sleep 5 & sleep 0.01; done"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    act.move_pid(&g, child.id()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(t.layout.has_procs(&Target::Tidal(g.clone())));
    assert_eq!(act.kill(&g).unwrap(), Outcome::Written);
    let _ = child.wait();
    assert!(
        !t.layout.has_procs(&Target::Tidal(g.clone())),
        "tasks survived the kill"
    );
    // Nothing to kill now: a no-op, not a "written" kill of nothing.
    assert_eq!(act.kill(&g).unwrap(), Outcome::Unchanged);
    assert_eq!(act.remove_group_waiting(&g, 25).unwrap(), Outcome::Written);
}

#[test]
fn kill_reaches_a_task_that_is_in_the_group_in_only_some_hierarchies() {
    if !cgroups_usable("kill_reaches_a_task_that_is_in_the_group_in_only_some_hierarchies") {
        return;
    }
    let t = TestRoot::new("split");
    // What it guards needs a hybrid host (v1 controllers beside a v2 hierarchy, whose
    // `cgroup.kill` reaches the v2 group alone); elsewhere a kill signals by pid in every
    // hierarchy anyway.
    if t.layout.roots.len() < 2 {
        eprintln!("one hierarchy here: a task cannot sit in a group in only some of them");
        return;
    }
    let mut act = Actuator::new(t.layout.clone(), t.state.path(), false).unwrap();
    let g = GroupPath::new("split").unwrap();
    act.ensure_group(&g).unwrap();
    // Killed and reaped whatever happens, so that a failure leaves no group behind.
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reaped(Command::new("sleep").arg("30").spawn().unwrap());
    let pid = child.0.id();
    act.move_pid(&g, pid).unwrap();
    // Out of the group again in the hierarchy `cgroup.kill` acts on where there is one, as a task
    // forked while its parent was being moved across the hierarchies can be.
    let back = t.layout.unified().or(t.layout.primary()).unwrap();
    let home = back.hierarchy.dir(&back.hierarchy.self_path);
    std::fs::write(home.join("cgroup.procs"), pid.to_string()).unwrap();
    assert!(t.layout.has_procs(&Target::Tidal(g.clone())));
    assert_eq!(act.kill(&g).unwrap(), Outcome::Written);
    let status = child.0.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{status}"
    );
    assert_eq!(act.remove_group_waiting(&g, 25).unwrap(), Outcome::Written);
}

#[test]
fn a_write_the_kernel_refuses_marks_the_knob_unsupported_without_retrying() {
    if !cgroups_usable("a_write_the_kernel_refuses_marks_the_knob_unsupported_without_retrying") {
        return;
    }
    let t = TestRoot::new("einval");
    t.make_group("idle");
    // The kernel refuses a weight on an idle group with EINVAL (v1 and v2).
    t.write_knob("idle", Knob::CpuIdle, KnobValue::Bool(true));
    let mut act = Actuator::new(t.layout.clone(), t.state.path(), false).unwrap();
    let target = Target::Tidal(GroupPath::new("idle").unwrap());
    let w = KnobValue::Shares(4096);
    assert_eq!(
        act.set(&target, Knob::CpuWeight, &w).unwrap(),
        Outcome::Unsupported
    );
    assert_eq!(act.stats().unsupported.get(&Knob::CpuWeight), Some(&1));
    // Not tried again before the re-probe interval, even once the kernel would take it.
    t.write_knob("idle", Knob::CpuIdle, KnobValue::Bool(false));
    for _ in 0..5 {
        assert_eq!(
            act.set(&target, Knob::CpuWeight, &w).unwrap(),
            Outcome::Unsupported
        );
    }
    assert_eq!(act.stats().unsupported.get(&Knob::CpuWeight), Some(&1));
    assert_eq!(act.stats().writes, 0);
    // After the re-probe interval it is tried, and now taken.
    act.set_reprobe_interval(Duration::ZERO);
    assert_eq!(
        act.set(&target, Knob::CpuWeight, &w).unwrap(),
        Outcome::Written
    );
}

#[test]
fn restore_returns_cpusets_parents_first_and_keeps_busy_groups() {
    if !cgroups_usable("restore_returns_cpusets_parents_first_and_keeps_busy_groups") {
        return;
    }
    let t = TestRoot::new("cpusets");
    let all = all_cpus(&t);
    if all.len() < 2 {
        eprintln!("one CPU: no smaller cpuset to restore from");
        return;
    }
    // Both groups exist before tidal, with every CPU.
    t.make_group("p/c");
    t.write_knob("p", Knob::CpusetCpus, KnobValue::Cpus(all.clone()));
    t.write_knob("p/c", Knob::CpusetCpus, KnobValue::Cpus(all.clone()));
    let mut act = Actuator::new(t.layout.clone(), t.state.path(), false).unwrap();
    let one = KnobValue::Cpus(all.last_n(1));
    // Shrinking goes child first (v1 refuses a parent below its child).
    for g in ["p/c", "p"] {
        act.set(
            &Target::Tidal(GroupPath::new(g).unwrap()),
            Knob::CpusetCpus,
            &one,
        )
        .unwrap();
    }
    let out = t.tidal(&["restore"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        t.knob("p", Knob::CpusetCpus),
        KnobValue::Cpus(all.clone()),
        "{text}"
    );
    assert_eq!(
        t.knob("p/c", Knob::CpusetCpus),
        KnobValue::Cpus(all),
        "{text}"
    );
}

#[test]
fn a_frozen_process_holding_the_journal_lock_does_not_stall_the_agent() {
    if !cgroups_usable("a_frozen_process_holding_the_journal_lock_does_not_stall_the_agent") {
        return;
    }
    let mut t = TestRoot::new("frozenlock");
    let all = all_cpus(&t);
    let n = all.len();
    // A process takes the journal's lock and is frozen holding it (a `tidal run` frozen mid-update):
    // the test locks the file and hands the locked descriptor to a child as its fd 50.
    let lock = t.state.path().join("journal.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .unwrap();
    f.lock().unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&f);
    let mut cmd = Command::new("sleep");
    cmd.arg("600");
    // SAFETY: dup2 is async-signal-safe; the new fd 50 is not close-on-exec, so it survives exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 50) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut holder = cmd.spawn().unwrap();
    drop(f);
    // The child holds the lock now: nobody else can take it.
    let probe = std::fs::OpenOptions::new().write(true).open(&lock).unwrap();
    assert!(
        probe.try_lock().is_err(),
        "the child does not hold the lock"
    );
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(holder.id() as i32, libc::SIGSTOP) };
    let addr = free_addr();
    let mut agent = start_agent(&t, CONFINING, &addr);
    t.spin("offline", "hog");
    if n >= 2 {
        for i in 0..n {
            t.spin("online", &format!("load{i}"));
        }
        wait_for("offline confined while the lock is held", 15, || {
            t.dir("cpuset", "offline").exists() && offline_cpus(&t).len() < n
        });
    }
    let ticks = |a: &str| -> f64 {
        get(a, "/metrics")
            .and_then(|(_, m)| {
                m.lines()
                    .find(|l| l.starts_with("tidal_ticks_total "))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0.0)
    };
    // Ticks go on while the lock is held (a stalled agent would not tick at all; an emulated CPU
    // ticks slowly).
    let before = ticks(&addr);
    wait_for("the agent ticking while the lock is held", 20, || {
        ticks(&addr) > before + 3.0
    });
    assert_eq!(get(&addr, "/healthz").map(|(c, _)| c), Some(200));
    agent.kill().unwrap();
    let _ = agent.wait();
    // SAFETY: as above.
    unsafe { libc::kill(holder.id() as i32, libc::SIGKILL) };
    let _ = holder.wait();
}

#[test]
fn no_write_happens_when_its_original_cannot_be_journalled() {
    if !cgroups_usable("no_write_happens_when_its_original_cannot_be_journalled") {
        return;
    }
    let t = TestRoot::new("enospc");
    t.make_group("g");
    t.write_knob("g", Knob::CpuWeight, KnobValue::Shares(1024));
    // A state dir on a tiny tmpfs, then filled.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k,mode=0700", "tidal-test"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs for the state dir");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(state.clone());
    let mut act = Actuator::new(t.layout.clone(), &state, false).unwrap();
    let _ = std::fs::write(state.join("filler"), vec![b'x'; 64 << 10]);
    let target = Target::Tidal(GroupPath::new("g").unwrap());
    let before = t.knob("g", Knob::CpuWeight);
    let r = act.set(&target, Knob::CpuWeight, &KnobValue::Shares(8192));
    assert!(r.is_err(), "{r:?}");
    assert_eq!(
        t.knob("g", Knob::CpuWeight),
        before,
        "written without a journal"
    );
    // No temp file left behind by the failed update.
    let temps: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
}

#[test]
fn seeded_sigkills_of_the_agent_converge_and_restore_returns_everything() {
    if !cgroups_usable("seeded_sigkills_of_the_agent_converge_and_restore_returns_everything") {
        return;
    }
    let mut t = TestRoot::new("faults");
    let all = all_cpus(&t);
    let n = all.len();
    // Pre-existing offline parent with known values: restore must return them.
    t.make_group("offline");
    t.write_knob("offline", Knob::CpusetCpus, KnobValue::Cpus(all.clone()));
    let idle_before = t.knob("offline", Knob::CpuIdle);
    t.spin("offline", "hog");
    t.spin("offline-low", "low");
    // A small LCG: the same kill points every run.
    let mut seed: u64 = 0x5eed_7da1;
    let mut next = |m: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % m
    };
    let cfg = "tick: 50ms\nsample_interval: 25ms\nstats_interval: 100ms\ncpu:\n  grow_after: 200ms\n  confine_min_cpus: 1\n  noise_floor_cpus: 0.5\ninterference:\n  psi_threshold: 1\n  escalate_every: 50ms\n  calm_period: 1s\n";
    let mut loads: Vec<u32> = Vec::new();
    for round in 0..8 {
        // Online load comes and goes, so the agent is mid-confinement or mid-release when it dies.
        if next(2) == 0 && loads.len() < n {
            loads.push(t.spin("online", &format!("load{round}")));
        } else if let Some(p) = loads.pop() {
            sigkill(p);
        }
        let addr = free_addr();
        let mut agent = start_agent(&t, cfg, &addr);
        std::thread::sleep(Duration::from_millis(100 + next(700)));
        agent.kill().unwrap();
        let _ = agent.wait();
    }
    // A restarted agent converges (it adopts the tree and answers), then dies too.
    let addr = free_addr();
    let mut agent = start_agent(&t, cfg, &addr);
    wait_for("a converged /state", 10, || {
        get(&addr, "/state").is_some_and(|(c, s)| c == 200 && s.contains("offline/offline/hog"))
    });
    agent.kill().unwrap();
    let _ = agent.wait();
    for p in loads {
        sigkill(p);
    }
    let out = t.tidal(&["restore"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        t.knob("offline", Knob::CpusetCpus),
        KnobValue::Cpus(all.clone()),
        "{text}"
    );
    assert_eq!(t.knob("offline", Knob::CpuIdle), idle_before, "{text}");
    for g in ["offline/offline", "offline/offline-low"] {
        if t.dir("cpu", g).exists() {
            assert_eq!(
                t.knob(g, Knob::Freeze),
                KnobValue::Bool(false),
                "{g} frozen: {text}"
            );
        }
    }
    for w in ["offline/offline/hog", "offline/offline-low/low"] {
        assert_eq!(t.effective_cpus(w), all, "{w} pinned: {text}");
    }
}

/// A `tidal run` waits while a restore holds its root's set-up lock, creating nothing, and goes on
/// once the restore is done: a restore never removes a level between a run's making sure of it and
/// its workload's group appearing under it.
#[test]
fn a_run_waits_for_a_restore_of_its_root_before_it_sets_up() {
    if !cgroups_usable("a_run_waits_for_a_restore_of_its_root_before_it_sets_up") {
        return;
    }
    let t = TestRoot::new("setuplock");
    let restoring =
        tidal_actuator::SetupLock::exclusive(&t.layout, t.state.path(), Duration::from_secs(5))
            .expect("the set-up lock, as a restore takes it");
    let mut run = t
        .cmd()
        .args(["run", "--qos", "offline", "--name", "waiter", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        run.try_wait().unwrap().is_none(),
        "the run went on while a restore held its root"
    );
    assert!(!t.dir("cpu", "offline/offline").exists(), "a level made");
    drop(restoring);
    let status = common::wait_exit(&mut run, 20, "the run to go on once let go");
    let out = run.wait_with_output().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(t.dir("cpu", "offline/offline").exists(), "no level made");
    t.restore_ok();
}

#[test]
fn run_dry_run_and_exec_failures_leave_nothing() {
    if !cgroups_usable("run_dry_run_and_exec_failures_leave_nothing") {
        return;
    }
    let t = TestRoot::new("runedge");
    let marker = t.state.path().join("ran");
    let out = t
        .cmd()
        .args(["--dry-run", "run", "--qos", "offline", "--", "touch"])
        .arg(&marker)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!marker.exists(), "--dry-run run ran the command");
    assert!(t.leftovers().is_empty(), "{:?}", t.leftovers());
    // A file that is not executable: 126, and no empty group left.
    let script = t.state.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\ntrue\n").unwrap();
    let out = t
        .cmd()
        .args(["run", "--qos", "offline", "--name", "nx", "--"])
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(126),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !t.dir("cpu", "offline/offline/nx").exists(),
        "the empty group stayed"
    );
}

#[test]
fn sighup_that_changes_listen_says_a_restart_is_needed() {
    if !cgroups_usable("sighup_that_changes_listen_says_a_restart_is_needed") {
        return;
    }
    let t = TestRoot::new("hup");
    let addr = free_addr();
    let cfg = t.state.path().join("agent.yaml");
    std::fs::write(&cfg, format!("listen: {addr}\n")).unwrap();
    let log = std::fs::File::create(t.state.path().join("agent.log")).unwrap();
    let mut agent = t
        .cmd()
        .args(["agent", "--config"])
        .arg(&cfg)
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for("agent", 10, || get(&addr, "/healthz").is_some());
    std::fs::write(&cfg, format!("listen: {}\n", free_addr())).unwrap();
    // SAFETY: kill(2) on the agent this test started.
    unsafe { libc::kill(agent.id() as i32, libc::SIGHUP) };
    // Read once the reload has been logged (an emulated CPU takes its time).
    let log = || std::fs::read_to_string(t.state.path().join("agent.log")).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !log().contains("restart the agent") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        get(&addr, "/healthz").is_some(),
        "the old address must still answer"
    );
    agent.kill().unwrap();
    let _ = agent.wait();
    let text = log();
    assert!(text.contains("restart the agent"), "{text}");
}

#[test]
fn bench_stops_quickly_on_ctrl_c_to_its_process_group_and_leaves_nothing() {
    if !cgroups_usable("bench_stops_quickly_on_ctrl_c_to_its_process_group_and_leaves_nothing") {
        return;
    }
    // As a terminal does it: the bench leads its own process group and SIGINT goes to the group.
    let mut child = Command::new(common::tidal_bin())
        .args([
            "bench",
            "--rounds",
            "3",
            "--duration",
            "5",
            "--no-step",
            "--scenarios",
            "tidal",
        ])
        .env("TIDAL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(6));
    // SAFETY: kill(2) on the process group this test made.
    unsafe { libc::kill(-(pid as i32), libc::SIGINT) };
    let status = common::wait_exit(&mut child, 15, "the bench to stop on Ctrl-C");
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(
        !err.contains("load generator"),
        "blamed the load generator: {err}"
    );
    let layout = tidal_cgroupfs::Layout::discover(&tidal_cgroupfs::RootSpec::Named(format!(
        "tidal-bench-{pid}-colo"
    )))
    .unwrap();
    for r in &layout.roots {
        assert!(
            !r.root_dir.exists(),
            "left behind: {}\nbench stderr:\n{err}",
            common::left_in(&r.root_dir)
        );
    }
}
