//! A latency objective on real cgroups: an online workload whose objective is missed (a metrics
//! endpoint in this test serving a histogram of slow requests) gets offline tightened, with the
//! objective quoted in the reason; when it recovers, offline is released again. Pressure rules are
//! switched off here, so only the objective can move the ladder.

mod common;

use common::{
    cgroups_usable, free_addr, get, last_plan_reasons, start_agent, state, wait_for, TestRoot,
};
use serde_json::Value;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// A metrics endpoint: every scrape adds 200 requests, all fast (1 ms) or all slow (40 ms).
struct Metrics {
    addr: String,
    slow: Arc<AtomicBool>,
    /// No requests between scrapes: every window is empty.
    idle: Arc<AtomicBool>,
    scrapes: Arc<AtomicU64>,
    /// When each scrape that served slow requests was answered.
    slow_at: Arc<Mutex<Vec<SystemTime>>>,
}

fn metrics() -> Metrics {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let slow = Arc::new(AtomicBool::new(false));
    let idle = Arc::new(AtomicBool::new(false));
    let quiet = Arc::clone(&idle);
    let scrapes = Arc::new(AtomicU64::new(0));
    let slow_at = Arc::new(Mutex::new(Vec::new()));
    let (s, n, at) = (
        Arc::clone(&slow),
        Arc::clone(&scrapes),
        Arc::clone(&slow_at),
    );
    std::thread::spawn(move || {
        let (mut fast, mut slow_n) = (0u64, 0u64);
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            if quiet.load(Ordering::Relaxed) {
            } else if s.load(Ordering::Relaxed) {
                slow_n += 200;
                at.lock().unwrap().push(SystemTime::now());
            } else {
                fast += 200;
            }
            n.fetch_add(1, Ordering::Relaxed);
            let m = "app_request_duration_seconds";
            let body = format!(
                "# TYPE {m} histogram\n{m}_bucket{{handler=\"/api\",le=\"0.002\"}} {fast}\n{m}_bucket{{handler=\"/api\",le=\"0.01\"}} {fast}\n{m}_bucket{{handler=\"/api\",le=\"0.05\"}} {t}\n{m}_bucket{{handler=\"/api\",le=\"+Inf\"}} {t}\n{m}_sum{{handler=\"/api\"}} 1\n{m}_count{{handler=\"/api\"}} {t}\n",
                t = fast + slow_n
            );
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Metrics {
        addr,
        slow,
        idle,
        scrapes,
        slow_at,
    }
}

/// Seconds into the UTC day of an agent log line's timestamp (`2026-11-27T19:40:01.123456Z ...`).
fn log_time_of_day(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?.split_once('T')?.1;
    let t = t.trim_end_matches('Z');
    let mut it = t.split(':');
    let (h, m, s) = (it.next()?, it.next()?, it.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

fn time_of_day(t: SystemTime) -> f64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() % 86_400) as f64 + f64::from(d.subsec_micros()) / 1e6
}

fn steps(v: &Value) -> usize {
    v["policy"]["interference"]["steps"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn a_missed_objective_tightens_offline_and_its_recovery_releases_it() {
    if !cgroups_usable("a_missed_objective_tightens_offline_and_its_recovery_releases_it") {
        return;
    }
    let mut t = TestRoot::new("slo");
    let m = metrics();
    t.spawn(&[
        "run",
        "--qos",
        "online-critical",
        "--name",
        "web",
        "--",
        "sleep",
        "600",
    ]);
    t.spin("offline", "etl");
    let addr = free_addr();
    let cfg = format!(
        "tick: 100ms\nstats_interval: 200ms\ncpu:\n  confine_min_cpus: 1\n  grow_after: 500ms\n\
         interference:\n  psi_threshold: 100\n  escalate_every: 300ms\nbpf:\n  runq_p99_threshold: 10s\n\
         slo:\n  interval: 300ms\n  stale_after: 2s\n  min_requests: 10\n  objectives:\n\
         \x20   - workload: online-critical/web\n      url: http://{}/metrics\n      metric: app_request_duration_seconds\n\
         \x20     labels: {{handler: /api}}\n      quantile: 0.99\n      target: 5ms\n",
        m.addr
    );
    let mut agent = start_agent(&t, &cfg, &addr);
    // Met with ample slack: nothing tightened, and /state shows the objective.
    wait_for("a first reading of the objective", 10, || {
        state(&addr)["slo"][0]["slack"]
            .as_f64()
            .is_some_and(|s| s > 0.3)
    });
    assert_eq!(steps(&state(&addr)), 0);
    // Slow requests: p99 near 50 ms against 5 ms.
    m.slow.store(true, Ordering::Relaxed);
    wait_for("offline tightened for the missed objective", 10, || {
        steps(&state(&addr)) >= 1
    });
    // The step's first write quotes the objective (a duty cycle's too: it starts frozen).
    let quoted = || {
        last_plan_reasons(&state(&addr))
            .iter()
            .any(|r| r.contains("objective online-critical/web") && r.contains("slack"))
    };
    wait_for("a write quoting the objective", 5, quoted);
    // Within two intervals, counted in the agent's own scrapes: the first write for the missed
    // objective comes before the second scrape that served slow requests has been followed by
    // a third, whatever the host's speed (the debug agent under an emulated CPU included).
    let log = t.agent_log();
    let first_line = log
        .lines()
        .find(|l| l.contains("objective online-critical/web") && l.contains("slack -"));
    let first_write = first_line.and_then(log_time_of_day);
    wait_for("three slow scrapes", 10, || {
        m.slow_at.lock().unwrap().len() >= 3
    });
    let slow_at: Vec<f64> = m
        .slow_at
        .lock()
        .unwrap()
        .iter()
        .map(|t| time_of_day(*t))
        .collect();
    // Seconds from the second slow scrape to the write, around midnight too.
    let after_second =
        first_write.map(|w| (w - slow_at[1] + 86_400.0 + 43_200.0) % 86_400.0 - 43_200.0);
    assert!(
        after_second.is_some_and(|d| d < slow_at[2] - slow_at[1]),
        "first write {first_write:?}, slow scrapes at {slow_at:?} (seconds of the day)\nagent log:\n{log}"
    );
    let (_, metrics_text) = get(&addr, "/metrics").unwrap();
    assert!(metrics_text.contains("tidal_slo_slack"), "{metrics_text}");
    // It keeps tightening while missed, to offline frozen (at once: the miss is ten times the
    // target, deeper than freeze_below).
    wait_for("offline frozen", 10, || {
        state(&addr)["policy"]["interference"]["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == "freeze-offline"))
    });
    // Recovered: released step by step, down to nothing.
    m.slow.store(false, Ordering::Relaxed);
    wait_for("offline released after recovery", 20, || {
        steps(&state(&addr)) == 0
    });
    assert!(m.scrapes.load(Ordering::Relaxed) > 5);
    // SAFETY: kill(2) on the agent this test started.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let _ = agent.wait();
    t.kill_children();
    t.restore_ok();
}

#[test]
fn an_unreachable_objective_is_stale_and_changes_nothing() {
    if !cgroups_usable("an_unreachable_objective_is_stale_and_changes_nothing") {
        return;
    }
    let mut t = TestRoot::new("slo-stale");
    t.spawn(&[
        "run", "--qos", "offline", "--name", "etl", "--", "sleep", "600",
    ]);
    // A port nobody listens on.
    let dead = free_addr();
    let addr = free_addr();
    // And a service with no requests: every window is empty.
    let idle = metrics();
    idle.idle.store(true, Ordering::Relaxed);
    let cfg = format!(
        "tick: 100ms\ninterference:\n  psi_threshold: 100\nbpf:\n  runq_p99_threshold: 10s\nslo:\n  interval: 300ms\n  timeout: 300ms\n  objectives:\n\
         \x20   - workload: w\n      url: http://{dead}/metrics\n      metric: m\n      quantile: 0.99\n      target: 1ms\n\
         \x20   - workload: quiet\n      url: http://{}/metrics\n      metric: app_request_duration_seconds\n      quantile: 0.99\n      target: 1ms\n",
        idle.addr
    );
    let mut agent = start_agent(&t, &cfg, &addr);
    let of = |v: &Value, w: &str| {
        v["slo"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["workload"] == w).cloned())
            .unwrap_or(Value::Null)
    };
    wait_for("the objectives marked stale with their errors", 10, || {
        let v = state(&addr);
        let (w, q) = (of(&v, "w"), of(&v, "quiet"));
        w["stale"] == Value::Bool(true)
            && w["scrape_errors"].as_u64().unwrap_or(0) >= 2
            && q["stale"] == Value::Bool(true)
            && q["error"]
                .as_str()
                .is_some_and(|e| e.contains("0 requests"))
    });
    assert_eq!(steps(&state(&addr)), 0);
    // Shown by `tidal status` and as a metric.
    let out = t.tidal(&["status", "--listen", &addr]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains("objective w p99 of m")
            && text.contains("stale (")
            && text.contains("pressure rules only"),
        "{text}"
    );
    let (_, metrics_text) = get(&addr, "/metrics").unwrap();
    assert!(
        metrics_text
            .lines()
            .any(|l| l.starts_with("tidal_slo_stale{")
                && l.contains("workload=\"w\"")
                && l.ends_with(" 1.0")),
        "{metrics_text}"
    );
    let log = std::fs::read_to_string(t.state.path().join("agent.log")).unwrap_or_default();
    // Counted for the dead port only: under emulation the idle service's scrape can itself
    // time out once, which is logged (once) as well.
    assert_eq!(
        log.matches("latency objective of w: cannot read http://")
            .count(),
        1,
        "logged once: {log}"
    );
    assert_eq!(
        log.matches("latency objective of quiet: 0 requests in the window")
            .count(),
        1,
        "logged once: {log}"
    );
    // SAFETY: kill(2) on the agent this test started.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let _ = agent.wait();
    t.kill_children();
    t.restore_ok();
}
