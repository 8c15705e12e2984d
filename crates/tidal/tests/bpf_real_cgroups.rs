//! Run-queue latency with the real BPF program: a sleeping prober and a spinning hog pinned to one
//! CPU in two groups (the hog at a normal weight, not idle). The prober's group gets samples; with
//! the hog its p99 wait is at least 1 ms and at least 10× its p99 without; a group with no tasks
//! gets none; and the ids the program reports map to the right groups in v1 and v2.

mod common;

use common::{
    cgroups_usable, free_addr, get, last_plan_reasons, start_agent, state, stop, TestRoot,
};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tidal_bpf::{cgroup_id, CgroupKey, Collector, Hist, IdKind, Scope};

/// The tests here measure scheduling on shared CPUs: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The ids a group has: its v2 directory's inode, and its v1 cpu directory's inode.
fn keys(t: &TestRoot, group: &str) -> Vec<CgroupKey> {
    let mut out = Vec::new();
    for r in &t.layout.roots {
        let dir = r.root_dir.join(group);
        let kind = match r.version() {
            tidal_cgroupfs::Version::V2 => IdKind::V2,
            tidal_cgroupfs::Version::V1 if r.hierarchy.has("cpu") => IdKind::V1Cpu,
            _ => continue,
        };
        if let Some(id) = cgroup_id(&dir) {
            out.push(CgroupKey { id, kind });
        }
    }
    out
}

/// The one key a group's waits are read under, as the agent reads them: the v1 cpu id where
/// the host has a v1 cpu hierarchy, else the v2 id.
fn read_key(t: &TestRoot, group: &str) -> Option<CgroupKey> {
    let kind = if t.layout.hierarchies.v1("cpu").is_some() {
        IdKind::V1Cpu
    } else {
        IdKind::V2
    };
    keys(t, group).into_iter().find(|k| k.kind == kind)
}

/// Collects for `secs` and returns the waits of each of `groups`, read by key as the agent reads
/// them (the first read is the baseline).
fn collect(c: &mut Collector, t: &TestRoot, groups: &[&str], secs: u64) -> Vec<Hist> {
    let ks: Vec<Option<CgroupKey>> = groups.iter().map(|g| read_key(t, g)).collect();
    let read: Vec<CgroupKey> = ks.iter().flatten().copied().collect();
    let _ = c.read_keys(&read).expect("read the histograms");
    let mut acc: Vec<Hist> = groups.iter().map(|_| Hist::default()).collect();
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
        let d = c.read_keys(&read).expect("read the histograms");
        for (k, a) in ks.iter().zip(acc.iter_mut()) {
            if let Some(h) = k.and_then(|k| d.get(&k)) {
                a.merge(h);
            }
        }
    }
    acc
}

