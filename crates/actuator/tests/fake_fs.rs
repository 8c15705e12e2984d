//! Fake-fs tests: cgroup trees in a temp dir that mirror the kernel's file formats, for what this
//! machine lacks (v2 controllers, openEuler `cpu.qos_level`). A fake tree does not populate new
//! directories the way the kernel does, so each test lays out the groups with their files first.

use std::fs;
use std::path::Path;
use tidal_actuator::{restore, Actuator, Outcome};
use tidal_cgroupfs::mountinfo::{parse_mountinfo, parse_proc_cgroup};
use tidal_cgroupfs::v2::cpu::shares_to_weight;
use tidal_cgroupfs::{detect_capabilities, Hierarchies, Host, Layout, RootSpec};
use tidal_model::{ForeignGroup, GroupPath, Knob, KnobValue, QosLevel, Target};
use tidal_policy::{level_plan, workload_limits, Limits};

fn write(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (f, v) in files {
        fs::write(dir.join(f), format!("{v}\n")).unwrap();
    }
}

/// A non-root v2 group as the kernel shows it with cpu, cpuset, io and memory enabled.
fn v2_group(dir: &Path) {
    write(
        dir,
        &[
            ("cgroup.procs", ""),
            ("cgroup.controllers", "cpuset cpu io memory pids"),
            ("cgroup.subtree_control", ""),
            ("cgroup.freeze", "0"),
            ("cgroup.kill", ""),
            ("cpu.weight", "100"),
            ("cpu.idle", "0"),
            ("cpu.max", "max 100000"),
            ("cpu.max.burst", "0"),
            ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0"),
            ("cpu.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0"),
            ("cpuset.cpus", ""),
            ("cpuset.mems", ""),
            ("cpuset.cpus.effective", "0-3"),
            ("cpuset.mems.effective", "0"),
            ("memory.max", "max"),
            ("memory.high", "max"),
            ("memory.low", "0"),
            ("memory.min", "0"),
            ("memory.current", "4096"),
            ("io.weight", "default 100"),
        ],
    );
}

fn fake_v2(tmp: &Path) -> Layout {
    let mount = tmp.join("cgroup");
    write(
        &mount,
        &[
            ("cgroup.controllers", "cpuset cpu io memory hugetlb pids"),
            ("cgroup.subtree_control", "cpuset cpu io memory pids"),
            ("cgroup.procs", ""),
            (
                "cpu.pressure",
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=0",
            ),
        ],
    );
    v2_group(&mount.join("work.slice"));
    let mi = format!("26 22 0:23 / {} rw - cgroup2 cgroup2 rw\n", mount.display());
    let h = Hierarchies::from_parts(
        &parse_mountinfo(&mi),
        &parse_proc_cgroup("0::/work.slice\n"),
        |m| {
            fs::read_to_string(m.join("cgroup.controllers"))
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        },
    );
    Layout::new(h, &RootSpec::Relative("tidal".into()), Host::default())
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap().trim().to_string()
}

