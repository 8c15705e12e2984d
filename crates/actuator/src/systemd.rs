//! systemd's D-Bus API, for the one thing tidal asks of it: a delegated transient scope that holds the
//! tidal root on a pure v2 host (`StartTransientUnit` with `Delegate=yes`, as `systemd-run --scope`
//! does). systemd then never prunes or re-applies anything below the scope's own cgroup, and removes
//! the scope once nothing runs in it. As root tidal talks to systemd's private socket
//! (`/run/systemd/private`, no bus daemon needed), else to the system bus.

use crate::error::ActError;
use zbus::blocking::Connection;
use zbus::zvariant::Value;

pub const PRIVATE_SOCKET: &str = "/run/systemd/private";
const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT_EXISTS: &str = "org.freedesktop.systemd1.UnitExists";

/// What was asked of systemd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRequest {
    pub unit: String,
    pub slice: String,
    pub pids: Vec<u32>,
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// systemd accepted the unit; the pids move into it as its start job runs.
    New,
    /// A unit of that name exists already (another tidal process started it).
    Exists,
}

fn sd(e: impl std::fmt::Display) -> ActError {
    ActError::Systemd(e.to_string())
}

/// Connects to systemd: its private socket as root, else the system bus.
pub fn connect() -> Result<Connection, ActError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 && std::path::Path::new(PRIVATE_SOCKET).exists() {
        let stream = std::os::unix::net::UnixStream::connect(PRIVATE_SOCKET)
            .map_err(|e| sd(format!("cannot connect to {PRIVATE_SOCKET}: {e}")))?;
        return connect_stream(stream);
    }
    Connection::system().map_err(|e| sd(format!("cannot reach the system bus: {e}")))
}

/// A peer-to-peer connection over an open socket (systemd's private socket, or a test's).
pub fn connect_stream(stream: std::os::unix::net::UnixStream) -> Result<Connection, ActError> {
    zbus::blocking::connection::Builder::async_io_unix_stream(stream)
        .p2p()
        .build()
        .map_err(|e| sd(format!("cannot open a connection to systemd: {e}")))
}

/// Asks systemd for a transient scope with `Delegate=yes` holding `pids`.
pub fn start_scope(conn: &Connection, req: &ScopeRequest) -> Result<Started, ActError> {
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
