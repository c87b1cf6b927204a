//! Node-pressure eviction (upstream `pkg/kubelet/eviction`): thresholds on memory, disk,
//! inodes and process ids; the node conditions MemoryPressure, DiskPressure and PIDPressure;
//! reclaim of dead containers and unused images; eviction of one pod per pass, ranked as
//! upstream; local storage limits (ephemeral-storage, emptyDir `sizeLimit`); admission under
//! pressure. Thread `eviction` runs [`Manager::run`].
//!
//! - `threshold.rs`: signals and the settings parsed into thresholds;
//! - `decide.rs`: pure decisions (met thresholds, conditions, ranking, messages);
//! - `stats.rs`: what is measured, from `/proc`, `statvfs` and CRI;
//! - `manager.rs`: the loop that measures, decides and acts.

pub mod decide;
pub mod manager;
pub mod stats;
pub mod threshold;

pub use manager::{EvictionConfig, EvictionHost, Manager, NodePressure, REASON};
pub use stats::{HostStats, StatsSource};
pub use threshold::{parse_thresholds, NodeCondition, Signal, Threshold, ThresholdSettings};
