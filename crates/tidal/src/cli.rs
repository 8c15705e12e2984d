//! Command-line interface: subcommands, flags and their parsers.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use tidal_cgroupfs::{Layout, RootSpec};
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

/// Where the journal lives when `--state-dir`/`TIDAL_STATE_DIR` are not given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tidal";

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Where the journal of original values lives (default /var/lib/tidal).
    #[arg(long, global = true, env = "TIDAL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The tidal root: an absolute path is the same in every hierarchy (e.g. /tidal.slice); a relative
    /// one is taken under the cgroup tidal was started in. Default: `tidal` under that cgroup on v1 and
    /// hybrid hosts, `/tidal` on pure v2, and the delegated scope tidal.slice/tidal.scope under systemd.
    #[arg(long, global = true, env = "TIDAL_ROOT")]
    pub root: Option<String>,
    /// Log what would be written instead of writing.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Global {
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    /// The root as given (flag or environment), checked; the host's default otherwise.
    pub fn root_spec(&self) -> Result<RootSpec, String> {
        RootSpec::from_flag_or_env(self.root.as_deref())
    }

    /// The tidal root's layout on this host.
    pub fn layout(&self) -> Result<Layout, String> {
        let spec = self.root_spec()?;
        Layout::discover(&spec).map_err(|e| e.to_string())
    }

    /// The root's set-up lock, shared for what makes groups (`run`, `apply`), exclusive for
    /// `restore`; none in a dry run, which makes and removes nothing.
    pub fn setup_lock(
        &self,
        layout: &Layout,
        exclusive: bool,
    ) -> Result<Option<tidal_actuator::SetupLock>, tidal_actuator::ActError> {
        use tidal_actuator::SetupLock;
        if self.dry_run {
            return Ok(None);
        }
        let state = self.state_dir();
        let wait = SetupLock::WAIT;
        if exclusive {
            SetupLock::exclusive(layout, &state, wait).map(Some)
        } else {
            SetupLock::shared(layout, &state, wait).map(Some)
        }
    }

    /// The global flags as the benchmark takes them.
    pub fn bench(&self) -> tidal_bench::BenchGlobal {
        tidal_bench::BenchGlobal {
            root: self.root.clone(),
            state_dir: self.state_dir.clone(),
            dry_run: self.dry_run,
        }
    }
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
    /// Ask the running agent to give offline work every CPU back, thaw it and lift its caps, then
    /// stay paused until it is stopped (a DaemonSet's preStop hook; SIGUSR1 does the same).
    Release(ReleaseArgs),
    /// Co-location benchmark (and the agent's own benchmarks: `bench reaction`, `bench agent-cost`).
    Bench(Box<tidal_bench::BenchArgs>),
    /// Built-in workloads used by `tidal bench` (online server, offline antagonists).
    #[command(hide = true)]
    Worker(tidal_bench::WorkerArgs),
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
    /// Where workloads come from: `local` (the tidal tree: `tidal run`), or `kubernetes` (this
    /// node's pods, in the kubelet's tree, and the tidal tree as well).
    #[arg(long, value_enum, default_value = "local")]
    pub source: SourceKind,
    /// Do not load the BPF run-queue latency program (the agent runs on its other signals).
    #[arg(long)]
    pub no_bpf: bool,
    /// Fault injection for testing the stall guard: after tick TICK the loop sleeps MS
    /// milliseconds once, as if its CPU had been taken (TICK:MS, MS at most 60000).
    #[arg(long, hide = true, value_name = "TICK:MS", value_parser = parse_stall)]
    pub inject_stall: Option<(u64, u64)>,
}

