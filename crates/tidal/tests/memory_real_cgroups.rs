//! Memory on real cgroups (v1 here; pure v2 in the VM harness): OOM ordering on a workload's tasks,
//! and an offline memory hog held under the agent's ceiling while an online workload keeps its
//! memory. Groups are made only under the test root, which sits under this process's own cgroup in
//! every hierarchy (its memory cgroup included).

mod common;

use common::{
    can_lower, cgroups_usable, free_addr, get, start_agent, state, stop, wait_for, TestRoot,
};
use std::time::{Duration, Instant};
use tidal_model::{GroupPath, Knob, KnobValue, QosLevel, Target};

fn tasks(t: &TestRoot, group: &str) -> Vec<i32> {
    let dir = t.dir("cpu", group);
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn oom_adj(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn oom_score_adj_is_set_on_every_task_of_a_workload() {
    if !cgroups_usable("oom_score_adj_is_set_on_every_task_of_a_workload") {
        return;
    }
    let mut t = TestRoot::new("oom");
    t.spawn(&[
        "run",
        "--qos",
        "offline-low",
        "--name",
        "low",
        "--",
        "sleep",
        "600",
    ]);
    t.spawn(&[
        "run",
        "--qos",
        "online-critical",
        "--name",
        "db",
        "--",
        "sleep",
        "600",
    ]);
    // A task that gave up its level's value after `tidal run` set it. Once the test writes to
    // the fifo it does so again and starts a second task, which inherits 0.
    let fifo = t.state.path().join("late");
    let c_fifo = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: mkfifo(3) on a path in this test's own temp dir.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
    let script = format!(
        "echo 0 > /proc/self/oom_score_adj; read x < {f}; echo 0 > /proc/self/oom_score_adj; sleep 600 & exec sleep 600",
        f = fifo.display()
    );
    t.spawn(&[
        "run", "--qos", "offline", "--name", "reset", "--", "sh", "-c", &script,
    ]);
    // An online task more protected than its level (a database that lowered its own value, the
    // kubelet's -997): the agent never raises it. Lowering needs CAP_SYS_RESOURCE (the VM harness
    // has it).
    let lowered = can_lower();
    if lowered {
        t.spawn(&[
            "run",
            "--qos",
            "online",
            "--name",
            "lowered",
            "--",
            "sh",
            "-c",
            "echo -5 > /proc/self/oom_score_adj; exec sleep 600",
        ]);
    }
    // `tidal run` started by a more protected parent: an online level never raises the value.
    if lowered {
        let mut c = std::process::Command::new("sh");
        c.args([
            "-c",
            "echo -950 > /proc/self/oom_score_adj && exec \"$0\" \"$@\"",
        ])
        .arg(common::tidal_bin())
        .args(["run", "--qos", "online-critical", "--name", "deeper", "--"])
        .args(["sleep", "600"])
        .env("TIDAL_ROOT", t.root_arg())
        .env("TIDAL_STATE_DIR", t.state.path())
        .env_remove("TIDAL_LOG");
        t.spawn_cmd(c);
    }
    // With the agent's config, `tidal run` uses its values.
    let cfg = t.write_config("memory:\n  oom_score_adj:\n    offline: 990\n");
    let cfg = cfg.display().to_string();
    t.spawn(&[
        "run",
        "--qos",
        "offline",
        "--name",
        "configured",
        "--config",
        &cfg,
        "--",
        "sleep",
        "600",
    ]);
    wait_for("the workloads' tasks", 10, || {
        [
            "offline/offline-low/low",
            "online-critical/db",
            "offline/offline/reset",
            "offline/offline/configured",
        ]
        .iter()
        .all(|g| !tasks(&t, g).is_empty())
    });
    for p in tasks(&t, "offline/offline/configured") {
        assert_eq!(oom_adj(p), Some(990));
    }
    // `tidal run` gives the command its level's value; its children inherit it.
    for p in tasks(&t, "offline/offline-low/low") {
        assert_eq!(oom_adj(p), Some(1000));
    }
    // Lowering it needs CAP_SYS_RESOURCE; without it the task keeps what it inherited.
    let inherited = oom_adj(std::process::id() as i32);
    for p in tasks(&t, "online-critical/db") {
        let want = if can_lower() { Some(-900) } else { inherited };
        assert_eq!(oom_adj(p), want);
    }
    if lowered {
        // Past `tidal run`'s exec, where it has set what it sets.
        wait_for("the deeper workload's command", 10, || {
            let p = tasks(&t, "online-critical/deeper");
            !p.is_empty()
                && p.iter().all(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.trim() == "sleep")
                })
        });
        for p in tasks(&t, "online-critical/deeper") {
            assert_eq!(
                oom_adj(p),
                Some(-950),
                "`tidal run` raised its parent's value"
            );
        }
    }
    wait_for("the reset task at 0", 10, || {
        tasks(&t, "offline/offline/reset")
            .iter()
            .all(|p| oom_adj(*p) == Some(0))
    });
    // The agent puts every task of a workload back to its level's value.
    let addr = free_addr();
    // No static pass during the test: what the agent sets after its first pass, it sets because
    // a workload's tasks grew.
    let agent = start_agent(
        &t,
        "tick: 100ms\nstats_interval: 200ms\nstatic_interval: 1h\n",
        &addr,
    );
    wait_for("oom_score_adj 999 on the reset task", 10, || {
        tasks(&t, "offline/offline/reset")
            .iter()
            .all(|p| oom_adj(*p) == Some(999))
    });
    // A task that joins a workload gets its level's value without waiting for a static pass.
    std::fs::write(&fifo, "go\n").unwrap();
    wait_for("the reset workload's two new tasks at 999", 10, || {
        let p = tasks(&t, "offline/offline/reset");
        p.len() == 2 && p.iter().all(|p| oom_adj(*p) == Some(999))
    });
    if lowered {
        wait_for("the lowered task", 10, || {
            let p = tasks(&t, "online/lowered");
            !p.is_empty() && p.iter().all(|p| oom_adj(*p) == Some(-5))
        });
        // The pass that set the reset task covered it too: not raised to the level's 0.
        for p in tasks(&t, "online/lowered") {
            assert_eq!(oom_adj(p), Some(-5), "an online task's value was raised");
        }
    }
    stop(agent);
    t.kill_children();
    t.restore_ok();
}

