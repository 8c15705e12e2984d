//! Shared helpers for tests on real cgroups: a unique tidal root nested under this test process's own
//! cgroup in every hierarchy, removed afterwards even when the test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tidal_cgroupfs::{Layout, RootSpec};

/// Set in CI: a test that cannot use real cgroups fails instead of skipping.
pub const REQUIRE_ENV: &str = "TIDAL_TEST_REQUIRE_CGROUPS";

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn tidal_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tidal")
}

/// True if this process may create cgroups; otherwise skips (or fails under CI).
pub fn cgroups_usable(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let writable = Layout::discover(&RootSpec::Relative("probe".into()))
        .ok()
        .and_then(|l| l.primary().map(|r| r.base_dir()))
        .is_some_and(|d| {
            let c = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()).unwrap_or_default();
            // SAFETY: c is a valid NUL-terminated path.
            unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
        });
    if root && writable {
        return true;
    }
    if std::env::var_os(REQUIRE_ENV).is_some() {
        panic!("{test}: needs root and a writable cgroupfs, and {REQUIRE_ENV} is set");
    }
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
}

impl TestRoot {
    pub fn new(tag: &str) -> TestRoot {
        let name = format!(
            "tidal-test-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            tag
        );
        let layout = Layout::discover(&RootSpec::Relative(name.clone())).expect("discover cgroups");
        TestRoot {
            name,
            state: tempfile::tempdir().expect("tempdir"),
            layout,
            children: Vec::new(),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(tidal_bin());
        c.env("TIDAL_ROOT", &self.name)
            .env("TIDAL_STATE_DIR", self.state.path())
            .env_remove("TIDAL_LOG");
        c
    }

    pub fn tidal(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run tidal")
    }

    /// Starts `tidal <args>` in the background; it is killed when the test root is dropped.
    pub fn spawn(&mut self, args: &[&str]) -> u32 {
        let child = self
            .cmd()
            .args(args)
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

    /// Every directory of the test root that still exists, in any hierarchy.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        self.layout
            .roots
            .iter()
            .map(|r| r.root_dir.clone())
            .filter(|d| d.exists())
            .collect()
    }
}

/// Waits until `pid`'s cpu cgroup path ends with `suffix`; returns the path.
pub fn wait_cgroup(pid: u32, suffix: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            if let Some(l) = t.lines().find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|x| x == "cpu"))
            }) {
                let path = l.splitn(3, ':').nth(2).unwrap_or("").to_string();
                if path.ends_with(suffix) {
                    return Some(path);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn remove_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    // Thaw first: a frozen group's tasks cannot die.
    let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
    let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        // Only tasks this test started live here.
        if let Ok(p) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in p.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        self.kill_children();
        let _ = self.cmd().arg("restore").output();
        for r in &self.layout.roots {
            remove_tree(&r.root_dir);
        }
    }
}
