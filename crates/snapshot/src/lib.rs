//! Measurements. [`Collector`] reads counters (node and offline CPU time, online PSI, MemAvailable every
//! tick; per-workload usage, memory, PSI and throttling every stats interval) and turns deltas into a
//! [`Snapshot`](tidal_model::Snapshot). A light sample between ticks lets the agent see an online load
//! step early. Reading is all it does.

pub mod collector;
pub mod node;

pub use collector::{Collector, LightSample};