#[test]
fn a_prober_behind_a_hog_on_its_cpu_waits_and_an_empty_group_gets_nothing() {
    if !cgroups_usable("a_prober_behind_a_hog_on_its_cpu_waits_and_an_empty_group_gets_nothing") {
        return;
    }
    let _one = serial();
    let mut c = match Collector::start() {
        Ok(c) => c,
        Err(e) => panic!("BPF must load here (root, BTF): {e}"),
    };
    let mut t = TestRoot::new("bpf");
    let exe = common::tidal_bin();
    // Wakes after 1 ms asleep and works 2 ms: over half its CPU, beside four hog threads in a
    // group four times its weight (a fifth of the CPU is its share). 500 us of work was a third
    // of the CPU only where a 1-ms sleep takes 1 ms; an emulated CPU (TCG) stretched the sleeps
    // until the prober fit in its share and did not wait.
    t.spawn(&[
        "run",
        "--qos",
        "online",
        "--name",
        "probe",
        "--",
        exe,
        "worker",
        "prober",
        "--work-us",
        "2000",
        "--pin",
        "0",
    ]);
    t.make_group("online/empty");
    t.wait_running(&["online/probe"]);
    std::thread::sleep(Duration::from_millis(500));
    let quiet = collect(&mut c, &t, &["online/probe", "online/empty"], 3);
    assert!(
        quiet[0].count > 100,
        "the prober's group got {} samples",
        quiet[0].count
    );
    assert_eq!(quiet[1].count, 0, "a group with no tasks got samples");
    // Without a v1 cpu hierarchy the program adds nothing under a v1 id: a cpu controller on v2
    // is not one (it added the waits of every task outside a cpu-enabled group again there).
    if t.layout.hierarchies.v1("cpu").is_none() {
        let all = c.read().expect("read every histogram");
        let v1: Vec<&CgroupKey> = all.keys().filter(|k| k.kind == IdKind::V1Cpu).collect();
        assert!(v1.is_empty(), "v1 cpu ids on a host without one: {v1:?}");
        assert!(!all.is_empty(), "no cgroup waited at all");
    }
    let p99_quiet = quiet[0].quantile_ns(0.99).unwrap();
    // A hog on the same CPU in a normal (not idle) group that weighs more: the prober then wants
    // more than its share, so it waits under CFS (6.1) as under EEVDF (6.6+), which lets a sleeper
    // within its share run at once.
    t.spawn(&[
        "run",
        "--qos",
        "online-critical",
        "--name",
        "hog",
        "--",
        exe,
        "worker",
        "cpu",
        "--threads",
        "4",
        "--pin",
        "0",
    ]);
    // Slow machines (a TCG guest) take a while to start it: measure once it has run 300 ms.
    let hog =
        tidal_model::Target::Tidal(tidal_model::GroupPath::new("online-critical/hog").unwrap());
    let usage = |t: &TestRoot| t.layout.cpu_usage(&hog).and_then(|mut u| u.read().ok());
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(u) = usage(&t) {
            break u;
        }
        assert!(Instant::now() < deadline, "the hog's group never appeared");
        std::thread::sleep(Duration::from_millis(50));
    };
    while usage(&t).unwrap_or(first) < first + 300_000_000 {
        assert!(Instant::now() < deadline, "the hog never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let busy = collect(&mut c, &t, &["online/probe"], 3);
    let p99_busy = busy[0].quantile_ns(0.99).unwrap_or(0.0);
    println!("p99 wait: {p99_quiet:.0} ns alone, {p99_busy:.0} ns beside the hog");
    assert!(
        p99_busy >= 1e6 && p99_busy >= 10.0 * p99_quiet,
        "p99 wait with the hog {p99_busy:.0} ns, without {p99_quiet:.0} ns ({} attach)",
        c.attach
    );
    t.kill_children();
}

/// Kernels before 6.4 allocate task-local storage with kmalloc under the run-queue lock: there the
/// program must not create it from the scheduler tracepoints (tp_btf), and says why it took raw_tp.
#[test]
fn task_storage_is_created_at_the_scheduler_only_where_the_kernel_allocates_it_safely() {
    if !cgroups_usable(
        "task_storage_is_created_at_the_scheduler_only_where_the_kernel_allocates_it_safely",
    ) {
        return;
    }
    let _one = serial();
    let c = Collector::start().expect("BPF loads");
    let release = tidal_cgroupfs::caps::kernel_release().expect("kernel release");
    let version = tidal_cgroupfs::caps::kernel_version().expect("kernel version");
    let safe = tidal_bpf::task_storage_alloc_safe();
    // Every upstream kernel from 6.4 has an allocator safe there: a BTF that no longer shows it
    // would send new kernels to the slower path without a word.
    assert!(version < (6, 4) || safe.is_ok(), "{release}: {:?}", safe);
    // Cross-check against the BTF's string table: the member names are there on a kernel that
    // has them (6.1 has none of them).
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").expect("kernel BTF");
    let named = ["bpf_ma", "selem_ma", "use_kmalloc_nolock"]
        .iter()
        .any(|n| {
            let want = [b"\0", n.as_bytes(), b"\0"].concat();
            btf.windows(want.len()).any(|w| w == want.as_slice())
        });
    assert_eq!(safe.is_ok(), named, "{release}: {:?}", safe);
    match safe {
        Ok(()) => assert_eq!(c.attach, "tp_btf", "{release}: {:?}", c.fallback),
        Err(why) => {
            assert_eq!(c.attach, "raw_tp", "{release}");
            assert!(why.contains("run-queue lock"), "{why}");
            assert_eq!(c.fallback.as_deref(), Some(why.as_str()));
        }
    }
}

#[test]
fn cgroup_ids_are_the_directories_inodes_in_each_hierarchy() {
    if !cgroups_usable("cgroup_ids_are_the_directories_inodes_in_each_hierarchy") {
        return;
    }
    let _one = serial();
    // Both attach kinds: tp_btf (task storage, direct reads) and the raw_tp fallback.
    let mut cs = [
        Collector::start().expect("BPF loads"),
        Collector::start_raw_tp(1).expect("the raw_tp fallback loads"),
    ];
    let mut t = TestRoot::new("bpfid");
    let exe = common::tidal_bin();
    t.spawn(&[
        "run", "--qos", "online", "--name", "a", "--", exe, "worker", "prober",
    ]);
    t.spawn(&[
        "run",
        "--qos",
        "online-high",
        "--name",
        "b",
        "--",
        exe,
        "worker",
        "prober",
    ]);
    let groups = ["online/a", "online-high/b"];
    t.wait_running(&groups);
    for c in cs.iter_mut() {
        let _ = c.read();
    }
    // Samples gathered over reads until every key has some (an emulated CPU is slow to start a
    // prober), at most 10 s.
    let ks: Vec<(&str, CgroupKey)> = groups
        .iter()
        .flat_map(|g| keys(&t, g).into_iter().map(move |k| (*g, k)))
        .collect();
    assert_eq!(ks.len() % groups.len(), 0);
    assert!(!ks.is_empty());
    for c in cs.iter_mut() {
        let mut seen = std::collections::HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ks
            .iter()
            .any(|(_, k)| seen.get(k).copied().unwrap_or(0) <= 50)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(500));
            let d = c.read().unwrap();
            for (_, k) in &ks {
                *seen.entry(*k).or_insert(0u64) += d.get(k).map_or(0, |h| h.count);
            }
        }
        for (g, k) in &ks {
            assert!(
                seen.get(k).is_some_and(|n| *n > 50),
                "{g}: no samples under {k:?} ({})",
                c.attach
            );
        }
    }
    // The two groups' ids differ, so their waits are not mixed.
    let (a, b) = (keys(&t, "online/a"), keys(&t, "online-high/b"));
    assert!(a.iter().all(|k| !b.contains(k)));
    t.kill_children();
}

