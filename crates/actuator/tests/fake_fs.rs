//! Fake-fs tests: cgroup trees in a temp dir that mirror the kernel's file formats, for what this
//! machine lacks (v2 controllers, openEuler `cpu.qos_level`). A fake tree does not populate new
//! directories the way the kernel does, so each test lays out the groups with their files first.

use std::fs;
use std::path::Path;
use tidal_actuator::{restore, Actuator, Outcome};
use tidal_cgroupfs::mountinfo::{parse_mountinfo, parse_proc_cgroup};
use tidal_cgroupfs::v2::cpu::shares_to_weight;
use tidal_cgroupfs::{detect_capabilities, Hierarchies, Host, Layout, RootSpec};
use tidal_model::{GroupPath, Knob, KnobValue, QosLevel, Target};
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
