//! Kubernetes mode: the pods on this node as workloads of the agent. The pure parts
//! (classification, kubelet paths, the CPU manager's state, the batch-resource formula, reading a
//! Pod) are unit-tested alone; [`client`] runs the apiserver side on its own thread, and
//! [`source::PodSource`] is the workload source the agent takes.

pub mod batch;
pub mod classify;
pub mod client;
pub mod cpu_manager;
#[cfg(feature = "mock")]
pub mod mock;
pub mod paths;
pub mod pods;
pub mod slo;
pub mod source;

pub use client::Connect;
pub use source::PodSource;
