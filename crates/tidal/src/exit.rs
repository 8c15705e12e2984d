//! Exit codes, one-line fatal errors and logging set-up shared by the subcommands.

use tidal_actuator::ActError;

/// Usage or environment errors (bad input, not root, cgroupfs not writable).
pub const USAGE: i32 = 2;

pub fn init_logging(verbose: u8, quiet_default: bool) {
    let default = match (verbose, quiet_default) {
        (0, true) => "warn",
        (0, false) => "info",
        (1, _) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Prints a one-line error and returns the exit code for it.
pub fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("tidal: {msg}");
    USAGE
}

/// A hint for errors that mean "not allowed to write here".
pub fn describe(e: &ActError) -> String {
    if e.is_permission() {
        format!("{e} (tidal needs root, or a delegated cgroup and --root/--state-dir it can write)")
    } else {
        e.to_string()
    }
}
