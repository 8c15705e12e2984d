//! IO on real cgroups (v1 `blkio.throttle.*` and `blkio.bfq.weight` here; v2 `io.max`,
//! `io.weight`, `io.bfq.weight` and blk-iocost in the VM harness): the agent limits offline reads
//! on every real block device to `io.offline_max`, and `restore` lifts what it set; each level's IO
//! weight is in the files the IO schedulers read. blk-iocost and a device's scheduler are
//! node-wide switches: they are changed only where `TIDAL_TEST_NODE_WIDE=1` says the machine is
//! the test's own (the VM harness sets it).

mod common;

use common::{cgroups_usable, free_addr, required, start_agent, stop, wait_for, TestRoot};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tidal_cgroupfs::blockdev::{active_scheduler, bfq_in_kernel, real_devices, BlockDev};
use tidal_cgroupfs::{iolimit, Version};
use tidal_model::{DevNum, GroupPath, IoLimit, Knob, KnobValue, QosLevel, Target};

fn node_wide() -> bool {
    std::env::var("TIDAL_TEST_NODE_WIDE").is_ok_and(|v| v == "1")
}

/// Bytes a task has read through read(2) (`rchar` of /proc/PID/io).
fn rchar(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("rchar:"))?
        .trim()
        .parse()
        .ok()
}

/// What the reader reads: a real device's node where it may be opened, else a 64 MiB file written
/// (not sparse) on a filesystem that lives on a real device.
fn source(t: &TestRoot, devs: &[BlockDev]) -> PathBuf {
    for d in devs {
        let node = PathBuf::from(format!("/dev/{}", d.name));
        if std::fs::File::open(&node).is_ok() {
            return node;
        }
    }
    let f = t.state.path().join("io-source");
    let dev = std::fs::metadata(t.state.path())
        .map(|m| m.dev())
        .unwrap_or(0);
    let on = DevNum {
        major: libc::major(dev),
        minor: libc::minor(dev),
    };
    assert!(
        devs.iter().any(|d| d.dev == on),
        "no real device can be opened here and {} is on {on}, not a real device ({devs:?})",
        t.state.path().display()
    );
    let mut w = std::fs::File::create(&f).expect("create the read source");
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..64 {
        w.write_all(&chunk).expect("write the read source");
    }
    w.sync_all().expect("sync the read source");
    f
}