fn parse_stall(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("'{s}': expected TICK:MS, e.g. 20:1500, with MS at most 60000");
    let (t, m) = s.split_once(':').ok_or_else(bad)?;
    let (t, m) = (t.trim().parse::<u64>(), m.trim().parse::<u64>());
    match (t, m) {
        (Ok(t), Ok(m)) if t <= 1_000_000 && m <= 60_000 => Ok((t, m)),
        _ => Err(bad()),
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Local,
    Kubernetes,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print the agent's /state JSON as is.
    #[arg(long)]
    pub json: bool,
    /// The agent's HTTP address.
    #[arg(long, default_value = "127.0.0.1:9477")]
    pub listen: String,
    /// Only ask `/healthz`: print its answer, exit 0 if the agent is healthy, 1 if not (for exec
    /// probes: the agent listens on loopback, which the kubelet cannot reach over the pod IP).
    #[arg(long)]
    pub healthz: bool,
}

#[derive(Args, Debug)]
pub struct ReleaseArgs {
    /// How long to wait for the agent to confirm, in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub wait: u64,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// Plan file: {"actions": [{"group": "offline", "op": "set", "knob": "cpu-idle", "value": {"bool": true}, "reason": "…"}]}
    #[arg(long)]
    pub plan: PathBuf,
    /// Pause between actions, in milliseconds (to watch a plan take effect), at most a minute.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub pause_ms: u64,
    /// The agent's config file: its `kubernetes.kubelet_cgroup_root` says where the kubelet's
    /// tiers are, which a plan may not write (without it, under `/`).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn parse_level(s: &str) -> Result<QosLevel, String> {
    s.parse::<QosLevel>().map_err(|e| e.to_string())
}

/// Smallest `--memory` limit: below this the group cannot even hold tidal while it execs the command.
pub const MIN_MEMORY: u64 = 16 << 20;

/// Bytes with an optional K/M/G/T suffix (powers of 1024), e.g. `536870912`, `512M`, `1.5G`.
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
    let bytes = n * mult as f64;
    // 2^62 is beyond any machine's memory and below where the kernel reads "max".
    if !bytes.is_finite() || bytes < 1.0 || bytes > (1u64 << 62) as f64 {
        return Err(format!("'{s}' must be a byte count from 1 byte to 4 EiB"));
    }
    Ok(bytes as u64)
}

/// A `--memory` limit: a byte count of at least [`MIN_MEMORY`].
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let b = parse_bytes(s)?;
    if b < MIN_MEMORY {
        return Err(format!(
            "'{s}' is too small a memory limit: at least 16M (tidal and the command's start-up must fit)"
        ));
    }
    Ok(b)
}

pub fn parse_cpus(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a CPU count (e.g. 1.5)"))?;
    let (lo, hi) = tidal_policy::levels::CPUS_LIMIT;
    if !v.is_finite() || !(lo..=hi).contains(&v) {
        return Err(format!("'{s}': --cpus must be between {lo} and {hi}"));
    }
    Ok(v)
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// QoS level: online-critical (2), online-high (1), online (0), offline (-1), offline-low (-2).
    #[arg(long, value_parser = parse_level, allow_negative_numbers = true)]
    pub qos: QosLevel,
    /// Workload name (default: the command's file name). Taken names get a -2, -3… suffix.
    #[arg(long)]
    pub name: Option<String>,
    /// CPU limit in CPUs (CFS quota), e.g. 1.5.
    #[arg(long, value_parser = parse_cpus)]
    pub cpus: Option<f64>,
    /// Memory limit in bytes (K/M/G suffixes allowed, at least 16M).
    #[arg(long, value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// Memory the workload needs (online levels): the agent protects it (v2 `memory.low`, and the
    /// ancestors' sums) and `tidal run` sets the workload's own `memory.low` at once.
    #[arg(long, value_parser = parse_bytes)]
    pub memory_request: Option<u64>,
    /// The agent's config, for the levels' `oom_score_adj` and the protection ratios
    /// (`memory.min_ratio`, `memory.low_ratio`) set at once; the defaults without it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The command, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// The agent's config, for where the kubelet's tree and CPU manager state are.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// If an agent holds the root, stop it first (SIGTERM: it gives offline work every CPU back and
    /// thaws it), wait for it to exit, then restore.
    #[arg(long)]
    pub force: bool,
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
        assert!(parse_bytes("99999999999999999999").is_err());
        // Below one byte: an error, not a request of 0.
        assert!(parse_bytes("0.5").is_err());
        assert!(parse_bytes("1e-9").is_err());
        assert_eq!(parse_bytes("1"), Ok(1));
        for small in ["1", "4096", "1k", "15M"] {
            assert!(parse_memory(small).is_err(), "{small}");
        }
        assert_eq!(parse_memory("16M"), Ok(16 << 20));
        assert!(parse_cpus("1e300").is_err());
        assert!(parse_cpus("nan").is_err());
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
    fn negative_levels_parse_as_values() {
        for args in [
            ["tidal", "run", "--qos", "-1", "--", "true"],
            ["tidal", "run", "--qos=-2", "--", "true", "x"],
        ] {
            let c = Cli::try_parse_from(args.iter().filter(|a| **a != "x")).unwrap();
            match c.command {
                Command::Run(r) => assert!(!r.qos.is_online()),
                _ => panic!("not run"),
            }
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
