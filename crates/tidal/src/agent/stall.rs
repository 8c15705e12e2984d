//! The stall guard: a thread, at real-time priority where the kernel allows it, that watches the
//! agent's loop come round (a heartbeat each round) and, when it has not for
//! `interference.stall_after`, freezes offline at once through the [`Brake`] the loop last armed.
//! Whatever stops the loop (its CPU taken by a scheduler fault, a read that hangs) stops every
//! signal with it; online is then protected the way the ladder's last step would. The tick after a
//! pull hands the stall to the ladder as a signal ([`Guard::take_pull`]), which takes the freeze
//! over and releases it like any step.

use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};
use tidal_actuator::Brake;
use tracing::{error, info, warn};

/// The lowest real-time priority: above every normal task, below the kernel's own RT threads.
const RT_PRIORITY: i32 = 1;

/// What the loop and the guard thread share.
struct Inner {
    started: Instant,
    /// When the loop last came round, in ms since `started` (0: not yet).
    beat_ms: AtomicU64,
    /// The limit, in ms (0: the guard does nothing).
    after_ms: AtomicU64,
    /// What to freeze; None while nothing is armed (before the first tick, released, stopped).
    /// The guard holds the lock while it pulls, so disarming waits for a pull in flight.
    brake: Mutex<Option<Brake>>,
    /// The longest gap between two rounds since the last tick asked (ms).
    max_gap_ms: AtomicU64,
    /// The last pull since the last tick asked, as one word ([`pack`]; 0: none), so the tick never
    /// reads a gap without its limit.
    pulled: AtomicU64,
    stop: AtomicBool,
    brakes: Counter,
}

/// The loop's handle on its guard.
pub struct Guard {
    inner: Arc<Inner>,
}

/// A stall the guard pulled the brake for: the loop's longest gap (at least the one the guard
/// acted on) against the limit then, both ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub gap_ms: u64,
    pub after_ms: u64,
}

/// A pull as one word: the limit in the high half, the gap in the low (each at most u32::MAX ms,
/// 49 days); never 0 (a limit is never 0 when the guard pulls).
pub fn pack(g: Gap) -> u64 {
    let half = |v: u64| v.min(u64::from(u32::MAX));
    (half(g.after_ms) << 32) | half(g.gap_ms)
}

pub fn unpack(w: u64) -> Option<Gap> {
    (w != 0).then_some(Gap {
        gap_ms: w & u64::from(u32::MAX),
        after_ms: w >> 32,
    })
}

/// Whether a gap of `gap_ms` since the last round is a stall the guard acts on.
pub fn stalled(gap_ms: u64, after_ms: u64) -> bool {
    after_ms > 0 && gap_ms >= after_ms
}

