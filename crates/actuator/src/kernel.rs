//! The primitives that change the kernel: write a cgroup file (or a task's `/proc` setting), make and
//! remove a group directory, tag one with an extended attribute, signal a task. Private to this crate, so every change goes through [`crate::Actuator`] (or
//! `restore`, which the actuator crate owns): nothing else in tidal can reach these.

use std::io::Write;
use std::path::Path;
use tidal_cgroupfs::CgroupError;

/// One `write(2)` of the whole value, as cgroupfs expects; files that take one device per write
/// (`io.max`, `blkio.throttle.*`, `io.cost.qos`) get one write(2) per line.
pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    // O_TRUNC is harmless on cgroupfs and keeps fake trees (tests) byte-exact.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    let per_line = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(tidal_cgroupfs::iolimit::line_per_write);
    if !per_line {
        // An empty buffer makes no write(2) at all, and O_TRUNC does nothing on cgroupfs: an empty
        // value (an original `cpuset.cpus` of "") is written as a bare newline, which the kernel
        // reads as empty.
        let bytes: &[u8] = if value.is_empty() {
            b"\n"
        } else {
            value.as_bytes()
        };
        return f.write_all(bytes).map_err(err);
    }
    // Every line is tried: one device the kernel refuses must not keep the others unset. The first
    // failure is returned.
    let mut first = None;
    for line in value.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Err(source) = f.write_all(format!("{line}\n").as_bytes()) {
            first.get_or_insert(CgroupError::Write {
                path: path.to_path_buf(),
                value: line.to_string(),
                source,
            });
        }
    }
    first.map_or(Ok(()), Err)
}

/// Sets an extended attribute on a group directory (cgroupfs keeps `trusted.*` ones).
pub(crate) fn set_xattr(dir: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let n = std::ffi::CString::new(name)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: both strings are NUL-terminated and live across the call; value is a valid slice.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub(crate) fn make_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir(dir)
}

/// One rmdir, no waiting: a busy group (tasks, children, or a task that just exited and is not yet
/// reaped) is the caller's to retry later.
pub(crate) fn remove_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::remove_dir(dir)
}

/// rmdir, retrying EBUSY for up to `tries` × 20 ms: only for commands that may wait (restore, setup
/// rollback), never inside the agent's tick.
pub(crate) fn remove_dir_waiting(dir: &Path, tries: u32) -> std::io::Result<()> {
    let mut n = 0;
    loop {
        match remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && n < tries => {
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// An emptied systemd scope's own cgroup: systemd removes it when the scope stops, but gives up
/// (and never tries again) if a sub-group is still there at that moment, as when the scope empties
/// while its sub-groups are being removed. Waits `grace` for systemd, then removes what it left;
/// gone either way is success, and a scope that still holds anything stays (EBUSY).
pub(crate) fn reap_scope_dir(dir: &Path, grace: std::time::Duration) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + grace;
    while dir.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    match remove_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// A process pinned by a descriptor: its pid cannot name another process while it is held.
pub(crate) struct PidFd(std::os::fd::OwnedFd);

/// Pins `pid`: None if it is gone; ENOSYS on kernels before 5.3.
pub(crate) fn pidfd_open(pid: i32) -> std::io::Result<Option<PidFd>> {
    if pid <= 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    // SAFETY: a descriptor the kernel just returned, owned by nothing else.
    Ok(Some(PidFd(unsafe {
        std::os::fd::FromRawFd::from_raw_fd(fd as i32)
    })))
}

/// Sends `sig` to a pinned process. ESRCH (it has exited) is success.
pub(crate) fn pidfd_signal(p: &PidFd, sig: i32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid pidfd; no siginfo (null) and no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            p.0.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    gone_is_done(r)
}

/// A signal call's result: ESRCH (the process is already gone) is success.
fn gone_is_done(r: impl Into<i64>) -> std::io::Result<()> {
    if r.into() == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Sends `sig` to `pid`. ESRCH (already gone) is success.
pub(crate) fn signal(pid: i32, sig: i32) -> std::io::Result<()> {
    if pid <= 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill(2) has no memory-safety preconditions; pid > 0 names one process.
    let r = unsafe { libc::kill(pid, sig) };
    gone_is_done(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_empty_value_is_really_written() {
        // /dev/full refuses every write: an empty value that made no write(2) would pass.
        let e = write_file(Path::new("/dev/full"), "").unwrap_err();
        assert!(e.to_string().contains("/dev/full"), "{e}");
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("cpuset.cpus");
        std::fs::write(&f, "0-1\n").unwrap();
        write_file(&f, "").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap().trim(), "");
    }

    #[test]
    fn fake_fs_a_scope_dir_systemd_removes_in_time_is_left_to_it() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("x.scope");
        std::fs::create_dir(&d).unwrap();
        let d2 = d.clone();
        let systemd = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::remove_dir(&d2).unwrap();
        });
        reap_scope_dir(&d, Duration::from_secs(10)).unwrap();
        systemd.join().unwrap();
        assert!(!d.exists());
    }

    #[test]
    fn fake_fs_an_empty_scope_dir_left_after_the_grace_is_removed_and_a_full_one_stays() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("x.scope");
        std::fs::create_dir(&d).unwrap();
        reap_scope_dir(&d, Duration::from_millis(40)).unwrap();
        assert!(!d.exists());
        // Gone before the call: nothing to do.
        reap_scope_dir(&d, Duration::from_millis(40)).unwrap();
        // Something still in it (a sub-group here): it stays, and the error says so.
        std::fs::create_dir_all(d.join("sub")).unwrap();
        assert!(reap_scope_dir(&d, Duration::from_millis(40)).is_err());
        assert!(d.join("sub").exists());
    }
}