#[test]
fn offline_reads_are_held_under_the_configured_io_limit_and_restore_lifts_it() {
    if !cgroups_usable("offline_reads_are_held_under_the_configured_io_limit_and_restore_lifts_it")
    {
        return;
    }
    let mut t = TestRoot::new("io");
    let caps = tidal_cgroupfs::detect_capabilities(&t.layout);
    let devs = real_devices(std::path::Path::new("/sys/block"));
    if !caps.has(Knob::IoMax) || devs.is_empty() {
        assert!(
            !required(),
            "no io.max/blkio.throttle files or no real block device ({devs:?})"
        );
        eprintln!("SKIP: no io.max/blkio.throttle files or no real block device");
        return;
    }
    // blk-iocost only where the root has its switch and the machine is the test's.
    let qos = t
        .layout
        .hierarchies
        .unified()
        .map(|h| h.mount.join(iolimit::IOCOST_QOS))
        .filter(|p| p.exists());
    let iocost = node_wide() && qos.is_some();
    let before = qos
        .as_ref()
        .map(|p| iolimit::enabled(&std::fs::read_to_string(p).unwrap_or_default()))
        .unwrap_or_default();
    let addr = free_addr();
    let cfg = format!(
        "tick: 100ms\nstats_interval: 200ms\nio:\n  iocost: {iocost}\n  offline_max:\n    read_bps: 1048576\n"
    );
    let agent = start_agent(&t, &cfg, &addr);
    // An offline workload first, so the limits are in place before the reader starts.
    t.spawn(&[
        "run", "--qos", "offline", "--name", "hold", "--", "sleep", "60",
    ]);
    // v2: the offline parent holds all offline work to the limit; v1 throttling is flat, so each
    // offline workload gets it.
    let offline = if caps.io_flat {
        Target::Tidal(GroupPath::new("offline/offline/hold").unwrap())
    } else {
        Target::Tidal(QosLevel::offline_parent())
    };
    let want = KnobValue::IoMax(
        devs.iter()
            .map(|d| IoLimit {
                rbps: Some(1 << 20),
                ..IoLimit::none(d.dev)
            })
            .collect(),
    );
    wait_for(&format!("io limits on {offline}"), 20, || {
        t.layout.read_knob(&offline, Knob::IoMax).ok() == Some(want.clone())
    });
    if iocost {
        let p = qos.clone().unwrap_or_default();
        wait_for("blk-iocost enabled", 10, || {
            let on = iolimit::enabled(&std::fs::read_to_string(&p).unwrap_or_default());
            devs.iter().all(|d| on.contains(&d.dev))
        });
    }
    // 64 MiB of direct reads (no page cache) from a real device: at 1 MiB/s that is a minute,
    // unlimited it is well under a second.
    let src = source(&t, &devs);
    // The reader starts reading once the test has seen its limit in place (v1: a new workload's
    // own group gets it from the agent's next look at the tree).
    let go = t.state.path().join("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.1; done; exec dd if={} of=/dev/null bs=64k count=1024 iflag=direct",
        go.display(),
        src.display()
    );
    t.spawn(&[
        "run", "--qos", "offline", "--name", "reader", "--", "sh", "-c", &script,
    ]);
    if caps.io_flat {
        let g = Target::Tidal(GroupPath::new("offline/offline/reader").unwrap());
        wait_for("io limits on the reader", 20, || {
            t.layout.read_knob(&g, Knob::IoMax).ok() == Some(want.clone())
        });
    }
    let reader = t.dir("cpu", "offline/offline/reader");
    let mut pid = None;
    wait_for("the reader in its group", 10, || {
        pid = std::fs::read_to_string(reader.join("cgroup.procs"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        pid.is_some()
    });
    std::fs::write(&go, "").expect("start the reader");
    // The shell execs dd: same task.
    wait_for("dd started", 10, || {
        std::fs::read_to_string(format!("/proc/{}/comm", pid.unwrap_or_default()))
            .is_ok_and(|c| c.trim() == "dd")
    });
    let pid = pid.unwrap_or_default();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let read = rchar(pid);
    let secs = start.elapsed().as_secs_f64();
    // Whatever the reader got through: at most the limit over the time it ran, plus the slice the
    // throttle lets through at once (generously 4 MiB); the unlimited read would have finished.
    let read = read.unwrap_or_else(|| panic!("the reader ended within {secs:.1}s: not held"));
    let bound = (secs + 1.0) * f64::from(1u32 << 20) + f64::from(4u32 << 20);
    assert!(
        (read as f64) < bound,
        "the reader read {read} bytes in {secs:.1}s against a 1 MiB/s limit"
    );
    stop(agent);
    t.kill_children();
    t.restore_ok();
    if let Some(p) = qos {
        // What was off before is off again.
        let on = iolimit::enabled(&std::fs::read_to_string(&p).unwrap_or_default());
        assert_eq!(on, before, "io.cost.qos after restore");
    }
}

/// A device's scheduler, put back when dropped (even on failure).
struct Scheduler {
    file: PathBuf,
    was: String,
}

impl Scheduler {
    fn set(dev: &str, to: &str) -> Option<Scheduler> {
        let file = PathBuf::from(format!("/sys/block/{dev}/queue/scheduler"));
        let was = active_scheduler(&std::fs::read_to_string(&file).ok()?)?;
        std::fs::write(&file, to).ok()?;
        Some(Scheduler { file, was })
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.file, &self.was);
    }
}

#[test]
fn level_io_weights_are_in_the_files_the_io_schedulers_read_and_doctor_says_which_acts() {
    if !cgroups_usable(
        "level_io_weights_are_in_the_files_the_io_schedulers_read_and_doctor_says_which_acts",
    ) {
        return;
    }
    let t = TestRoot::new("ioweight");
    let caps = tidal_cgroupfs::detect_capabilities(&t.layout);
    let sys_block = std::path::Path::new("/sys/block");
    let Some(version) = t
        .layout
        .knob_target(Knob::IoWeight)
        .map(|(r, _)| r.version())
    else {
        assert!(!required(), "no io or blkio controller here");
        eprintln!("SKIP: no io or blkio controller here");
        return;
    };
    // v2: BFQ's file is there exactly when BFQ is in the kernel (the VM harness loads it).
    if version == Version::V2 {
        assert_eq!(caps.has(Knob::IoBfqWeight), bfq_in_kernel(sys_block));
    }
    let knobs: Vec<Knob> = [Knob::IoWeight, Knob::IoBfqWeight]
        .into_iter()
        .filter(|k| caps.has(*k))
        .collect();
    if knobs.is_empty() {
        assert!(!required(), "no IO weight file here ({version:?})");
        eprintln!("SKIP: no IO weight file here");
        return;
    }
    // Where the machine is the test's own, BFQ schedules the first real device that offers it.
    let devs = real_devices(sys_block);
    let bfq = node_wide()
        .then(|| devs.iter().find_map(|d| Scheduler::set(&d.name, "bfq")))
        .flatten();
    // The VM harness has BFQ and a disk: there the whole path is taken, v2's io.bfq.weight too.
    if node_wide() && required() && bfq_in_kernel(sys_block) {
        assert!(
            bfq.is_some(),
            "no real device took the BFQ scheduler ({devs:?})"
        );
        if version == Version::V2 {
            assert!(
                caps.has(Knob::IoBfqWeight),
                "BFQ is in, io.bfq.weight is not"
            );
        }
    }
    for level in ["online-critical", "offline-low"] {
        let out = t.tidal(&["run", "--qos", level, "--name", "w", "--", "true"]);
        assert!(out.status.success(), "tidal run --qos {level}: {out:?}");
    }
    // The offline parent yields to online; online-critical weighs 4x online; offline-low yields
    // inside the offline parent.
    for (group, want) in [
        ("online-critical", 400),
        ("offline", 10),
        ("offline/offline-low", 10),
    ] {
        for k in &knobs {
            assert_eq!(t.knob(group, *k), KnobValue::Weight(want), "{k} of {group}");
        }
    }
    // As the kernel shows them: BFQ's files on BFQ's own [1, 1000] scale.
    let bfq_file = match version {
        Version::V1 => caps.has(Knob::IoWeight).then_some("blkio.bfq.weight"),
        Version::V2 => caps.has(Knob::IoBfqWeight).then_some("io.bfq.weight"),
    };
    if let Some(f) = bfq_file {
        let controller = if version == Version::V1 {
            "blkio"
        } else {
            "io"
        };
        let shown = t.read(controller, "online-critical", f);
        assert!(
            shown == "40" || shown.starts_with("default 40"),
            "{f} of online-critical: {shown}"
        );
    }
    let out = t.tidal(&["doctor", "--json"]);
    assert!(out.status.success(), "doctor: {out:?}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor's json");
    let row = rows
        .as_array()
        .and_then(|r| r.iter().find(|x| x["feature"] == "IO weight in force"))
        .cloned()
        .expect("an IO weight row");
    let detail = row["detail"].as_str().unwrap_or_default().to_string();
    let under_bfq = real_devices(sys_block)
        .iter()
        .any(|d| d.scheduler.as_deref() == Some("bfq"));
    // blk-iocost read from its switch, not from the row under test.
    let iocost = version == Version::V2
        && t.layout
            .hierarchies
            .unified()
            .and_then(|h| std::fs::read_to_string(h.mount.join(iolimit::IOCOST_QOS)).ok())
            .is_some_and(|q| !iolimit::enabled(&q).is_empty());
    assert_eq!(
        row["available"].as_bool(),
        Some((under_bfq && bfq_file.is_some()) || iocost),
        "{detail}"
    );
    if under_bfq {
        assert!(
            detail.contains(&format!("reads {}", bfq_file.unwrap_or("?"))),
            "{detail}"
        );
    }
    // The agent's /metrics says the same.
    let addr = free_addr();
    let agent = start_agent(&t, "bpf:\n  enabled: false\n", &addr);
    let want = f64::from(u8::from((under_bfq && bfq_file.is_some()) || iocost));
    // Set with /state's io_weights, by the first static pass (the gauge reads 0 before it).
    wait_for("the first static pass", 10, || {
        !common::state(&addr)["io_weights"].is_null()
    });
    let (_, metrics) = common::get(&addr, "/metrics").expect("metrics");
    stop(agent);
    let got = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tidal_io_weights_in_force "))
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(got, Some(want), "{metrics}");
    t.restore_ok();
}
