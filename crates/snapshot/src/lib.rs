//! Measurements. [`Collector`] reads counters (node and offline CPU time, online PSI, MemAvailable
//! every tick; per-workload usage, working set, PSI and throttling for the workloads a
//! [`WorkloadSource`](tidal_source::WorkloadSource) names) and turns deltas into a
//! [`Snapshot`](tidal_model::Snapshot). A light sample between ticks lets the agent see an online load
//! step early. [`slo`] turns a scraped latency histogram into a windowed quantile. Reading is all it
//! does; what could not be read is missing, never zero.

pub mod clock;
pub mod collector;
pub mod math;
pub mod slo;

pub use clock::{Clock, FakeClock, MonotonicClock};
pub use collector::{Collector, LightSample, Problems};
