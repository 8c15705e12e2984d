//! Kubernetes mode on real cgroups: `tidal agent --source kubernetes` against a local server that
//! speaks the Kubernetes API (recorded JSON), with a kubelet-like tree (tiers, pods, containers)
//! built under the test root exactly as the kubelet lays it out, for both cgroup drivers. Offline
//! pods get `cpu.idle=1` at the pod level and the tiers are never written; a static CPU manager's
//! exclusive CPUs never run offline work; `restore` returns the pods' values. Also the kernel fact
//! behind "never idle a tier": a group with `cpu.idle=1` rejects `cpu.shares`/`cpu.weight`.

mod common;

use common::{cgroups_usable, free_addr, get, required, stop, wait_for, TestRoot};
use serde_json::{json, Value};
use std::process::Child;
use std::time::{Duration, Instant};
use tidal_cgroupfs::blockdev::real_devices;
use tidal_kube::mock::MockApi;
use tidal_model::{CpuSet, DevNum, ForeignGroup, IoLimit, Knob, KnobValue, Target};

const BE: &str = include_str!("../../kube/tests/data/pod-besteffort.json");
const BURSTABLE: &str = include_str!("../../kube/tests/data/pod-burstable-probe.json");
const NODE: &str = include_str!("../../kube/tests/data/node.json");

const UID_A: &str = "8d3f2c9a-1b47-4e0e-a6a2-3c5d9e7f1a20";
const UID_B: &str = "c41e7b2d-90aa-4c8f-b3d1-6e2f0a9b8c77";
const CTR_A: &str = "4f1c0a9e8b7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170615e4d3";
const CTR_B: &str = "0b1c2d3e4f5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// The kubelet's tree for one driver, relative to the tidal test root: (tier groups, pod A's
/// group, pod A's container, pod B's group).
struct Tree {
    base: String,
    tiers: Vec<String>,
    pod_a: String,
    ctr_a: String,
    pod_b: String,
}

fn tree(driver: &str) -> Tree {
    let base = format!("k8s-{driver}");
    let u = |s: &str| s.replace('-', "_");
    match driver {
        "cgroupfs" => Tree {
            tiers: vec![
                format!("{base}/kubepods"),
                format!("{base}/kubepods/besteffort"),
                format!("{base}/kubepods/burstable"),
            ],
            pod_a: format!("{base}/kubepods/besteffort/pod{UID_A}"),
            ctr_a: format!("{base}/kubepods/besteffort/pod{UID_A}/{CTR_A}"),
            pod_b: format!("{base}/kubepods/burstable/pod{UID_B}"),
            base,
        },
        _ => Tree {
            tiers: vec![
                format!("{base}/kubepods.slice"),
                format!("{base}/kubepods.slice/kubepods-besteffort.slice"),
                format!("{base}/kubepods.slice/kubepods-burstable.slice"),
            ],
            pod_a: format!(
                "{base}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
                u(UID_A)
            ),
            ctr_a: format!(
                "{base}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{CTR_A}.scope",
                u(UID_A)
            ),
            pod_b: format!(
                "{base}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
                u(UID_B)
            ),
            base,
        },
    }
}

/// The test root's path relative to the mount of the hierarchy that owns `cpu`.
fn root_rel(t: &TestRoot) -> String {
    let r = t.layout.primary().expect("a hierarchy");
    r.root_dir
        .strip_prefix(&r.hierarchy.mount)
        .expect("root under its mount")
        .display()
        .to_string()
}

fn foreign(t: &TestRoot, group: &str) -> Target {
    Target::Foreign(ForeignGroup::new(&format!("{}/{group}", root_rel(t))).unwrap())
}

fn read(t: &TestRoot, group: &str, knob: Knob) -> Option<KnobValue> {
    t.layout.read_knob(&foreign(t, group), knob).ok()
}

fn pods() -> Vec<Value> {
    let a: Value = serde_json::from_str(BE).unwrap();
    let mut b: Value = serde_json::from_str(BURSTABLE).unwrap();
    b["status"]["containerStatuses"][0]["containerID"] = json!(format!("containerd://{CTR_B}"));
    vec![a, b]
}

/// A `sleep` moved into a group, killed (and reaped) when dropped, also when the test fails.
struct Task(Child);

