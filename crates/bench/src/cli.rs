//! The benchmark's command line (`tidal bench …`, `tidal worker …`) and the bounds every number is
//! checked against before anything starts.

use clap::{Args, Subcommand};
use std::path::PathBuf;

/// The global flags of `tidal` as the benchmark takes them.
#[derive(Debug, Clone, Default)]
pub struct BenchGlobal {
    /// `--root`: the sandbox root itself (it must not exist yet).
    pub root: Option<String>,
    /// `--state-dir`: where the sandbox's journal goes (default: a fresh temp dir).
    pub state_dir: Option<PathBuf>,
    pub dry_run: bool,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// About a minute: 2 rounds of 3 s per scenario, then the step scenario.
    #[arg(long)]
    pub quick: bool,
    /// Interleaved rounds per scenario (default 10; 2 with --quick).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Measured seconds per run (default 5; 3 with --quick).
    #[arg(long, allow_negative_numbers = true)]
    pub duration: Option<f64>,
    /// Warm-up seconds per run, not measured (default 1.5; 1 with --quick).
    #[arg(long, allow_negative_numbers = true)]
    pub warmup: Option<f64>,
    /// Online requests per second (default: calibrated to ~30% of the machine's CPUs).
    #[arg(long, allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// CPU work per online request, in microseconds.
    #[arg(long, default_value_t = 100)]
    pub work_us: u64,
    /// Client connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Constant arrivals instead of Poisson.
    #[arg(long)]
    pub constant: bool,
    /// Built-in offline antagonist: cpu, stream (memory bandwidth), cache (LLC thrasher), mix,
    /// memory (anonymous memory growing past what is free, stopping at a safe margin), pagecache
    /// (streaming reads of a file larger than RAM).
    #[arg(long, default_value = "cpu")]
    pub offline: String,
    /// `--offline memory`: grow towards this many bytes (default: 110% of MemAvailable at start).
    #[arg(long, value_parser = parse_bytes, conflicts_with = "memory_share")]
    pub memory_bytes: Option<u64>,
    /// `--offline memory`: grow towards this share of RAM (MemTotal), in (0, 2]; 0.9 is 90%.
    #[arg(long, value_parser = parse_share)]
    pub memory_share: Option<f64>,
    /// The online service's file-backed working set, touched by every request (pages a page-cache
    /// antagonist can evict).
    #[arg(long, value_parser = parse_bytes)]
    pub working_set: Option<u64>,
    /// Antagonist threads (default: 2 per CPU).
    #[arg(long)]
    pub offline_threads: Option<usize>,
    /// Any offline command instead of the built-in antagonists, e.g. "stress-ng --cpu 4".
    #[arg(long)]
    pub offline_cmd: Option<String>,
    /// Comma-separated scenarios (alone is always included): alone, no-isolation, kubelet,
    /// quota-suppress, tidal-static, tidal.
    #[arg(long)]
    pub scenarios: Option<String>,
    /// Skip the 10% → 60% load-step scenario.
    #[arg(long)]
    pub no_step: bool,
    /// Load-step runs per scenario, interleaved (default 3; 1 with --quick): the first second
    /// after a step swings several-fold between runs of the same scenario.
    #[arg(long)]
    pub step_runs: Option<usize>,
    /// Where the scenarios put their groups: `local` (tidal's tree: offline parent idle) or
    /// `kubelet-tree` (the kubelet's tier/pod/container tree, with the kubelet's shares; `tidal` runs
    /// the agent in pod mode, in a pod as its DaemonSet gives it, against a stand-in apiserver on
    /// loopback, `tidal-static` is pod-level idle alone). kubelet-tree runs alone, kubelet,
    /// tidal-static and tidal.
    #[arg(long, value_enum, default_value = "local")]
    pub layout: BenchLayout,
    /// Agent config for the `tidal` scenario (default: the agent's defaults).
    #[arg(long)]
    pub agent_config: Option<PathBuf>,
    /// The `tidal` scenario gives the agent a latency objective on the server's own histogram
    /// (`/metrics`): p99 ≤ the alone p99 measured at the calibrated rate × this factor.
    #[arg(long, default_value_t = 1.25, allow_negative_numbers = true)]
    pub slo_factor: f64,
    /// Give the agent no latency objective (pressure rules only).
    #[arg(long)]
    pub no_slo: bool,
    /// Write the full report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a chart of online p99 against offline throughput.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Keep each agent's log (what it did and why, per scenario run) in this directory.
    #[arg(long)]
    pub agent_logs: Option<PathBuf>,
    /// A run whose measured window lost more than this much CPU time to the host (steal, in ms
    /// over all CPUs, from /proc/stat) is run again, once: the bench compares co-location, not
    /// the host's stalls. Default: 1% of the window's CPU time (100 ms for 5 s on 2 CPUs); 0:
    /// never.
    #[arg(long, allow_negative_numbers = true)]
    pub rerun_steal_ms: Option<f64>,
    /// Do not hold /dev/cpu_dma_latency at 0 during the run. By default the bench keeps CPUs out of
    /// deep idle states, so `alone` is not slowed by wake-ups from idle that co-located runs never pay.
    #[arg(long)]
    pub no_pm_qos: bool,
    /// After a run that gave back 1 GiB or more of memory, wait up to this many seconds for the
    /// online service alone to be back within 2× of its alone p99 before the next run (0: never
    /// wait). On a virtual machine, freeing that much can slow the guest for a minute.
    #[arg(long, default_value_t = 120.0, allow_negative_numbers = true)]
    pub settle_max: f64,
    /// Seed for arrivals and scenario order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchLayout {
    Local,
    KubeletTree,
}

