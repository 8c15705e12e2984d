//! One lock per tidal root, held by the agent for its whole life: a second agent on the same root
//! refuses to start, and `restore` refuses while an agent runs (or, with `--force`, stops it first).
//! The lock is an `flock` on a small file named after the root, in `/run/tidal/locks` (as root) or
//! the state dir, so agents with different state dirs still meet. The kernel drops it when its holder
//! dies, even by SIGKILL.

use crate::error::ActError;
use crate::kernel;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tidal_cgroupfs::Layout;

const RUN_DIR: &str = "/run/tidal/locks";

#[derive(Debug)]
pub struct RootLock {
    _file: File,
    path: PathBuf,
}

fn lerr(path: &Path) -> impl FnOnce(std::io::Error) -> ActError + '_ {
    move |source| ActError::Lock {
        path: path.to_path_buf(),
        source,
    }
}

/// FNV-1a: a stable short name for a root path.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn root_of(layout: &Layout) -> PathBuf {
    layout
        .primary()
        .map(|r| r.root_dir.clone())
        .unwrap_or_default()
}

impl RootLock {
    /// The lock file of `layout`'s root.
    pub fn path_for(layout: &Layout, state_dir: &Path) -> PathBuf {
        let name = format!("root-{:016x}.lock", fnv(&root_of(layout).to_string_lossy()));
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        if as_root
            && std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(RUN_DIR)
                .is_ok()
        {
            return Path::new(RUN_DIR).join(name);
        }
        state_dir.join(name)
    }

    fn open(path: &Path) -> Result<File, ActError> {
        if let Some(d) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(lerr(d))?;
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(lerr(path))
    }

