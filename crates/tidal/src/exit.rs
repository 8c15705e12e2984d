//! Exit codes, one-line fatal errors and logging set-up shared by the subcommands.
//!
//! 2: usage, configuration or environment errors (bad input, not root, cgroupfs or state dir not
//! writable, a root another agent holds); 1: a failure while doing the work.

use tidal_actuator::ActError;

pub const USAGE: i32 = 2;
pub const FAILURE: i32 = 1;

pub fn init_logging(verbose: u8, quiet_default: bool) {
    let default = match (verbose, quiet_default) {
        (0, true) => "warn",
        (0, false) => "info",
        (1, _) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a journal or a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Prints a one-line error; returns the usage exit code.
pub fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("tidal: {msg}");
    USAGE
}

/// Prints a one-line error; returns the runtime-failure exit code.
pub fn failed(msg: impl std::fmt::Display) -> i32 {
    eprintln!("tidal: {msg}");
    FAILURE
}

/// Prints an actuator error with its hint and returns the code its kind calls for.
pub fn act(e: &ActError) -> i32 {
    eprintln!("tidal: {}", describe(e));
    if is_environment(e) {
        USAGE
    } else {
        FAILURE
    }
}

/// Errors that mean "cannot start here" rather than "failed while working".
fn is_environment(e: &ActError) -> bool {
    e.is_permission()
        || matches!(
            e,
            ActError::Locked { .. }
                | ActError::SetupBusy { .. }
                | ActError::Root(_)
                | ActError::Journal { .. }
                | ActError::Lock { .. }
        )
}

/// A hint for errors that mean "not allowed to write here".
pub fn describe(e: &ActError) -> String {
    if e.is_permission() {
        format!("{e} (tidal needs root, or a delegated cgroup and --root/--state-dir it can write)")
    } else {
        e.to_string()
    }
}
