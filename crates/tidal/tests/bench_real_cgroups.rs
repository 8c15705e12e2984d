//! A short real run of `tidal bench` on real cgroups: every scenario and the step produce samples,
//! the report files are written, and nothing is left behind.

mod common;

use common::{can_lower, cgroups_usable, tidal_bin};
use tidal_cgroupfs::{Layout, RootSpec};

/// `tidal bench` with one round of 1 s (0.3 s warm-up), `extra` options, and its JSON in `json`.
fn short_bench(extra: &[&str], json: &std::path::Path) -> std::process::Command {
    bench_of(extra, "1", json)
}

/// `tidal bench` with one round of `secs` (0.3 s warm-up), `extra` options, and its JSON in `json`.
fn bench_of(extra: &[&str], secs: &str, json: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(tidal_bin());
    c.arg("bench")
        .args(extra)
        .args([
            "--rounds",
            "1",
            "--warmup",
            "0.3",
            "--duration",
            secs,
            "--json",
        ])
        .arg(json);
    c
}

/// What a bench run printed and wrote.
struct Ran {
    pid: u32,
    stdout: String,
    stderr: String,
    report: serde_json::Value,
}

/// Runs `c` (a bench writing its JSON to `json`) to its end; it must succeed.
fn run_bench(mut c: std::process::Command, json: &std::path::Path) -> Ran {
    let child = c
        .env("TIDAL_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let report = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    Ran {
        pid,
        stdout,
        stderr,
        report,
    }
}

/// Nothing of the bench run by `pid` is left in any hierarchy.
fn assert_left_nothing(pid: u32, stderr: &str) {
    let layout = Layout::discover(&RootSpec::Named(format!("tidal-bench-{pid}-colo"))).unwrap();
    for root in &layout.roots {
        assert!(
            !root.root_dir.exists(),
            "left behind: {}\nbench stderr:\n{stderr}",
            common::left_in(&root.root_dir)
        );
    }
}

/// Requests a run of `short_bench` answers at least: half of what the calibrated rate sends in a
/// 1-s window (an emulated CPU calibrates a low rate), and never under 20.
fn min_count(report: &serde_json::Value) -> u64 {
    (0.5 * report["rate_per_s"].as_f64().unwrap_or(0.0)).max(20.0) as u64
}

