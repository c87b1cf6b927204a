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

/// The cgroup manager when `cgroupsPerQOS` is on, with the node's cgroups set up
/// (upstream `NewContainerManager` and `setupNode`): `None` when `cgroupsPerQOS` is off.
/// As upstream, a cgroup root that does not exist, a systemd that cannot be reached or a
/// reserved cgroup that cannot be limited stops start-up.
pub(super) fn pod_cgroups(
    config: &KubeletConfig,
    node: &NodeResources,
) -> Result<Option<crate::cm::CgroupManager>, crate::cm::CmError> {
    use crate::cm::{CgroupManager, Driver, NodeAllocatableConfig, Reservation};
    use crate::nodestatus::Reserved;
    let raw = &config.raw;
    let mount = std::path::Path::new("/sys/fs/cgroup");
    if raw.fail_cgroup_v1 == Some(true) && !mount.join("cgroup.controllers").exists() {
        return Err(crate::cm::CmError::CgroupV1);
    }
    if raw.cgroups_per_qos == Some(false) {
        log::info!("cgroupsPerQOS is false: pods get the runtime's default cgroups");
        return Ok(None);
    }
    let root = raw
        .cgroup_root
        .as_deref()
        .filter(|r| !r.is_empty())
        .unwrap_or("/");
    let manager = match Driver::parse(&config.cgroup_driver) {
        Some(Driver::Systemd) => CgroupManager::detect_systemd(
            mount,
            std::path::Path::new("/proc"),
            root,
            crate::cm::dbus::Address::for_this_process(),
        )?,
        _ => CgroupManager::detect(mount, root)?,
    };
    let gate = |name: &str, default: bool| {
        raw.feature_gates
            .as_ref()
            .and_then(|g| g.get(name).copied())
            .unwrap_or(default)
    };
    let manager = manager
        .with_pod_pids_limit(raw.pod_pids_limit)
        .with_memory_qos(gate("MemoryQoS", false));
    let reserved = |map: Option<&std::collections::BTreeMap<String, String>>| {
        map.map(|m| Reserved::from_map(m).unwrap_or_default())
            .unwrap_or_default()
    };
    let pids = crate::eviction::stats::pids_from_proc(std::path::Path::new("/proc"))
        .map_or(0, |(max, _)| i64::try_from(max).unwrap_or(i64::MAX));
    let node_config = NodeAllocatableConfig {
        capacity: Reservation {
            cpu_millis: i64::try_from(node.cpu_millis).unwrap_or(i64::MAX),
            memory_bytes: i64::try_from(node.memory_bytes).unwrap_or(i64::MAX),
            pids,
        },
        system_reserved: reserved(raw.system_reserved.as_ref()),
        kube_reserved: reserved(raw.kube_reserved.as_ref()),
        enforce: raw.enforce_node_allocatable.clone().unwrap_or_default(),
        system_reserved_cgroup: raw.system_reserved_cgroup.clone().unwrap_or_default(),
        kube_reserved_cgroup: raw.kube_reserved_cgroup.clone().unwrap_or_default(),
    };
    manager.start(&node_config)?;
    Ok(Some(manager))
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