    /// Takes the lock without waiting; `Locked` names the holder if another process has it.
    pub fn acquire(layout: &Layout, state_dir: &Path) -> Result<RootLock, ActError> {
        let path = Self::path_for(layout, state_dir);
        let mut f = Self::open(&path)?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(ActError::Locked {
                    root: root_of(layout),
                    pid: holder_pid(&path).map_or("unknown".into(), |p| p.to_string()),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(lerr(&path)(e)),
        }
        f.set_len(0).map_err(lerr(&path))?;
        writeln!(f, "{}\n{}", std::process::id(), root_of(layout).display())
            .map_err(lerr(&path))?;
        Ok(RootLock { _file: f, path })
    }

    /// Takes the lock, first stopping its holder with SIGTERM (it gives offline work its CPUs back
    /// and thaws it on the way out) and waiting up to `wait` for it to exit.
    pub fn acquire_stopping_holder(
        layout: &Layout,
        state_dir: &Path,
        wait: Duration,
    ) -> Result<RootLock, ActError> {
        match Self::acquire(layout, state_dir) {
            Err(ActError::Locked { .. }) => {}
            other => return other,
        }
        let path = Self::path_for(layout, state_dir);
        let deadline = Instant::now() + wait;
        let mut stopped = false;
        loop {
            if !stopped {
                if let Some(pid) = live_holder(&path) {
                    tracing::info!(
                        "stopping the agent (pid {pid}) that holds {}",
                        root_of(layout).display()
                    );
                    kernel::signal(pid, libc::SIGTERM)
                        .map_err(|source| ActError::Signal { pid, source })?;
                    stopped = true;
                }
            }
            match Self::acquire(layout, state_dir) {
                Err(ActError::Locked { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                other => return other,
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the holder says it has released everything (its pid), for `tidal release`.
    pub fn released_marker(lock: &Path) -> PathBuf {
        lock.with_extension("released")
    }

    /// Marks this holder as released (offline work has everything back).
    pub fn mark_released(&self) -> std::io::Result<()> {
        std::fs::write(
            Self::released_marker(&self.path),
            format!("{}\n", std::process::id()),
        )
    }

    /// Sends `sig` to the process holding the root's lock; its pid. Fails if no process holds it.
    pub fn signal_holder(layout: &Layout, state_dir: &Path, sig: i32) -> Result<i32, ActError> {
        let path = Self::path_for(layout, state_dir);
        let pid = match Self::acquire(layout, state_dir) {
            Ok(_free) => {
                return Err(ActError::Root(format!(
                    "no agent holds {} (nothing to release)",
                    root_of(layout).display()
                )))
            }
            Err(ActError::Locked { .. }) => {
                // A new holder writes its pid just after taking the lock: give it a moment.
                let deadline = Instant::now() + Duration::from_secs(1);
                loop {
                    match live_holder(&path) {
                        Some(p) => break p,
                        None if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        None => {
                            return Err(ActError::Root(format!(
                                "the lock {} names no pid that holds it",
                                path.display()
                            )))
                        }
                    }
                }
            }
            Err(e) => return Err(e),
        };
        kernel::signal(pid, sig).map_err(|source| ActError::Signal { pid, source })?;
        Ok(pid)
    }
}

/// Kept by `tidal run` while it sets a workload up (shared: runs do not wait on each other) and by
/// `restore` (exclusive), so a restore never removes a level group between a run's making sure of
/// it and its workload's group appearing under it (the run's journal cache would then skip the
/// group it makes again, and it would outlive every restore).
#[derive(Debug)]
pub struct SetupLock {
    _file: File,
}

impl SetupLock {
    /// How long either side waits for the other by default: a run's set-up or a restore takes a
    /// fraction of it.
    pub const WAIT: Duration = Duration::from_secs(30);

    /// A run's side: waits up to `wait` for a restore to finish.
    pub fn shared(layout: &Layout, state_dir: &Path, wait: Duration) -> Result<Self, ActError> {
        Self::take(layout, state_dir, wait, true)
    }

    /// A restore's side: waits up to `wait` for runs setting up to finish.
    pub fn exclusive(layout: &Layout, state_dir: &Path, wait: Duration) -> Result<Self, ActError> {
        Self::take(layout, state_dir, wait, false)
    }

    fn take(
        layout: &Layout,
        state_dir: &Path,
        wait: Duration,
        shared: bool,
    ) -> Result<Self, ActError> {
        let path = RootLock::path_for(layout, state_dir).with_extension("setup");
        let f = RootLock::open(&path)?;
        let deadline = Instant::now() + wait;
        let other = if shared {
            "a restore"
        } else {
            "`tidal run` set-ups"
        };
        let mut said = false;
        loop {
            let r = if shared {
                f.try_lock_shared()
            } else {
                f.try_lock()
            };
            match r {
                Ok(()) => return Ok(SetupLock { _file: f }),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    if !said {
                        said = true;
                        tracing::info!(
                            "waiting for {other} on {} to finish (up to {} s)",
                            root_of(layout).display(),
                            wait.as_secs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(ActError::SetupBusy {
                        root: root_of(layout),
                        path,
                        by: other,
                        waited_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    })
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(lerr(&path)(e)),
            }
        }
    }
}

/// Whether the kernel shows `pid` holding an flock on `path` (`/proc/locks`: "1: FLOCK ADVISORY
/// WRITE PID MAJ:MIN:INODE 0 EOF", device numbers in hex; waiters' lines carry "->").
fn holds(pid: i32, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(meta), Ok(locks)) = (
        std::fs::metadata(path),
        std::fs::read_to_string("/proc/locks"),
    ) else {
        return false;
    };
    let dev = meta.dev();
    let want = (
        u64::from(libc::major(dev)),
        u64::from(libc::minor(dev)),
        meta.ino(),
    );
    let found = locks_held(&locks, pid).any(|id| id == want);
    found
}

/// The (major, minor, inode) of each flock `pid` holds in a `/proc/locks` text.
fn locks_held(text: &str, pid: i32) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
    text.lines().filter_map(move |l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(1) != Some(&"FLOCK") || f.get(4)?.parse::<i32>().ok()? != pid {
            return None;
        }
        let mut id = f.get(5)?.split(':');
        let major = u64::from_str_radix(id.next()?, 16).ok()?;
        let minor = u64::from_str_radix(id.next()?, 16).ok()?;
        let ino = id.next()?.parse().ok()?;
        Some((major, minor, ino))
    })
}

/// The pid in a lock file, if the kernel shows it holding the lock: a new holder writes its pid
/// just after taking it, so until then the file may name an old holder, or a process that reused
/// its pid.
fn live_holder(path: &Path) -> Option<i32> {
    holder_pid(path).filter(|p| holds(*p, path))
}

/// The pid written in a lock file by its holder.
fn holder_pid(path: &Path) -> Option<i32> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    s.lines()
        .next()?
        .trim()
        .parse()
        .ok()
        .filter(|p: &i32| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_cgroupfs::mountinfo::{parse_mountinfo, parse_proc_cgroup};
    use tidal_cgroupfs::{Hierarchies, Host, RootSpec};

    fn layout(root: &str) -> Layout {
        let h = Hierarchies::from_parts(
            &parse_mountinfo("1 1 0:1 / /nonexistent/cg rw - cgroup2 cgroup2 rw\n"),
            &parse_proc_cgroup("0::/\n"),
            |_| vec![],
        );
        Layout::new(h, &RootSpec::Pinned(root.into()), Host::default())
    }

    #[test]
    fn a_second_holder_is_refused_and_named() {
        let d = tempfile::tempdir().unwrap();
        let l = layout(&format!("/lock-test-{}", std::process::id()));
        let held = RootLock::acquire(&l, d.path()).unwrap();
        // flock is per open file description: a second open in this process conflicts too.
        let e = RootLock::acquire(&l, d.path()).unwrap_err().to_string();
        assert!(e.contains(&std::process::id().to_string()), "{e}");
        assert!(e.contains("lock-test"), "{e}");
        // Another root has its own lock.
        let other = layout(&format!("/lock-test-other-{}", std::process::id()));
        let _o = RootLock::acquire(&other, d.path()).unwrap();
        drop(held);
        assert!(RootLock::acquire(&l, d.path()).is_ok());
    }

    #[test]
    fn proc_locks_lines_give_a_pid_s_flocks_only() {
        let text = "1: FLOCK  ADVISORY  WRITE 25106 fe:00:10010694 0 EOF\n\
            1: -> FLOCK  ADVISORY  WRITE 25107 fe:00:10010694 0 EOF\n\
            2: POSIX  ADVISORY  WRITE 25106 fe:00:77 0 EOF\n\
            3: FLOCK  ADVISORY  READ 25106 103:1a:5 0 EOF\n\
            4: FLOCK  ADVISORY  WRITE 9 00:1a:x 0 EOF\n";
        let held: Vec<_> = locks_held(text, 25106).collect();
        assert_eq!(held, [(0xfe, 0, 10010694), (0x103, 0x1a, 5)]);
        assert_eq!(locks_held(text, 25107).count(), 0, "a waiter holds nothing");
        assert_eq!(locks_held(text, 9).count(), 0);
    }

    #[test]
    fn only_a_pid_the_kernel_shows_holding_the_lock_is_signalled() {
        let d = tempfile::tempdir().unwrap();
        let l = layout(&format!("/holder-test-{}", std::process::id()));
        let held = RootLock::acquire(&l, d.path()).unwrap();
        assert!(holds(std::process::id() as i32, held.path()));
        // A stale pid in the file (a process that holds nothing) is not signalled.
        let mut bystander = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = bystander.id() as i32;
        std::fs::write(held.path(), format!("{pid}\n")).unwrap();
        assert!(!holds(pid, held.path()));
        let e = RootLock::signal_holder(&l, d.path(), libc::SIGTERM)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no pid that holds it"), "{e}");
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "the bystander was signalled"
        );
        let _ = bystander.kill();
        let _ = bystander.wait();
    }

    #[test]
    fn runs_set_up_together_and_a_restore_waits_for_them_and_they_for_it() {
        let d = tempfile::tempdir().unwrap();
        let l = layout(&format!("/setup-test-{}", std::process::id()));
        let short = Duration::from_millis(60);
        let a = SetupLock::shared(&l, d.path(), short).unwrap();
        let b = SetupLock::shared(&l, d.path(), short).unwrap();
        let e = SetupLock::exclusive(&l, d.path(), short)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tidal run") && e.contains("setup-test"), "{e}");
        drop(a);
        assert!(SetupLock::exclusive(&l, d.path(), short).is_err());
        drop(b);
        let r = SetupLock::exclusive(&l, d.path(), short).unwrap();
        let e = SetupLock::shared(&l, d.path(), short)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a restore"), "{e}");
        // A holder that lets go within the wait is waited for.
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(r);
        });
        assert!(SetupLock::shared(&l, d.path(), Duration::from_secs(10)).is_ok());
        t.join().unwrap();
    }
}