#[test]
fn short_bench_run_measures_every_scenario_and_cleans_up() {
    if !cgroups_usable("short_bench_run_measures_every_scenario_and_cleans_up") {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let json = out_dir.path().join("bench.json");
    let svg = out_dir.path().join("bench.svg");
    let mut c = short_bench(&["--step-runs", "2"], &json);
    c.arg("--svg").arg(&svg);
    let Ran {
        pid,
        stdout,
        stderr,
        report: r,
    } = run_bench(c, &json);
    let runs = r["runs"].as_array().unwrap();
    for s in [
        "alone",
        "no-isolation",
        "kubelet",
        "quota-suppress",
        "tidal-static",
        "tidal",
    ] {
        let run = runs
            .iter()
            .find(|x| x["scenario"] == s)
            .unwrap_or_else(|| panic!("no run of {s}"));
        assert!(
            run["latency"]["count"].as_u64().unwrap() >= min_count(&r),
            "{s}: {run}"
        );
        assert!(
            stdout.contains(&format!("| {s} |")),
            "{s} missing from the table:\n{stdout}"
        );
        match s {
            "alone" => {}
            // The agent may freeze offline for the whole short window if online stalls (it does
            // under an emulated CPU): offline's CPU time is still measured, not missing.
            "tidal" => assert!(
                run["offline_cpus"].is_f64(),
                "{s}: offline not measured: {run}"
            ),
            // CPU-seconds from the cgroup: work units are too coarse for a 1 s window on a slow
            // (emulated) CPU.
            _ => assert!(
                run["offline_cpus"].as_f64().unwrap() > 0.0
                    && run["offline_units_per_s"].as_f64().is_some(),
                "{s}: offline did no work: {run}"
            ),
        }
    }
    // Two step runs of each step scenario, interleaved.
    let steps = r["step"].as_array().unwrap();
    let mut seen: Vec<(String, u64)> = steps
        .iter()
        .map(|st| (st["scenario"].to_string(), st["run"].as_u64().unwrap()))
        .collect();
    seen.sort();
    let mut want: Vec<(String, u64)> = ["kubelet", "quota-suppress", "tidal"]
        .iter()
        .flat_map(|s| [0, 1].map(|run| (format!("\"{s}\""), run)))
        .collect();
    want.sort();
    assert_eq!(seen, want, "{steps:?}");
    assert!(
        stdout.contains("(2 interleaved runs each; median [95% interval] over runs)"),
        "{stdout}"
    );
    for st in steps {
        assert!(st["before"]["count"].as_u64().unwrap() > 0, "{st}");
        assert!(
            st["after_first_second"]["count"].as_u64().unwrap() > 0,
            "{st}"
        );
    }
    // Every Linux since 2.6.11 counts steal: each run says what the host took, 0 included.
    assert!(
        runs.iter()
            .chain(steps)
            .all(|x| x["host_steal_ms"].is_f64()),
        "{runs:?}\n{steps:?}"
    );
    assert!(stdout.contains("Host steal"), "{stdout}");
    let goals = r["goals"].as_array().unwrap();
    assert!(!goals.is_empty() && goals.iter().all(|g| g["verdict"].is_string()));
    assert!(stdout.contains("**Goals**"), "{stdout}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));

    assert_left_nothing(pid, &stderr);
}

#[test]
fn a_page_cache_run_counts_the_server_s_major_faults_and_the_streamer_s_reads() {
    if !cgroups_usable("a_page_cache_run_counts_the_server_s_major_faults_and_the_streamer_s_reads")
    {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let json = out_dir.path().join("bench.json");
    let out = short_bench(
        &[
            "--offline",
            "pagecache",
            "--working-set",
            "16M",
            "--scenarios",
            "alone,no-isolation,tidal",
            "--no-step",
        ],
        &json,
    )
    .env("TIDAL_LOG", "warn")
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(
        r["offline"].as_str().unwrap().starts_with("pagecache"),
        "{}",
        r["offline"]
    );
    for run in r["runs"].as_array().unwrap() {
        let s = run["scenario"].as_str().unwrap();
        assert!(
            run["latency"]["count"].as_u64().unwrap() >= min_count(&r),
            "{s}: {run}"
        );
        // The server's major faults were read (0 is a count), in every scenario.
        assert!(
            run["memory"]["online_major_faults"].is_u64(),
            "{s}: major faults not read: {run}"
        );
        // The streamer read through the page cache beside the server (a unit is one MiB).
        if s == "no-isolation" {
            assert!(
                run["offline_units_per_s"].as_f64().unwrap() > 0.0
                    && run["offline_cpus"].as_f64().unwrap() > 0.0,
                "{s}: the streamer read nothing: {run}"
            );
        }
    }
    // The bench kept itself (and the server it starts) out of the OOM killer's way where it may
    // lower its value; elsewhere it kept what it inherited, and said so.
    let own: i64 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if can_lower() {
        assert_eq!(r["bench_oom_score_adj"], -999, "{stderr}");
    } else {
        assert_eq!(r["bench_oom_score_adj"], own);
        assert!(
            own <= -999 || stderr.contains("cannot protect the bench from the OOM killer"),
            "{stderr}"
        );
    }
    // The memory table and its goals, for a run with a working set.
    assert!(
        stdout.contains("**Memory**") && stdout.contains("tidal online major faults"),
        "{stdout}"
    );
}

#[test]
fn a_kubelet_tree_run_gives_the_agent_in_its_pod_an_objective_it_reads() {
    if !cgroups_usable("a_kubelet_tree_run_gives_the_agent_in_its_pod_an_objective_it_reads") {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let json = out_dir.path().join("bench.json");
    let logs = out_dir.path().join("logs");
    // Two seconds of load: the agent reads the objective before the load starts, and again a
    // scrape interval later, when the window holds the service's first requests.
    let mut c = bench_of(
        &[
            "--layout",
            "kubelet-tree",
            "--scenarios",
            "tidal",
            "--no-step",
        ],
        "2",
        &json,
    );
    c.arg("--agent-logs").arg(&logs);
    let Ran {
        pid,
        stderr,
        report: r,
        ..
    } = run_bench(c, &json);
    let run = r["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["scenario"] == "tidal")
        .unwrap_or_else(|| panic!("no tidal run: {r}"));
    assert!(
        run["latency"]["count"].as_u64().unwrap() >= min_count(&r),
        "{run}"
    );
    // The objective is the node's, on loopback, so the agent reads it: a pod's objective on a
    // loopback pod IP would be refused, and the run would go without one.
    assert!(r["slo_target_ms"].as_f64().is_some_and(|t| t > 0.0), "{r}");
    let log = std::fs::read_to_string(logs.join("r0-tidal-1.log")).unwrap();
    assert!(
        log.contains(
            "latency objective of bench/online: p99 of tidal_bench_request_duration_seconds"
        ) && !log.contains("latency objective of bench/online: cannot read"),
        "agent log:\n{log}\nbench stderr:\n{stderr}"
    );
    assert_left_nothing(pid, &stderr);
}
