//! The benchmark's sandbox: a root of its own (where tidal would place a root of that name: under this
//! process's cgroups on v1 and hybrid hosts, a top-level group on pure v2, a delegated systemd scope
//! under systemd), an actuator journalling every write into its own state dir, and every child
//! process it starts, in a process group of their own. Every cgroup write, rmdir and kill goes
//! through the actuator; dropping the sandbox stops the children, kills what is left in it by cgroup
//! and removes it all, so a failed or interrupted run leaves nothing behind.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidal_actuator::{restore, Actuator};
use tidal_cgroupfs::{detect_capabilities, Layout, RootSpec};
use tidal_model::{Capabilities, GroupPath, Knob, KnobValue, Target};

use crate::cli::BenchGlobal;

enum StateDir {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

impl StateDir {
    fn path(&self) -> &Path {
        match self {
            StateDir::Temp(t) => t.path(),
            StateDir::Given(p) => p,
        }
    }
}

pub struct BenchEnv {
    pub exe: PathBuf,
    pub layout: Layout,
    pub caps: Capabilities,
    state: StateDir,
    /// Scratch files of the runs (ports, reports, client results).
    work: tempfile::TempDir,
    pub act: Actuator,
    children: Vec<Child>,
    /// On a systemd host: the process the sandbox's scope was started with (it keeps the scope).
    anchor: Option<Child>,
    /// `TIDAL_ROOT` for the tidal processes the bench starts: `tidal` inside the sandbox.
    child_root: String,
    pub stop: Arc<AtomicBool>,
    cleaned: bool,
    /// Run-queue latency of the online side (eBPF), when it loads.
    pub runq: Option<tidal_bpf::Collector>,
}

fn describe(e: &tidal_actuator::ActError) -> String {
    if e.is_permission() {
        format!("{e} (the benchmark needs root)")
    } else {
        e.to_string()
    }
}

/// A command in a process group of its own: a terminal's Ctrl-C reaches the bench alone, which then
/// stops its children in order.
fn own_group(c: &mut Command) -> &mut Command {
    c.process_group(0)
}

/// `sh -c` script of a child that stops itself before exec, so the bench can place it first.
pub const STOP_THEN_EXEC: &str = "kill -STOP $$; exec \"$@\"";

/// Real-time time per period for the sandbox (agents' stall guards take theirs out of it: the
/// tidal root inside takes 10 ms, the bench's own group [`BENCH_RT_US`]), with room for the
/// tidal root of the run before, which holds its time until the kernel lets the removed group go
/// (about 100 ms; an agent started sooner was refused real-time priority).
const SANDBOX_RT_US: u64 = 50_000;
const BENCH_RT_US: u64 = 5_000;

/// Gives `target` real-time time (v1 `cpu.rt_runtime_us`) for `whom`; a host without the file
/// (no RT group scheduling: any task may be real-time) has nothing to give, and says nothing.
fn give_real_time(act: &mut Actuator, target: &Target, us: u64, whom: &str) {
    if let Err(e) = act.set(target, Knob::CpuRtRuntime, &KnobValue::Micros(us)) {
        eprintln!(
            "tidal: note: no real-time time for {whom}: {}",
            describe(&e)
        );
    }
}

/// The sandbox group the bench process itself runs in.
pub const BENCH_GROUP: &str = "bench";

impl BenchEnv {
    pub fn new(tag: &str, g: &BenchGlobal, stop: Arc<AtomicBool>) -> Result<BenchEnv, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the tidal binary: {e}"))?;
        let spec = match &g.root {
            Some(r) => RootSpec::parse(r)?,
            None => RootSpec::Named(format!("tidal-bench-{}-{tag}", std::process::id())),
        };
        let layout = Layout::discover(&spec).map_err(|e| e.to_string())?;
        if g.root.is_some() && layout.root_exists() {
            return Err(format!(
                "--root {}: it exists already; the benchmark needs a root it may create and remove whole",
                layout.primary().map(|r| r.root_dir.display().to_string()).unwrap_or_default()
            ));
        }
        let state = match &g.state_dir {
            Some(d) => StateDir::Given(d.clone()),
            None => StateDir::Temp(
                tempfile::Builder::new()
                    .prefix("tidal-bench-state-")
                    .tempdir()
                    .map_err(|e| format!("cannot create a state dir: {e}"))?,
            ),
        };
        let work = tempfile::Builder::new()
            .prefix("tidal-bench-")
            .tempdir()
            .map_err(|e| format!("cannot create a work dir: {e}"))?;
        let mut act =
            Actuator::new(layout.clone(), state.path(), false).map_err(|e| describe(&e))?;
        let mut anchor = None;
        if layout.scope.is_some() {
            let child = own_group(
                Command::new("sleep")
                    .arg("2147483647")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null()),
            )
            .spawn()
            .map_err(|e| format!("cannot start the sandbox's anchor process (sleep): {e}"))?;
            let pid = child.id();
            anchor = Some(child);
            act.ensure_root(Some(pid)).map_err(|e| describe(&e))?;
        } else {
            act.ensure_root(None).map_err(|e| describe(&e))?;
        }
        // Where the kernel schedules real-time by group (v1 `cpu.rt_runtime_us`), an agent the
        // bench starts can give its stall guard real-time time only out of the sandbox's.
        give_real_time(
            &mut act,
            &Target::Tidal(GroupPath::root()),
            SANDBOX_RT_US,
            "the agents' stall guards",
        );
        // The bench and the processes it runs for online keep out of the OOM killer's way: a memory
        // antagonist must not take the measurement down with it.
        match act.oom_score_adj_self(-999) {
            Ok(tidal_actuator::Outcome::Unsupported) => eprintln!(
                "tidal: note: cannot protect the bench from the OOM killer (lowering oom_score_adj needs CAP_SYS_RESOURCE)"
            ),
            Ok(_) => {}
            Err(e) => eprintln!(
                "tidal: cannot protect the bench from the OOM killer: {}",
                describe(&e)
            ),
        }
        let caps = detect_capabilities(&layout);
        let child_root = layout
            .nested("tidal")
            .as_arg()
            .map(str::to_string)
            .ok_or("the sandbox has no root path for its tidal processes")?;
        let mut env = BenchEnv {
            exe,
            layout,
            caps,
            state,
            work,
            act,
            children: Vec::new(),
            anchor,
            child_root,
            stop,
            cleaned: false,
            runq: tidal_bpf::Collector::start().ok(),
        };
        // The bench's own threads (window marks, the quota controller) and the agent it starts run
        // in a group of their own at the highest CPU weight, as a deployment should run the agent:
        // in the root cgroup they waited seconds at a time for a CPU beside the scenarios' groups
        // on these VMs, and the measurement windows went unmarked.
        let me = std::process::id();
        let placed = env
            .group(
                BENCH_GROUP,
                &[(
                    Knob::CpuWeight,
                    KnobValue::Shares(tidal_model::knob::MAX_SHARES),
                )],
            )
            .and_then(|g| env.move_pid(&g, me));
        if let Err(e) = placed {
            env.cleanup();
            return Err(format!("cannot place the bench in its own group: {e}"));
        }
        // An agent the bench brings in (one left outside the sandbox) may have a real-time stall
        // guard: where the kernel schedules real-time by group, a group without real-time time
        // refuses it.
        if let Ok(g) = GroupPath::new(BENCH_GROUP) {
            give_real_time(
                &mut env.act,
                &Target::Tidal(g),
                BENCH_RT_US,
                "an agent brought into the bench's group",
            );
        }
        Ok(env)
    }

    /// The tidal root of the tidal processes inside the sandbox, relative to the sandbox's root.
    pub fn tidal_group(&self) -> GroupPath {
        GroupPath::new("tidal").unwrap_or_default()
    }

    pub fn interrupted(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// A tidal command for [`BenchEnv::spawn_home`]: it stops itself before exec, so the bench can
    /// move it back to the cgroups the bench started in, where its relative root resolves.
    pub fn tidal_cmd(&self) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(STOP_THEN_EXEC).arg("sh").arg(&self.exe);
        c.env("TIDAL_ROOT", &self.child_root)
            .env("TIDAL_STATE_DIR", self.state.path())
            .env("TIDAL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    }

    /// Starts `tidal run --qos LEVEL --name NAME -- ARGV...` inside the bench's tidal root.
    pub fn tidal_run<S: AsRef<std::ffi::OsStr>>(
        &mut self,
        level: &str,
        name: &str,
        argv: &[S],
    ) -> Result<u32, String> {
        self.tidal_run_requesting(level, name, None, argv)
    }

    /// [`BenchEnv::tidal_run`] declaring the memory the workload needs (`--memory-request`).
    pub fn tidal_run_requesting<S: AsRef<std::ffi::OsStr>>(
        &mut self,
        level: &str,
        name: &str,
        memory_request: Option<u64>,
        argv: &[S],
    ) -> Result<u32, String> {
        let mut c = self.tidal_cmd();
        c.args(["run", "--qos", level, "--name", name]);
        if let Some(r) = memory_request {
            c.args(["--memory-request", &r.to_string()]);
        }
        c.arg("--").args(argv);
        self.spawn_home(c)
    }

    /// Spawns a [`BenchEnv::tidal_cmd`], moves it to the cgroups the bench started in (the bench
    /// itself runs in [`BENCH_GROUP`]) while it is stopped, and lets it run.
    pub fn spawn_home(&mut self, cmd: Command) -> Result<u32, String> {
        self.spawn_placed(cmd, None)
    }

    /// Spawns a command that runs [`STOP_THEN_EXEC`], moves it while it is stopped into `group`
    /// (None: the cgroups the bench started in), and lets it run: nothing it forks escapes.
    pub fn spawn_placed(&mut self, cmd: Command, group: Option<&GroupPath>) -> Result<u32, String> {
        let pid = self.spawn(cmd)?;
        self.wait_stopped(pid)?;
        match group {
            Some(g) => self.move_pid(g, pid)?,
            None => self.act.move_pid_home(pid).map_err(|e| describe(&e))?,
        }
        self.signal_own(pid, libc::SIGCONT)?;
        Ok(pid)
    }

    /// Moves a running child (an agent, once it has resolved its root) into [`BENCH_GROUP`], so it
    /// gets a CPU as promptly as the bench does.
    pub fn adopt(&mut self, pid: u32) -> Result<(), String> {
        let g = GroupPath::new(BENCH_GROUP).map_err(|e| e.to_string())?;
        self.move_pid(&g, pid)
    }

    /// Moves a running agent into [`BENCH_GROUP`] unless it has placed itself inside the
    /// sandbox, as `tidal agent` does in local mode (its own group, at online-critical's weight):
    /// an agent is measured where it runs in production, and only one left outside, where a task
    /// competes with the whole tree as one entity, is brought in.
    pub fn adopt_unless_inside(&mut self, pid: u32) -> Result<(), String> {
        let inside = self.layout.primary().is_some_and(|r| {
            tidal_cgroupfs::proc::cgroup_of(pid as i32, &r.hierarchy)
                .is_some_and(|p| r.hierarchy.dir(&p).starts_with(&r.root_dir))
        });
        if inside {
            Ok(())
        } else {
            self.adopt(pid)
        }
    }

    /// Waits until a child that stops itself before exec has stopped (5 s at most).
    fn wait_stopped(&self, pid: u32) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if tidal_cgroupfs::proc::task_stat(pid as i32).is_ok_and(|s| s.state == 'T') {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("process {pid} did not stop for placement"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Spawns a process this bench owns (stopped and reaped by [`BenchEnv::stop_children`]).
    pub fn spawn(&mut self, mut cmd: Command) -> Result<u32, String> {
        let child = own_group(&mut cmd)
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Sends `sig` to a process this bench started and has not reaped (SIGSTOP/SIGCONT of a load,
    /// SIGTERM at the end). The only signal the benchmark sends itself: everything it does to
    /// cgroups and their members goes through the actuator.
    pub fn signal_own(&self, pid: u32, sig: i32) -> Result<(), String> {
        if !self.children.iter().any(|c| c.id() == pid) {
            return Err(format!("pid {pid} is not a process this bench started"));
        }
        // SAFETY: kill(2) on a live child of this process (not yet reaped, so the pid is ours).
        if unsafe { libc::kill(pid as i32, sig) } != 0 {
            return Err(format!(
                "cannot signal pid {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Has a child this bench started already exited? (Its exit status, if so.)
    pub fn exited(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        self.children
            .iter_mut()
            .find(|c| c.id() == pid)
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Creates `group` (under the sandbox's root) with the given knobs.
    pub fn group(&mut self, group: &str, knobs: &[(Knob, KnobValue)]) -> Result<GroupPath, String> {
        let g = GroupPath::new(group).map_err(|e| e.to_string())?;
        self.act.ensure_group(&g).map_err(|e| describe(&e))?;
        for (k, v) in knobs {
            self.act
                .set(&Target::Tidal(g.clone()), *k, v)
                .map_err(|e| describe(&e))?;
        }
        Ok(g)
    }

    pub fn move_pid(&mut self, group: &GroupPath, pid: u32) -> Result<(), String> {
        self.act.move_pid(group, pid).map_err(|e| describe(&e))
    }

    /// Cumulative CPU ns of a group under the sandbox (None if it cannot be read).
    pub fn usage_ns(&self, group: &str) -> Option<u64> {
        let g = GroupPath::new(group).ok()?;
        self.layout.cpu_usage(&Target::Tidal(g))?.read().ok()
    }

    pub fn dir(&self, controller: &str, group: &str) -> Option<PathBuf> {
        let g = GroupPath::new(group).ok()?;
        self.layout.owner(controller).map(|r| r.dir(&g))
    }

    /// Stops every child: SIGTERM first (agents give offline its CPUs back on it), SIGKILL after 3 s.
    pub fn stop_children(&mut self) {
        let pids: Vec<u32> = self.children.iter().map(Child::id).collect();
        for pid in pids {
            let _ = self.signal_own(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for c in &mut self.children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }

    /// Ends one scenario: its processes are stopped and whatever is left in its groups is killed by
    /// cgroup (nothing survives into the next scenario), and the groups are removed.
    pub fn end_scenario(&mut self, groups: &[GroupPath]) {
        self.stop_children();
        for g in groups {
            if let Err(e) = self.act.purge(g) {
                eprintln!("tidal: cleaning up {g}: {e}");
            }
        }
    }

    /// Stops every child, kills what is left anywhere in the sandbox and removes it whole.
    pub fn cleanup(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        self.stop_children();
        // Out of the sandbox before it is purged (the purge kills whatever is left in it).
        if let Err(e) = self.act.move_pid_home(std::process::id()) {
            eprintln!("tidal: {}", describe(&e));
        }
        match self.act.purge(&GroupPath::root()) {
            Ok(left) if !left.is_empty() => {
                eprintln!(
                    "tidal: could not remove {} group(s) of the sandbox: {left:?}",
                    left.len()
                )
            }
            Ok(_) => {}
            Err(e) => eprintln!("tidal: cleaning up the sandbox: {e}"),
        }
        // Originals recorded outside the purged groups (controllers enabled above the root).
        if let Err(e) = restore(&self.layout, self.state.path(), false) {
            eprintln!("tidal: restoring the sandbox's journal: {e}");
        }
        if let Some(mut a) = self.anchor.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Online run-queue waits since the previous call, for `group` under the sandbox (its v2 and
    /// v1 cpu ids; one kind counted).
    pub fn runq_since_last(&mut self, group: &str) -> Option<tidal_bpf::Hist> {
        let c = self.runq.as_mut()?;
        let d = c.read().ok()?;
        let g = GroupPath::new(group).ok()?;
        let mut best: Option<(tidal_bpf::IdKind, tidal_bpf::Hist)> = None;
        for r in &self.layout.roots {
            let kind = match r.version() {
                tidal_cgroupfs::Version::V2 => tidal_bpf::IdKind::V2,
                tidal_cgroupfs::Version::V1 if r.hierarchy.has("cpu") => tidal_bpf::IdKind::V1Cpu,
                _ => continue,
            };
            let Some(id) = tidal_bpf::cgroup_id(&r.dir(&g)) else {
                continue;
            };
            if let Some(h) = d.get(&tidal_bpf::CgroupKey { id, kind }) {
                if best
                    .as_ref()
                    .is_none_or(|(k, _)| *k == tidal_bpf::IdKind::V2)
                {
                    best = Some((kind, h.clone()));
                }
            }
        }
        best.map(|(_, h)| h)
    }

    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }
}

/// Waits until an agent at `addr` answers `/healthz`.
pub fn wait_healthz(addr: &str, stop: &AtomicBool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ureq::get(&format!("http://{addr}/healthz")).call().is_err() {
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            return Err(format!("the agent at {addr} did not come up"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Waits (≤ 3 s) until the agent at `addr` has scraped a latency objective once (`/state` lists
/// one with no failed scrape), so that the load starts under an agent already watching, as it does
/// on a node where the agent runs before the service is used: the window that holds the load's
/// start is then the service's first, which the agent does not judge. False if it had not by then.
pub fn wait_objective_scraped(addr: &str, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    let url = format!("http://{addr}/state");
    loop {
        let seen = ureq::get(&url)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| {
                v["slo"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|o| o["scrape_errors"].as_u64() == Some(0)))
            });
        if seen {
            return true;
        }
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time this VM's CPUs have so far waited for their host, in ms, all CPUs together (/proc/stat's
/// steal, counted in USER_HZ clock ticks; None where it cannot be read). A host that takes the CPUs stalls
/// whatever scenario runs then: the report says where it happened.
pub fn host_steal_ms() -> Option<u64> {
    use procfs::CurrentSI;
    procfs::KernelStats::current().ok()?.total.steal_ms()
}

/// Cumulative CPU ns of the whole node (None if it cannot be read).
pub fn node_ns(layout: &Layout) -> Option<u64> {
    layout.node_cpu_usage()?.read().ok()
}

impl Drop for BenchEnv {
    fn drop(&mut self) {
        self.cleanup();
    }
}
