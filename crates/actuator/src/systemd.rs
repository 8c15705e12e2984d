//! systemd, for the one thing tidal asks of it: a delegated transient scope that holds the tidal root
//! on a pure v2 host (`StartTransientUnit` with `Delegate=yes`, as `systemd-run --scope` does).
//! systemd then never prunes or re-applies anything below the scope's own cgroup, and removes the
//! scope once nothing runs in it.
//!
//! tidal asks over the system bus (D-Bus, through zbus), passing the pid that is to hold the scope.
//! Where no bus daemon runs, it falls back to `systemd-run --scope`, which reaches systemd over its
//! private socket: systemd-run starts the scope around a placeholder process, the caller moves its
//! own process in, and the placeholder goes. (zbus cannot use the private socket itself: systemd
//! signs its replies there with a well-known name where D-Bus expects a unique one.)

use crate::error::ActError;
use std::process::{Child, Command, Stdio};
use zbus::blocking::Connection;
use zbus::zvariant::Value;

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT_EXISTS: &str = "org.freedesktop.systemd1.UnitExists";
/// Forces how tidal reaches systemd: `dbus` or `systemd-run` (default: D-Bus, else systemd-run).
pub const API_ENV: &str = "TIDAL_SYSTEMD_API";

/// What is asked of systemd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRequest {
    pub unit: String,
    pub slice: String,
    pub pids: Vec<u32>,
    pub description: String,
}

#[derive(Debug)]
pub enum Started {
    /// systemd accepted the unit with the given pids; they move in as its start job runs.
    New,
    /// The unit was running: systemd moved the pids into its `anchor` sub-group, so it cannot
    /// stop under the caller.
    Attached,
    /// A unit of that name exists already and the pids could not be handed to systemd (no bus):
    /// the caller moves them itself.
    Exists,
    /// Started through systemd-run around this placeholder, which the caller replaces.
    Placeholder(Child),
}

fn sd(e: impl std::fmt::Display) -> ActError {
    ActError::Systemd(e.to_string())
}

/// Puts `req.pids` into the scope: starts it if it is not running, else attaches them to its
/// `subgroup` (the scope may be stopping because its last workload just ended: then it waits for it
/// to go and starts it afresh). Over D-Bus if a system bus answers, else through `systemd-run`.
pub fn join_scope(
    req: &ScopeRequest,
    subgroup: &str,
    scope_procs: &std::path::Path,
) -> Result<Started, ActError> {
    let api = std::env::var(API_ENV).unwrap_or_default();
    if api != "systemd-run" {
        match Connection::system() {
            Ok(c) => return join_scope_on(&c, req, subgroup),
            Err(e) if api == "dbus" => return Err(sd(format!("cannot reach the system bus: {e}"))),
            Err(e) => tracing::info!(
                "no system bus ({e}): starting {} with systemd-run",
                req.unit
            ),
        }
    }
    start_scope_with_systemd_run(req, scope_procs)
}

