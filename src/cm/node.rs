//! Node allocatable enforcement (upstream `node_container_manager_linux.go`): the limits of
//! the kubepods cgroup, and of the system and kube reserved cgroups when
//! `enforceNodeAllocatable` names them.

use super::CgroupLimits;
use crate::nodestatus::Reserved;
use crate::resources::milli_cpu_to_shares;

/// The machine's capacity as the cgroups see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reservation {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Process IDs (the smaller of `pid_max` and `threads-max`).
    pub pids: i64,
}

/// What node allocatable enforcement is computed from.
#[derive(Debug, Clone, Default)]
pub struct NodeAllocatableConfig {
    /// The machine's capacity.
    pub capacity: Reservation,
    /// `systemReserved`.
    pub system_reserved: Reserved,
    /// `kubeReserved`.
    pub kube_reserved: Reserved,
    /// `enforceNodeAllocatable`.
    pub enforce: Vec<String>,
    /// `systemReservedCgroup`.
    pub system_reserved_cgroup: String,
    /// `kubeReservedCgroup`.
    pub kube_reserved_cgroup: String,
}

fn limits(cpu_millis: i64, memory_bytes: i64, pids: i64, compressible_only: bool) -> CgroupLimits {
    CgroupLimits {
        cpu_shares: Some(milli_cpu_to_shares(cpu_millis)),
        memory_bytes: (!compressible_only && memory_bytes > 0).then_some(memory_bytes),
        pids: (!compressible_only && pids > 0).then_some(pids),
        ..CgroupLimits::default()
    }
}

impl NodeAllocatableConfig {
    fn enforces(&self, key: &str) -> bool {
        self.enforce.iter().any(|k| k == key)
    }

    /// The kubepods cgroup's limits: capacity less `systemReserved` and `kubeReserved`
    /// (hard eviction thresholds are not subtracted here, as upstream) when `pods` is
    /// enforced, else capacity.
    pub fn kubepods_limits(&self) -> CgroupLimits {
        let c = &self.capacity;
        if !self.enforces("pods") {
            return limits(c.cpu_millis, c.memory_bytes, c.pids, false);
        }
        let (s, k) = (&self.system_reserved, &self.kube_reserved);
        let left = |cap: i64, a: i64, b: i64| cap.saturating_sub(a).saturating_sub(b).max(0);
        limits(
            left(c.cpu_millis, s.cpu_millis, k.cpu_millis),
            left(c.memory_bytes, s.memory_bytes, k.memory_bytes),
            left(c.pids, s.pids, k.pids),
            false,
        )
    }

    /// The reserved cgroups to limit: `(cgroup, limits, enforceNodeAllocatable key)` for
    /// `system-reserved`, `kube-reserved` and their `-compressible` forms (CPU only).
    pub fn reserved_cgroups(&self) -> Vec<(&str, CgroupLimits, &'static str)> {
        let mut out = Vec::new();
        for (key, cgroup, reserved, compressible) in [
            (
                "system-reserved",
                &self.system_reserved_cgroup,
                &self.system_reserved,
                false,
            ),
            (
                "system-reserved-compressible",
                &self.system_reserved_cgroup,
                &self.system_reserved,
                true,
            ),
            (
                "kube-reserved",
                &self.kube_reserved_cgroup,
                &self.kube_reserved,
                false,
            ),
            (
                "kube-reserved-compressible",
                &self.kube_reserved_cgroup,
                &self.kube_reserved,
                true,
            ),
        ] {
            if self.enforces(key) {
                let mut l = limits(
                    reserved.cpu_millis,
                    reserved.memory_bytes,
                    reserved.pids,
                    compressible,
                );
                if reserved.cpu_millis <= 0 {
                    // Only what is reserved is limited.
                    l.cpu_shares = None;
                }
                out.push((cgroup.as_str(), l, key));
            }
        }
        out
    }
}
