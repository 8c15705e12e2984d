//! Cost of one pure control step as the number of workloads grows (it should grow linearly at most).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use tidal_model::{Capabilities, CpuSet, QosLevel, Snapshot, Target, WorkloadSnapshot};
use tidal_policy::{decide, Config, PolicyState};

fn snapshot(n: usize) -> Snapshot {
    let workloads: Vec<WorkloadSnapshot> = (0..n)
        .map(|i| {
            let level = if i % 4 == 3 {
                QosLevel::Online
            } else {
                QosLevel::Offline
            };
            WorkloadSnapshot {
                group: Target::Tidal(
                    level
                        .group_path()
                        .join(&format!("w{i}"))
                        .expect("valid name"),
                ),
                level,
                name: format!("w{i}"),
                managed: true,
                procs: Some(1),
                cpu_usage_cpus: Some(0.01),
                memory_bytes: Some(10 << 20),
                pressure: Default::default(),
                nr_throttled: Some(0),
                throttled_us: Some(0),
                pod: None,
                cpuset: None,
                memory_request: None,
                open_files: None,
                oom_kills: None,
            }
        })
        .collect();
    Snapshot {
        now_ms: 1_000,
        cpus: CpuSet::first_n(16),
        node_busy_cpus: Some(9.0),
        node_busy_short_cpus: Some(9.0),
        offline_usage_cpus: Some(5.0),
        offline_usage_short_cpus: Some(5.0),
        online_cpu_psi: Some(1.0),
        online_cpu_psi_full: Some(0.0),
        online_cpu_psi_1s: Some(1.0),
        online_cpu_psi_full_1s: Some(0.0),
        mem_total_bytes: Some(64 << 30),
        mem_available_bytes: Some(32 << 30),
        levels_present: workloads.iter().map(|w| w.level).collect(),
        workloads,
        workloads_seq: None,
        kubelet: None,
        signals: Vec::new(),
        online_mem_psi: None,
        offline_memory_bytes: None,
        block_devices: vec![],
        reclaim_scan_per_s: None,
    }
}

fn bench(c: &mut Criterion) {
    let cfg = Config::default();
    let caps = Capabilities::full(16);
    let mut g = c.benchmark_group("decide");
    for n in [50usize, 100, 200, 400] {
        let snap = snapshot(n);
        // A steady-state tick: the previous state already matches, as in a running agent.
        let st = decide(&snap, &cfg, &caps, &PolicyState::default()).state;
        let mut later = snap.clone();
        later.now_ms += 100;
        g.bench_with_input(BenchmarkId::from_parameter(n), &later, |b, s| {
            b.iter(|| decide(black_box(s), &cfg, &caps, &st))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