/// A share of RAM: a number in (0, 2].
pub fn parse_share(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f > 0.0 && *f <= 2.0)
        .ok_or_else(|| format!("'{s}': a share of RAM between 0 (excluded) and 2, e.g. 0.9"))
}

/// `512M`, `2G`, `1048576`: bytes, at most 16 TiB.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let m: u64 = match &t[i..] {
                "K" | "k" | "KiB" => 1 << 10,
                "M" | "m" | "MiB" => 1 << 20,
                "G" | "g" | "GiB" => 1 << 30,
                "T" | "t" | "TiB" => 1 << 40,
                u => return Err(format!("'{s}': unknown unit '{u}' (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 512M, 2G)"))?;
    n.checked_mul(mult)
        .filter(|b| *b > 0 && *b <= 16 << 40)
        .ok_or_else(|| format!("'{s}': a size between 1 byte and 16T"))
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time from an online load step to offline being out of online's CPUs (agent running).
    Reaction(ReactionArgs),
    /// The agent's CPU and memory at a 100 ms tick with many workloads.
    AgentCost(AgentCostArgs),
    /// What the run-queue latency program costs: BPF run time per event (kernel BPF statistics) and
    /// the agent's extra CPU, under a context-switch-heavy load.
    BpfCost(BpfCostArgs),
}

#[derive(Args, Debug)]
pub struct BpfCostArgs {
    /// Context switches per second the ping-pong worker aims at.
    #[arg(long, default_value_t = 50_000.0)]
    pub rate: f64,
    /// Measured seconds per phase (agent with BPF, agent without).
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    pub seconds: f64,
    /// Rounds; each has one phase with BPF and one without, in alternating order.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Record 1 in N wakeups (a power of two up to 1024): the agent's `bpf.sample`.
    #[arg(long, default_value_t = 1)]
    pub sample: u32,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ReactionArgs {
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AgentCostArgs {
    /// Comma-separated workload counts.
    #[arg(long, default_value = "50,100,200")]
    pub workloads: String,
    /// Measured seconds per count.
    #[arg(long, default_value_t = 20.0, allow_negative_numbers = true)]
    pub seconds: f64,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerKind {
    Server,
    Loadgen,
    Cpu,
    Stream,
    Cache,
    Memory,
    Pagecache,
    /// Sleeps 1 ms in a loop: a task that wakes often and runs briefly (run-queue latency probe).
    Prober,
    /// Two threads bounce a byte over pipes at `--rate` context switches per second (pin it to one
    /// CPU so that each hop is one switch).
    Pingpong,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    pub kind: WorkerKind,
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    #[arg(long, default_value_t = 100)]
    pub work_us: u64,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// File the antagonist keeps its cumulative work units in.
    #[arg(long)]
    pub report: Option<String>,
    /// File the server writes its port to once listening (the load generator: its start time).
    #[arg(long)]
    pub ready_file: Option<String>,
    /// Load generator: client connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Load generator: rate segments `START_S:RATE,...`.
    #[arg(long, default_value = "0:1000")]
    pub segments: String,
    /// Load generator: seconds to send for.
    #[arg(long, default_value_t = 1.0)]
    pub duration: f64,
    /// Load generator: constant arrivals instead of Poisson.
    #[arg(long)]
    pub constant: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Load generator: measurement windows `FROM_NS-TO_NS,...` of intended send time.
    #[arg(long, default_value = "0-18446744073709551615")]
    pub windows: String,
    /// Load generator: where to write the result (JSON).
    #[arg(long)]
    pub out: Option<String>,
    /// Server: a file-backed working set of this many bytes, touched by every request.
    #[arg(long)]
    pub working_set: Option<u64>,
    /// Memory antagonist: grow towards this many bytes; page-cache antagonist: file size.
    #[arg(long, default_value_t = 1 << 30)]
    pub bytes: u64,
    /// Memory antagonist: stop growing while MemAvailable is under this many bytes.
    #[arg(long, default_value_t = 1 << 30)]
    pub margin: u64,
    /// Page-cache antagonist: the file to stream.
    #[arg(long)]
    pub file: Option<String>,
    /// Run on this CPU only.
    #[arg(long)]
    pub pin: Option<usize>,
    /// Ping-pong: context switches per second.
    #[arg(long, default_value_t = 50_000.0)]
    pub rate: f64,
}

/// Most requests one run may schedule: bounds the load generator's memory whatever rate and
/// duration are asked for.
pub const MAX_REQUESTS: f64 = 20_000_000.0;
pub const MAX_RATE: f64 = 1_000_000.0;
pub const MAX_SECONDS: f64 = 3600.0;
/// `--rerun-steal-ms` at most: a whole hour of CPU time.
pub const MAX_STEAL_MS: f64 = 3_600_000.0;
pub const MAX_WORKLOADS: usize = 2000;

fn seconds(name: &str, v: f64, allow_zero: bool) -> Result<(), String> {
    let ok = v.is_finite() && v <= MAX_SECONDS && (v > 0.0 || (allow_zero && v == 0.0));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name} {v}: must be {} and at most {MAX_SECONDS} seconds",
            if allow_zero { "≥ 0" } else { "> 0" }
        ))
    }
}