/// How often the guard looks: a quarter of the limit (a stall is met within 1.25 × the limit),
/// within 10 ms – 1 s; once a second while it is off.
pub fn check_every(after_ms: u64) -> Duration {
    if after_ms == 0 {
        return Duration::from_secs(1);
    }
    Duration::from_millis((after_ms / 4).clamp(10, 1_000))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Asks the kernel for SCHED_FIFO for the calling thread.
fn real_time() -> Result<(), std::io::Error> {
    let p = libc::sched_param {
        sched_priority: RT_PRIORITY,
    };
    // SAFETY: pid 0 is the calling thread; `p` is a valid, initialised sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Guard {
    /// Starts the guard thread (it waits for a brake before it can act); `said` is told its
    /// priority once it has asked for real-time.
    pub fn start(
        after_ms: u64,
        brakes: Counter,
        said: impl FnOnce(String) + Send + 'static,
    ) -> Result<Guard, String> {
        let inner = Arc::new(Inner {
            started: Instant::now(),
            beat_ms: AtomicU64::new(0),
            after_ms: AtomicU64::new(after_ms),
            brake: Mutex::new(None),
            max_gap_ms: AtomicU64::new(0),
            pulled: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            brakes,
        });
        let watched = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("stall-guard".into())
            .spawn(move || watch(&watched, said))
            .map_err(|e| format!("cannot start the stall guard: {e}"))?;
        Ok(Guard { inner })
    }

    fn now_ms(&self) -> u64 {
        (self.inner.started.elapsed().as_millis() as u64).max(1)
    }

    /// The loop came round.
    pub fn beat(&self) {
        let now = self.now_ms();
        let prev = self.inner.beat_ms.swap(now, Ordering::Relaxed);
        if prev > 0 {
            self.inner
                .max_gap_ms
                .fetch_max(now.saturating_sub(prev), Ordering::Relaxed);
        }
    }

    /// Forgets the gaps so far: the agent's first tick (a full reading, its programs loading) is
    /// its start, not a stall. Before the guard is first armed, so it has pulled nothing.
    pub fn restart(&self) {
        self.inner.beat_ms.store(self.now_ms(), Ordering::Relaxed);
        self.inner.max_gap_ms.store(0, Ordering::Relaxed);
        self.inner.pulled.store(0, Ordering::Relaxed);
    }

    /// A new limit (config reload); 0 turns the guard off.
    pub fn set_after(&self, after_ms: u64) {
        self.inner.after_ms.store(after_ms, Ordering::Relaxed);
    }

    /// What the guard freezes from now on (None: nothing). Waits for a pull in flight, so after
    /// `arm(None)` the guard writes nothing more.
    pub fn arm(&self, brake: Option<Brake>) {
        let old = std::mem::replace(&mut *lock(&self.inner.brake), brake);
        // Dropped outside the lock: the guard never waits on the loop's deallocation.
        drop(old);
    }

    /// The stall the guard pulled the brake for since the last call, if it did (whatever the
    /// limit is now): its gap is the loop's longest since, at least the one the guard acted on.
    pub fn take_pull(&self) -> Option<Gap> {
        let longest = self.inner.max_gap_ms.swap(0, Ordering::Relaxed);
        let pull = unpack(self.inner.pulled.swap(0, Ordering::Relaxed))?;
        Some(Gap {
            gap_ms: pull.gap_ms.max(longest),
            ..pull
        })
    }

    /// Stops the guard for good (before the agent gives offline its CPUs back and exits); a pull
    /// in flight ends first.
    pub fn stop(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        self.arm(None);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn watch(g: &Inner, said: impl FnOnce(String)) {
    match real_time() {
        Ok(()) => {
            info!("stall guard at real-time priority (SCHED_FIFO {RT_PRIORITY})");
            said(format!("real-time priority (SCHED_FIFO {RT_PRIORITY})"));
        }
        // A kernel with RT group scheduling gives real-time time only to groups granted it
        // (cpu.rt_runtime_us); without CAP_SYS_NICE it is refused too.
        Err(e) => {
            warn!(
                "stall guard at normal priority: SCHED_FIFO refused ({e}); it still meets a loop that hangs, but not one starved of CPU with it"
            );
            said(format!("normal priority: SCHED_FIFO refused ({e})"));
        }
    }
    // Each stall is braked once: the loop must come round before the next.
    let mut braked_for_beat: Option<u64> = None;
    while !g.stop.load(Ordering::Relaxed) {
        let after = g.after_ms.load(Ordering::Relaxed);
        std::thread::sleep(check_every(after));
        let beat = g.beat_ms.load(Ordering::Relaxed);
        if beat == 0 || braked_for_beat == Some(beat) {
            continue; // the loop has not come round yet, or this stall was braked
        }
        let gap = (g.started.elapsed().as_millis() as u64).saturating_sub(beat);
        if !stalled(gap, after) {
            continue;
        }
        // Never waits on the loop: the lock is held only to swap what is armed (or by a pull).
        let armed = match g.brake.try_lock() {
            Ok(a) => a,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => continue,
        };
        if g.stop.load(Ordering::Relaxed) {
            break;
        }
        let Some(brake) = armed.as_ref().filter(|b| !b.is_empty()) else {
            continue;
        };
        braked_for_beat = Some(beat);
        let pulled = brake.pull();
        drop(armed);
        g.pulled.store(
            pack(Gap {
                gap_ms: gap,
                after_ms: after,
            }),
            Ordering::Relaxed,
        );
        g.brakes.inc();
        warn!(
            "the agent's loop has not come round for {gap} ms (interference.stall_after {after} ms): offline frozen ({} group file(s) written, {} failed)",
            pulled.frozen,
            pulled.failed.len()
        );
        for f in &pulled.failed {
            error!("stall guard: {f}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_a_stall_from_the_limit_on_and_never_with_the_guard_off() {
        assert!(!stalled(999, 1_000));
        assert!(stalled(1_000, 1_000));
        assert!(stalled(5_000, 1_000));
        assert!(!stalled(u64::MAX, 0));
    }

    #[test]
    fn a_pull_packs_its_gap_with_its_limit_and_none_is_zero() {
        let g = Gap {
            gap_ms: 2_700,
            after_ms: 1_000,
        };
        assert_eq!(unpack(pack(g)), Some(g));
        assert_eq!(unpack(0), None);
        let huge = Gap {
            gap_ms: u64::MAX,
            after_ms: 60_000,
        };
        assert_eq!(
            unpack(pack(huge)),
            Some(Gap {
                gap_ms: u64::from(u32::MAX),
                after_ms: 60_000
            })
        );
    }

    /// A guard that was never armed: nothing to pull, and the pull word alone says what the
    /// tick hands on (whatever the limit is now).
    #[test]
    fn a_pull_is_handed_on_once_even_after_the_guard_is_turned_off() {
        let g = Guard::start(0, Counter::default(), |_| {}).expect("guard thread");
        g.beat();
        assert_eq!(g.take_pull(), None, "no pull, no stall");
        let pulled = Gap {
            gap_ms: 1_200,
            after_ms: 1_000,
        };
        g.inner.pulled.store(pack(pulled), Ordering::Relaxed);
        g.inner.max_gap_ms.store(2_500, Ordering::Relaxed);
        g.set_after(0);
        assert_eq!(
            g.take_pull(),
            Some(Gap {
                gap_ms: 2_500,
                after_ms: 1_000
            }),
            "the loop's whole gap, against the limit it was pulled at"
        );
        assert_eq!(g.take_pull(), None, "handed on once");
        g.inner.pulled.store(pack(pulled), Ordering::Relaxed);
        g.restart();
        assert_eq!(g.take_pull(), None, "the start is not a stall");
        g.stop();
    }

    #[test]
    fn the_guard_looks_four_times_per_limit_within_bounds() {
        assert_eq!(check_every(1_000), Duration::from_millis(250));
        assert_eq!(check_every(0), Duration::from_secs(1));
        assert_eq!(check_every(8), Duration::from_millis(10));
        assert_eq!(check_every(60_000), Duration::from_millis(1_000));
    }
}