#[test]
fn only_watched_cgroups_get_histograms_and_one_unwatched_loses_its_own() {
    if !cgroups_usable("only_watched_cgroups_get_histograms_and_one_unwatched_loses_its_own") {
        return;
    }
    let _one = serial();
    // The agent's kind, and one of every cgroup beside it to show both groups wait.
    let mut c = Collector::start_sampled(1, Scope::Watched).expect("BPF loads");
    let mut every = Collector::start().expect("BPF loads");
    let mut t = TestRoot::new("bpfwatch");
    let exe = common::tidal_bin();
    for name in ["a", "b"] {
        t.spawn(&[
            "run", "--qos", "online", "--name", name, "--", exe, "worker", "prober",
        ]);
    }
    t.wait_running(&["online/a", "online/b"]);
    let ka = read_key(&t, "online/a").expect("a's id");
    let kb = read_key(&t, "online/b").expect("b's id");
    // Reads the whole map until `want` has 50 samples (10 s at most): it must hold `want`'s
    // histogram alone (a read of only the watched keys could not tell).
    let gather = |c: &mut Collector, every: &mut Collector, want: CgroupKey, other: CgroupKey| {
        // The agent's read first: it deletes a histogram made as its cgroup left the watch.
        let _ = c.read_watched().expect("read the watched histograms");
        let _ = c.read().expect("read the whole map");
        let _ = every.read().expect("read every histogram");
        let (mut got, mut other_waits) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while (got <= 50 || other_waits <= 50) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            let d = c.read().expect("read the whole map");
            let stray: Vec<&CgroupKey> = d.keys().filter(|k| **k != want).collect();
            assert!(stray.is_empty(), "recorded though not watched: {stray:?}");
            got += d.get(&want).map_or(0, |h| h.count);
            let e = every.read().expect("read every histogram");
            other_waits += e.get(&other).map_or(0, |h| h.count);
        }
        assert!(got > 50, "{want:?}: {got} samples while watched");
        assert!(
            other_waits > 50,
            "{other:?} did not wait at all ({other_waits})"
        );
    };
    c.watch([&ka]).expect("watch a");
    gather(&mut c, &mut every, ka, kb);
    // Watching b alone: a leaves the map with its histogram, and the agent's read (a batch of
    // the map) gives b's waits.
    c.watch([&kb]).expect("watch b");
    gather(&mut c, &mut every, kb, ka);
    let _ = c.read_watched().expect("read the watched histograms");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = 0;
    while got <= 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        let d = c.read_watched().expect("read the watched histograms");
        got += d.get(&kb).map_or(0, |h| h.count);
    }
    assert!(got > 50, "b: {got} samples read as the agent reads them");
    // In batches, where the kernel has them (5.6+): not one lookup per id.
    if kernel_at_least(5, 6) {
        assert_eq!(c.unbatched(), None);
    }
    t.kill_children();
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    tidal_cgroupfs::caps::kernel_version().is_some_and(|v| v >= (major, minor))
}