#[test]
fn fake_fs_v2_levels_limits_noop_and_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fake_v2(tmp.path());
    let root = tmp.path().join("cgroup/work.slice/tidal");
    for g in [
        "",
        "offline",
        "offline/offline",
        "offline/offline-low",
        "online-critical",
        "online-critical/db",
    ] {
        v2_group(&root.join(g));
    }
    let caps = detect_capabilities(&layout);
    for k in [
        Knob::CpuIdle,
        Knob::CpuWeight,
        Knob::MemoryHigh,
        Knob::IoWeight,
        Knob::Freeze,
        Knob::CpuBurst,
    ] {
        assert!(caps.has(k), "{k} should be detected on v2");
    }
    assert!(!caps.has(Knob::CpuQosLevel));
    assert!(caps.psi && !caps.cpuset_v1);
    assert_eq!(caps.cpus.to_string(), "0-3");

    let state = tmp.path().join("state");
    let mut act = Actuator::new(layout.clone(), &state, false).unwrap();
    let mut plan = level_plan(QosLevel::Offline, &caps);
    plan.extend(level_plan(QosLevel::OfflineLow, &caps));
    plan.extend(level_plan(QosLevel::OnlineCritical, &caps));
    let db = GroupPath::new("online-critical/db").unwrap();
    plan.extend(workload_limits(
        &db,
        Limits {
            cpus: Some(0.5),
            memory: Some(1 << 30),
        },
        &caps,
    ));
    let res = act.apply(&plan);
    assert!(res.iter().all(|a| a.result.is_ok()), "{res:?}");
    assert_eq!(read(&root.join("offline/cpu.idle")), "1");
    assert_eq!(read(&root.join("offline/io.weight")), "default 10");
    assert_eq!(read(&root.join("offline/offline/cpu.weight")), "100");
    assert_eq!(read(&root.join("offline/offline-low/cpu.weight")), "1");
    assert_eq!(
        read(&root.join("online-critical/cpu.weight")),
        shares_to_weight(4096).to_string()
    );
    assert_eq!(
        read(&root.join("online-critical/db/cpu.max")),
        "50000 100000"
    );
    assert_eq!(
        read(&root.join("online-critical/db/memory.max")),
        (1u64 << 30).to_string()
    );

    // Applying the same plan again writes nothing: the lossy shares→weight value compares equal.
    let before = act.stats().writes;
    let again = act.apply(&plan);
    assert_eq!(act.stats().writes, before);
    assert!(
        again
            .iter()
            .all(|a| matches!(a.result, Ok(Outcome::Unchanged))),
        "{again:?}"
    );

    // Freeze through cgroup.freeze.
    assert_eq!(
        act.set(
            &Target::Tidal(db.clone()),
            Knob::Freeze,
            &KnobValue::Bool(true)
        )
        .unwrap(),
        Outcome::Written
    );
    assert_eq!(read(&root.join("online-critical/db/cgroup.freeze")), "1");

    // These groups existed before tidal: restore writes every original back and removes nothing.
    let rep = restore(&layout, &state, false).unwrap();
    assert!(
        rep.failed.is_empty() && rep.removed_groups.is_empty(),
        "{rep:?}"
    );
    assert_eq!(read(&root.join("offline/cpu.idle")), "0");
    assert_eq!(read(&root.join("offline/io.weight")), "default 100");
    assert_eq!(read(&root.join("online-critical/db/cpu.max")), "max 100000");
    assert_eq!(read(&root.join("online-critical/db/memory.max")), "max");
    assert_eq!(read(&root.join("online-critical/db/cgroup.freeze")), "0");
}

#[test]
fn fake_fs_v2_creating_groups_enables_controllers_in_the_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fake_v2(tmp.path());
    let state = tmp.path().join("state");
    let mut act = Actuator::new(layout.clone(), &state, false).unwrap();
    act.ensure_group(&GroupPath::new("online").unwrap())
        .unwrap();
    let base = tmp.path().join("cgroup/work.slice");
    assert!(base.join("tidal/online").is_dir());
    // The fake file keeps what was written: the delta that enables the offered controllers.
    assert_eq!(
        read(&base.join("cgroup.subtree_control")),
        "+cpu +cpuset +memory +io"
    );
    let rep = restore(&layout, &state, false).unwrap();
    assert_eq!(rep.removed_groups.len(), 2, "{rep:?}");
    assert!(!base.join("tidal").exists());
}

