//! `tidal release`: asks the agent that holds the root to give offline work every CPU back, thaw
//! it and lift its caps (SIGUSR1), and waits until it says it has. The agent then stays paused
//! until it is stopped. A DaemonSet's preStop hook runs this, so deleting the DaemonSet leaves no
//! pod pinned, capped or frozen even before SIGTERM arrives.

use crate::cli::{Global, ReleaseArgs};
use crate::exit::{self, fail};
use std::time::{Duration, Instant};
use tidal_actuator::RootLock;

pub fn main(g: &Global, a: &ReleaseArgs) -> i32 {
    let layout = match g.layout() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let state_dir = g.state_dir();
    let marker = RootLock::released_marker(&RootLock::path_for(&layout, &state_dir));
    let _ = std::fs::remove_file(&marker);
    let pid = match RootLock::signal_holder(&layout, &state_dir, libc::SIGUSR1) {
        Ok(p) => p,
        Err(e) => return exit::act(&e),
    };
    let deadline = Instant::now() + Duration::from_secs(a.wait);
    while Instant::now() < deadline {
        let said = std::fs::read_to_string(&marker).unwrap_or_default();
        if said.trim() == pid.to_string() {
            println!(
                "released: offline work has every CPU back, thawed and uncapped; the agent (pid {pid}) stays paused until it stops"
            );
            return 0;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    exit::failed(format!(
        "the agent (pid {pid}) did not confirm the release within {}s",
        a.wait
    ))
}
