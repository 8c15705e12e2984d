//! `tidal run` / `restore` / `apply` on the real cgroups of this machine (root needed; CI fails instead
//! of skipping). Every test works inside its own tidal root under this process's cgroups.

mod common;

use common::{cgroups_usable, wait_cgroup, TestRoot};
use std::os::unix::process::CommandExt;
use std::time::Duration;
use tidal_model::{Knob, KnobValue};

#[test]
fn offline_run_lands_under_the_idle_parent() {
    if !cgroups_usable("offline_run_lands_under_the_idle_parent") {
        return;
    }
    let mut t = TestRoot::new("offline");
    let pid = t.spawn(&[
        "run", "--qos", "offline", "--name", "hog", "--", "sleep", "30",
    ]);
    let path = wait_cgroup(pid, "/offline/offline/hog").expect("process moved into its group");
    assert!(path.contains(&t.name), "{path}");
    assert_eq!(t.knob("offline", Knob::CpuIdle), KnobValue::Bool(true));
    assert_eq!(
        t.knob("offline/offline", Knob::CpuIdle),
        KnobValue::Bool(false)
    );
    // The workload can be scheduled on every CPU (v1 cpusets start empty).
    assert!(!t.effective_cpus("offline/offline/hog").is_empty());
    // sleep itself (after exec) is in the group, in every hierarchy tidal uses.
    let procs = t.read("cpu", "offline/offline/hog", "cgroup.procs");
    assert!(
        procs.lines().any(|l| l.trim() == pid.to_string()),
        "{procs}"
    );
    if t.layout.unified().is_some() {
        let u = t
            .layout
            .unified()
            .unwrap()
            .root_dir
            .join("offline/offline/hog/cgroup.procs");
        let v2 = std::fs::read_to_string(&u).unwrap();
        assert!(v2.lines().any(|l| l.trim() == pid.to_string()), "{v2}");
    }
    t.kill_children();
    t.restore_ok();
    assert!(t.leftovers().is_empty(), "left behind: {:?}", t.leftovers());
}