#[test]
fn a_batch_read_gives_every_watched_histogram_across_batches_and_full_buckets() {
    if !cgroups_usable("a_batch_read_gives_every_watched_histogram_across_batches_and_full_buckets")
    {
        return;
    }
    let _one = serial();
    // Every cgroup recorded, all of them watched: the map holds many entries, read one per batch
    // (a bucket of two then does not fit, and the batch grows).
    let mut c = Collector::start().expect("BPF loads");
    let mut t = TestRoot::new("bpfbatch");
    let exe = common::tidal_bin();
    t.spawn(&[
        "run", "--qos", "online", "--name", "a", "--", exe, "worker", "prober",
    ]);
    t.wait_running(&["online/a"]);
    std::thread::sleep(Duration::from_millis(500));
    let mut keys: Vec<CgroupKey> = c
        .read()
        .expect("read every histogram")
        .into_keys()
        .collect();
    assert!(keys.len() > 2, "only {} cgroups waited", keys.len());
    // A thousand more (ids no cgroup has): in 8192 hash buckets some then hold two or more.
    let made: Vec<CgroupKey> = (0..1000)
        .map(|i| CgroupKey {
            id: u64::MAX - i,
            kind: IdKind::V2,
        })
        .collect();
    c.insert_for_test(&made).expect("fill the map");
    keys.extend(&made);
    c.watch(&keys).expect("watch them all");
    c.set_batch_entries(1);
    // Whole counts (every entry has some), not deltas: each read gives every key it finds.
    c.forget_reads();
    let batched: BTreeSet<CgroupKey> = c.read_watched().expect("batches").into_keys().collect();
    c.forget_reads();
    let one_by_one: BTreeSet<CgroupKey> =
        c.read_keys(&keys).expect("lookups").into_keys().collect();
    assert_eq!(batched, one_by_one);
    assert_eq!(batched, keys.iter().copied().collect(), "every entry read");
    if kernel_at_least(5, 6) {
        assert_eq!(c.unbatched(), None);
        // A bucket held more than one entry: the batch grew to take it.
        assert!(
            c.batch_entries().is_some_and(|n| n > 1),
            "{:?}",
            c.batch_entries()
        );
    }
    t.kill_children();
}

