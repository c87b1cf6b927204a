//! The limits of pod and QoS cgroups, from pod specs (upstream `ResourceConfigForPod` and
//! the QoS container manager's `setCPUCgroupConfig` / `setMemoryQoS`). Pure functions.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::CgroupLimits;
use crate::resources::{
    milli_cpu_to_quota, milli_cpu_to_shares, pod_limit_millis, pod_request_millis, quantity_millis,
    CPU_PERIOD_US,
};

/// Shares of the besteffort cgroup and of every BestEffort pod (upstream `MinShares`).
const MIN_SHARES: i64 = 2;

fn to_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { 0 } else { i64::MAX })
}

/// Whether every container of the pod (init containers and sidecars too) sets a non-zero
/// limit of `resource`: only then does the pod cgroup get that limit.
fn every_container_limits(pod: &Pod, resource: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let limited = |c: &Container| quantity_millis(c, "limits", resource).is_some_and(|v| v != 0);
    spec.containers.iter().all(limited) && spec.init_containers.iter().flatten().all(limited)
}

/// The pod cgroup's limits (upstream `ResourceConfigForPod`): CPU shares from the pod's
/// effective CPU request; CFS quota and memory limit from its effective limits (the larger
/// of the app containers plus sidecars and any init container plus the sidecars before it,
/// plus overhead), each only when every container sets that limit. With memory QoS,
/// `memory.min` is the pod's memory request.
pub fn pod_limits(pod: &Pod, qos: &str, memory_qos: bool) -> CgroupLimits {
    let memory_min = memory_qos
        .then(|| to_i64(pod_request_millis(pod, "memory") / 1000))
        .filter(|m| *m > 0);
    if qos == "BestEffort" {
        return besteffort_limits();
    }
    let shares = milli_cpu_to_shares(to_i64(pod_request_millis(pod, "cpu")));
    let quota = every_container_limits(pod, "cpu")
        .then(|| milli_cpu_to_quota(to_i64(pod_limit_millis(pod, "cpu")), CPU_PERIOD_US));
    let memory = every_container_limits(pod, "memory")
        .then(|| to_i64(pod_limit_millis(pod, "memory") / 1000));
    CgroupLimits {
        cpu_shares: Some(shares),
        cpu_quota: quota,
        memory_bytes: memory,
        pids: None,
        memory_min,
    }
}

/// The besteffort cgroup's and a BestEffort pod's limits: the minimum CPU shares.
pub fn besteffort_limits() -> CgroupLimits {
    CgroupLimits {
        cpu_shares: Some(MIN_SHARES),
        ..CgroupLimits::default()
    }
}

/// What the QoS cgroups count of one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRequests {
    /// `Guaranteed`, `Burstable` or `BestEffort`.
    pub qos: &'static str,
    /// The pod's effective CPU request, in millicores.
    pub cpu_millis: i128,
    /// The pod's effective memory request, in bytes.
    pub memory_bytes: i128,
}

impl PodRequests {
    /// The requests of `pod`, whose QoS class is `qos`.
    pub fn of(pod: &Pod, qos: &str) -> Self {
        let qos = match qos {
            "Guaranteed" => "Guaranteed",
            "Burstable" => "Burstable",
            _ => "BestEffort",
        };
        PodRequests {
            qos,
            cpu_millis: pod_request_millis(pod, "cpu"),
            memory_bytes: pod_request_millis(pod, "memory") / 1000,
        }
    }
}

/// The burstable cgroup's limits and, with memory QoS, the kubepods cgroup's `memory.min`:
/// CPU shares from the sum of the Burstable pods' CPU requests (at least the minimum);
/// `memory.min` of burstable the sum of Burstable memory requests, of kubepods that plus the
/// Guaranteed pods'.
pub fn qos_limits<'a>(
    pods: impl Iterator<Item = &'a PodRequests>,
    memory_qos: bool,
) -> (CgroupLimits, Option<i64>) {
    let mut burstable_cpu = 0i128;
    let mut burstable_memory = 0i128;
    let mut guaranteed_memory = 0i128;
    for p in pods {
        match p.qos {
            "Burstable" => {
                burstable_cpu += p.cpu_millis;
                burstable_memory += p.memory_bytes;
            }
            "Guaranteed" => guaranteed_memory += p.memory_bytes,
            _ => {}
        }
    }
    let positive = |v: i128| (v > 0).then(|| to_i64(v));
    let burstable = CgroupLimits {
        cpu_shares: Some(milli_cpu_to_shares(to_i64(burstable_cpu))),
        memory_min: positive(burstable_memory).filter(|_| memory_qos),
        ..CgroupLimits::default()
    };
    let guaranteed = positive(guaranteed_memory + burstable_memory).filter(|_| memory_qos);
    (burstable, guaranteed)
}