#[test]
fn online_levels_get_4_2_1_weights_and_limits() {
    if !cgroups_usable("online_levels_get_4_2_1_weights_and_limits") {
        return;
    }
    let t = TestRoot::new("online");
    for (level, shares) in [
        ("online-critical", 4096),
        ("online-high", 2048),
        ("online", 1024),
    ] {
        let out = t.tidal(&["run", "--qos", level, "--name", "svc", "--", "true"]);
        assert!(
            out.status.success(),
            "{level}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            t.knob(level, Knob::CpuWeight),
            t.as_kernel_shows(Knob::CpuWeight, KnobValue::Shares(shares)),
            "{level}"
        );
        assert_eq!(
            t.knob(level, Knob::CpuIdle),
            KnobValue::Bool(false),
            "{level}"
        );
    }
    let out = t.tidal(&[
        "run", "--qos", "online", "--name", "db", "--cpus", "0.5", "--memory", "64M", "--", "true",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        t.knob("online/db", Knob::CpuMax),
        KnobValue::Quota {
            quota_us: Some(50_000),
            period_us: 100_000
        }
    );
    assert_eq!(
        t.knob("online/db", Knob::MemoryMax),
        KnobValue::Bytes(Some(64 << 20))
    );
    let out = t.tidal(&["restore"]);
    assert!(out.status.success());
    assert!(t.leftovers().is_empty(), "left behind: {:?}", t.leftovers());
}

#[test]
fn exit_status_passes_through_and_names_stay_distinct() {
    if !cgroups_usable("exit_status_passes_through_and_names_stay_distinct") {
        return;
    }
    let mut t = TestRoot::new("names");
    let out = t.tidal(&["run", "--qos", "offline-low", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    let a = t.spawn(&[
        "run", "--qos", "offline", "--name", "job", "--", "sleep", "30",
    ]);
    let pa = wait_cgroup(a, "/offline/offline/job").expect("first job");
    let b = t.spawn(&[
        "run", "--qos", "offline", "--name", "job", "--", "sleep", "30",
    ]);
    let pb = wait_cgroup(b, "/offline/offline/job-2").expect("second job gets its own group");
    assert_ne!(pa, pb);
    let out = t.tidal(&["run", "--qos", "online", "--", "no-such-command-xyz"]);
    assert_eq!(out.status.code(), Some(127));
}

#[test]
fn restore_returns_originals_of_groups_it_did_not_create() {
    if !cgroups_usable("restore_returns_originals_of_groups_it_did_not_create") {
        return;
    }
    let t = TestRoot::new("preexisting");
    // The test makes the offline parent itself, with known values, before tidal sees it.
    t.make_group("offline");
    let cpu_off = t.dir("cpu", "offline");
    assert_eq!(t.knob("offline", Knob::CpuIdle), KnobValue::Bool(false));
    let out = t.tidal(&["run", "--qos", "offline", "--", "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(t.knob("offline", Knob::CpuIdle), KnobValue::Bool(true));
    let out = t.tidal(&["restore"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("cpu.idle"), "{text}");
    // The value is back, and the group tidal did not create is still there.
    assert_eq!(t.knob("offline", Knob::CpuIdle), KnobValue::Bool(false));
    assert!(cpu_off.exists());
    assert!(!t.dir("cpu", "offline/offline").exists());
    // Idempotent: a second restore finds nothing to do.
    let out = t.tidal(&["restore"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("restored 0 value(s)"), "{text}");
}

#[test]
fn sigkill_mid_batch_then_restore_returns_every_original() {
    if !cgroups_usable("sigkill_mid_batch_then_restore_returns_every_original") {
        return;
    }
    let t = TestRoot::new("crash");
    let n = 30;
    let mut actions = Vec::new();
    let weight = |t: &TestRoot, i: u64| t.knob(&format!("g{i}"), Knob::CpuWeight);
    let mut originals = Vec::new();
    for i in 0..n {
        t.make_group(&format!("g{i}"));
        // Distinct originals, as the kernel shows them (v2 weights are coarser than v1 shares).
        t.write_knob(
            &format!("g{i}"),
            Knob::CpuWeight,
            KnobValue::Shares(100 + 40 * i),
        );
        originals.push(weight(&t, i));
        actions.push(serde_json::json!({
            "group": format!("g{i}"), "op": "set", "knob": "cpu-weight",
            "value": {"shares": 5000}, "reason": "crash test"
        }));
    }
    let plan = t.state.path().join("plan.json");
    std::fs::write(&plan, serde_json::json!({ "actions": actions }).to_string()).unwrap();
    let mut child = t
        .cmd()
        .args(["apply", "--pause-ms", "30", "--plan"])
        .arg(&plan)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill once some, but not all, writes happened.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let written = (0..n)
            .filter(|i| {
                weight(&t, *i) == t.as_kernel_shows(Knob::CpuWeight, KnobValue::Shares(5000))
            })
            .count();
        if written >= 5 || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let written = (0..n)
        .filter(|i| weight(&t, *i) == t.as_kernel_shows(Knob::CpuWeight, KnobValue::Shares(5000)))
        .count();
    assert!(
        written > 0 && written < n as usize,
        "killed after {written} of {n} writes"
    );
    let out = t.tidal(&["restore"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for i in 0..n {
        assert_eq!(weight(&t, i), originals[i as usize], "g{i}");
    }
}

#[test]
fn corrupt_journal_restore_names_the_entry_and_restores_the_rest() {
    if !cgroups_usable("corrupt_journal_restore_names_the_entry_and_restores_the_rest") {
        return;
    }
    let t = TestRoot::new("corrupt");
    t.make_group("g");
    t.write_knob("g", Knob::CpuWeight, KnobValue::Shares(3000));
    let file = t.knob_file("g", Knob::CpuWeight);
    let original = t.as_kernel_shows(Knob::CpuWeight, KnobValue::Shares(1234));
    let raw = {
        let (r, _) = t.layout.knob_target(Knob::CpuWeight).unwrap();
        tidal_cgroupfs::controller::encode(Knob::CpuWeight, r.version(), &original).unwrap()[0]
            .clone()
    };
    let good = serde_json::json!({"kind": "original", "path": file, "value": raw});
    std::fs::write(
        t.state.path().join("journal.jsonl"),
        format!("{good}\n{{\"kind\":\"original\",\"path\":\n"),
    )
    .unwrap();
    let out = t.tidal(&["restore"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("bad journal entry at line 2"), "{text}");
    assert_eq!(t.knob("g", Knob::CpuWeight), original);
    // The bad line was set aside, so the next restore is clean.
    let out = t.tidal(&["restore"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(t.state.path().join("journal.rejected").exists());
}

#[test]
fn without_permission_one_line_error_exit_2_nothing_left() {
    if !cgroups_usable("without_permission_one_line_error_exit_2_nothing_left") {
        return;
    }
    let t = TestRoot::new("noperm");
    // A state dir that user owns alone (tidal refuses one others can write), so the failure is the
    // cgroupfs one.
    let state = t.state.path().join("nobody");
    std::fs::create_dir_all(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::set_permissions(
        t.state.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let out = t
        .cmd()
        .env("TIDAL_STATE_DIR", &state)
        .args(["run", "--qos", "offline", "--", "true"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/sys/fs/cgroup"), "{err}");
    assert!(t.leftovers().is_empty(), "left behind: {:?}", t.leftovers());
}

#[test]
fn bad_input_is_a_usage_error() {
    let out = std::process::Command::new(common::tidal_bin())
        .args(["run", "--qos", "batch", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("offline-low") && err.contains("online-critical"),
        "{err}"
    );
    let out = std::process::Command::new(common::tidal_bin())
        .args(["run", "--qos", "offline", "sleep", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(common::tidal_bin())
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rows
        .as_array()
        .is_some_and(|r| r.iter().any(|x| x["feature"] == "cgroup mode")));
}

#[test]
fn concurrent_runs_keep_the_journal_whole_so_restore_removes_everything() {
    if !cgroups_usable("concurrent_runs_keep_the_journal_whole_so_restore_removes_everything") {
        return;
    }
    let t = TestRoot::new("concurrent");
    // Eight runs racing to create the same level groups.
    let children: Vec<_> = (0..8)
        .map(|i| {
            let level = if i % 2 == 0 { "online" } else { "offline" };
            t.cmd()
                .args(["run", "--qos", level, "--name", "race", "--", "true"])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let out = t.tidal(&["restore"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        t.leftovers().is_empty(),
        "left behind: {:?}\n{text}",
        t.leftovers()
    );
}

/// Input that used to panic, hang, blow up memory or escape: each is a one-line error, exit 2,
/// before anything is created. Needs no root.
#[test]
fn hostile_input_is_refused_up_front() {
    let state = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let t0 = std::time::Instant::now();
        let out = std::process::Command::new(common::tidal_bin())
            .env("TIDAL_STATE_DIR", state.path().join("s"))
            .env_remove("TIDAL_ROOT")
            .args(args)
            .output()
            .unwrap();
        (out, t0.elapsed())
    };
    for args in [
        &["bench", "agent-cost", "--seconds=-1"][..],
        &["bench", "agent-cost", "--seconds", "nan"],
        &["bench", "agent-cost", "--workloads", "100000"],
        &["bench", "--warmup=-1"],
        &["bench", "--duration=-1"],
        &["bench", "--duration", "inf"],
        &["bench", "--rounds", "0"],
        &["bench", "--rate", "0"],
        &["bench", "--rate", "1e9", "--duration", "1000"],
        &["bench", "--offline-cmd", "nonexistent-command-xyz"],
        &["--root", "..", "doctor"],
        &["--root", "a//b", "run", "--qos", "offline", "--", "true"],
        &["run", "--qos", "offline", "--memory", "1k", "--", "true"],
        &[
            "run",
            "--qos",
            "offline",
            "--memory",
            "99999999999999999999",
            "--",
            "true",
        ],
        &["apply", "--plan", "/dev/zero"],
    ] {
        let (out, took) = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(took < Duration::from_secs(10), "{args:?} took {took:?}");
    }
    // A plan that would reach outside the root is refused before anything is applied.
    let plan = state.path().join("escape.json");
    for bad in [
        r#"{"actions":[{"group":"../esc-sibling","op":"ensure-group","reason":"x"}]}"#,
        r#"{"actions":[{"group":"..","op":"kill","reason":"x"}]}"#,
    ] {
        std::fs::write(&plan, bad).unwrap();
        let (out, _) = run(&["--dry-run", "apply", "--plan", plan.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("invalid plan"), "{err}");
    }
    // `--qos -1` as README writes it.
    let (out, _) = run(&["--dry-run", "run", "--qos", "-1", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("unexpected argument"), "{err}");
}

/// `tidal apply` never writes the kubelet's QoS tiers or the groups above them, whatever the plan
/// says: under `/` by default, under the config's `kubelet_cgroup_root` with `--config`. Refused
/// before anything is read (a dry run, so no root is needed).
#[test]
fn apply_refuses_the_kubelets_tiers_whatever_the_plan_says() {
    let state = tempfile::tempdir().unwrap();
    let cfg = state.path().join("config.yaml");
    std::fs::write(&cfg, "kubernetes:\n  kubelet_cgroup_root: /custom\n").unwrap();
    let plan = state.path().join("plan.json");
    for (group, config) in [
        ("kubepods/besteffort", None),
        ("kubepods", None),
        ("kubepods.slice/kubepods-burstable.slice", None),
        ("custom/kubepods/burstable", Some(&cfg)),
        ("custom", Some(&cfg)),
    ] {
        std::fs::write(
            &plan,
            format!(
                r#"{{"actions":[{{"foreign":"{group}","op":"set","knob":"cpu-idle","value":{{"bool":true}},"reason":"t"}}]}}"#
            ),
        )
        .unwrap();
        let mut c = std::process::Command::new(common::tidal_bin());
        c.env("TIDAL_STATE_DIR", state.path().join("s"))
            .env_remove("TIDAL_ROOT")
            .args(["--dry-run", "apply", "--plan"])
            .arg(&plan);
        if let Some(f) = config {
            c.arg("--config").arg(f);
        }
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{group}: {text}");
        assert!(
            text.contains("FAILED") && text.contains("never writes it"),
            "{group}: {text}"
        );
    }
}

#[test]
fn a_pods_processes_are_read_from_its_container_groups_nested_too() {
    if !cgroups_usable("a_pods_processes_are_read_from_its_container_groups_nested_too") {
        return;
    }
    let t = TestRoot::new("podprocs");
    // Processes only in leaves (v2's rule once controllers are passed down).
    let groups = ["pod/ctr-a", "pod/ctr-a", "pod/ctr-b/sub", "pod/ctr-c"];
    for g in groups {
        t.make_group(g);
    }
    let mut children = Vec::new();
    let mut want = Vec::new();
    for g in groups {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        children.push(child);
        std::fs::write(t.dir("cpu", g).join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {g}: {e}"));
        want.push(pid);
    }
    let got = tidal_cgroupfs::layout::read_procs_tree(&t.dir("cpu", "pod"));
    let gone = tidal_cgroupfs::layout::read_procs_tree(&t.dir("cpu", "pod/nope"));
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let mut got = got.expect("the pod's processes");
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // A group that is not there: an error that says it vanished.
    assert!(gone.is_err_and(|e| e.is_vanished()));
}

#[test]
fn a_group_s_task_count_follows_tasks_that_come_and_go_between_reads_under_a_second_apart() {
    if !cgroups_usable(
        "a_group_s_task_count_follows_tasks_that_come_and_go_between_reads_under_a_second_apart",
    ) {
        return;
    }
    let t = TestRoot::new("taskcount");
    t.make_group("counted");
    let target =
        tidal_model::Target::Tidal(tidal_model::GroupPath::new("counted").expect("valid group"));
    let mut reader = t.layout.tasks(&target).expect("a task count reader");
    // Reads closer together than a second: a v1 pid list kept open is served again then.
    let mut count = || {
        std::thread::sleep(Duration::from_millis(300));
        reader.read().expect("task count")
    };
    let empty = count();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let moved = std::fs::write(
        t.dir("cpu", "counted").join("cgroup.procs"),
        child.id().to_string(),
    );
    let one = count();
    let _ = child.kill();
    let _ = child.wait();
    let none = count();
    moved.expect("move the task in");
    assert_eq!(
        (empty, one, none),
        (0, 1, 0),
        "counts: empty, one task, after it left"
    );
}