#[test]
fn fake_fs_openeuler_offline_parent_gets_qos_level() {
    let tmp = tempfile::tempdir().unwrap();
    let cpu = tmp.path().join("cpu");
    let v1_cpu = |d: &Path| {
        write(
            d,
            &[
                ("cgroup.procs", ""),
                ("cpu.shares", "1024"),
                ("cpu.cfs_quota_us", "-1"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.qos_level", "0"),
                ("cpu.stat", "nr_periods 0\nnr_throttled 0\nthrottled_time 0"),
            ],
        )
    };
    v1_cpu(&cpu);
    for g in ["tidal", "tidal/offline", "tidal/offline/offline"] {
        v1_cpu(&cpu.join(g));
    }
    let mi = format!("32 31 0:29 / {} rw - cgroup cgroup rw,cpu\n", cpu.display());
    let h = Hierarchies::from_parts(
        &parse_mountinfo(&mi),
        &parse_proc_cgroup("1:cpu:/\n"),
        |_| vec![],
    );
    let layout = Layout::new(h, &RootSpec::Relative("tidal".into()), Host::default());
    let caps = detect_capabilities(&layout);
    assert!(caps.has(Knob::CpuQosLevel));
    assert!(!caps.has(Knob::CpuIdle), "this fake kernel has no cpu.idle");
    let state = tmp.path().join("state");
    let mut act = Actuator::new(layout.clone(), &state, false).unwrap();
    let res = act.apply(&level_plan(QosLevel::Offline, &caps));
    assert!(res.iter().all(|a| a.result.is_ok()), "{res:?}");
    assert_eq!(read(&cpu.join("tidal/offline/cpu.qos_level")), "-1");
    // No idle-class write was attempted on a kernel that uses qos_level.
    assert!(!cpu.join("tidal/offline/cpu.idle").exists());
    restore(&layout, &state, false).unwrap();
    assert_eq!(read(&cpu.join("tidal/offline/cpu.qos_level")), "0");
}

#[test]
fn fake_fs_openeuler_offline_memory_gets_qos_level_and_a_zero_soft_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let mem = tmp.path().join("memory");
    let v1_memory = |d: &Path| {
        write(
            d,
            &[
                ("cgroup.procs", ""),
                ("memory.limit_in_bytes", "9223372036854771712"),
                ("memory.soft_limit_in_bytes", "9223372036854771712"),
                ("memory.usage_in_bytes", "4096"),
                ("memory.qos_level", "0"),
                (
                    "memory.stat",
                    "cache 0\nrss 4096\ntotal_inactive_file 0\ntotal_pgmajfault 0",
                ),
            ],
        )
    };
    v1_memory(&mem);
    for g in ["tidal", "tidal/offline", "tidal/offline/offline"] {
        v1_memory(&mem.join(g));
    }
    let mi = format!(
        "33 31 0:30 / {} rw - cgroup cgroup rw,memory\n",
        mem.display()
    );
    let h = Hierarchies::from_parts(
        &parse_mountinfo(&mi),
        &parse_proc_cgroup("1:memory:/\n"),
        |_| vec![],
    );
    let layout = Layout::new(h, &RootSpec::Relative("tidal".into()), Host::default());
    let caps = detect_capabilities(&layout);
    assert!(caps.has(Knob::MemoryQosLevel) && caps.has(Knob::MemorySoftLimit));
    let state = tmp.path().join("state");
    let mut act = Actuator::new(layout.clone(), &state, false).unwrap();
    let res = act.apply(&level_plan(QosLevel::Offline, &caps));
    assert!(res.iter().all(|a| a.result.is_ok()), "{res:?}");
    assert_eq!(read(&mem.join("tidal/offline/memory.qos_level")), "-1");
    assert_eq!(
        read(&mem.join("tidal/offline/memory.soft_limit_in_bytes")),
        "0"
    );
    restore(&layout, &state, false).unwrap();
    assert_eq!(read(&mem.join("tidal/offline/memory.qos_level")), "0");
}

#[test]
fn fake_fs_dry_run_writes_nothing_and_vanished_groups_are_normal() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fake_v2(tmp.path());
    let root = tmp.path().join("cgroup/work.slice/tidal");
    v2_group(&root.join("offline"));
    let caps = detect_capabilities(&layout);
    let state = tmp.path().join("state");
    let mut act = Actuator::new(layout.clone(), &state, true).unwrap();
    let res = act.apply(&level_plan(QosLevel::Offline, &caps));
    assert!(res.iter().all(|a| a.result.is_ok()));
    assert_eq!(read(&root.join("offline/cpu.idle")), "0");
    assert!(!root.join("offline/offline").exists());
    assert!(act.journal().load().unwrap().0.is_empty());

    let mut act = Actuator::new(layout, &state, false).unwrap();
    let gone = GroupPath::new("online/ended-job").unwrap();
    assert_eq!(
        act.set(
            &Target::Tidal(gone),
            Knob::CpuWeight,
            &KnobValue::Shares(1024)
        )
        .unwrap(),
        Outcome::Vanished
    );
}

/// A value its knob cannot take is refused before any write, naming the file it was meant for.
#[test]
fn fake_fs_a_value_of_the_wrong_kind_is_refused_naming_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fake_v2(tmp.path());
    let root = tmp.path().join("cgroup/work.slice/tidal");
    v2_group(&root.join("offline/offline"));
    let mut act = Actuator::new(layout, &tmp.path().join("state"), false).unwrap();
    let offline = Target::Tidal(QosLevel::Offline.group_path());
    let err = act
        .set(&offline, Knob::CpuWeight, &KnobValue::Bool(true))
        .unwrap_err()
        .to_string();
    let file = root.join("offline/offline/cpu.weight");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert_eq!(read(&file), "100");
}

