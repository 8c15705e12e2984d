//! Shared helpers for tests on real cgroups: a unique tidal root, removed afterwards even when the test
//! fails. Files are found through tidal's own hierarchy discovery and knob registry, so the tests hold
//! on v1, hybrid and pure v2 hosts alike. On v1 and hybrid hosts the root is nested under this test
//! process's own cgroup; on pure v2 that cgroup holds processes and so cannot pass controllers down
//! (the no-internal-process rule), and the root is placed where tidal places its own: a top-level
//! group, or a delegated systemd scope.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tidal_cgroupfs::{controller, cpuset, CgroupMode, Layout, RootSpec, Version};
use tidal_model::{CpuSet, GroupPath, Knob, KnobValue, Target};

/// Set in CI: a test that cannot use real cgroups fails instead of skipping. `0` means off.
pub const REQUIRE_ENV: &str = "TIDAL_TEST_REQUIRE_CGROUPS";

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn tidal_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tidal")
}

pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// True if this process may create cgroups; otherwise skips (or fails when required).
pub fn cgroups_usable(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let writable = Layout::discover(&RootSpec::Named("probe".into()))
        .ok()
        .and_then(|l| l.primary().map(|r| r.base_dir()))
        .map(|d| {
            let mut d = d;
            while !d.exists() {
                match d.parent() {
                    Some(p) => d = p.to_path_buf(),
                    None => break,
                }
            }
            d
        })
        .is_some_and(|d| {
            let c = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()).unwrap_or_default();
            // SAFETY: c is a valid NUL-terminated path.
            unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
        });
    if root && writable {
        return true;
    }
    if required() {
        panic!("{test}: needs root and a writable cgroupfs, and {REQUIRE_ENV} is set");
    }
    // Printed so that a skipped test shows in the test output.
    println!(
        "SKIP {test}: needs root and a writable cgroupfs (set {REQUIRE_ENV}=1 to fail instead)"
    );
    eprintln!(
        "SKIP {test}: needs root and a writable cgroupfs (set {REQUIRE_ENV}=1 to fail instead)"
    );
    false
}

pub struct TestRoot {
    pub name: String,
    pub state: tempfile::TempDir,
    pub layout: Layout,
    children: Vec<Child>,
    anchor: Option<Child>,
    /// The journal of the test's own scope set-up (kept apart from the state dir under test).
    _setup_state: tempfile::TempDir,
}

impl TestRoot {
    pub fn new(tag: &str) -> TestRoot {
        let name = format!(
            "tidal-test-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            tag
        );
        let layout = Layout::discover(&RootSpec::Named(name.clone())).expect("discover cgroups");
        let state = tempfile::tempdir().expect("tempdir");
        let setup_state = tempfile::tempdir().expect("tempdir");
        let mut anchor = None;
        if layout.scope.is_some() {
            // Under systemd the root is a delegated scope: start it now with a process to hold it.
            let child = Command::new("sleep")
                .arg("100000")
                .spawn()
                .expect("spawn the scope's anchor");
            let mut act = tidal_actuator::Actuator::new(layout.clone(), setup_state.path(), false)
                .expect("actuator");
            act.ensure_root(Some(child.id()))
                .expect("start the test's scope");
            anchor = Some(child);
        }
        TestRoot {
            name,
            state,
            layout,
            children: Vec::new(),
            anchor,
            _setup_state: setup_state,
        }
    }

    /// `TIDAL_ROOT` for the tidal commands of this test.
    pub fn root_arg(&self) -> String {
        if self.layout.hierarchies.mode() != CgroupMode::V2 {
            // Relative: under the cgroup each tidal command starts in, as this test's root is.
            return self.name.clone();
        }
        let r = self.layout.primary().expect("a hierarchy");
        format!(
            "/{}",
            r.root_dir
                .strip_prefix(&r.hierarchy.mount)
                .expect("root under its mount")
                .display()
        )
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(tidal_bin());
        c.env("TIDAL_ROOT", self.root_arg())
            .env("TIDAL_STATE_DIR", self.state.path())
            .env_remove("TIDAL_LOG");
        c
    }

