//! The benchmark's sandbox: a bench root nested under this process's cgroups, an actuator journalling
//! every write into a private state dir, and every child process it starts. Dropping it kills the
//! children and restores everything, so a failed or interrupted run leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tidal_actuator::{restore, Actuator};
use tidal_cgroupfs::{detect_capabilities, Layout, RootSpec};
use tidal_model::{Capabilities, GroupPath, Knob, KnobValue};

pub struct BenchEnv {
    pub exe: PathBuf,
    /// Bench root name, relative to this process's cgroup in each hierarchy.
    pub name: String,
    pub layout: Layout,
    pub caps: Capabilities,
    pub state: tempfile::TempDir,
    pub act: Actuator,
    children: Vec<Child>,
}

impl BenchEnv {
    pub fn new(tag: &str) -> Result<BenchEnv, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the tidal binary: {e}"))?;
        let name = format!("tidal-bench-{}-{tag}", std::process::id());
        let layout =
            Layout::discover(&RootSpec::Relative(name.clone())).map_err(|e| e.to_string())?;
        let caps = detect_capabilities(&layout);
        let state = tempfile::Builder::new()
            .prefix("tidal-bench-")
            .tempdir()
            .map_err(|e| format!("cannot create a state dir: {e}"))?;
        let act = Actuator::new(layout.clone(), state.path(), false)
            .map_err(|e| crate::exit::describe(&e))?;
        Ok(BenchEnv {
            exe,
            name,
            layout,
            caps,
            state,
            act,
            children: Vec::new(),
        })
    }

    /// The TIDAL_ROOT for `tidal run`/`tidal agent` inside the bench root.
    pub fn tidal_root(&self) -> String {
        format!("{}/tidal", self.name)
    }

    pub fn tidal_cmd(&self) -> Command {
        let mut c = Command::new(&self.exe);
        c.env("TIDAL_ROOT", self.tidal_root())
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
        let mut c = self.tidal_cmd();
        c.args(["run", "--qos", level, "--name", name, "--"])
            .args(argv);
        self.spawn(c)
    }

    /// Spawns a process this bench owns (killed on drop).
    pub fn spawn(&mut self, mut cmd: Command) -> Result<u32, String> {
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Creates `group` (under the bench root) with the given knobs.
    pub fn group(&mut self, group: &str, knobs: &[(Knob, KnobValue)]) -> Result<GroupPath, String> {
        let g = GroupPath::new(group).ok_or_else(|| format!("bad group {group}"))?;
        self.act
            .ensure_group(&g)
            .map_err(|e| crate::exit::describe(&e))?;
        for (k, v) in knobs {
            self.act
                .set(&g, *k, v)
                .map_err(|e| crate::exit::describe(&e))?;
        }
        Ok(g)
    }

    pub fn move_pid(&mut self, group: &GroupPath, pid: u32) -> Result<(), String> {
        self.act
            .move_pid(group, pid)
            .map_err(|e| crate::exit::describe(&e))
    }

    /// Cumulative CPU ns of a group under the bench root (0 if absent).
    pub fn usage_ns(&self, group: &str) -> u64 {
        GroupPath::new(group)
            .and_then(|g| self.layout.cpu_usage_ns(&g).ok())
            .unwrap_or(0)
    }

    pub fn dir(&self, controller: &str, group: &str) -> Option<PathBuf> {
        let g = GroupPath::new(group)?;
        self.layout.owner(controller).map(|r| r.dir(&g))
    }

    /// Kills every child (SIGTERM first for agents, which give CPUs back) and removes `groups`.
    pub fn stop_children(&mut self) {
        for c in &mut self.children {
            // SAFETY: kill(2) on a process this bench started.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
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

    /// Kills any process left in the bench tree (children's children) and removes every group.
    pub fn cleanup(&mut self) {
        self.stop_children();
        for _ in 0..20 {
            let mut any = false;
            for r in &self.layout.roots {
                any |= kill_tree(&r.root_dir);
            }
            if !any {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = restore(self.state.path(), false);
        // The bench root is this run's own sandbox: whatever is still there (a group whose journal
        // entry a killed child never wrote) goes too, leaves first.
        for r in &self.layout.roots {
            remove_tree(&r.root_dir);
        }
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }
}

/// Waits until an agent at `addr` answers `/healthz`.
pub fn wait_healthz(addr: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ureq::get(&format!("http://{addr}/healthz")).call().is_err() {
        if Instant::now() > deadline {
            return Err(format!("the agent at {addr} did not come up"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Cumulative CPU ns of the whole node: the v1 cpuacct root, else the v2 root's `cpu.stat`.
pub fn node_ns(layout: &Layout) -> u64 {
    if let Some(h) = layout.hierarchies.v1("cpuacct") {
        if let Ok(s) = std::fs::read_to_string(h.mount.join("cpuacct.usage")) {
            return s.trim().parse().unwrap_or(0);
        }
    }
    layout
        .hierarchies
        .unified()
        .and_then(|u| std::fs::read_to_string(u.mount.join("cpu.stat")).ok())
        .and_then(|s| {
            tidal_cgroupfs::stat::parse_flat_keyed(&s)
                .get("usage_usec")
                .copied()
        })
        .map_or(0, |us| us * 1000)
}

fn remove_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = tidal_cgroupfs::layout::remove_group_dir(dir);
}

/// SIGKILLs every task under `dir` (all started by this bench); true if any was found.
fn kill_tree(dir: &Path) -> bool {
    let mut any = false;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                any |= kill_tree(&e.path());
            }
        }
    }
    let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
    if let Ok(p) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in p.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            any = true;
            // SAFETY: kill(2); only tasks the bench started live in its tree.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    any
}

impl Drop for BenchEnv {
    fn drop(&mut self) {
        self.cleanup();
    }
}
