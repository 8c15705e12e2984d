//! CLOCK_MONOTONIC readings shared between the bench's processes: the load generator stamps each
//! request with its intended send time on this clock, so the server can time requests as the
//! client does, and the bench can place another process's instants on its own timeline.

use std::time::{Duration, Instant};

/// CLOCK_MONOTONIC in ns: the clock `Instant` uses, comparable across processes.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The `Instant` of a CLOCK_MONOTONIC reading taken in another process.
pub fn instant_of(mono: u64) -> Instant {
    let (now_i, now_m) = (Instant::now(), mono_ns());
    now_i
        .checked_sub(Duration::from_nanos(now_m.saturating_sub(mono)))
        .unwrap_or(now_i)
}
