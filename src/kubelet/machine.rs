//! What the kubelet reads from the machine when it is built: the node's resources, what is
//! allocatable after reservations and eviction thresholds, and the pod cgroups.

use super::admission;
use crate::config::settings::KubeletConfig;
use crate::volume::NodeResources;

/// The machine's CPU, memory and root-dir filesystem size.
pub(super) fn node_resources(root_dir: &std::path::Path) -> NodeResources {
    use crate::nodestatus::machine::{filesystem_capacity, read_memory_capacity, read_num_cores};
    let root = std::path::Path::new("/");
    NodeResources {
        cpu_millis: read_num_cores(root).map_or(0, |n| i128::from(n) * 1000),
        memory_bytes: read_memory_capacity(root).map_or(0, i128::from),
        ephemeral_storage_bytes: filesystem_capacity(root_dir).map_or(0, i128::from),
    }
}

/// The cgroup manager when `cgroupsPerQOS` is on and the driver is cgroupfs, with the QoS
/// cgroups created; `None` (logged) otherwise.
pub(super) fn pod_cgroups(
    config: &KubeletConfig,
    allocatable: &admission::Allocatable,
) -> Option<crate::cgroups::CgroupManager> {
    if config.raw.cgroups_per_qos == Some(false) {
        log::info!("cgroupsPerQOS is false: pods get the runtime's default cgroups");
        return None;
    }
    if config.cgroup_driver != "cgroupfs" {
        log::error!(
            "cgroup driver {} is not supported, only cgroupfs: pod cgroups are not managed",
            config.cgroup_driver
        );
        return None;
    }
    let root = config
        .raw
        .cgroup_root
        .as_deref()
        .filter(|r| !r.is_empty())
        .unwrap_or("/");
    let manager =
        match crate::cgroups::CgroupManager::detect(std::path::Path::new("/sys/fs/cgroup"), root) {
            Ok(m) => m.with_pod_pids_limit(config.raw.pod_pids_limit),
            Err(e) => {
                log::error!("pod cgroups are not managed: {e}");
                return None;
            }
        };
    let cpu = i64::try_from(allocatable.cpu_millis).unwrap_or(i64::MAX);
    let memory = i64::try_from(allocatable.memory_bytes).unwrap_or(i64::MAX);
    if let Err(e) = manager.ensure_qos_cgroups(cpu, memory) {
        log::error!("creating the QoS cgroups failed, pod cgroups are not managed: {e}");
        return None;
    }
    log::info!(
        "pod cgroups under {} ({:?})",
        manager.qos_cgroup("Guaranteed"),
        manager.version()
    );
    Some(manager)
}

/// Capacity less `systemReserved`, `kubeReserved` and the hard eviction thresholds, as node
/// status reports allocatable: what admission counts against (pods from `maxPods`) and what a
/// downward API `limits.*` field of a container without that limit reports (upstream
/// `MergeContainerResourceLimits`).
pub(super) fn node_allocatable(
    config: &KubeletConfig,
    node: &NodeResources,
) -> (admission::Allocatable, NodeResources) {
    use crate::nodestatus::AllocatableReservation;
    use crate::quantity::ThresholdValue;
    let raw = &config.raw;
    let reservation = AllocatableReservation::from_config(
        raw.system_reserved.as_ref(),
        raw.kube_reserved.as_ref(),
        raw.eviction_hard.as_ref(),
    )
    .unwrap_or_default();
    let reserved = |f: fn(&crate::nodestatus::Reserved) -> i64| {
        i128::from(f(&reservation.system_reserved)) + i128::from(f(&reservation.kube_reserved))
    };
    let eviction = match reservation.eviction_memory_available {
        Some(ThresholdValue::Quantity(bytes)) => i128::from(bytes),
        Some(ThresholdValue::Percentage(p)) => (node.memory_bytes as f64 * f64::from(p)) as i128,
        None => 0,
    };
    let nodefs_eviction = match reservation.eviction_nodefs_available {
        Some(ThresholdValue::Quantity(bytes)) => i128::from(bytes),
        Some(ThresholdValue::Percentage(p)) => {
            (node.ephemeral_storage_bytes as f64 * f64::from(p)) as i128
        }
        None => 0,
    };
    let cpu_millis = (node.cpu_millis - reserved(|r| r.cpu_millis)).max(0);
    let memory_bytes = (node.memory_bytes - reserved(|r| r.memory_bytes) - eviction).max(0);
    let ephemeral_storage_bytes =
        (node.ephemeral_storage_bytes - reserved(|r| r.ephemeral_storage_bytes) - nodefs_eviction)
            .max(0);
    (
        admission::Allocatable {
            cpu_millis,
            memory_bytes,
            pods: config.max_pods,
        },
        NodeResources {
            cpu_millis,
            memory_bytes,
            ephemeral_storage_bytes,
        },
    )
}
