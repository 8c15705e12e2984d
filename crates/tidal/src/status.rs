//! `tidal status`: reads the agent's `/state` and prints a table per workload.

use crate::cli::{Global, StatusArgs};
use crate::exit::fail;
use serde_json::Value;

fn fetch(addr: &str) -> Result<String, String> {
    let url = format!("http://{addr}/state");
    let mut resp = ureq::get(&url)
        .call()
        .map_err(|e| format!("cannot reach the agent at {url}: {e} (is `tidal agent` running?)"))?;
    resp.body_mut()
        .read_to_string()
        .map_err(|e| format!("reading {url}: {e}"))
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("-".to_string(), |x| format!("{:.0}%", x * 100.0))
}

fn psi(w: &Value) -> String {
    let p = |r: &str| {
        w["pressure"][r]["some_avg10"]
            .as_f64()
            .map_or("-".to_string(), |x| format!("{x:.1}"))
    };
    format!("{}/{}/{}", p("cpu"), p("memory"), p("io"))
}

fn mib(v: &Value) -> String {
    v.as_u64()
        .map_or("-".to_string(), |b| format!("{}M", b >> 20))
}

pub fn render(state: &Value) -> String {
    let mut out = String::new();
    if let Some(n) = state.get("node").filter(|n| !n.is_null()) {
        out.push_str(&format!(
            "node: {} CPUs, busy {:.2}, offline uses {:.2}, online needs {}, offline CPUs [{}], online cpu pressure {}, interference step {}\n",
            n["cpus"].as_str().unwrap_or("?"),
            n["busy_cpus"].as_f64().unwrap_or(0.0),
            n["offline_usage_cpus"].as_f64().unwrap_or(0.0),
            n["online_need_cpus"],
            n["offline_cpus"].as_str().unwrap_or("all"),
            n["online_cpu_pressure"].as_f64().map_or("n/a".into(), |p| format!("{p:.1}%")),
            n["interference_step"],
        ));
    }
    let rows: Vec<[String; 8]> = state["workloads"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .map(|w| {
                    let la = &w["last_action"];
                    let (act, why) = if la.is_null() {
                        ("-".to_string(), String::new())
                    } else {
                        (
                            la["action"]
                                .as_str()
                                .unwrap_or("")
                                .split(" (")
                                .next()
                                .unwrap_or("")
                                .to_string(),
                            la["reason"].as_str().unwrap_or("").to_string(),
                        )
                    };
                    let cpus = if w["frozen"].as_bool() == Some(true) {
                        "frozen".to_string()
                    } else {
                        w["allowed_cpus"].as_str().unwrap_or("all").to_string()
                    };
                    [
                        w["group"].as_str().unwrap_or("?").to_string(),
                        w["level"].as_str().unwrap_or("?").to_string(),
                        pct(&w["cpu_usage_cpus"]),
                        mib(&w["memory_bytes"]),
                        psi(w),
                        cpus,
                        act,
                        why,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let head = [
        "WORKLOAD",
        "LEVEL",
        "CPU",
        "MEM",
        "PSI cpu/mem/io",
        "CPUS",
        "LAST ACTION",
        "WHY",
    ];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(7) {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |r: [&str; 8]| {
        let mut s = String::new();
        for (i, c) in r.iter().enumerate() {
            if i < 7 {
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
            &r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6], &r[7],
        ]));
    }
    if rows.is_empty() {
        out.push_str("(no workloads under the tidal root)\n");
    }
    out
}

pub fn main(_g: &Global, a: &StatusArgs) -> i32 {
    let body = match fetch(&a.listen) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    if a.json {
        println!("{body}");
        return 0;
    }
    match serde_json::from_str::<Value>(&body) {
        Ok(v) => {
            print!("{}", render(&v));
            0
        }
        Err(e) => fail(format!("the agent's /state is not JSON: {e}")),
    }
}
