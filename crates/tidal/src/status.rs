//! `tidal status`: reads the agent's `/state` (typed) and prints a table per workload.

use crate::agent::view::StateView;
use crate::cli::{Global, StatusArgs};
use crate::exit::{fail, failed};
use tidal_model::Pressure;

/// Largest `/state` body read (a state of thousands of workloads is a few MiB).
const MAX_STATE: u64 = 64 << 20;

/// What a request to the agent may take in all: an address that accepts and never answers (or an
/// agent that hangs) is an error, not a command that never returns.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn fetch(addr: &str, timeout: std::time::Duration) -> Result<String, String> {
    let url = format!("http://{addr}/state");
    let mut resp = ureq::get(&url)
        .config()
        .timeout_global(Some(timeout))
        .build()
        .call()
        .map_err(|e| format!("cannot reach the agent at {url}: {e} (is `tidal agent` running?)"))?;
    resp.body_mut()
        .with_config()
        .limit(MAX_STATE)
        .read_to_string()
        .map_err(|e| format!("reading {url}: {e}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |x| format!("{:.0}%", x * 100.0))
}

fn psi(p: &tidal_model::WorkloadPressure) -> String {
    let f = |x: Option<Pressure>| x.map_or("-".to_string(), |p| format!("{:.1}", p.some_avg10));
    format!("{}/{}/{}", f(p.cpu), f(p.memory), f(p.io))
}

fn mib(v: Option<u64>) -> String {
    v.map_or("-".to_string(), |b| format!("{}M", b >> 20))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".to_string(), |x| format!("{x:.digits$}"))
}

pub fn render(state: &StateView) -> String {
    let mut out = String::new();
    if let Some(n) = &state.node {
        out.push_str(&format!(
            "node: {} CPUs, busy {}, offline uses {}, online needs {}, offline CPUs [{}], online cpu pressure {}, interference step {}\n",
            n.cpus,
            opt(n.busy_cpus, 2),
            opt(n.offline_usage_cpus, 2),
            n.online_need_cpus,
            n.offline_cpus.as_ref().map_or("all".to_string(), |c| c.to_string()),
            n.online_cpu_pressure.map_or("n/a".into(), |p| format!("{p:.1}%")),
            n.interference_step,
        ));
    }
    if !state.missing_readings.is_empty() {
        let m: Vec<String> = state
            .missing_readings
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        out.push_str(&format!("missing readings: {}\n", m.join(", ")));
    }
    if let Some(c) = state.policy.ceiling {
        out.push_str(&format!(
            "offline memory ceiling: {} MiB{}\n",
            c >> 20,
            state
                .node
                .as_ref()
                .and_then(|n| n.mem_available_bytes)
                .map_or(String::new(), |a| format!(
                    " (MemAvailable {} MiB)",
                    a >> 20
                ))
        ));
    }
    for (name, n) in &state.policy.files_over {
        out.push_str(&format!("over its open-files ceiling: {name} ({n} open)\n"));
    }
    let o = &state.config.memory.oom_score_adj;
    out.push_str(&format!(
        "oom_score_adj: {} (set on {} workloads)\n",
        tidal_model::QosLevel::ALL
            .iter()
            .map(|l| format!("{l} {}", o.of(*l)))
            .collect::<Vec<_>>()
            .join(", "),
        state.policy.oom_set.len()
    ));
    if !state.policy.mem_protect.is_empty() {
        let v: Vec<String> = state
            .policy
            .mem_protect
            .iter()
            .map(|(t, (min, low))| {
                let t = t.to_string();
                format!(
                    "{} min {} MiB low {} MiB",
                    if t.is_empty() { "root" } else { &t },
                    min >> 20,
                    low >> 20
                )
            })
            .collect();
        out.push_str(&format!("memory protection: {}\n", v.join(", ")));
    }
    if let Some(g) = &state.protection_gap {
        out.push_str(&format!(
            "memory protection stops at {g}: it carries no memory.min/low, so online protection does not hold beyond it (on systemd: MemoryLow= on that unit)\n"
        ));
    }
    if !state.unprotected_tiers.is_empty() {
        out.push_str(&format!(
            "memory protection stops at the pod: the kubelet's tier(s) {} carry no memory.min/low (enable the kubelet's MemoryQoS feature gate)\n",
            state.unprotected_tiers.join(", ")
        ));
    }
    let by_level = |m: &std::collections::BTreeMap<tidal_model::QosLevel, u64>| {
        let v: Vec<String> = m
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(l, n)| format!("{l} {n}"))
            .collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let t = &state.tally;
    out.push_str(&format!(
        "since start: OOM kills {}; killed by tidal {}{}\n",
        t.oom_kills
            .as_ref()
            .map_or("n/a (no oom_kill count readable)".to_string(), by_level),
        by_level(&t.evictions),
        if state.source == "local" {
            String::new()
        } else {
            format!(
                "; pod evictions requested {}",
                by_level(&t.eviction_requests)
            )
        }
    ));
    if let Some(io) = &state.io_weights {
        out.push_str(&format!(
            "io weights: {} ({})\n",
            if io.in_force {
                "in force"
            } else {
                "not in force"
            },
            io.detail
        ));
    }
    // The groups written hold the configured limits only when some are configured (else "none").
    let io = &state.config.io;
    if io.offline_max.is_set() || io.offline_low_max.is_set() {
        let groups = state.policy.io_levels.len()
            + state.policy.io_limited.len()
            + state.policy.io_limited_foreign.len();
        out.push_str(&format!(
            "io limits (io.offline_max / offline_low_max): set on {groups} offline group(s)\n"
        ));
    }
    let after = state.config.stall_limit();
    match &state.stall_guard {
        _ if after.0 == 0 => out.push_str("stall guard: off (interference.stall_after 0)\n"),
        Some(how) => out.push_str(&format!(
            "stall guard: freezes offline if the agent's loop stops for {after}; {how}\n"
        )),
        None => {}
    }
    match &state.runq {
        Some(why) => out.push_str(&format!("run-queue latency: not measured ({why})\n")),
        None if !state.runq_p99_us.is_empty() => {
            let v: Vec<String> = state
                .runq_p99_us
                .iter()
                .map(|(w, us)| format!("{w} {us:.0}us"))
                .collect();
            out.push_str(&format!("run-queue p99 (eBPF): {}\n", v.join(", ")));
        }
        None => {}
    }
    for r in &state.slo {
        let ms = |s: f64| format!("{:.2}ms", s * 1e3);
        out.push_str(&format!(
            "objective {} {} ≤ {}: {}\n",
            r.workload,
            r.what,
            ms(r.target_s),
            match (r.observed_s, r.slack, r.stale) {
                (Some(o), Some(s), false) => format!("observed {}, slack {:.0}%", ms(o), s * 100.0),
                _ => format!(
                    "stale ({}): pressure rules only",
                    r.error.as_deref().unwrap_or("no fresh reading")
                ),
            }
        ));
    }
    if state.source != "local" {
        let h = &state.source_health;
        out.push_str(&format!(
            "source {}: {}\n",
            state.source,
            match (&h.detail, h.degraded) {
                (Some(d), _) => d.clone(),
                (None, true) => "degraded".into(),
                (None, false) => "ok".into(),
            }
        ));
        let r = &h.report;
        if let Some(k) = r.get("kubelet").filter(|k| !k.is_null()) {
            let policy = k["cpu_manager"].as_str().unwrap_or("unknown");
            out.push_str(&format!(
                "kubelet: cgroup driver {}, CPU manager {policy}{}\n",
                r["driver"].as_str().unwrap_or("unknown"),
                if policy == "static" {
                    " (pods are confined by a CPU-time cap, not cpusets; exclusive CPUs never run offline work)"
                } else {
                    ""
                }
            ));
        }
        if let Some(f) = r["batch"]["formula"].as_str().filter(|f| !f.is_empty()) {
            out.push_str(&format!("batch resources: {f}\n"));
        }
        let published = |k: &str| h.gauges.get(k).map(|v| format!("{v:.0}"));
        if let (Some(c), Some(m)) = (
            published("batch_cpu_milli"),
            published("batch_memory_bytes"),
        ) {
            out.push_str(&format!(
                "published: kubernetes.io/batch-cpu={c} kubernetes.io/batch-memory={m}\n"
            ));
        }
    }
    let rows: Vec<[String; 9]> = state
        .workloads
        .iter()
        .map(|w| {
            let (act, why) = match &w.last_action {
                None => ("-".to_string(), String::new()),
                Some(la) => (
                    la.text.split(" (").next().unwrap_or("").to_string(),
                    la.action.reason.clone(),
                ),
            };
            let cpus = if w.frozen {
                "frozen".to_string()
            } else {
                w.allowed_cpus
                    .as_ref()
                    .map_or("all".to_string(), |c| c.to_string())
            };
            [
                if w.snap.pod.is_some() {
                    format!("pod {}", w.snap.name)
                } else {
                    w.snap.group.to_string()
                },
                w.snap.level.to_string(),
                pct(w.snap.cpu_usage_cpus),
                mib(w.snap.memory_bytes),
                psi(&w.snap.pressure),
                w.snap.open_files.map_or("-".into(), |n| n.to_string()),
                cpus,
                act,
                why,
            ]
        })
        .collect();
    let head = [
        "WORKLOAD",
        "LEVEL",
        "CPU",
        "MEM",
        "PSI cpu/mem/io",
        "FILES",
        "CPUS",
        "LAST ACTION",
        "WHY",
    ];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(8) {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |r: [&str; 9]| {
        let mut s = String::new();
        for (i, c) in r.iter().enumerate() {
            if i < 8 {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            } else {
                s.push_str(c);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    out.push_str(&line(head));
    for r in &rows {
        out.push_str(&line([
            &r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6], &r[7], &r[8],
        ]));
    }
    if rows.is_empty() {
        out.push_str("(no workloads under the tidal root)\n");
    }
    out
}

fn healthz(addr: &str) -> i32 {
    let url = format!("http://{addr}/healthz");
    match ureq::get(&url)
        .config()
        .http_status_as_error(false)
        .timeout_global(Some(TIMEOUT))
        .build()
        .call()
    {
        Ok(mut r) => {
            let ok = r.status().is_success();
            let body = r
                .body_mut()
                .with_config()
                .limit(1 << 16)
                .read_to_string()
                .unwrap_or_default();
            print!("{body}");
            if ok {
                0
            } else {
                crate::exit::FAILURE
            }
        }
        Err(e) => failed(format!(
            "cannot reach the agent at {url}: {e} (is `tidal agent` running?)"
        )),
    }
}

pub fn main(_g: &Global, a: &StatusArgs) -> i32 {
    if a.healthz {
        return healthz(&a.listen);
    }
    let body = match fetch(&a.listen, TIMEOUT) {
        Ok(b) => b,
        Err(e) => return failed(e),
    };
    if a.json {
        println!("{body}");
        return 0;
    }
    match serde_json::from_str::<StateView>(&body) {
        Ok(v) => {
            print!("{}", render(&v));
            0
        }
        Err(e) => fail(format!(
            "the agent's /state is not what this tidal reads: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_address_that_never_answers_is_an_error_not_a_wait_without_end() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        // Accepted by the kernel's backlog, never answered.
        let got = super::fetch(&addr, std::time::Duration::from_millis(200));
        let e = got.unwrap_err();
        assert!(e.contains(&addr) && e.contains("timeout"), "{e}");
        drop(silent);
    }
}
