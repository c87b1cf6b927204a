//! The node status setters (upstream `pkg/kubelet/nodestatus/setters.go`): each one fills one
//! concern of the Node from [`NodeStatusInputs`] and is tested alone. They run on the
//! `node-status` thread through [`super::set_node_status`], in [`super::DEFAULT_SETTERS`]
//! order. Setters never fail: what upstream returns as an error is logged and leaves the
//! node's previous value.
//!
//! - [`addresses`]: `addresses` and `daemonEndpoints`.
//! - [`capacity`]: capacity, allocatable and the machine ids.
//! - [`node_info`]: versions, operating system and architecture.
//! - [`images`]: the runtime's images.
//! - [`conditions`]: the pressure conditions and `Ready`.

pub mod addresses;
pub mod capacity;
pub mod conditions;
pub mod images;
pub mod node_info;

use k8s_openapi::api::core::v1::{Node, NodeStatus, NodeSystemInfo};

pub use addresses::{daemon_endpoints, node_address};
pub use capacity::machine_info;
pub use conditions::{
    aggregate, disk_pressure, memory_pressure, pid_pressure, ready_condition, ready_errors,
};
pub use images::{images, MAX_NAMES_PER_IMAGE};

/// `volumesInUse` (upstream `VolumesInUse`): the attachable volumes the volume manager has
/// set up or is setting up, sorted; none leaves the field out.
pub fn volumes_in_use(node: &mut Node, inputs: &crate::nodestatus::NodeStatusInputs) {
    let status = status_mut(node);
    status.volumes_in_use =
        (!inputs.volumes_in_use.is_empty()).then(|| inputs.volumes_in_use.clone());
}
pub use node_info::{go_runtime, version_info};

fn status_mut(node: &mut Node) -> &mut NodeStatus {
    node.status.get_or_insert_with(NodeStatus::default)
}

fn node_info_mut(status: &mut NodeStatus) -> &mut NodeSystemInfo {
    status.node_info.get_or_insert_with(NodeSystemInfo::default)
}

/// The reference machine and small builders shared by the setters' tests.
#[cfg(test)]
mod fixtures {
    use super::*;
    use crate::nodestatus::machine::{HugePages, MachineInfo};
    use crate::nodestatus::{NodeStatusInputs, RuntimeCondition, RuntimeSync};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub(super) fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_751_306 + secs)
    }

    /// The reference machine (reference/node.yaml).
    pub(super) fn reference_inputs() -> NodeStatusInputs {
        NodeStatusInputs {
            now: at(0),
            hostname: "rust-node".into(),
            node_ips: vec!["192.0.2.2".parse().unwrap()],
            machine: MachineInfo {
                num_cores: 2,
                memory_capacity_bytes: 24684084 * 1024,
                hugepages: vec![
                    HugePages {
                        page_size_kib: 2048,
                        pages: 0,
                    },
                    HugePages {
                        page_size_kib: 1 << 20,
                        pages: 0,
                    },
                ],
                ephemeral_storage_bytes: Some(264212084 * 1024),
                machine_id: "3d1219c7c4c5404aaa1f6d2a48adfda4".into(),
                system_uuid: "3d1219c7c4c5404aaa1f6d2a48adfda4".into(),
                boot_id: "2ce5c0d8-6426-4a48-ab5a-4318a073de9d".into(),
                kernel_version: "6.18.44-fc-v669".into(),
                os_image: "Debian GNU/Linux 12 (bookworm)".into(),
                operating_system: "linux".into(),
                architecture: "amd64".into(),
            },
            runtime_name: "containerd".into(),
            runtime_version: Some("v1.6.20".into()),
            runtime_sync: RuntimeSync::Recent,
            runtime_conditions: Some(vec![
                cond("RuntimeReady", true, "", ""),
                cond("NetworkReady", true, "", ""),
            ]),
            ..Default::default()
        }
    }

    pub(super) fn cond(t: &str, status: bool, reason: &str, message: &str) -> RuntimeCondition {
        RuntimeCondition {
            type_: t.into(),
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub(super) fn apply(
        setter: fn(&mut Node, &NodeStatusInputs),
        inputs: &NodeStatusInputs,
    ) -> Node {
        let mut node = Node::default();
        setter(&mut node, inputs);
        node
    }

    pub(super) fn status(node: &Node) -> &NodeStatus {
        node.status.as_ref().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{reference_inputs, status};
    use super::*;

    #[test]
    fn full_status_matches_reference_shape() {
        let inputs = reference_inputs();
        let mut node = Node::default();
        crate::nodestatus::set_node_status(&mut node, &inputs);
        let json = serde_json::to_value(status(&node)).unwrap();
        let types: Vec<_> = json["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        assert_eq!(
            json["conditions"][3]["lastHeartbeatTime"],
            "2026-11-27T03:48:26Z"
        );
        assert_eq!(
            json["nodeInfo"]["containerRuntimeVersion"],
            "containerd://1.6.20"
        );
        assert_eq!(
            json["nodeInfo"]["systemUUID"],
            "3d1219c7c4c5404aaa1f6d2a48adfda4"
        );
        assert_eq!(
            json["nodeInfo"]["bootID"],
            "2ce5c0d8-6426-4a48-ab5a-4318a073de9d"
        );
        assert_eq!(
            json["nodeInfo"]["machineID"],
            "3d1219c7c4c5404aaa1f6d2a48adfda4"
        );
        assert_eq!(json["addresses"][0]["address"], "192.0.2.2");
        assert_eq!(json["allocatable"]["memory"], "24581684Ki");
    }
}
