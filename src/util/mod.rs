//! Small helpers shared by several subsystems.

pub mod backoff;
pub mod expansion;
pub mod http;
pub mod metrics;