    pub fn tidal(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run tidal")
    }

    /// `tidal restore`, which must succeed; its output.
    pub fn restore_ok(&self) -> Output {
        let out = self.tidal(&["restore"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `tidal run --qos LEVEL --name NAME` of a shell spinning on a CPU.
    pub fn spin(&mut self, level: &str, name: &str) -> u32 {
        self.spawn(&[
            "run",
            "--qos",
            level,
            "--name",
            name,
            "--",
            "sh",
            "-c",
            "while :; do :; done",
        ])
    }

    /// Starts `tidal <args>` in the background; it is killed when the test root is dropped.
    pub fn spawn(&mut self, args: &[&str]) -> u32 {
        let mut c = self.cmd();
        c.args(args);
        self.spawn_cmd(c)
    }

    /// Starts `c` (a command built on [`TestRoot::cmd`]'s environment), killed with the others.
    pub fn spawn_cmd(&mut self, mut c: Command) -> u32 {
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tidal");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    pub fn kill_children(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }

    /// Waits (30 s at most: an emulated CPU starts `tidal run` slowly) until each of `groups` holds
    /// a task, that is, `tidal run` has made it and moved its command in.
    pub fn wait_running(&self, groups: &[&str]) {
        let running = |g: &str| {
            std::fs::read_to_string(self.dir("cpu", g).join("cgroup.procs"))
                .is_ok_and(|p| !p.trim().is_empty())
        };
        wait_for(&format!("tasks in {}", groups.join(", ")), 30, || {
            groups.iter().all(|g| running(g))
        });
    }

    /// Directory of a group (relative to the test root) in the hierarchy owning `controller`.
    pub fn dir(&self, controller: &str, group: &str) -> PathBuf {
        let r = self.layout.owner(controller).expect("controller mounted");
        if group.is_empty() {
            r.root_dir.clone()
        } else {
            r.root_dir.join(group)
        }
    }

    pub fn read(&self, controller: &str, group: &str, file: &str) -> String {
        let p = self.dir(controller, group).join(file);
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
            .trim()
            .to_string()
    }

    fn target(group: &str) -> Target {
        Target::Tidal(GroupPath::new(group).expect("valid group"))
    }

    /// A knob of a group as tidal reads it (`cpu.shares` or `cpu.weight`, whichever this host has).
    pub fn knob(&self, group: &str, knob: Knob) -> KnobValue {
        self.layout
            .read_knob(&Self::target(group), knob)
            .unwrap_or_else(|e| panic!("{knob} of {group}: {e}"))
    }

    /// The value `want` as this host's files would show it (shares round through v2's weight).
    pub fn as_kernel_shows(&self, knob: Knob, want: KnobValue) -> KnobValue {
        let (r, _) = self.layout.knob_target(knob).expect("knob supported");
        let v = r.version();
        let enc = controller::encode(knob, v, &want).expect("encodable");
        controller::decode(knob, v, &enc).expect("decodable")
    }

    /// The first file of a knob for a group (what the journal records).
    pub fn knob_file(&self, group: &str, knob: Knob) -> PathBuf {
        let (_, paths) = self
            .layout
            .knob_paths(&Self::target(group), knob)
            .expect("knob supported");
        paths.into_iter().last().expect("a file")
    }

    /// Writes a knob as an outside party would (the test, not tidal), raw.
    pub fn write_knob(&self, group: &str, knob: Knob, value: KnobValue) {
        let (r, _) = self.layout.knob_target(knob).expect("knob supported");
        let enc = controller::encode(knob, r.version(), &value).expect("encodable");
        let (_, paths) = self
            .layout
            .knob_paths(&Self::target(group), knob)
            .expect("knob supported");
        for (p, v) in paths.iter().zip(enc) {
            // Per-device files take one device per write.
            let per_line = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(tidal_cgroupfs::iolimit::line_per_write);
            let writes: Vec<&str> = if per_line {
                v.lines().filter(|l| !l.trim().is_empty()).collect()
            } else {
                vec![v.as_str()]
            };
            for w in writes {
                std::fs::write(p, w).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
            }
        }
    }

    /// The CPUs a group may really use.
    pub fn effective_cpus(&self, group: &str) -> CpuSet {
        let r = self.layout.owner("cpuset").expect("cpuset");
        let f = match r.version() {
            Version::V1 => cpuset::V1_EFFECTIVE_CPUS,
            Version::V2 => cpuset::V2_EFFECTIVE_CPUS,
        };
        self.read("cpuset", group, f).parse().expect("a cpu list")
    }

    /// Makes a group (and its parents) as an outside party would, before tidal sees it: on v2 with
    /// the controllers passed down to it, on v1 with cpus and mems set.
    pub fn make_group(&self, group: &str) {
        let g = GroupPath::new(group).expect("valid group");
        let mut chain = vec![GroupPath::root()];
        chain.extend(g.lineage());
        for r in &self.layout.roots {
            for c in &chain {
                let d = r.dir(c);
                let parent = d.parent().expect("a parent").to_path_buf();
                if r.version() == Version::V2 {
                    let offered = std::fs::read_to_string(parent.join("cgroup.controllers"))
                        .unwrap_or_default();
                    for ctl in ["cpu", "cpuset", "memory", "io"] {
                        if offered.split_whitespace().any(|x| x == ctl) {
                            let _ = std::fs::write(
                                parent.join("cgroup.subtree_control"),
                                format!("+{ctl}"),
                            );
                        }
                    }
                }
                if !d.exists() {
                    std::fs::create_dir(&d)
                        .unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
                }
                if r.version() == Version::V1 && r.hierarchy.has("cpuset") {
                    for f in [cpuset::CPUS, cpuset::MEMS] {
                        let cur = std::fs::read_to_string(d.join(f)).unwrap_or_default();
                        if cur.trim().is_empty() {
                            let p = std::fs::read_to_string(parent.join(f)).unwrap_or_default();
                            std::fs::write(d.join(f), p.trim()).expect("init cpuset");
                        }
                    }
                }
            }
        }
    }

    /// Every directory of the test root that still exists, in any hierarchy (a scope's own
    /// directory is systemd's and goes when its anchor does).
    pub fn leftovers(&self) -> Vec<PathBuf> {
        self.layout
            .roots
            .iter()
            .flat_map(|r| {
                if self.layout.scope.is_some() {
                    std::fs::read_dir(&r.root_dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .filter(|e| e.file_name() != tidal_actuator::actuator::ANCHOR)
                        .map(|e| e.path())
                        .collect::<Vec<_>>()
                } else {
                    vec![r.root_dir.clone()]
                }
            })
            .filter(|d| d.exists())
            .collect()
    }
}

/// Waits until `pid`'s cgroup (in the hierarchy that owns cpu) ends with `suffix`; returns the path.
pub fn wait_cgroup(pid: u32, suffix: &str) -> Option<String> {
    let layout = Layout::discover(&RootSpec::default()).ok()?;
    let h = layout.hierarchies.owner("cpu")?.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(path) = tidal_cgroupfs::proc::cgroup_of(pid as i32, &h) {
            if path.ends_with(suffix) {
                return Some(path);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// What keeps a group that should be gone: each group under `dir` (itself included) with its
/// processes' command lines and its `cgroup.events`, for a failure message.
pub fn left_in(dir: &Path) -> String {
    let mut out = String::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        out.push_str(&format!("{}:", d.display()));
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            out.push_str(&format!(" [pid {pid}: {}]", cmd.trim()));
        }
        if let Ok(ev) = std::fs::read_to_string(d.join("cgroup.events")) {
            out.push_str(&format!(" events: {}", ev.replace('\n', " ")));
        }
        out.push('\n');
        if let Ok(rd) = std::fs::read_dir(&d) {
            todo.extend(
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

fn remove_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    // The test cleans up after itself as an outside party would: thaw, kill what it started, rmdir.
    let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
    let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        // Only tasks this test started live here.
        if let Ok(p) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            let me = std::process::id() as i32;
            for pid in p.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                if pid != me {
                    // SAFETY: kill(2) has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        self.kill_children();
        let _ = self.cmd().args(["restore", "--force"]).output();
        for r in &self.layout.roots {
            remove_tree(&r.root_dir);
        }
        if let Some(mut a) = self.anchor.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }
}

/// A free loopback address for an agent to listen on.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `GET http://ADDR/PATH`: its status and body; None when nothing answered.
pub fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut r = ureq::get(&format!("http://{addr}{path}"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .ok()?;
    let code = r.status().as_u16();
    Some((code, r.body_mut().read_to_string().ok()?))
}

/// The agent's `/state` as JSON (Null when it does not answer).
pub fn state(addr: &str) -> serde_json::Value {
    get(addr, "/state")
        .and_then(|(_, b)| serde_json::from_str(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The reasons of the last plan that wrote something, from a `/state` reply.
pub fn last_plan_reasons(v: &serde_json::Value) -> Vec<String> {
    v["last_plan"]["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["reason"].as_str().map(str::to_string))
        .collect()
}

/// Polls `f` every 20 ms until it holds; panics naming `what` after `secs`.
pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {secs}s waiting for {what}");
}

/// Waits `secs` at most for `c` to exit; its status. Panics naming `what` past that.
pub fn wait_exit(c: &mut Child, secs: u64, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = c.try_wait().expect("try_wait") {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} within {secs}s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tidal agent` with config `cfg`, written to the state dir, on this test's root.
pub fn start_agent(t: &TestRoot, cfg: &str, addr: &str) -> Child {
    t.spawn_agent(t.agent_cmd(&t.write_config(cfg), addr), addr)
}

/// SIGTERM to an agent this test started, then waits for it.
pub fn stop(mut c: Child) {
    // SAFETY: kill(2) on a process this test started.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let _ = c.wait();
}

impl TestRoot {
    /// Writes an agent config to `agent.yaml` in the state dir; returns its path.
    pub fn write_config(&self, cfg: &str) -> PathBuf {
        let p = self.state.path().join("agent.yaml");
        std::fs::write(&p, cfg).unwrap();
        p
    }

    /// `tidal agent --config CFG --listen ADDR` on this root, its log in the state dir's `agent.log`.
    pub fn agent_cmd(&self, cfg: &Path, addr: &str) -> Command {
        let log = std::fs::File::create(self.state.path().join("agent.log")).unwrap();
        let mut c = self.cmd();
        c.args(["agent", "--config"])
            .arg(cfg)
            .args(["--listen", addr])
            .stdout(Stdio::null())
            .stderr(log);
        c
    }

    /// Spawns an agent command and waits for its first tick (60 s at most). It answers `/healthz`
    /// before the BPF program loads (slow on an emulated CPU): the tests' deadlines time what the
    /// agent does, from its first tick.
    pub fn spawn_agent(&self, mut cmd: Command, addr: &str) -> Child {
        let mut child = cmd.spawn().unwrap();
        wait_for("the agent's first tick", 60, || {
            // An agent that refused its config has exited: say why rather than wait it out.
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "the agent exited ({st}) before its first tick:\n{}",
                    self.agent_log()
                );
            }
            state(addr)["ticks"].as_u64().unwrap_or(0) > 0
        });
        child
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("agent.log")).unwrap_or_default()
    }
}

/// Whether this process may lower `oom_score_adj` (CAP_SYS_RESOURCE; the VM harness has it).
pub fn can_lower() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|c| c & (1 << 24) != 0)
}
