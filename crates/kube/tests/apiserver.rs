//! The real `kube` client against a local server that speaks the Kubernetes API from recorded,
//! real-format JSON (`kube::mock`): list and watch (ADDED, MODIFIED, DELETED, BOOKMARK), a
//! dropped connection, `410 Gone`; the pod view the agent gets, Events for invalid markings, the
//! Eviction POST and a PodDisruptionBudget's 429, and the node-status patch for batch resources
//! (server-side apply, field manager `tidal`, not forced) with a conflict. The cgroup tree is a
//! fake-fs v2 tree in a temp dir, laid out as the kubelet's cgroupfs driver does.

use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use tidal_cgroupfs::mountinfo::{parse_mountinfo, parse_proc_cgroup};
use tidal_cgroupfs::{Hierarchies, Host, Layout, RootSpec};
use tidal_kube::mock::{MockApi, WatchReply};
use tidal_kube::{Connect, PodSource};
use tidal_model::{CpuSet, PodRef, QosLevel, Snapshot, Target, WorkloadSnapshot};
use tidal_policy::KubernetesConfig;
use tidal_source::{Inventory, WorkloadSource};

const BE: &str = include_str!("data/pod-besteffort.json");
const BURSTABLE: &str = include_str!("data/pod-burstable-probe.json");
const NODE: &str = include_str!("data/node.json");

fn put(p: &Path, s: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, s).unwrap();
}

/// A v2 group as the kernel shows it.
fn group(d: &Path) {
    for (f, v) in [
        ("cgroup.procs", ""),
        ("cgroup.controllers", "cpuset cpu io memory\n"),
        ("cpu.idle", "0\n"),
        ("cpu.weight", "1\n"),
        ("cpu.max", "max 100000\n"),
        ("cpu.stat", "usage_usec 0\n"),
        ("cpuset.cpus", "\n"),
        ("memory.current", "0\n"),
        ("memory.stat", "inactive_file 0\n"),
    ] {
        put(&d.join(f), v);
    }
}

