//! Small helpers shared by several subsystems.

pub mod backoff;
pub mod metrics;