fn rate(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v > 0.0 && v <= MAX_RATE {
        Ok(())
    } else {
        Err(format!(
            "{name} {v}: must be > 0 and at most {MAX_RATE} per second"
        ))
    }
}

fn sample(name: &str, v: u32) -> Result<(), String> {
    if v.is_power_of_two() && v <= 1024 {
        Ok(())
    } else {
        Err(format!("{name} {v}: must be a power of two from 1 to 1024"))
    }
}

fn count(name: &str, v: usize, lo: usize, hi: usize) -> Result<(), String> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!("{name} {v}: must be between {lo} and {hi}"))
    }
}

impl BenchArgs {
    /// Checks every number before anything starts; one message per bad value.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut e = Vec::new();
        let mut push = |r: Result<(), String>| {
            if let Err(m) = r {
                e.push(m);
            }
        };
        if let Some(r) = self.rounds {
            push(count("--rounds", r, 1, 100));
        }
        if let Some(r) = self.step_runs {
            push(count("--step-runs", r, 1, 20));
        }
        if !(self.slo_factor.is_finite() && (1.0..=10.0).contains(&self.slo_factor)) {
            push(Err(format!(
                "--slo-factor must be between 1 and 10 (got {})",
                self.slo_factor
            )));
        }
        if !(self.settle_max.is_finite() && (0.0..=3600.0).contains(&self.settle_max)) {
            push(Err(format!(
                "--settle-max {}: must be between 0 and 3600 seconds",
                self.settle_max
            )));
        }
        if (self.memory_bytes.is_some() || self.memory_share.is_some())
            && (self.offline != "memory" || self.offline_cmd.is_some())
        {
            push(Err(
                "--memory-bytes / --memory-share size the memory antagonist: they need --offline memory"
                    .to_string(),
            ));
        }
        if let Some(d) = self.duration {
            push(seconds("--duration", d, false));
        }
        if let Some(w) = self.warmup {
            push(seconds("--warmup", w, true));
        }
        if let Some(m) = self.rerun_steal_ms {
            if !(m.is_finite() && (0.0..=MAX_STEAL_MS).contains(&m)) {
                push(Err(format!(
                    "--rerun-steal-ms {m}: must be from 0 (never) to {MAX_STEAL_MS} ms"
                )));
            }
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0 && r <= MAX_RATE) {
                push(Err(format!(
                    "--rate {r}: must be > 0 and at most {MAX_RATE} requests/s (leave it out to calibrate)"
                )));
            } else {
                let total = r * (self.duration.unwrap_or(5.0) + self.warmup.unwrap_or(1.5));
                if total > MAX_REQUESTS {
                    push(Err(format!(
                        "--rate {r} over the run's {} s is {total:.0} requests: at most {MAX_REQUESTS} per run",
                        self.duration.unwrap_or(5.0) + self.warmup.unwrap_or(1.5)
                    )));
                }
            }
        }
        push(count("--work-us", self.work_us as usize, 1, 1_000_000));
        push(count("--connections", self.connections, 1, 1024));
        if let Some(t) = self.offline_threads {
            push(count("--offline-threads", t, 1, 1024));
        }
        if !["cpu", "stream", "cache", "mix", "memory", "pagecache"]
            .contains(&self.offline.as_str())
        {
            push(Err(format!(
                "--offline '{}': valid are cpu, stream, cache, mix, memory, pagecache",
                self.offline
            )));
        }
        if let Some(cmd) = &self.offline_cmd {
            match cmd.split_whitespace().next() {
                None => push(Err("--offline-cmd is empty".into())),
                Some(first) if !command_exists(first) => {
                    push(Err(format!("--offline-cmd: command not found: {first}")))
                }
                _ => {}
            }
        }
        match &self.command {
            Some(BenchCommand::Reaction(r)) => push(count("--steps", r.steps, 1, 10_000)),
            Some(BenchCommand::BpfCost(c)) => {
                push(seconds("--seconds", c.seconds, false));
                push(count("--rounds", c.rounds, 3, 100));
                push(rate("--rate", c.rate));
                push(sample("--sample", c.sample));
            }
            Some(BenchCommand::AgentCost(c)) => {
                push(seconds("--seconds", c.seconds, false));
                match parse_counts(&c.workloads) {
                    Ok(_) => {}
                    Err(m) => push(Err(m)),
                }
            }
            None => {}
        }
        if e.is_empty() {
            Ok(())
        } else {
            Err(e)
        }
    }
}

