//! Command-line interface: subcommands, flags and their parsers.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use tidal_model::QosLevel;

#[derive(Parser, Debug)]
#[command(
    name = "tidal",
    version,
    about = "Run offline work next to online services without hurting their tail latency",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Where the journal of original values lives.
    #[arg(
        long,
        global = true,
        env = "TIDAL_STATE_DIR",
        default_value = "/var/lib/tidal"
    )]
    pub state_dir: PathBuf,
    /// The tidal root: an absolute path is the same in every hierarchy (e.g. /tidal.slice); a relative
    /// one is taken under the cgroup tidal was started in. Default: `tidal` under that cgroup.
    #[arg(long, global = true, env = "TIDAL_ROOT")]
    pub root: Option<String>,
    /// Log what would be written instead of writing.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a command in a workload group at a QoS level.
    Run(RunArgs),
    /// Show what this node can do and what tidal does without each missing feature.
    Doctor(DoctorArgs),
    /// Restore every value tidal changed and remove the empty groups it created.
    Restore(RestoreArgs),
    /// The node agent (local mode): confine offline work to spare CPUs, react to pressure, serve metrics.
    Agent(AgentArgs),
    /// Show the running agent's view of every workload.
    Status(StatusArgs),
    /// Co-location benchmark (and the agent's own benchmarks: `bench reaction`, `bench agent-cost`).
    Bench(Box<BenchArgs>),
    /// Built-in workloads used by `tidal bench` (online server, offline antagonists).
    #[command(hide = true)]
    Worker(WorkerArgs),
    /// Apply a plan file (JSON, as `tidal agent` shows in /state) through the actuator: for scripting
    /// and debugging.
    Apply(ApplyArgs),
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// YAML config (see examples/tidal.yaml); defaults apply without it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// HTTP address for /metrics, /healthz and /state (overrides the config's `listen`).
    #[arg(long)]
    pub listen: Option<String>,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// About a minute: 2 rounds of 3 s per scenario, then the step scenario.
    #[arg(long)]
    pub quick: bool,
    /// Rounds per scenario (default 3; 2 with --quick).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Measured seconds per run (default 10; 3 with --quick).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Warm-up seconds per run, not measured (default 2; 1 with --quick).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Online requests per second (default: calibrated to ~30% of the machine's CPUs).
    #[arg(long)]
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
    /// Built-in offline antagonist: cpu, stream (memory bandwidth), cache (LLC thrasher), mix.
    #[arg(long, default_value = "cpu")]
    pub offline: String,
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
    /// Agent config for the `tidal` scenario (default: the agent's defaults).
    #[arg(long)]
    pub agent_config: Option<PathBuf>,
    /// Write the full report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a chart of online p99 against offline throughput.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Do not hold /dev/cpu_dma_latency at 0 during the run. By default the bench keeps CPUs out of
    /// deep idle states, so `alone` is not slowed by wake-ups from idle that co-located runs never pay.
    #[arg(long)]
    pub no_pm_qos: bool,
    /// Seed for arrivals and scenario order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time from an online load step to offline being out of online's CPUs (agent running).
    Reaction(ReactionArgs),
    /// The agent's CPU and memory at a 100 ms tick with many workloads.
    AgentCost(AgentCostArgs),
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
    #[arg(long, default_value_t = 20.0)]
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
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print the agent's /state JSON as is.
    #[arg(long)]
    pub json: bool,
    /// The agent's HTTP address.
    #[arg(long, default_value = "127.0.0.1:9477")]
    pub listen: String,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// Plan file: {"actions": [{"group": "offline", "op": "set", "knob": "cpu-idle", "value": {"bool": true}, "reason": "…"}]}
    #[arg(long)]
    pub plan: PathBuf,
    /// Pause between actions, in milliseconds (to watch a plan take effect).
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
}

pub fn parse_level(s: &str) -> Result<QosLevel, String> {
    s.parse::<QosLevel>().map_err(|e| e.to_string())
}

/// Bytes with an optional K/M/G/T suffix (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_lowercase();
            let m: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => return Err(format!("unknown unit in '{s}' (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a byte count (e.g. 536870912 or 512M)"))?;
    if n.is_nan() || n <= 0.0 || !n.is_finite() {
        return Err(format!("'{s}' must be a positive byte count"));
    }
    Ok((n * mult as f64) as u64)
}

pub fn parse_cpus(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a CPU count (e.g. 1.5)"))?;
    if v.is_nan() || v < 0.01 || !v.is_finite() {
        return Err(format!("'{s}': --cpus must be at least 0.01"));
    }
    Ok(v)
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// QoS level: online-critical (2), online-high (1), online (0), offline (-1), offline-low (-2).
    #[arg(long, value_parser = parse_level)]
    pub qos: QosLevel,
    /// Workload name (default: the command's file name). Taken names get a -2, -3… suffix.
    #[arg(long)]
    pub name: Option<String>,
    /// CPU limit in CPUs (CFS quota), e.g. 1.5.
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<f64>,
    /// Memory limit in bytes (K/M/G suffixes allowed).
    #[arg(long, value_parser = parse_bytes)]
    pub memory: Option<u64>,
    /// The command, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn byte_and_cpu_parsers() {
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("12X").is_err());
        assert!(parse_bytes("-1").is_err());
        assert_eq!(parse_cpus("1.5"), Ok(1.5));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("abc").is_err());
    }

    #[test]
    fn run_needs_a_command_after_double_dash() {
        let e = Cli::try_parse_from(["tidal", "run", "--qos", "offline"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let ok =
            Cli::try_parse_from(["tidal", "run", "--qos", "offline", "--", "sleep", "1"]).unwrap();
        match ok.command {
            Command::Run(r) => assert_eq!(r.cmd, vec!["sleep", "1"]),
            _ => panic!("not run"),
        }
    }

    #[test]
    fn unknown_level_lists_valid_levels() {
        let e = Cli::try_parse_from(["tidal", "run", "--qos", "batch", "--", "true"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("online-critical") && msg.contains("offline-low"),
            "{msg}"
        );
    }
}