impl Task {
    fn start_in(group_dir: &std::path::Path) -> Task {
        let c = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep");
        let task = Task(c);
        std::fs::write(group_dir.join("cgroup.procs"), task.0.id().to_string())
            .unwrap_or_else(|e| panic!("move into {}: {e}", group_dir.display()));
        task
    }

    fn oom_score_adj(&self) -> i32 {
        std::fs::read_to_string(format!("/proc/{}/oom_score_adj", self.0.id()))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(i32::MIN)
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent in pod mode against the stand-in apiserver.
fn start_agent(t: &TestRoot, api: &MockApi, cfg: &str, addr: &str) -> Child {
    let kc = t.state.path().join("kubeconfig");
    std::fs::write(&kc, api.kubeconfig()).unwrap();
    let mut c = t.agent_cmd(&t.write_config(cfg), addr);
    c.args(["--source", "kubernetes"])
        .env("KUBECONFIG", &kc)
        .env_remove("KUBERNETES_SERVICE_HOST");
    t.spawn_agent(c, addr)
}

#[test]
fn offline_pods_are_idle_at_the_pod_level_in_both_drivers_trees_and_tiers_are_left_alone() {
    if !cgroups_usable(
        "offline_pods_are_idle_at_the_pod_level_in_both_drivers_trees_and_tiers_are_left_alone",
    ) {
        return;
    }
    let caps = tidal_cgroupfs::detect_capabilities(&TestRoot::new("kprobe").layout);
    for driver in ["cgroupfs", "systemd"] {
        let t = TestRoot::new(&format!("kube-{driver}"));
        let tr = tree(driver);
        t.make_group(&tr.ctr_a);
        t.make_group(&format!("{}/{}", tr.pod_a, "sandbox0"));
        t.make_group(&format!("{}/cri-containerd-{CTR_B}.scope", tr.pod_b));
        // The kubelet's own settings: BestEffort tier shares 2.
        if caps.has(Knob::CpuWeight) {
            t.write_knob(&tr.tiers[1], Knob::CpuWeight, KnobValue::Shares(2));
        }
        // IO limits: pod A had a write limit of its own (the original restore must give back).
        let devs: Vec<DevNum> = real_devices(std::path::Path::new("/sys/block"))
            .into_iter()
            .map(|d| d.dev)
            .collect();
        let io = caps.has(Knob::IoMax) && !devs.is_empty();
        if !io {
            assert!(
                !required(),
                "io limits: this host has no io.max/blkio.throttle files or no real block device ({devs:?})"
            );
            eprintln!(
                "io limits not tested: no io.max/blkio.throttle files or no real block device"
            );
        }
        let own = IoLimit {
            wbps: Some(5 << 20),
            ..IoLimit::none(
                devs.first()
                    .copied()
                    .unwrap_or(DevNum { major: 0, minor: 0 }),
            )
        };
        if io {
            t.write_knob(&tr.pod_a, Knob::IoMax, KnobValue::IoMax(vec![own]));
        }
        // A task in pod A's container group, where the kubelet puts them (not in the pod group).
        let task = Task::start_in(&t.dir("cpu", &tr.ctr_a));
        let api = MockApi::start(serde_json::from_str(NODE).unwrap()).unwrap();
        api.with(|s| s.pods = pods());
        let addr = free_addr();
        let cfg = format!(
            "tick: 100ms\nstats_interval: 200ms\nio:\n  offline_max:\n    read_bps: 1048576\n    write_iops: 200\nkubernetes:\n  node_name: node-1\n  kubelet_cgroup_root: /{}/{}\n  cpu_manager_state: {}\n",
            root_rel(&t),
            tr.base,
            t.state.path().join("cpu_manager_state").display()
        );
        let agent = start_agent(&t, &api, &cfg, &addr);
        if caps.has(Knob::CpuIdle) {
            wait_for(
                &format!("{driver}: cpu.idle on the offline pod"),
                20,
                || read(&t, &tr.pod_a, Knob::CpuIdle) == Some(KnobValue::Bool(true)),
            );
            // Koordinator's BE label, with liveness probes: offline too, idle too.
            wait_for(&format!("{driver}: cpu.idle on pod B"), 20, || {
                read(&t, &tr.pod_b, Knob::CpuIdle) == Some(KnobValue::Bool(true))
            });
            // Never on a tier: the kubelet can go on writing its shares there.
            for tier in &tr.tiers {
                assert_eq!(
                    read(&t, tier, Knob::CpuIdle),
                    Some(KnobValue::Bool(false)),
                    "{driver}: tier {tier} made idle"
                );
            }
            if caps.has(Knob::CpuWeight) {
                t.write_knob(&tr.tiers[1], Knob::CpuWeight, KnobValue::Shares(2));
            }
            // The container itself is not idle: only the pod competes as idle.
            assert_eq!(
                read(&t, &tr.ctr_a, Knob::CpuIdle),
                Some(KnobValue::Bool(false))
            );
        }
        // v2: the two offline pods share the memory ceiling, an equal part each, so together
        // they stay under it.
        if caps.has(Knob::MemoryHigh) {
            wait_for(
                &format!("{driver}: memory.high shared by the offline pods"),
                20,
                || {
                    let ceiling = get(&addr, "/state")
                        .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
                        .and_then(|v| v["policy"]["ceiling"].as_u64());
                    let high = |p: &str| match read(&t, p, Knob::MemoryHigh) {
                        Some(KnobValue::Bytes(Some(b))) => Some(b),
                        _ => None,
                    };
                    match (ceiling, high(&tr.pod_a), high(&tr.pod_b)) {
                        // Read back in pages.
                        (Some(c), Some(a), Some(b)) => {
                            a.abs_diff(c / 2) < 8192 && b.abs_diff(c / 2) < 8192
                        }
                        _ => false,
                    }
                },
            );
        }
        // Each offline pod's IO weight below its tier's other pods', in every file a scheduler
        // reads here; the tiers keep theirs.
        for knob in [Knob::IoWeight, Knob::IoBfqWeight] {
            if !caps.has(knob) {
                continue;
            }
            wait_for(&format!("{driver}: {knob} on the offline pods"), 20, || {
                [&tr.pod_a, &tr.pod_b].iter().all(|p| {
                    read(&t, p, knob) == Some(t.as_kernel_shows(knob, KnobValue::Weight(20)))
                })
            });
            for tier in &tr.tiers {
                assert_ne!(
                    read(&t, tier, knob),
                    Some(t.as_kernel_shows(knob, KnobValue::Weight(20))),
                    "{driver}: tier {tier} got a pod's IO weight"
                );
            }
        }
        if io {
            // Every real device of each offline pod limited; the tiers untouched.
            let want = KnobValue::IoMax(
                devs.iter()
                    .map(|d| IoLimit {
                        rbps: Some(1 << 20),
                        wiops: Some(200),
                        ..IoLimit::none(*d)
                    })
                    .collect(),
            );
            wait_for(
                &format!("{driver}: io limits on the offline pods"),
                20,
                || {
                    read(&t, &tr.pod_a, Knob::IoMax) == Some(want.clone())
                        && read(&t, &tr.pod_b, Knob::IoMax) == Some(want.clone())
                },
            );
            // v1 throttling is flat: the containers, where the tasks are, have their own (written
            // in the same tick as the pods', after them: wait, a read may land between the files).
            let ctr = read(&t, &tr.ctr_a, Knob::IoMax);
            if caps.io_flat {
                wait_for(&format!("{driver}: container limits"), 5, || {
                    read(&t, &tr.ctr_a, Knob::IoMax) == Some(want.clone())
                });
            } else {
                assert_eq!(
                    ctr,
                    Some(KnobValue::IoMax(vec![])),
                    "{driver}: container limits"
                );
            }
            for tier in &tr.tiers {
                assert_eq!(
                    read(&t, tier, Knob::IoMax),
                    Some(KnobValue::IoMax(vec![])),
                    "{tier}"
                );
            }
        }
        // The pod's task is counted and ordered for the OOM killer like offline work.
        wait_for(
            &format!("{driver}: oom_score_adj of the pod's task"),
            20,
            || task.oom_score_adj() >= 999,
        );
        // /state shows both pods with their levels, as the agent sees them.
        let (_, body) = get(&addr, "/state").expect("/state");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["source"], "kubernetes", "{body}");
        let levels: Vec<(String, String)> = v["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["name"].as_str().unwrap_or("").to_string(),
                    w["level"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert!(
            levels.contains(&("batch/etl-28861234-x7k2p".into(), "offline".into())),
            "{levels:?}"
        );
        assert!(
            levels.contains(&("search/indexer-0".into(), "offline".into())),
            "{levels:?}"
        );
        let procs_a = v["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "batch/etl-28861234-x7k2p")
            .map(|w| w["procs"].clone());
        assert_eq!(procs_a, Some(json!(1)), "{body}");
        // These tiers carry no memory protection (no MemoryQoS gate): where they have the files
        // (v2), /state and status say that protection stops at the pod.
        let tier_files = t.dir("memory", &tr.tiers[0]).join("memory.min").exists();
        let unprotected = v["unprotected_tiers"].as_array().map_or(0, Vec::len);
        let (_, metrics) = common::get(&addr, "/metrics").expect("metrics");
        let gauges = metrics
            .lines()
            .filter(|l| l.starts_with("tidal_kubelet_tier_unprotected{"))
            .filter(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) == Some(1.0))
            .count();
        assert_eq!(gauges, unprotected, "{metrics}");
        // How many tiers could be read, so "none unprotected" is not mistaken for "none read".
        let tiers_read = metrics
            .lines()
            .find_map(|l| l.strip_prefix("tidal_kubelet_tiers_read "))
            .and_then(|v| v.parse::<f64>().ok());
        assert_eq!(
            tiers_read,
            Some(if tier_files { 2.0 } else { 0.0 }),
            "{metrics}"
        );
        if tier_files {
            assert_eq!(unprotected, 2, "{body}");
            let out = t.tidal(&["status", "--listen", &addr]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("memory protection stops at the pod"),
                "{text}"
            );
        } else {
            assert_eq!(unprotected, 0, "{body}");
        }
        stop(agent);
        drop(task);
        assert!(t.agent_log().contains("cgroup driver"), "{}", t.agent_log());
        // restore returns the pods' own values.
        t.restore_ok();
        if caps.has(Knob::CpuIdle) {
            assert_eq!(
                read(&t, &tr.pod_a, Knob::CpuIdle),
                Some(KnobValue::Bool(false))
            );
        }
        if io {
            // Pod A's own limit is back, the limits tidal added are lifted.
            assert_eq!(
                read(&t, &tr.pod_a, Knob::IoMax),
                Some(KnobValue::IoMax(vec![own]))
            );
            for g in [&tr.pod_b, &tr.ctr_a] {
                assert_eq!(
                    read(&t, g, Knob::IoMax),
                    Some(KnobValue::IoMax(vec![])),
                    "{g}"
                );
            }
        }
        // Nothing in the kubelet's tree was created or removed by tidal.
        assert!(t.dir("cpu", &tr.ctr_a).is_dir());
        assert!(t.dir("cpu", &format!("{}/sandbox0", tr.pod_a)).is_dir());
    }
}

#[test]
fn an_idle_group_rejects_shares_so_tidal_never_idles_a_tier() {
    if !cgroups_usable("an_idle_group_rejects_shares_so_tidal_never_idles_a_tier") {
        return;
    }
    let t = TestRoot::new("einval");
    let caps = tidal_cgroupfs::detect_capabilities(&t.layout);
    if !caps.has(Knob::CpuIdle) || !caps.has(Knob::CpuWeight) {
        println!("SKIP: this kernel has no cpu.idle");
        return;
    }
    let tier = "k8s/kubepods/besteffort";
    t.make_group(tier);
    t.write_knob(tier, Knob::CpuIdle, KnobValue::Bool(true));
    let (_, paths) = t
        .layout
        .knob_paths(&foreign(&t, tier), Knob::CpuWeight)
        .unwrap();
    let e = std::fs::write(&paths[0], "2").expect_err("an idle group rejects shares");
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    t.write_knob(tier, Knob::CpuIdle, KnobValue::Bool(false));
    std::fs::write(&paths[0], "2").expect("shares accepted once not idle");
}

#[test]
fn exclusive_cpus_of_the_static_cpu_manager_never_run_offline_work() {
    if !cgroups_usable("exclusive_cpus_of_the_static_cpu_manager_never_run_offline_work") {
        return;
    }
    let mut t = TestRoot::new("excl");
    let caps = tidal_cgroupfs::detect_capabilities(&t.layout);
    let all = caps.cpus.clone();
    if all.len() < 2 || !caps.has(Knob::CpusetCpus) {
        println!("SKIP: needs 2 CPUs and cpusets");
        return;
    }
    let excl = all.last_n(1);
    let tr = tree("cgroupfs");
    t.make_group(&tr.ctr_a);
    let pod_cpus_before = read(&t, &tr.pod_a, Knob::CpusetCpus);
    let state = t.state.path().join("cpu_manager_state");
    std::fs::write(
        &state,
        json!({"policyName": "static", "defaultCpuSet": all.difference(&excl).to_string(),
               "entries": {"0a0a0a0a-guaranteed": {"db": excl.to_string()}}, "checksum": 1})
        .to_string(),
    )
    .unwrap();
    let api = MockApi::start(serde_json::from_str(NODE).unwrap()).unwrap();
    api.with(|s| s.pods = pods());
    // Offline work outside Kubernetes on the same node.
    t.spawn(&[
        "run", "--qos", "offline", "--name", "w", "--", "sleep", "600",
    ]);
    let addr = free_addr();
    let cfg = format!(
        "tick: 100ms\nstats_interval: 200ms\nkubernetes:\n  node_name: node-1\n  kubelet_cgroup_root: /{}/{}\n  cpu_manager_state: {}\n",
        root_rel(&t),
        tr.base,
        state.display()
    );
    let agent = start_agent(&t, &api, &cfg, &addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(t.layout.read_knob(&Target::Tidal(tidal_model::QosLevel::offline_parent()), Knob::CpusetCpus),
            Ok(KnobValue::Cpus(c)) if !c.is_empty() && c.intersection(&excl).is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "offline never confined to the shared pool; agent log:\n{}",
            t.agent_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let eff: CpuSet = t.effective_cpus("offline/offline/w");
    assert!(
        eff.intersection(&excl).is_empty(),
        "offline work on exclusive CPU {excl}: {eff}"
    );
    // The kubelet owns pod cpusets under the static policy: tidal leaves them as they were.
    assert_eq!(read(&t, &tr.pod_a, Knob::CpusetCpus), pod_cpus_before);
    wait_for("/state to show the static policy", 10, || {
        get(&addr, "/state")
            .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
            .is_some_and(|v| v["source_health"]["report"]["kubelet"]["cpu_manager"] == "static")
    });
    stop(agent);
    t.kill_children();
    t.restore_ok();
}

/// A long-running agent sees thousands of pods come and go: the originals it recorded in a pod's
/// groups are forgotten once the kubelet has removed them, and kept while any is there.
#[test]
fn originals_of_a_pod_whose_groups_are_gone_are_forgotten_and_kept_while_they_are_there() {
    if !cgroups_usable(
        "originals_of_a_pod_whose_groups_are_gone_are_forgotten_and_kept_while_they_are_there",
    ) {
        return;
    }
    let t = TestRoot::new("forgetpods");
    for g in ["pods/gone", "pods/gone/ctr", "pods/here"] {
        t.make_group(g);
    }
    // cpu.shares or cpu.weight, whichever this host has (one knob for both).
    let knob = Knob::CpuWeight;
    let mut act =
        tidal_actuator::Actuator::new(t.layout.clone(), t.state.path(), false).expect("actuator");
    for g in ["pods/gone", "pods/gone/ctr", "pods/here"] {
        act.set(&foreign(&t, g), knob, &KnobValue::Shares(2))
            .unwrap_or_else(|e| panic!("set {g}: {e}"));
    }
    let group = |g: &str| match foreign(&t, g) {
        Target::Foreign(f) => f,
        Target::Tidal(_) => unreachable!(),
    };
    // "gone" is removed as the kubelet would (leaves first, every hierarchy); "here" stays.
    for r in &t.layout.roots {
        for g in ["pods/gone/ctr", "pods/gone"] {
            let _ = std::fs::remove_dir(r.root_dir.join(g));
        }
    }
    let still = act
        .forget_gone(vec![group("pods/gone"), group("pods/here")])
        .expect("forget");
    assert_eq!(still, vec![group("pods/here")]);
    drop(act);
    // What restore would still put back: nothing of "gone" (not even as vanished), "here" yes.
    let out = t.tidal(&["--dry-run", "restore", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("pods/gone"), "{text}");
    assert!(text.contains("pods/here"), "{text}");
    t.restore_ok();
}