/// `--workloads 50,100,200`: each between 1 and [`MAX_WORKLOADS`].
pub fn parse_counts(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n: usize = part
            .parse()
            .map_err(|_| format!("--workloads: '{part}' is not a count"))?;
        count("--workloads", n, 1, MAX_WORKLOADS)?;
        out.push(n);
    }
    if out.is_empty() {
        return Err(format!(
            "--workloads '{s}' holds no counts (e.g. 50,100,200)"
        ));
    }
    Ok(out)
}

/// Finds `cmd` on PATH (or as a path), as the shell would.
pub fn command_exists(cmd: &str) -> bool {
    if cmd.contains('/') {
        return std::path::Path::new(cmd).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        b: BenchArgs,
    }

    fn errs(args: &[&str]) -> Vec<String> {
        let mut v = vec!["bench"];
        v.extend(args);
        T::try_parse_from(v)
            .unwrap()
            .b
            .validate()
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn bad_numbers_are_refused_before_anything_starts() {
        for (args, want) in [
            (&["--warmup=-1"][..], "--warmup"),
            (&["--duration=-1"], "--duration"),
            (&["--duration", "inf"], "--duration"),
            (&["--rounds", "0"], "--rounds"),
            (&["--settle-max=-1"], "--settle-max"),
            (&["--settle-max", "nan"], "--settle-max"),
            (&["--rerun-steal-ms=-1"], "--rerun-steal-ms"),
            (&["--rerun-steal-ms", "nan"], "--rerun-steal-ms"),
            (&["--rerun-steal-ms", "1e12"], "--rerun-steal-ms"),
            (&["--rate", "0"], "--rate"),
            (&["--rate", "1e9", "--duration", "1000"], "--rate"),
            (
                &["--offline-cmd", "definitely-not-a-command-xyz"],
                "command not found",
            ),
            (&["--memory-share", "0.5"], "--offline memory"),
            (
                &["--offline", "cpu", "--memory-bytes", "1G"],
                "--offline memory",
            ),
            (&["agent-cost", "--seconds=-1"], "--seconds"),
            (&["agent-cost", "--seconds", "nan"], "--seconds"),
            (&["agent-cost", "--workloads", "100000"], "--workloads"),
        ] {
            let e = errs(args);
            assert!(e.iter().any(|m| m.contains(want)), "{args:?}: {e:?}");
        }
        assert!(errs(&["--quick"]).is_empty());
    }

    #[test]
    fn a_memory_share_is_bounded_and_excludes_a_byte_count() {
        for bad in ["0", "-0.5", "2.5", "nan", "inf", "half"] {
            let e = T::try_parse_from(["bench", "--memory-share", bad]);
            assert!(e.is_err(), "--memory-share {bad} accepted");
        }
        let ok = T::try_parse_from(["bench", "--memory-share", "0.9"]).unwrap();
        assert_eq!(ok.b.memory_share, Some(0.9));
        assert!(
            T::try_parse_from(["bench", "--memory-share", "0.9", "--memory-bytes", "1G"]).is_err()
        );
    }
}