/// A prober at `online` (`online/probe`) and a CPU hog at `offline` (`offline/offline/hog`), both
/// in their groups on return: an agent started next finds them at its first scan.
fn prober_beside_a_hog(t: &mut TestRoot) {
    let exe = common::tidal_bin();
    t.spawn(&[
        "run", "--qos", "online", "--name", "probe", "--", exe, "worker", "prober",
    ]);
    t.spin("offline", "hog");
    t.wait_running(&["online/probe", "offline/offline/hog"]);
}

#[test]
fn run_queue_waits_over_the_threshold_tighten_offline_and_without_bpf_the_agent_runs_on() {
    if !cgroups_usable(
        "run_queue_waits_over_the_threshold_tighten_offline_and_without_bpf_the_agent_runs_on",
    ) {
        return;
    }
    let _one = serial();
    let mut t = TestRoot::new("runq");
    prober_beside_a_hog(&mut t);
    // Any wait is over a 1 us threshold; pressure alone would never tighten here.
    let cfg = "tick: 100ms\nstats_interval: 200ms\ninterference:\n  psi_threshold: 100\nbpf:\n  runq_p99_threshold: 1us\n  min_samples: 5\n";
    let addr = free_addr();
    let agent = start_agent(&t, cfg, &addr);
    // The plan that quotes the run-queue p99 may be replaced by a later one (a held step) before a
    // slow host polls /state again, so the agent's log of every action is read too.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = state(&addr);
        let steps = v["policy"]["interference"]["steps"]
            .as_array()
            .map_or(0, Vec::len);
        let quoted = |r: &str| r.contains("run-queue p99 of online/probe");
        if steps >= 1 && (last_plan_reasons(&v).iter().any(|r| quoted(r)) || quoted(&t.agent_log()))
        {
            assert!(v["runq_p99_us"]["online/probe"].as_f64().is_some(), "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not tightened by run-queue latency: {v}\nagent log:\n{}",
            t.agent_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(agent);
    // Without BPF: the agent says why and runs on its other signals.
    let addr = free_addr();
    let agent = {
        let mut c = t.agent_cmd(&t.write_config(cfg), &addr);
        c.arg("--no-bpf");
        t.spawn_agent(c, &addr)
    };
    let v = state(&addr);
    assert!(
        v["runq"].as_str().is_some_and(|s| s.contains("turned off")),
        "{}",
        v["runq"]
    );
    assert!(v["ticks"].as_u64().unwrap_or(0) > 0);
    let (_, m) = (
        (),
        ureq::get(&format!("http://{addr}/healthz"))
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
    );
    assert_eq!(m, 200);
    stop(agent);
    t.kill_children();
    t.restore_ok();
}

/// Ticks ten seconds apart; every wait is far over a 1 us threshold; confinement never acts (its
/// own early tick stays out of it), pressure never does.
const BETWEEN_TICKS: &str = "tick: 10s\nstats_interval: 10s\ncpu:\n  confine_min_cpus: 4096\n\
    interference:\n  psi_threshold: 100\n  escalate_every: 10s\n\
    bpf:\n  runq_p99_threshold: 1us\n  min_samples: 5\n";

/// Waits (8 s at most from `started`) for offline to be frozen for the prober's run-queue waits,
/// and checks it came by a tick brought forward: every offline level at once, an early tick
/// counted, and the ladder at its freeze.
fn frozen_by_an_early_tick(t: &TestRoot, addr: &str, started: Instant) {
    let frozen = loop {
        let log = t.agent_log();
        if let Some(l) = log
            .lines()
            .find(|l| l.contains("freeze=1") && l.contains("run-queue p99 of online/probe"))
        {
            break l.to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "offline not frozen between ticks\nagent log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        frozen.contains("every offline level frozen at once"),
        "{frozen}"
    );
    let (_, m) = get(addr, "/metrics").expect("the agent's /metrics");
    let early = m
        .lines()
        .find(|l| l.starts_with("tidal_early_ticks_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        early.is_some_and(|e| e >= 1.0),
        "frozen, but not by a tick brought forward\n{m}\nagent log:\n{}",
        t.agent_log()
    );
    // /state is published at the tick's end, after its writes and their log lines.
    let shows_freeze = || {
        let v = state(addr);
        (
            v["policy"]["interference"]["steps"] == serde_json::json!(["freeze-offline"]),
            v,
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut ok, mut v) = shows_freeze();
    while !ok && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        (ok, v) = shows_freeze();
    }
    assert!(ok, "the ladder not at its freeze step in /state: {v}");
}

/// A run-queue wait far past the threshold is seen by the light sample between ticks: with ticks
/// ten seconds apart, offline is frozen (the cap passed over) by a tick the sample brought forward.
#[test]
fn a_deep_run_queue_wait_freezes_offline_between_ticks() {
    use std::os::unix::ffi::OsStrExt;
    if !cgroups_usable("a_deep_run_queue_wait_freezes_offline_between_ticks") {
        return;
    }
    let _one = serial();
    let mut t = TestRoot::new("runq-deep");
    let exe = common::tidal_bin();
    // The prober's group exists from the start (so the agent knows it), but the prober itself
    // starts only after the agent's first tick: that tick must not be the one that sees it.
    let go = t.state.path().join("probe-go");
    let go_c = std::ffi::CString::new(go.as_os_str().as_bytes()).expect("a path without NUL");
    // SAFETY: mkfifo(3) on a path in this test's own temporary directory.
    assert_eq!(
        unsafe { libc::mkfifo(go_c.as_ptr(), 0o600) },
        0,
        "mkfifo {}",
        go.display()
    );
    let script = format!("read _ < '{}'; exec '{}' worker prober", go.display(), exe);
    t.spawn(&[
        "run", "--qos", "online", "--name", "probe", "--", "sh", "-c", &script,
    ]);
    t.spin("offline", "hog");
    // The shell waiting on the fifo holds the prober's group.
    t.wait_running(&["online/probe", "offline/offline/hog"]);
    let addr = free_addr();
    // Back after the agent's first tick: what is timed starts there.
    let agent = start_agent(&t, BETWEEN_TICKS, &addr);
    let started = Instant::now();
    std::fs::write(&go, "go\n").expect("start the prober");
    // Before the next regular tick: ten seconds after the first, which /state has just shown.
    frozen_by_an_early_tick(&t, &addr, started);
    stop(agent);
    t.kill_children();
    t.restore_ok();
}

/// The agent's own start (its programs attaching, its first full snapshot and the writes after it)
/// is not read as interference: its first tick's read is a baseline, and the first reading starts
/// where that tick ends. A prober already waiting behind a hog when the agent starts is
/// frozen for by a tick the light sample brings forward, not by the first tick.
#[test]
fn the_agents_first_tick_reads_no_run_queue_waits_and_the_first_window_follows_it() {
    if !cgroups_usable(
        "the_agents_first_tick_reads_no_run_queue_waits_and_the_first_window_follows_it",
    ) {
        return;
    }
    let _one = serial();
    let mut t = TestRoot::new("runq-first");
    prober_beside_a_hog(&mut t);
    // One wait makes a reading: a first tick that read the waits since the programs attached
    // would freeze offline itself.
    let cfg = BETWEEN_TICKS.replace("min_samples: 5", "min_samples: 1");
    let addr = free_addr();
    // Back after the agent's first tick: what is timed starts there.
    let agent = start_agent(&t, &cfg, &addr);
    frozen_by_an_early_tick(&t, &addr, Instant::now());
    stop(agent);
    t.kill_children();
    t.restore_ok();
}