/// Protected groups (the kubelet's tiers) and the groups above them are refused, naming the
/// directory, before anything is read or journalled (a brake leaves them out and keeps the rest);
/// a pod's group below them is written.
#[test]
fn fake_fs_the_kubelets_tiers_are_never_written_and_a_pod_below_them_is() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fake_v2(tmp.path());
    let mount = tmp.path().join("cgroup");
    for g in [
        "kubepods",
        "kubepods/besteffort",
        "kubepods/besteffort/podx",
    ] {
        v2_group(&mount.join(g));
    }
    let state = tmp.path().join("state");
    let mut act = Actuator::new(layout, &state, false).unwrap();
    let g = |s: &str| ForeignGroup::new(s).unwrap();
    act.protect(vec![g("kubepods"), g("kubepods/besteffort")]);
    let idle = KnobValue::Bool(true);
    for tier in ["kubepods", "kubepods/besteffort"] {
        let t = Target::Foreign(g(tier));
        let err = act.set(&t, Knob::CpuIdle, &idle).unwrap_err().to_string();
        assert!(
            err.contains(&mount.join(tier).display().to_string()),
            "{err}"
        );
        assert!(act.oom_score_adj(&t, 1000).is_err());
        act.remember(&[(t.clone(), Knob::CpuIdle)]).unwrap();
        assert_eq!(read(&mount.join(tier).join("cpu.idle")), "0");
    }
    assert!(act.journal().load().unwrap().0.is_empty());
    let pod = Target::Foreign(g("kubepods/besteffort/podx"));
    let brake = act
        .brake(&[Target::Foreign(g("kubepods/besteffort")), pod.clone()])
        .unwrap();
    let files: Vec<_> = brake.files().map(Path::to_path_buf).collect();
    assert_eq!(
        files,
        [mount.join("kubepods/besteffort/podx/cgroup.freeze")],
        "the tier left out, the pod kept"
    );
    assert_eq!(
        act.set(&pod, Knob::CpuIdle, &idle).unwrap(),
        Outcome::Written
    );
    assert_eq!(read(&mount.join("kubepods/besteffort/podx/cpu.idle")), "1");
}

/// A journal that names files and directories outside the tidal root, or files that are no knob.
#[test]
fn fake_fs_restore_touches_nothing_outside_the_root_whatever_the_journal_says() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fake_v2(tmp.path());
    let root = tmp.path().join("cgroup/work.slice/tidal");
    v2_group(&root.join("offline"));
    // Outside everything: a plain file and a plain directory.
    let passwd = tmp.path().join("passwd");
    fs::write(&passwd, "root:x:0:0\n").unwrap();
    let plain_dir = tmp.path().join("plain-dir");
    fs::create_dir(&plain_dir).unwrap();
    // A sibling group beside the root, and a non-knob file inside the root.
    let sibling = tmp.path().join("cgroup/work.slice/other");
    v2_group(&sibling);
    let state = tmp.path().join("state");
    fs::create_dir(&state).unwrap();
    let lines = [
        serde_json::json!({"kind": "original", "path": passwd, "value": "owned"}),
        serde_json::json!({"kind": "created", "path": plain_dir}),
        serde_json::json!({"kind": "original", "path": sibling.join("cpu.weight"), "value": "1"}),
        serde_json::json!({"kind": "created", "path": sibling}),
        serde_json::json!({"kind": "original", "path": root.join("offline/cgroup.procs"), "value": "1"}),
        serde_json::json!({"kind": "original", "path": root.join("offline/cpu.idle"), "value": "0"}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(state.join("journal.jsonl"), text).unwrap();
    fs::write(root.join("offline/cpu.idle"), "1\n").unwrap();
    for dry in [true, false] {
        let rep = restore(&layout, &state, dry).unwrap();
        let restored: Vec<_> = rep.restored.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(
            restored,
            vec![root.join("offline/cpu.idle")],
            "dry={dry}: {rep:?}"
        );
        assert_eq!(rep.skipped.len(), 5, "dry={dry}: {rep:?}");
        assert!(rep.removed_groups.is_empty(), "dry={dry}: {rep:?}");
    }
    assert_eq!(read(&passwd), "root:x:0:0");
    assert!(plain_dir.is_dir() && sibling.is_dir());
    assert_eq!(read(&sibling.join("cpu.weight")), "100");
    assert_eq!(read(&root.join("offline/cpu.idle")), "0");
}

/// A journal written in the format before version 2 (no header, `original`/`created` only).
#[test]
fn fake_fs_a_version_one_journal_still_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fake_v2(tmp.path());
    let base = tmp.path().join("cgroup/work.slice");
    let root = base.join("tidal");
    v2_group(&root);
    v2_group(&root.join("offline"));
    v2_group(&root.join("offline/offline"));
    fs::write(root.join("offline/cpu.idle"), "1\n").unwrap();
    fs::write(
        base.join("cgroup.subtree_control"),
        "cpu cpuset memory io\n",
    )
    .unwrap();
    let fixture = format!(
        "{{\"kind\":\"original\",\"path\":\"{b}/cgroup.subtree_control\",\"value\":\"\"}}\n\
         {{\"kind\":\"created\",\"path\":\"{r}\"}}\n\
         {{\"kind\":\"original\",\"path\":\"{r}/offline/cpu.idle\",\"value\":\"0\"}}\n\
         {{\"kind\":\"created\",\"path\":\"{r}/offline/offline\"}}\n",
        b = base.display(),
        r = root.display()
    );
    let state = tmp.path().join("state");
    fs::create_dir(&state).unwrap();
    fs::write(state.join("journal.jsonl"), fixture).unwrap();
    // The fake tree's groups hold no task files the kernel would empty: clear them so rmdir of a
    // created group is possible (a fake directory with files is not removable).
    for d in [root.join("offline/offline"), root.clone()] {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_file() {
                fs::remove_file(e.path()).unwrap();
            }
        }
    }
    let rep = restore(&layout, &state, false).unwrap();
    assert!(rep.failed.is_empty() && rep.skipped.is_empty(), "{rep:?}");
    assert_eq!(read(&root.join("offline/cpu.idle")), "0");
    assert!(!root.join("offline/offline").exists());
    // The root itself still has the pre-existing "offline" child: kept, reported busy.
    assert!(root.exists());
    // The controllers enabled above the root are handed back.
    assert_eq!(
        read(&base.join("cgroup.subtree_control")),
        "-cpu -cpuset -memory -io"
    );
}

