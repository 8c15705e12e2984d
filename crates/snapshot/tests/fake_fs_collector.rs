//! Fake-fs tests of the collector with a fake clock: rates over the tick window, the 1 s PSI window,
//! and missing readings that stay missing.

use std::fs;
use std::path::Path;
use tidal_cgroupfs::mountinfo::{parse_mountinfo, parse_proc_cgroup};
use tidal_cgroupfs::{Hierarchies, Host, Layout, RootSpec};
use tidal_model::{CpuSet, QosLevel};
use tidal_snapshot::{Collector, FakeClock};
use tidal_source::LocalSource;

fn put(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

fn stat(usec: u64) -> String {
    format!("usage_usec {usec}\nuser_usec 0\nsystem_usec 0\n")
}

fn psi(some: u64, full: u64) -> String {
    format!("some avg10=1.00 avg60=0.00 avg300=0.00 total={some}\nfull avg10=0.50 avg60=0.00 avg300=0.00 total={full}\n")
}

#[test]
fn fake_fs_collector_rates_windows_and_missing_readings() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path();
    let root = m.join("tidal");
    put(&m.join("cpu.stat"), &stat(0));
    put(&root.join("offline/cpu.stat"), &stat(0));
    put(&root.join("online/cpu.pressure"), &psi(0, 0));
    put(&root.join("online/web/cgroup.procs"), "7\n");
    put(&root.join("online/web/cpu.stat"), &stat(0));
    put(&root.join("online/web/memory.current"), "1000\n");
    put(&root.join("online/web/memory.stat"), "inactive_file 400\n");
    fs::create_dir_all(root.join("offline/offline")).unwrap();
    let mi = format!("1 1 0:1 / {} rw - cgroup2 cgroup2 rw\n", m.display());
    let h = Hierarchies::from_parts(&parse_mountinfo(&mi), &parse_proc_cgroup("0::/\n"), |_| {
        vec!["cpu".into(), "memory".into()]
    });
    let layout = Layout::new(h, &RootSpec::default(), Host::default());
    let clock = FakeClock::default();
    let mut c = Collector::new(
        layout.clone(),
        CpuSet::first_n(4),
        Box::new(LocalSource::new(layout)),
        Box::new(clock.clone()),
    );
    let s0 = c.snapshot(1000, true);
    assert_eq!(s0.node_busy_cpus, None, "no rate from one reading");
    assert_eq!(s0.workloads.len(), 1);
    assert_eq!(s0.workloads[0].memory_bytes, Some(600));
    assert!(s0.levels_present.contains(&QosLevel::Online));

    // 100 ms later the node used 0.3 CPU-s (3 CPUs), offline 0.1 CPU-s (1 CPU).
    clock.advance_ms(100);
    put(&m.join("cpu.stat"), &stat(300_000));
    put(&root.join("offline/cpu.stat"), &stat(100_000));
    put(&root.join("online/web/cpu.stat"), &stat(50_000));
    put(&root.join("online/cpu.pressure"), &psi(10_000, 5_000));
    let mut s = s0.clone();
    c.update(&mut s, 1000, true);
    assert!((s.node_busy_cpus.unwrap() - 3.0).abs() < 1e-9);
    assert!((s.offline_usage_cpus.unwrap() - 1.0).abs() < 1e-9);
    assert!((s.protected_usage().unwrap() - 2.0).abs() < 1e-9);
    assert!((s.workloads[0].cpu_usage_cpus.unwrap() - 0.5).abs() < 1e-9);
    assert_eq!(s.online_cpu_psi, Some(1.0));
    assert_eq!(s.online_cpu_psi_full, Some(0.5));
    assert_eq!(
        s.online_cpu_psi_1s, None,
        "100 ms is too short for the window"
    );

    // 300 ms on: the 1 s window has 400 ms and 40 ms of full stall: 10%.
    clock.advance_ms(300);
    put(&m.join("cpu.stat"), &stat(600_000));
    put(&root.join("online/cpu.pressure"), &psi(100_000, 40_000));
    c.update(&mut s, 1000, false);
    assert!(
        (s.online_cpu_psi_full_1s.unwrap() - 10.0).abs() < 1e-6,
        "{s:?}"
    );
    assert!((s.online_cpu_psi_1s.unwrap() - 25.0).abs() < 1e-6, "{s:?}");

    // A node counter that cannot be read is missing, not zero: no rate, and it is counted.
    clock.advance_ms(100);
    put(&m.join("cpu.stat"), "garbage\n");
    c.update(&mut s, 1000, false);
    assert_eq!(s.node_busy_cpus, None);
    assert_eq!(s.protected_usage(), None);
    assert_eq!(c.problems.counts.get("node CPU time"), Some(&1));
    // And the next good reading does not turn the whole counter into one huge delta.
    clock.advance_ms(100);
    put(&m.join("cpu.stat"), &stat(700_000));
    c.update(&mut s, 1000, false);
    assert_eq!(s.node_busy_cpus, None, "no rate across a missing reading");
    clock.advance_ms(100);
    put(&m.join("cpu.stat"), &stat(800_000));
    c.update(&mut s, 1000, false);
    assert!((s.node_busy_cpus.unwrap() - 1.0).abs() < 1e-9);

    // A workload task list that cannot be parsed is missing too, never "empty".
    put(&root.join("online/web/cgroup.procs"), "x\n");
    c.update(&mut s, 1000, true);
    assert_eq!(s.workloads[0].procs, None);
}