#[test]
fn an_offline_memory_hog_is_held_under_its_ceiling_while_online_keeps_its_memory() {
    if !cgroups_usable(
        "an_offline_memory_hog_is_held_under_its_ceiling_while_online_keeps_its_memory",
    ) {
        return;
    }
    let mut t = TestRoot::new("memhog");
    let total =
        tidal_cgroupfs::proc::parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap())
            .unwrap()
            .total;
    // A ceiling of about 256 MiB for offline, whatever the machine's RAM. Without the
    // interference signals: under an emulated CPU they freeze offline, which would hold the hog
    // in place of the ceiling.
    let addr = free_addr();
    let agent = start_agent(&t, &ceiling_cfg(total, 256 << 20, "200ms"), &addr);
    let exe = common::tidal_bin();
    // Online holds 128 MiB; offline tries for 1 GiB.
    t.spawn(&[
        "run",
        "--qos",
        "online",
        "--name",
        "cache",
        "--",
        exe,
        "worker",
        "memory",
        "--bytes",
        "134217728",
        "--margin",
        "0",
    ]);
    t.spawn(&[
        "run",
        "--qos",
        "offline",
        "--name",
        "hog",
        "--",
        exe,
        "worker",
        "memory",
        "--bytes",
        "1073741824",
        "--margin",
        "0",
    ]);
    let offline = Target::Tidal(QosLevel::offline_parent());
    wait_ceiling(&t, &offline);
    // v1: offline is over its soft limit from its first page, so reclaim under contention takes it
    // first (v2 has memory.low for online instead).
    let memory_v1 = t
        .layout
        .owner("memory")
        .is_some_and(|r| r.version() == tidal_cgroupfs::Version::V1);
    if memory_v1 {
        assert_eq!(
            t.knob("offline", Knob::MemorySoftLimit),
            KnobValue::Bytes(Some(0)),
            "the offline parent's soft limit"
        );
    }
    let ceiling = 256u64 << 20;
    let usage = |g: &str| {
        t.layout
            .memory_working_set(&Target::Tidal(GroupPath::new(g).unwrap()))
            .and_then(|mut r| r.read().ok())
    };
    // Held, or evicted down to it: v2's memory.high throttles the hog at the ceiling; on v1 a
    // limit cannot go below what the hog already holds, so growth stops there and the largest
    // offline workload is evicted until offline is under its ceiling.
    // The memory controls hold it, never a freeze (the ladder freezes a level's group).
    let thawed = || {
        assert_eq!(
            t.knob("offline/offline", Knob::Freeze),
            KnobValue::Bool(false),
            "offline was frozen; agent log:\n{}",
            t.agent_log()
        );
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        thawed();
        let u = usage("offline").unwrap_or(0);
        if u <= ceiling + ceiling / 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "offline still holds {u} against a ceiling of {ceiling}; agent log:\n{}",
            t.agent_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // It stays there.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        thawed();
        let u = usage("offline").unwrap_or(0);
        assert!(
            u <= ceiling + ceiling / 10 + (16 << 20),
            "offline back up at {u}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Online kept what it holds, and was not killed.
    let online = usage("online/cache").unwrap_or(0);
    assert!(online >= 120 << 20, "online holds {online}");
    assert!(
        !tasks(&t, "online/cache").is_empty(),
        "online workload killed"
    );
    stop(agent);
    t.kill_children();
    t.restore_ok();
}

/// The offline parent's ceiling once the agent has set it (v2 `memory.high`, v1 limit).
fn wait_ceiling(t: &TestRoot, offline: &Target) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for knob in [Knob::MemoryHigh, Knob::MemoryMax] {
            if let Ok(KnobValue::Bytes(Some(b))) = t.layout.read_knob(offline, knob) {
                return b;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no offline memory ceiling; agent log:\n{}",
            t.agent_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ceiling bounds as fractions of this machine's RAM: a ceiling of `bytes`. The interference
/// signals are off: under an emulated CPU the online workload's run-queue waits alone climb the
/// ladder and freeze offline mid-growth, which is not what these tests are about.
fn ceiling_cfg(total: u64, bytes: u64, stats: &str) -> String {
    let max_fraction = bytes as f64 / total as f64;
    format!(
        "tick: 100ms\nstats_interval: {stats}\nbpf:\n  enabled: false\ninterference:\n  psi_threshold: 100\nmemory:\n  kill_interval: 2s\n  ceiling:\n    min_fraction: {:.6}\n    max_fraction: {max_fraction:.6}\n",
        max_fraction / 2.0
    )
}

#[test]
fn eviction_takes_offline_low_first_then_the_largest_offline_by_a_fresh_size() {
    if !cgroups_usable("eviction_takes_offline_low_first_then_the_largest_offline_by_a_fresh_size")
    {
        return;
    }
    let mut t = TestRoot::new("memvictim");
    let total =
        tidal_cgroupfs::proc::parse_meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap())
            .unwrap()
            .total;
    let exe = common::tidal_bin();
    let mem = |t: &mut TestRoot, level: &str, name: &str, bytes: &str, delay: &str| {
        let cmd = format!("sleep {delay}; exec {exe} worker memory --bytes {bytes} --margin 0");
        t.spawn(&[
            "run", "--qos", level, "--name", name, "--", "sh", "-c", &cmd,
        ]);
    };
    // Online holds the most and must never be chosen; offline-low holds the least.
    mem(&mut t, "online", "db", "268435456", "0");
    mem(&mut t, "offline-low", "tiny", "8388608", "0");
    mem(&mut t, "offline", "steady", "134217728", "0");
    // Small when the agent first measures it, the largest offline workload later.
    mem(&mut t, "offline", "grower", "314572800", "4");
    let usage = |t: &TestRoot, g: &str| {
        t.layout
            .memory_working_set(&Target::Tidal(GroupPath::new(g).unwrap()))
            .and_then(|mut r| r.read().ok())
            .unwrap_or(0)
    };
    wait_for("the first workloads to fill", 20, || {
        usage(&t, "online/db") >= 250 << 20 && usage(&t, "offline/offline/steady") >= 120 << 20
    });
    // A slow stats pass (30 s): sizes the policy sees from it would be stale by then.
    let addr = free_addr();
    let agent = start_agent(&t, &ceiling_cfg(total, 2 << 30, "30s"), &addr);
    // Fully grown and holding: a v1 limit clamped at usage would make a still-growing workload
    // meet the kernel's OOM killer before the agent acts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = usage(&t, "offline/offline/grower");
        std::thread::sleep(Duration::from_millis(500));
        let b = usage(&t, "offline/offline/grower");
        if a >= 295 << 20 && b.abs_diff(a) < 1 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the grower holds {b} bytes after 30 s; agent log:\n{}",
            t.agent_log()
        );
    }
    // Offline now holds ~440 MiB: a 256 MiB ceiling puts it over.
    std::fs::write(
        t.state.path().join("agent.yaml"),
        ceiling_cfg(total, 256 << 20, "30s"),
    )
    .unwrap();
    // SAFETY: kill(2) on the agent this test started.
    unsafe { libc::kill(agent.id() as i32, libc::SIGHUP) };
    let gone = |t: &TestRoot, g: &str| tasks(t, g).is_empty();
    let log = |t: &TestRoot| t.agent_log();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gone(&t, "offline/offline-low/tiny") {
        assert!(
            Instant::now() < deadline,
            "offline-low never evicted:\n{}",
            log(&t)
        );
        assert!(
            !gone(&t, "offline/offline/grower") && !gone(&t, "offline/offline/steady"),
            "an offline workload went before offline-low:\n{}",
            log(&t)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    while !gone(&t, "offline/offline/grower") {
        assert!(
            Instant::now() < deadline,
            "the grower never evicted:\n{}",
            log(&t)
        );
        assert!(
            !gone(&t, "offline/offline/steady"),
            "the smaller offline workload went first:\n{}",
            log(&t)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Offline is under its ceiling now: the rest stays, and online was never touched.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!gone(&t, "offline/offline/steady"), "{}", log(&t));
    assert!(!gone(&t, "online/db"), "online evicted:\n{}", log(&t));
    // Counted by level, in /state, /metrics and status.
    let v = state(&addr);
    assert_eq!(
        v["tally"]["evictions"]["offline-low"],
        1,
        "{}\n{}",
        v["tally"],
        log(&t)
    );
    assert_eq!(
        v["tally"]["evictions"]["offline"],
        1,
        "{}\n{}",
        v["tally"],
        log(&t)
    );
    assert!(
        v["tally"]["evictions"]["online"].is_null(),
        "{}",
        v["tally"]
    );
    let (_, metrics) = get(&addr, "/metrics").expect("metrics");
    assert!(
        metrics.contains("tidal_evictions{level=\"offline-low\"} 1")
            && metrics.contains("tidal_evictions{level=\"online\"} 0"),
        "{metrics}"
    );
    let out = t.tidal(&["status", "--listen", &addr]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("killed by tidal offline-low 1, offline 1")
            || text.contains("killed by tidal offline 1, offline-low 1"),
        "{text}"
    );
    stop(agent);
    t.kill_children();
    t.restore_ok();
}

#[test]
fn oom_kills_are_counted_by_level_in_state_metrics_and_status() {
    if !cgroups_usable("oom_kills_are_counted_by_level_in_state_metrics_and_status") {
        return;
    }
    // With swap the worker would swap instead of meeting the OOM killer (CI machines have none).
    let swap = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("SwapTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    if swap > 0 {
        eprintln!("not applicable: this machine has swap");
        return;
    }
    let mut t = TestRoot::new("oomcount");
    let addr = free_addr();
    let agent = start_agent(&t, "tick: 100ms\nstats_interval: 200ms\n", &addr);
    wait_for("the agent's first tick", 10, || {
        state(&addr)["ticks"].as_u64().unwrap_or(0) > 0
    });
    // A 64 MiB limit and a worker that wants 256 MiB: the kernel's OOM killer takes the worker
    // inside the workload's group (no swap here); the shell stays, and so does the group.
    let exe = common::tidal_bin();
    let cmd = format!("{exe} worker memory --bytes 268435456 --margin 0; sleep 600");
    t.spawn(&[
        "run", "--qos", "offline", "--memory", "64M", "--name", "greedy", "--", "sh", "-c", &cmd,
    ]);
    wait_for("the OOM kill counted at offline", 30, || {
        state(&addr)["tally"]["oom_kills"]["offline"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    });
    let v = state(&addr);
    assert!(
        v["tally"]["oom_kills"]["online"].is_null(),
        "{}",
        v["tally"]
    );
    let (_, metrics) = get(&addr, "/metrics").expect("metrics");
    assert!(
        metrics.contains("tidal_oom_kills{level=\"offline\"} 1")
            && metrics.contains("tidal_oom_kills{level=\"online\"} 0"),
        "{metrics}"
    );
    let out = t.tidal(&["status", "--listen", &addr]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("since start: OOM kills offline 1;") && text.contains("io weights: "),
        "{text}"
    );
    stop(agent);
    t.kill_children();
    t.restore_ok();
}

#[test]
fn online_memory_protection_is_set_up_the_chain_and_restore_takes_it_back() {
    if !cgroups_usable("online_memory_protection_is_set_up_the_chain_and_restore_takes_it_back") {
        return;
    }
    let mut t = TestRoot::new("memprotect");
    let caps = tidal_cgroupfs::detect_capabilities(&t.layout);
    if !(caps.has(Knob::MemoryMin) && caps.has(Knob::MemoryLow)) {
        // cgroup v1 has no memory.min/low: the VM harness runs this on pure v2.
        eprintln!("not applicable: no memory.min/low (cgroup v1); v1 gets soft limits instead");
        return;
    }
    let addr = free_addr();
    let agent = start_agent(
        &t,
        "tick: 100ms\nstats_interval: 200ms\nmemory:\n  min_ratio: 0.5\n  low_ratio: 1.0\n",
        &addr,
    );
    for (level, name, request) in [("online-critical", "db", "128M"), ("online", "web", "64M")] {
        t.spawn(&[
            "run",
            "--qos",
            level,
            "--name",
            name,
            "--memory-request",
            request,
            "--",
            "sleep",
            "600",
        ]);
    }
    const MIB: u64 = 1 << 20;
    let bytes = |t: &TestRoot, g: &str, k: Knob| match t.layout.read_knob(
        &Target::Tidal(GroupPath::new(g).unwrap_or_else(|_| GroupPath::root())),
        k,
    ) {
        Ok(KnobValue::Bytes(b)) => b,
        _ => None,
    };
    // Each workload gets its shares; each level and tidal's root the sum below it, so the
    // protection holds all the way to the root.
    let want = [
        ("online-critical/db", 64 * MIB, 128 * MIB),
        ("online-critical", 64 * MIB, 128 * MIB),
        ("online/web", 32 * MIB, 64 * MIB),
        ("online", 32 * MIB, 64 * MIB),
        ("", 96 * MIB, 192 * MIB),
    ];
    wait_for("memory.min/low up the chain", 20, || {
        want.iter().all(|(g, min, low)| {
            bytes(&t, g, Knob::MemoryMin) == Some(*min)
                && bytes(&t, g, Knob::MemoryLow) == Some(*low)
        })
    });
    // The kernel's own view: what a group may keep under reclaim is bounded by its ancestors'.
    let dir = t.dir("memory", "online-critical/db");
    let shown = std::fs::read_to_string(dir.join("memory.min")).unwrap_or_default();
    assert_eq!(shown.trim(), (64 * MIB).to_string());
    stop(agent);
    t.kill_children();
    t.restore_ok();
    // Taken back: the groups tidal made are gone, and a root that stays (a systemd scope) has its
    // own values again.
    if t.dir("memory", "").exists() {
        for k in [Knob::MemoryMin, Knob::MemoryLow] {
            assert_eq!(bytes(&t, "", k), Some(0), "{k} of the root after restore");
        }
    }
    assert!(!t.dir("memory", "online-critical").exists());
}

#[test]
fn an_unaligned_memory_ceiling_reads_back_in_pages_and_is_not_written_again() {
    if !cgroups_usable("an_unaligned_memory_ceiling_reads_back_in_pages_and_is_not_written_again") {
        return;
    }
    let t = TestRoot::new("mempages");
    let caps = tidal_cgroupfs::detect_capabilities(&t.layout);
    // The ceiling's file: v2 memory.high, v1 memory.limit_in_bytes.
    let Some(knob) = [Knob::MemoryHigh, Knob::MemoryMax]
        .into_iter()
        .find(|k| caps.has(*k))
    else {
        assert!(!common::required(), "no memory ceiling file here");
        eprintln!("SKIP: no memory ceiling file here");
        return;
    };
    let mut act =
        tidal_actuator::Actuator::new(t.layout.clone(), t.state.path(), false).expect("actuator");
    act.ensure_root(None).expect("root");
    let g = GroupPath::new("offline").unwrap();
    act.ensure_group(&g).expect("group");
    let target = Target::Tidal(g);
    // Not a whole number of pages: the kernel keeps it in pages and shows it rounded down.
    let ceiling = KnobValue::Bytes(Some(22_748_859_187));
    assert_eq!(
        act.set(&target, knob, &ceiling).expect("first write"),
        tidal_actuator::Outcome::Written
    );
    let shown = t.layout.read_knob(&target, knob).expect("read back");
    assert_ne!(shown, ceiling, "the kernel rounds to pages here");
    let writes = act.stats().writes;
    assert_eq!(
        act.set(&target, knob, &ceiling).expect("second write"),
        tidal_actuator::Outcome::Unchanged,
        "the same ceiling again must not count as drift"
    );
    assert_eq!(act.stats().writes, writes);
    drop(act);
    t.restore_ok();
}

#[test]
fn doctor_says_where_memory_protection_stops_whether_writes_are_isolated_and_oom_ordering() {
    if !cgroups_usable(
        "doctor_says_where_memory_protection_stops_whether_writes_are_isolated_and_oom_ordering",
    ) {
        return;
    }
    let t = TestRoot::new("memdoctor");
    t.make_group("online");
    let out = t.tidal(&["doctor", "--json"]);
    assert!(out.status.success(), "doctor: {out:?}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor's json");
    let row = |feature: &str| {
        rows.as_array()
            .and_then(|r| r.iter().find(|x| x["feature"] == feature))
            .cloned()
            .unwrap_or_else(|| panic!("no {feature} row: {rows}"))
    };
    let detail = |r: &serde_json::Value| r["detail"].as_str().unwrap_or_default().to_string();
    let memory = t.layout.owner("memory").expect("a memory hierarchy");
    let v2 = memory.version() == tidal_cgroupfs::Version::V2;

    // Protection: v1 has none to offer; on v2 the row names the first ancestor of the root
    // without memory.min/low (this test's own cgroup, or one above: none is tidal's to set).
    let p = row("memory protection (online)");
    let mut gap = None;
    if v2 {
        let d = detail(&p);
        if p["available"] == false {
            let named = d
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| panic!("no group named: {d}"));
            assert!(memory.root_dir.starts_with(&named), "{d}");
            let zero =
                |f: &str| std::fs::read_to_string(named.join(f)).is_ok_and(|s| s.trim() == "0");
            assert!(zero("memory.low") && zero("memory.min"), "{d}");
            gap = Some(named.display().to_string());
        }
    } else {
        assert_eq!(p["available"], false);
        assert!(detail(&p).contains("cgroup v1"), "{}", detail(&p));
    }

    // Buffered writes are charged to their writer's group on v2 only, with memory and io both
    // on tidal's groups (both are, on the v2 kernels these tests run on).
    let w = row("buffered-write isolation");
    assert_eq!(
        w["available"],
        t.layout.hierarchies.mode() == tidal_cgroupfs::CgroupMode::V2
    );

    // OOM ordering holds fully only with CAP_SYS_RESOURCE (to lower online tasks' values).
    assert_eq!(row("OOM ordering")["available"], can_lower());

    // The agent's /state and `tidal status` name the same gap (none on v1).
    let addr = free_addr();
    let agent = start_agent(&t, "tick: 100ms\nstats_interval: 200ms\n", &addr);
    wait_for("the agent's node facts", 10, || {
        !state(&addr)["io_weights"].is_null()
    });
    let v = state(&addr);
    assert_eq!(v["protection_gap"].as_str().map(str::to_string), gap, "{v}");
    let out = t.tidal(&["status", "--listen", &addr]);
    let text = String::from_utf8_lossy(&out.stdout);
    match &gap {
        Some(g) => assert!(
            text.contains(&format!("memory protection stops at {g}")),
            "{text}"
        ),
        None => assert!(!text.contains("memory protection stops at /"), "{text}"),
    }
    stop(agent);
    t.restore_ok();
}

/// `tidal apply` of one action on this root, which must succeed.
fn apply_ok(t: &TestRoot, action: serde_json::Value) {
    let plan = t.state.path().join("plan.json");
    std::fs::write(
        &plan,
        serde_json::json!({ "actions": [&action] }).to_string(),
    )
    .unwrap();
    let out = t.tidal(&["apply", "--plan", plan.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{action}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Freezes or thaws `group` through `tidal apply`.
fn freeze(t: &TestRoot, group: &str, frozen: bool) {
    apply_ok(
        t,
        serde_json::json!({"group": group, "op": "set", "knob": "freeze",
            "value": {"bool": frozen}, "reason": "test"}),
    );
}

#[test]
fn a_workload_killed_under_a_frozen_level_dies_and_the_level_stays_frozen() {
    if !cgroups_usable("a_workload_killed_under_a_frozen_level_dies_and_the_level_stays_frozen") {
        return;
    }
    let mut t = TestRoot::new("killfrozen");
    for name in ["victim", "sibling", "stopped"] {
        t.spawn(&[
            "run", "--qos", "offline", "--name", name, "--", "sleep", "600",
        ]);
    }
    wait_for("the workloads' tasks", 10, || {
        [
            "offline/offline/victim",
            "offline/offline/sibling",
            "offline/offline/stopped",
        ]
        .iter()
        .all(|g| !tasks(&t, g).is_empty())
    });
    // A workload frozen itself (as `files.stop` does), then killed.
    freeze(&t, "offline/offline/stopped", true);
    apply_ok(
        &t,
        serde_json::json!({"group": "offline/offline/stopped", "op": "kill",
            "reason": "test: evicted for memory"}),
    );
    assert!(tasks(&t, "offline/offline/stopped").is_empty());
    // The ladder's freeze of a level, then an eviction below it. On a v1 freezer the victim's
    // tasks stay frozen through SIGKILL until the level thaws: the kill thaws it while they die
    // (v2's freezer, and hybrid hosts that freeze through it, let a fatal signal through).
    freeze(&t, "offline/offline", true);
    assert_eq!(
        t.knob("offline/offline", Knob::Freeze),
        KnobValue::Bool(true)
    );
    apply_ok(
        &t,
        serde_json::json!({"group": "offline/offline/victim", "op": "kill",
            "reason": "test: evicted for memory"}),
    );
    assert!(tasks(&t, "offline/offline/victim").is_empty());
    // The level is frozen again, and its other workload is still there.
    assert_eq!(
        t.knob("offline/offline", Knob::Freeze),
        KnobValue::Bool(true)
    );
    assert!(!tasks(&t, "offline/offline/sibling").is_empty());
    // Thawed before the test's own kill (a v1-frozen task does not die of it).
    freeze(&t, "offline/offline", false);
    t.kill_children();
    t.restore_ok();
}

/// An agent killed before it could lift its memory ceiling: `restore` beside offline work that
/// runs on lifts it (the group stays, its work runs on unconfined).
#[test]
fn restore_beside_running_offline_work_lifts_the_agents_memory_ceiling() {
    if !cgroups_usable("restore_beside_running_offline_work_lifts_the_agents_memory_ceiling") {
        return;
    }
    let mut t = TestRoot::new("ceilrestore");
    let caps = tidal_cgroupfs::detect_capabilities(&t.layout);
    let Some(knob) = [Knob::MemoryHigh, Knob::MemoryMax]
        .into_iter()
        .find(|k| caps.has(*k))
    else {
        assert!(!common::required(), "no memory ceiling file here");
        eprintln!("SKIP: no memory ceiling file here");
        return;
    };
    t.spawn(&[
        "run", "--qos", "offline", "--name", "held", "--", "sleep", "100",
    ]);
    t.wait_running(&["offline/offline/held"]);
    // The ceiling as the agent sets it on the offline parent (its own group: not journalled).
    let offline = Target::Tidal(QosLevel::offline_parent());
    let mut act =
        tidal_actuator::Actuator::new(t.layout.clone(), t.state.path(), false).expect("actuator");
    act.set(&offline, knob, &KnobValue::Bytes(Some(1 << 30)))
        .expect("the ceiling");
    drop(act);
    assert_eq!(
        t.layout.read_knob(&offline, knob).expect("read"),
        KnobValue::Bytes(Some(1 << 30))
    );
    t.restore_ok();
    let running =
        std::fs::read_to_string(t.dir("cpu", "offline/offline/held").join("cgroup.procs"))
            .unwrap_or_default();
    let after = t.layout.read_knob(&offline, knob);
    t.kill_children();
    t.restore_ok();
    assert!(!running.trim().is_empty(), "the offline work runs on");
    assert_eq!(
        after.expect("read"),
        KnobValue::Bytes(None),
        "ceiling lifted"
    );
}