/// The stall guard's brake: made with the originals journalled and nothing written; pulled from
/// any thread, it freezes each group; `restore` thaws them. Groups tidal did not create here (a
/// previous agent's), so their originals are kept.
#[test]
fn fake_fs_a_brake_freezes_its_groups_only_when_pulled_and_restore_thaws_them() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = fake_v2(tmp.path());
    let root = tmp.path().join("cgroup/work.slice/tidal");
    for g in ["", "offline", "offline/offline", "offline/offline-low"] {
        v2_group(&root.join(g));
    }
    let state = tmp.path().join("state");
    let targets = [
        Target::Tidal(QosLevel::OfflineLow.group_path()),
        Target::Tidal(QosLevel::Offline.group_path()),
        Target::Tidal(GroupPath::new("offline/ended").unwrap()),
    ];

    let mut dry = Actuator::new(layout.clone(), &state, true).unwrap();
    let brake = dry.brake(&targets).unwrap();
    assert_eq!(
        brake.pull().frozen,
        3,
        "a dry run says what it would freeze"
    );
    assert_eq!(read(&root.join("offline/offline/cgroup.freeze")), "0");
    assert!(dry.journal().load().unwrap().0.is_empty());

    let mut act = Actuator::new(layout.clone(), &state, false).unwrap();
    let brake = act.brake(&targets).unwrap();
    assert_eq!(brake.files().count(), 3);
    for l in ["offline/offline", "offline/offline-low"] {
        assert_eq!(read(&root.join(l).join("cgroup.freeze")), "0", "{l}");
    }
    let journalled = act.journal().load().unwrap().0;
    let originals = journalled
        .iter()
        .filter(|e| matches!(e, tidal_actuator::Entry::Original { .. }))
        .count();
    assert_eq!(originals, 2, "{journalled:?}");
    let pulled = std::thread::spawn(move || brake.pull()).join().unwrap();
    assert_eq!(pulled.frozen, 2, "the ended group is skipped: {pulled:?}");
    assert!(pulled.failed.is_empty(), "{pulled:?}");
    for l in ["offline/offline", "offline/offline-low"] {
        assert_eq!(read(&root.join(l).join("cgroup.freeze")), "1", "{l}");
    }
    drop(act);
    restore(&layout, &state, false).unwrap();
    for l in ["offline/offline", "offline/offline-low"] {
        assert_eq!(read(&root.join(l).join("cgroup.freeze")), "0", "{l}");
    }
}