/// [`join_scope`] on a given connection; gives up after about 5 s of a scope that keeps stopping.
pub fn join_scope_on(
    conn: &Connection,
    req: &ScopeRequest,
    subgroup: &str,
) -> Result<Started, ActError> {
    let mut last = None;
    for _ in 0..50 {
        match start_scope_on(conn, req)? {
            Started::Exists => match attach_on(conn, &req.unit, subgroup, &req.pids) {
                Ok(()) => return Ok(Started::Attached),
                // Stopping, or gone between the two calls: try again.
                Err(e) => last = Some(e),
            },
            other => return Ok(other),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(last.unwrap_or_else(|| sd(format!("{} kept stopping", req.unit))))
}

/// `AttachProcessesToUnit(unit, subgroup, pids)`: systemd moves the pids into a sub-group of a
/// running delegated unit (creating it if needed).
pub fn attach_on(
    conn: &Connection,
    unit: &str,
    subgroup: &str,
    pids: &[u32],
) -> Result<(), ActError> {
    conn.call_method(
        Some(DEST),
        PATH,
        Some(MANAGER),
        "AttachProcessesToUnit",
        &(unit, subgroup, pids.to_vec()),
    )
    .map(|_| ())
    .map_err(|e| sd(format!("AttachProcessesToUnit {unit} {subgroup}: {e}")))
}

/// A connection over an open socket (a test's peer speaking systemd's Manager interface).
pub fn connect_stream(stream: std::os::unix::net::UnixStream) -> Result<Connection, ActError> {
    zbus::blocking::connection::Builder::async_io_unix_stream(stream)
        .p2p()
        .build()
        .map_err(|e| sd(format!("cannot open a connection to systemd: {e}")))
}

/// `StartTransientUnit(name, "fail", properties, [])` on `conn`.
pub fn start_scope_on(conn: &Connection, req: &ScopeRequest) -> Result<Started, ActError> {
    let props: Vec<(&str, Value)> = vec![
        ("Description", Value::from(req.description.as_str())),
        ("Slice", Value::from(req.slice.as_str())),
        ("Delegate", Value::from(true)),
        ("PIDs", Value::from(req.pids.clone())),
        // Gone from systemd's memory once stopped, even if it failed: a later run starts it afresh.
        ("CollectMode", Value::from("inactive-or-failed")),
    ];
    let aux: Vec<(&str, Vec<(&str, Value)>)> = Vec::new();
    match conn.call_method(
        Some(DEST),
        PATH,
        Some(MANAGER),
        "StartTransientUnit",
        &(req.unit.as_str(), "fail", props, aux),
    ) {
        Ok(_) => Ok(Started::New),
        Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == UNIT_EXISTS => {
            Ok(Started::Exists)
        }
        Err(e) => Err(sd(format!("StartTransientUnit {}: {e}", req.unit))),
    }
}

/// `systemd-run --scope` around a placeholder `sleep`; the caller moves its pids in and stops it.
/// Waits (≤ 5 s) until the placeholder is in the scope (`scope_procs`) or systemd-run gave up.
fn start_scope_with_systemd_run(
    req: &ScopeRequest,
    scope_procs: &std::path::Path,
) -> Result<Started, ActError> {
    let mut cmd = Command::new("systemd-run");
    cmd.args([
        "--scope",
        "--quiet",
        "--collect",
        "--unit",
        &req.unit,
        "--slice",
        &req.slice,
        "--description",
        &req.description,
        "-p",
        "Delegate=yes",
        "--",
        "sleep",
        "2147483647",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| sd(format!("cannot run systemd-run: {e}")))?;
    // systemd-run execs the placeholder once the scope is up; if it exits, it failed (or the unit
    // exists already).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let placed = |pid: u32| {
        std::fs::read_to_string(scope_procs)
            .is_ok_and(|t| t.lines().any(|l| l.trim() == pid.to_string()))
    };
    loop {
        match child.try_wait() {
            Ok(None) if placed(child.id()) => return Ok(Started::Placeholder(child)),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => break finish_systemd_run(child, other, req),
        }
    }
}

fn finish_systemd_run(
    mut child: Child,
    waited: std::io::Result<Option<std::process::ExitStatus>>,
    req: &ScopeRequest,
) -> Result<Started, ActError> {
    match waited {
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(sd(format!(
                "systemd-run did not put its placeholder into {} within 5 s",
                req.unit
            )))
        }
        Ok(Some(status)) => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            if err.contains("already exists") {
                Ok(Started::Exists)
            } else {
                Err(sd(format!(
                    "systemd-run --scope --unit {} failed ({status}): {}",
                    req.unit,
                    err.trim()
                )))
            }
        }
        Err(e) => Err(sd(format!("systemd-run: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use zbus::zvariant::OwnedValue;

    /// systemd's error names, as PID 1 replies them.
    #[derive(Debug, zbus::DBusError)]
    #[zbus(prefix = "org.freedesktop.systemd1")]
    enum SdError {
        #[zbus(error)]
        ZBus(zbus::Error),
        UnitExists(String),
    }

    /// A stand-in for PID 1's Manager interface, answering as systemd does: the first call creates
    /// the unit, the second is refused with `UnitExists`.
    /// (unit, mode, properties) of each StartTransientUnit.
    type Calls = Arc<Mutex<Vec<(String, String, Vec<(String, OwnedValue)>)>>>;
    /// (unit, sub-group, pids) of each AttachProcessesToUnit.
    type Attached = Arc<Mutex<Vec<(String, String, Vec<u32>)>>>;

    struct FakeManager {
        calls: Calls,
        attached: Attached,
    }

    #[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
    impl FakeManager {
        fn start_transient_unit(
            &self,
            name: String,
            mode: String,
            properties: Vec<(String, OwnedValue)>,
            _aux: Vec<(String, Vec<(String, OwnedValue)>)>,
        ) -> Result<zbus::zvariant::OwnedObjectPath, SdError> {
            let mut calls = self.calls.lock().unwrap();
            let exists = calls.iter().any(|(n, _, _)| *n == name);
            calls.push((name.clone(), mode, properties));
            if exists {
                return Err(SdError::UnitExists(format!("Unit {name} already exists.")));
            }
            Ok(
                zbus::zvariant::OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/7")
                    .unwrap(),
            )
        }

        fn attach_processes_to_unit(
            &self,
            name: String,
            subgroup: String,
            pids: Vec<u32>,
        ) -> Result<(), SdError> {
            self.attached.lock().unwrap().push((name, subgroup, pids));
            Ok(())
        }
    }

    #[test]
    fn start_transient_unit_asks_for_a_delegated_scope_with_the_pids() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let attached = Arc::new(Mutex::new(Vec::new()));
        let guid = zbus::Guid::generate();
        let server_calls = Arc::clone(&calls);
        let server_attached = Arc::clone(&attached);
        let server = std::thread::spawn(move || {
            zbus::blocking::connection::Builder::async_io_unix_stream(b)
                .server(guid)
                .unwrap()
                .p2p()
                .serve_at(
                    PATH,
                    FakeManager {
                        calls: server_calls,
                        attached: server_attached,
                    },
                )
                .unwrap()
                .build()
                .unwrap()
        });
        let conn = connect_stream(a).unwrap();
        let _server = server.join().unwrap();
        let req = ScopeRequest {
            unit: "tidal.scope".into(),
            slice: "tidal.slice".into(),
            pids: vec![4242],
            description: "tidal workloads".into(),
        };
        assert!(matches!(
            join_scope_on(&conn, &req, "/anchor").unwrap(),
            Started::New
        ));
        // Running already: the pids are handed to systemd for the scope's anchor sub-group.
        assert!(matches!(
            join_scope_on(&conn, &req, "/anchor").unwrap(),
            Started::Attached
        ));
        assert_eq!(
            attached.lock().unwrap().as_slice(),
            &[("tidal.scope".to_string(), "/anchor".to_string(), vec![4242])]
        );
        let calls = calls.lock().unwrap();
        let (name, mode, props) = &calls[0];
        assert_eq!((name.as_str(), mode.as_str()), ("tidal.scope", "fail"));
        let get = |k: &str| props.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("Delegate").unwrap(), OwnedValue::from(true));
        assert_eq!(
            get("Slice").unwrap(),
            OwnedValue::try_from(Value::from("tidal.slice")).unwrap()
        );
        let pids: Vec<u32> = get("PIDs").unwrap().try_into().unwrap();
        assert_eq!(pids, vec![4242]);
    }
}
