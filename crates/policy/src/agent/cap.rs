//! The ladder's CPU-time cap step: how much offline keeps, as a CFS quota or as the frozen part of
//! a duty cycle (`interference.cap_mode`). Pure helpers that confinement, the freeze step and the
//! pods share.

use super::state::{PolicyState, Step};
use crate::config::{CapMode, Config};
use crate::levels::CFS_PERIOD_US;
use tidal_model::{Capabilities, CpuSet, Knob};

/// The cap mode in force: the configured one, except that a duty cycle needs a freezer. Without
/// one (a kernel before 5.2 on pure v2, no v1 freezer) the cap is a CFS quota where `cpu.max`
/// is writable, so the ladder keeps its step.
pub fn mode(cfg: &Config, caps: &Capabilities) -> CapMode {
    match cfg.interference.cap_mode {
        CapMode::DutyCycle if !caps.has(Knob::Freeze) && caps.has(Knob::CpuMax) => CapMode::Quota,
        m => m,
    }
}

/// The duty cycle's period (ten ticks) and its frozen part, in ms.
fn duty_period(cfg: &Config) -> (u64, u64) {
    let period = cfg.tick.0.saturating_mul(10).max(1);
    let run = (cfg.interference.cap_fraction * period as f64) as u64;
    (period, period.saturating_sub(run))
}

/// In the duty cycle's frozen part now? Offline runs for `cap_fraction` of each period of ten
/// ticks; periods count from `from_ms` (taken modulo the period, so it may lie ahead of now),
/// frozen part first.
pub fn duty_off(now_ms: u64, from_ms: u64, cfg: &Config) -> bool {
    let (period, off) = duty_period(cfg);
    (now_ms % period + period - from_ms % period) % period < off
}

/// Where a duty cycle that begins at `now_ms` counts its periods from: frozen part first when
/// the ladder climbs to the cap (it acts at once), running part first when a release leaves the
/// cap on top (the release gives offline its time at once). The latter is `now_ms` less the
/// frozen part, a period later: the same phase, also in the agent's first period.
pub fn duty_start(now_ms: u64, released: bool, cfg: &Config) -> u64 {
    let (period, off) = duty_period(cfg);
    if released {
        now_ms % period + period - off
    } else {
        now_ms
    }
}

/// The quota the CPU-time cap gives offline: `cap_fraction` of the CPUs it has.
pub fn cap_quota(cpus: usize, cfg: &Config) -> u64 {
    let q = cpus.max(1) as f64 * cfg.interference.cap_fraction * CFS_PERIOD_US as f64;
    (q as u64).max(1000)
}

/// The quota the ladder's cap step wants on offline now (quota mode, step in force).
pub fn cap_quota_now(
    cfg: &Config,
    caps: &Capabilities,
    st: &PolicyState,
    cpus: &CpuSet,
) -> Option<u64> {
    (st.interference.has(Step::CapCpu) && mode(cfg, caps) == CapMode::Quota)
        .then(|| cap_quota(cpus.len(), cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A cycle taken runs frozen part first and a released one running part first, at any
        /// time: the agent's first period (its clock starts at 0) too.
        #[test]
        fn the_duty_cycle_starts_with_the_part_its_cause_asks_for(
            now in prop_oneof![0u64..2_000, 0u64..(1 << 50)],
            tick in 10u64..=1_000,
            fraction in 0.05f64..0.95,
        ) {
            let mut cfg = Config {
                tick: crate::config::Millis(tick),
                ..Config::default()
            };
            cfg.interference.cap_fraction = fraction;
            let (period, off) = duty_period(&cfg);
            prop_assume!(off > 0 && off < period);
            let taken = duty_start(now, false, &cfg);
            prop_assert!(duty_off(now, taken, &cfg));
            prop_assert!(duty_off(now + off - 1, taken, &cfg));
            prop_assert!(!duty_off(now + off, taken, &cfg));
            prop_assert!(duty_off(now + period, taken, &cfg));
            let released = duty_start(now, true, &cfg);
            prop_assert!(!duty_off(now, released, &cfg));
            prop_assert!(!duty_off(now + (period - off) - 1, released, &cfg));
            prop_assert!(duty_off(now + (period - off), released, &cfg));
            prop_assert!(!duty_off(now + period, released, &cfg));
        }
    }
}