fn pod_json(text: &str, uid: &str, name: &str, f: impl FnOnce(&mut Value)) -> Value {
    let mut v: Value = serde_json::from_str(text).unwrap();
    v["metadata"]["uid"] = json!(uid);
    v["metadata"]["name"] = json!(name);
    f(&mut v);
    v
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scan_until(src: &mut PodSource, what: &str, f: impl Fn(&Inventory) -> bool) -> Inventory {
    wait_for(what, || src.scan().ok().filter(|i| f(i)))
}

fn level_of(inv: &Inventory, name: &str) -> Option<QosLevel> {
    inv.workloads
        .iter()
        .find(|w| w.name == name)
        .map(|w| w.level)
}

#[test]
fn fake_fs_pods_are_watched_classified_evicted_and_batch_resources_published() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("cg");
    put(&m.join("cgroup.controllers"), "cpuset cpu io memory\n");
    let a_uid = "8d3f2c9a-1b47-4e0e-a6a2-3c5d9e7f1a20";
    let b_uid = "c41e7b2d-90aa-4c8f-b3d1-6e2f0a9b8c77";
    let c_uid = "0f0f0f0f-0000-4000-8000-00000000000c";
    for g in [
        "kubepods",
        "kubepods/besteffort",
        "kubepods/burstable",
        &format!("kubepods/besteffort/pod{a_uid}"),
        &format!("kubepods/besteffort/pod{a_uid}/4f1c0a9e8b7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170615e4d3"),
        &format!("kubepods/besteffort/pod{a_uid}/sandbox1"),
        &format!("kubepods/burstable/pod{b_uid}"),
        &format!("kubepods/besteffort/pod{c_uid}"),
        // In the kubelet's tree, unknown to the apiserver: left alone.
        "kubepods/besteffort/pod11111111-2222-4333-8444-555555555555",
    ] {
        group(&m.join(g));
    }
    let mi = format!("1 1 0:1 / {} rw - cgroup2 cgroup2 rw\n", m.display());
    let h = Hierarchies::from_parts(&parse_mountinfo(&mi), &parse_proc_cgroup("0::/\n"), |_| {
        vec!["cpuset".into(), "cpu".into(), "io".into(), "memory".into()]
    });
    let layout = Layout::new(h, &RootSpec::default(), Host::default());

    let a = pod_json(BE, a_uid, "etl-a", |_| {});
    let b = pod_json(BURSTABLE, b_uid, "indexer-0", |_| {});
    let c = pod_json(BE, c_uid, "bad-mark", |v| {
        v["metadata"]["annotations"]["tidal.io/qos-level"] = json!("batchy");
    });
    let a_online = pod_json(BE, a_uid, "etl-a", |v| {
        v["metadata"]["annotations"]["tidal.io/qos-level"] = json!("online");
        v["metadata"]["resourceVersion"] = json!("200");
    });
    let api = MockApi::start(serde_json::from_str(NODE).unwrap()).unwrap();
    api.with(|s| {
        s.pods = vec![a.clone(), c.clone()];
        s.watches.extend([
            // ADDED, MODIFIED and a bookmark, then the connection drops.
            WatchReply::Events(vec![
                ("ADDED".into(), b.clone()),
                ("MODIFIED".into(), a_online.clone()),
                (
                    "BOOKMARK".into(),
                    json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "300"}}),
                ),
            ]),
            // The resource version expired: the client lists again.
            WatchReply::Gone,
        ]);
        s.evictions.extend([429, 201]);
        s.hold_watches = true;
    });
    let cfg = KubernetesConfig {
        node_name: Some("node-1".into()),
        cpu_manager_state: tmp.path().join("cpu_manager_state").display().to_string(),
        ..KubernetesConfig::default()
    };
    let kc = kube::Config::new(api.url().parse::<http::Uri>().unwrap());
    let mut src = PodSource::start(cfg, layout, Connect::Config(Box::new(kc))).unwrap();

    // The first list: pod A (offline by tidal's annotation) and C (invalid marking → online).
    let inv = scan_until(&mut src, "the first list", |i| i.workloads.len() >= 2);
    assert_eq!(level_of(&inv, "batch/etl-a"), Some(QosLevel::Offline));
    assert_eq!(level_of(&inv, "batch/bad-mark"), Some(QosLevel::Online));
    let wa = inv
        .workloads
        .iter()
        .find(|w| w.name == "batch/etl-a")
        .unwrap();
    assert!(!wa.managed);
    assert_eq!(
        wa.group.to_string(),
        format!("foreign /kubepods/besteffort/pod{a_uid}")
    );
    let pa = wa.pod.as_ref().unwrap();
    assert_eq!(pa.containers.len(), 2, "{:?}", pa.containers);
    assert!(
        !inv.workloads.iter().any(|w| w.name.contains("11111111")),
        "a pod the store does not know"
    );
    assert!(inv.kubelet.is_some());
    api.with(|s| s.hold_watches = false);

    // The watch: B added (Koordinator BE, liveness probes) and A modified to online, which a
    // running offline pod does not follow by default.
    let inv = scan_until(&mut src, "pod B from the watch", |i| {
        level_of(i, "search/indexer-0").is_some()
    });
    assert_eq!(level_of(&inv, "search/indexer-0"), Some(QosLevel::Offline));
    let wb = inv
        .workloads
        .iter()
        .find(|w| w.name == "search/indexer-0")
        .unwrap();
    assert!(wb.pod.as_ref().unwrap().liveness_probe);
    assert_eq!(wb.pod.as_ref().unwrap().cpu_limit_milli, Some(2000));
    assert_eq!(level_of(&inv, "batch/etl-a"), Some(QosLevel::Offline));

    // After the dropped connection and 410 Gone, the client lists again; B is gone from the list.
    api.with(|s| {
        s.pods = vec![a_online.clone(), c.clone()];
        s.resource_version = 400;
    });
    scan_until(&mut src, "B gone after the relist", |i| {
        level_of(i, "search/indexer-0").is_none()
    });
    let lists = api
        .requests()
        .iter()
        .filter(|r| {
            r.method == "GET"
                && r.target.starts_with("/api/v1/pods")
                && !r.target.contains("watch=true")
        })
        .count();
    assert!(lists >= 2, "a relist after 410 ({lists} lists)");
    assert!(api
        .requests()
        .iter()
        .all(|r| !r.target.starts_with("/api/v1/pods")
            || r.target.contains("fieldSelector=spec.nodeName%3Dnode-1")));
    let h = wait_for("the watch to recover", || {
        let h = src.health();
        (!h.degraded).then_some(h)
    });
    assert!(
        h.counters.get("watch_errors").copied().unwrap_or(0) >= 1,
        "{:?}",
        h.counters
    );
    // A DELETED event removes a pod without a relist.
    api.with(|s| {
        s.watches
            .push_back(WatchReply::Events(vec![("DELETED".into(), c.clone())]));
        s.pods = vec![a_online.clone()];
    });
    scan_until(&mut src, "C deleted", |i| {
        level_of(i, "batch/bad-mark").is_none()
    });

    // The invalid marking got an Event on its pod.
    wait_for("the invalid-marking event", || {
        api.requests()
            .iter()
            .find(|r| {
                r.method == "POST"
                    && r.target.contains("/events")
                    && r.body.contains("TidalInvalidQosLevel")
            })
            .cloned()
    });
    assert_eq!(src.health().counters.get("invalid_markings"), Some(&1));

    // Eviction: the first is refused by a PodDisruptionBudget (429), the next goes through.
    let pod = PodRef {
        namespace: "batch".into(),
        name: "etl-a".into(),
        uid: a_uid.into(),
    };
    src.evict(&pod, "node memory low", false).unwrap();
    wait_for("the refusal", || {
        src.health().counters.get("evictions_refused").copied()
    });
    // Set aside for a while: the policy tries the next candidate first.
    assert!(src.shared().refused_recently(a_uid));
    assert!(!src.shared().refused_recently("another-uid"));
    src.evict(&pod, "node memory low", false).unwrap();
    wait_for("the eviction", || {
        src.health().counters.get("evictions").copied()
    });
    let ev: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.target.contains("/eviction"))
        .collect();
    assert_eq!(ev.len(), 2);
    assert!(ev[0]
        .target
        .starts_with("/api/v1/namespaces/batch/pods/etl-a/eviction"));
    let body: Value = serde_json::from_str(&ev[0].body).unwrap();
    assert_eq!(body["kind"], "Eviction");
    assert_eq!(body["deleteOptions"]["preconditions"]["uid"], a_uid);
    wait_for("the eviction events", || {
        let r = api.requests();
        (r.iter().any(|r| r.body.contains("TidalEvictionBlocked"))
            && r.iter().any(|r| r.body.contains("TidalEvicted")))
        .then_some(())
    });
    // Dry run only logs.
    let before = api.requests().len();
    src.evict(&pod, "x", true).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(api.requests()[before..]
        .iter()
        .all(|r| !r.target.contains("/eviction")));

    // Batch resources from a snapshot: capacity 8 CPUs / 16302244Ki, allocatable 7.5 / 15205652Ki.
    wait_for("the node", || src.shared().node());
    let w = |level: QosLevel, cpu: f64, mem: u64, uid: &str| WorkloadSnapshot {
        group: Target::Foreign(
            tidal_model::ForeignGroup::new(&format!("kubepods/pod{uid}")).unwrap(),
        ),
        level,
        name: uid.into(),
        managed: false,
        procs: Some(1),
        cpu_usage_cpus: Some(cpu),
        memory_bytes: Some(mem),
        pressure: Default::default(),
        nr_throttled: None,
        throttled_us: None,
        pod: wb.pod.clone(),
        cpuset: None,
        memory_request: None,
        open_files: None,
        oom_kills: None,
    };
    let mut snap = Snapshot {
        now_ms: 1_000,
        cpus: CpuSet::first_n(8),
        node_busy_cpus: Some(3.0),
        mem_total_bytes: Some(16302244 * 1024),
        mem_available_bytes: Some(10 << 30),
        workloads: vec![
            w(QosLevel::Online, 2.0, 2 << 30, "on"),
            w(QosLevel::Offline, 0.5, 1 << 30, "off"),
        ],
        ..Snapshot::default()
    };
    src.observe(&snap, false);
    let patch = wait_for("the node-status patch", || {
        api.requests()
            .into_iter()
            .find(|r| r.method == "PATCH" && r.target.starts_with("/api/v1/nodes/node-1/status"))
    });
    assert!(
        patch.target.contains("fieldManager=tidal"),
        "{}",
        patch.target
    );
    assert!(
        !patch.target.contains("force=true"),
        "never forced: {}",
        patch.target
    );
    let body: Value = serde_json::from_str(&patch.body).unwrap();
    // 8 × 0.9 − max(system 0.5, reserved 0.5) − online peak 2 = 4.7 CPUs.
    assert_eq!(
        body["status"]["capacity"]["kubernetes.io/batch-cpu"],
        "4700"
    );
    assert_eq!(
        body["status"]["allocatable"]["kubernetes.io/batch-cpu"],
        "4700"
    );
    assert!(body["status"]["capacity"]["kubernetes.io/batch-memory"].is_string());
    let shown = src.health();
    assert_eq!(shown.gauges.get("batch_cpu_milli"), Some(&4700.0));
    assert!(shown.report["batch"]["formula"]
        .as_str()
        .unwrap()
        .contains("online peak"));

    // Another manager owns the fields: the conflict is counted and respected (no force).
    api.with(|s| s.patch_code = 409);
    snap.now_ms = 2_000;
    snap.workloads[0].cpu_usage_cpus = Some(4.0);
    src.observe(&snap, false);
    wait_for("the conflict", || {
        src.health().counters.get("batch_patch_conflicts").copied()
    });
    // A missing reading publishes nothing (never 0).
    let patches = api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.target.contains("/nodes/"))
        .count();
    snap.now_ms = 3_000;
    snap.workloads[0].cpu_usage_cpus = None;
    src.observe(&snap, false);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        api.requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.target.contains("/nodes/"))
            .count(),
        patches
    );
}
