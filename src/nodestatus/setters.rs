//! The node status setters (upstream `pkg/kubelet/nodestatus/setters.go`): each one fills one
//! concern of the Node from [`NodeStatusInputs`] and is tested alone. They run on the
//! `node-status` thread through [`super::set_node_status`], in [`super::DEFAULT_SETTERS`]
//! order. Setters never fail: what upstream returns as an error is logged and leaves the
//! node's previous value.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{to_time, NodeStatusInputs};
use crate::quantity::{binary_si, decimal_si, milli_si};

/// Upstream `MaxNamesPerImageInNodeStatus`.
pub const MAX_NAMES_PER_IMAGE: usize = 5;

/// Resources whose absence from capacity keeps the node NotReady (upstream, with local
/// storage capacity isolation on).
const REQUIRED_CAPACITIES: [&str; 4] = ["cpu", "memory", "pods", "ephemeral-storage"];

/// `InternalIP` for each node IP, then `Hostname` (upstream `NodeAddress` without a cloud
/// provider).
pub fn node_address(node: &mut Node, inputs: &NodeStatusInputs) {
    if inputs.node_ips.is_empty() {
        log::error!(
            "Failed to set some node status fields: can't get ip address of node {}",
            node.metadata.name.as_deref().unwrap_or_default()
        );
        return;
    }
    let mut addresses: Vec<NodeAddress> = inputs
        .node_ips
        .iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".to_string(),
            address: ip.to_string(),
        })
        .collect();
    addresses.push(NodeAddress {
        type_: "Hostname".to_string(),
        address: inputs.hostname.clone(),
    });
    status_mut(node).addresses = Some(addresses);
}

/// An amount of one resource the kubelet owns, with the format the API prints it in.
#[derive(Debug, Clone, Copy)]
enum Amount {
    /// Millicores, `DecimalSI` (`2`, `1500m`).
    Millis(i64),
    /// A count, `DecimalSI` (`110`).
    Count(i64),
    /// Bytes, `BinarySI` (`24684084Ki`).
    Bytes(i64),
}

impl Amount {
    fn value(self) -> i64 {
        match self {
            Amount::Millis(v) | Amount::Count(v) | Amount::Bytes(v) => v,
        }
    }

    /// Less `reserved`, never below zero (upstream clamps negative allocatable).
    fn minus(self, reserved: i64) -> Amount {
        let v = self.value().saturating_sub(reserved).max(0);
        match self {
            Amount::Millis(_) => Amount::Millis(v),
            Amount::Count(_) => Amount::Count(v),
            Amount::Bytes(_) => Amount::Bytes(v),
        }
    }

    fn quantity(self) -> Quantity {
        match self {
            Amount::Millis(v) => milli_si(v),
            Amount::Count(v) => decimal_si(v),
            Amount::Bytes(v) => binary_si(v),
        }
    }
}

fn bytes(v: u64) -> Amount {
    Amount::Bytes(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Machine ids, capacity and allocatable (upstream `MachineInfo`): cpu, memory, hugepages,
/// pods and ephemeral-storage; allocatable = capacity − systemReserved − kubeReserved − hard
/// eviction threshold, and memory also less every hugepage pool. Capacity entries the kubelet
/// does not own (extended resources) are kept and copied to allocatable unchanged.
pub fn machine_info(node: &mut Node, inputs: &NodeStatusInputs) {
    let m = &inputs.machine;
    let status = status_mut(node);
    let info = node_info_mut(status);
    info.machine_id.clone_from(&m.machine_id);
    info.system_uuid.clone_from(&m.system_uuid);
    info.boot_id.clone_from(&m.boot_id);

    let cores = i64::from(m.num_cores);
    let max_pods = i64::from(inputs.max_pods);
    let pods = match inputs.pods_per_core {
        0 => max_pods,
        per_core => (cores * i64::from(per_core)).min(max_pods),
    };
    let mut owned: BTreeMap<String, Amount> = BTreeMap::new();
    owned.insert("cpu".into(), Amount::Millis(cores * 1000));
    owned.insert("memory".into(), bytes(m.memory_capacity_bytes));
    owned.insert("pods".into(), Amount::Count(pods));
    if let Some(storage) = m.ephemeral_storage_bytes {
        owned.insert("ephemeral-storage".into(), bytes(storage));
    }
    for pool in &m.hugepages {
        owned.insert(pool.resource_name(), bytes(pool.capacity_bytes()));
    }

    let capacity = status.capacity.get_or_insert_with(BTreeMap::new);
    for (name, amount) in &owned {
        capacity.insert(name.clone(), amount.quantity());
    }
    let r = &inputs.reservation;
    let reserved = |name: &str, cap: i64| -> i64 {
        let (sys, kube) = (&r.system_reserved, &r.kube_reserved);
        match name {
            "cpu" => sys.cpu_millis.saturating_add(kube.cpu_millis),
            "memory" => sys
                .memory_bytes
                .saturating_add(kube.memory_bytes)
                .saturating_add(r.eviction_memory_available.map_or(0, |t| t.amount(cap))),
            "ephemeral-storage" => sys
                .ephemeral_storage_bytes
                .saturating_add(kube.ephemeral_storage_bytes)
                .saturating_add(r.eviction_nodefs_available.map_or(0, |t| t.amount(cap))),
            _ => 0,
        }
    };
    let hugepages: i64 = m
        .hugepages
        .iter()
        .map(|p| bytes(p.capacity_bytes()).value())
        .fold(0, i64::saturating_add);
    let allocatable: BTreeMap<String, Quantity> = capacity
        .iter()
        .map(|(name, cap)| {
            let value = match owned.get(name) {
                Some(amount) => {
                    let mut a = amount.minus(reserved(name, amount.value()));
                    if name == "memory" {
                        a = a.minus(hugepages);
                    }
                    a.quantity()
                }
                None => cap.clone(),
            };
            (name.clone(), value)
        })
        .collect();
    status.allocatable = Some(allocatable);
}

/// Kernel, OS image, runtime and kubelet versions (upstream `VersionInfo`).
/// `containerRuntimeVersion` is `<runtime_name>://<version>` with the version's leading `v`
/// dropped as upstream's semantic-version parse does (`containerd://1.6.20`), `Unknown`
/// when CRI `Version` failed. `kubeProxyVersion` stays empty: since KEP-4004
/// (`DisableNodeKubeProxyVersion`, on by default for the Kubernetes version of our API
/// types) the kubelet no longer claims to know it.
pub fn version_info(node: &mut Node, inputs: &NodeStatusInputs) {
    let info = node_info_mut(status_mut(node));
    info.kernel_version
        .clone_from(&inputs.machine.kernel_version);
    info.os_image.clone_from(&inputs.machine.os_image);
    let version = match inputs.runtime_version.as_deref() {
        Some(v) => v
            .strip_prefix('v')
            .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            .unwrap_or(v),
        None => "Unknown",
    };
    info.container_runtime_version = format!("{}://{version}", inputs.runtime_name);
    info.kubelet_version.clone_from(&inputs.kubelet_version);
    info.kube_proxy_version = String::new();
}

/// `daemonEndpoints.kubeletEndpoint.Port` (upstream `DaemonEndpoints`).
pub fn daemon_endpoints(node: &mut Node, inputs: &NodeStatusInputs) {
    status_mut(node).daemon_endpoints = Some(NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: i32::from(inputs.kubelet_port),
        }),
    });
}

/// The runtime's images, largest first (ties by id, as upstream's image manager sorts), at
/// most `max_images`, each with up to five names: digests then tags (upstream `Images`).
pub fn images(node: &mut Node, inputs: &NodeStatusInputs) {
    let mut list: Vec<_> = inputs.images.iter().collect();
    list.sort_by(|a, b| {
        b.size_bytes
            .cmp(&a.size_bytes)
            .then_with(|| b.id.cmp(&a.id))
    });
    if let Some(max) = inputs.max_images {
        list.truncate(max);
    }
    let images: Vec<ContainerImage> = list
        .into_iter()
        .map(|image| {
            let names: Vec<String> = image
                .repo_digests
                .iter()
                .chain(&image.repo_tags)
                .take(MAX_NAMES_PER_IMAGE)
                .cloned()
                .collect();
            ContainerImage {
                names: (!names.is_empty()).then_some(names),
                size_bytes: Some(i64::try_from(image.size_bytes).unwrap_or(i64::MAX)),
            }
        })
        .collect();
    status_mut(node).images = (!images.is_empty()).then_some(images);
}

/// `operatingSystem` and `architecture` (upstream `GoRuntime`).
pub fn go_runtime(node: &mut Node, inputs: &NodeStatusInputs) {
    let info = node_info_mut(status_mut(node));
    info.operating_system
        .clone_from(&inputs.machine.operating_system);
    info.architecture.clone_from(&inputs.machine.architecture);
}

/// Reason and message of a pressure condition in one state.
type Texts = (&'static str, &'static str);

/// `MemoryPressure` (upstream `MemoryPressureCondition`).
pub fn memory_pressure(node: &mut Node, inputs: &NodeStatusInputs) {
    pressure_condition(
        node,
        inputs,
        "MemoryPressure",
        inputs.memory_pressure,
        (
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
        ),
        (
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
    );
}

/// `DiskPressure` (upstream `DiskPressureCondition`).
pub fn disk_pressure(node: &mut Node, inputs: &NodeStatusInputs) {
    pressure_condition(
        node,
        inputs,
        "DiskPressure",
        inputs.disk_pressure,
        ("KubeletHasDiskPressure", "kubelet has disk pressure"),
        ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    );
}

/// `PIDPressure` (upstream `PIDPressureCondition`).
pub fn pid_pressure(node: &mut Node, inputs: &NodeStatusInputs) {
    pressure_condition(
        node,
        inputs,
        "PIDPressure",
        inputs.pid_pressure,
        (
            "KubeletHasInsufficientPID",
            "kubelet has insufficient PID available",
        ),
        (
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    );
}

/// Heartbeat always; status, reason, message and transition time only when the status
/// changes (a new condition starts as `Unknown`, so it always "changes").
fn pressure_condition(
    node: &mut Node,
    inputs: &NodeStatusInputs,
    type_: &str,
    under_pressure: bool,
    when_true: Texts,
    when_false: Texts,
) {
    let now = to_time(inputs.now);
    let conditions = status_mut(node).conditions.get_or_insert_with(Vec::new);
    let index = match conditions.iter().position(|c| c.type_ == type_) {
        Some(i) => i,
        None => {
            conditions.push(NodeCondition {
                type_: type_.to_string(),
                status: "Unknown".to_string(),
                ..Default::default()
            });
            conditions.len() - 1
        }
    };
    let cond = &mut conditions[index];
    cond.last_heartbeat_time = Some(now.clone());
    let (status, (reason, message)) = if under_pressure {
        ("True", when_true)
    } else {
        ("False", when_false)
    };
    if cond.status != status {
        cond.status = status.to_string();
        cond.reason = Some(reason.to_string());
        cond.message = Some(message.to_string());
        cond.last_transition_time = Some(now);
    }
}

/// `Ready` (upstream `ReadyCondition`): `True`/`KubeletReady` when [`ready_errors`] finds
/// nothing, else `False`/`KubeletNotReady` with the errors aggregated as upstream prints
/// them. The transition time is kept while the status holds.
pub fn ready_condition(node: &mut Node, inputs: &NodeStatusInputs) {
    let now = to_time(inputs.now);
    let errors = ready_errors(node, inputs);
    let (status, reason, message) = match aggregate(&errors) {
        None => (
            "True",
            "KubeletReady",
            "kubelet is posting ready status".to_string(),
        ),
        Some(message) => ("False", "KubeletNotReady", message),
    };
    let mut cond = NodeCondition {
        type_: "Ready".to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now),
    };
    let conditions = status_mut(node).conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(old) => {
            if old.status == cond.status {
                cond.last_transition_time = old.last_transition_time.take();
            }
            *old = cond;
        }
        None => conditions.push(cond),
    }
}

/// Why the node is not ready, in upstream's order: runtime errors (status check, PLEG,
/// RuntimeReady), network errors, other subsystems' errors, missing capacity.
pub fn ready_errors(node: &Node, inputs: &NodeStatusInputs) -> Vec<String> {
    let mut errors = Vec::new();
    match inputs.runtime_sync {
        super::RuntimeSync::NotYet => {
            errors.push("container runtime status check may not have completed yet".to_string())
        }
        super::RuntimeSync::Stale => errors.push("container runtime is down".to_string()),
        super::RuntimeSync::Recent => {}
    }
    if !inputs.pleg_healthy {
        errors.push(format!("PLEG is not healthy: {}", inputs.pleg_message));
    }
    let condition = |type_: &str| -> Result<(), String> {
        let conds = inputs.runtime_conditions.as_deref().unwrap_or_default();
        match conds.iter().find(|c| c.type_ == type_) {
            Some(c) if c.status => Ok(()),
            Some(c) => Err(c.to_string()),
            None => Err("<nil>".to_string()),
        }
    };
    match &inputs.runtime_conditions {
        None => {}
        Some(_) => {
            if let Err(c) = condition("RuntimeReady") {
                errors.push(format!("container runtime not ready: {c}"));
            }
        }
    }
    match &inputs.runtime_conditions {
        None => errors.push("network state unknown".to_string()),
        Some(_) => {
            if let Err(c) = condition("NetworkReady") {
                errors.push(format!("container runtime network not ready: {c}"));
            }
        }
    }
    errors.extend(inputs.other_errors.iter().cloned());
    let capacity = node.status.as_ref().and_then(|s| s.capacity.as_ref());
    let missing: Vec<&str> = REQUIRED_CAPACITIES
        .iter()
        .copied()
        .filter(|r| !capacity.is_some_and(|c| c.contains_key(*r)))
        .collect();
    if !missing.is_empty() {
        errors.push(format!(
            "missing node capacity for resources: {}",
            missing.join(", ")
        ));
    }
    errors
}

/// Upstream `utilerrors.NewAggregate(errs).Error()`: nothing → `None`, one distinct message
/// as is, several as `[a, b]`.
pub fn aggregate(errors: &[String]) -> Option<String> {
    let mut distinct: Vec<&str> = Vec::new();
    for e in errors {
        if !distinct.contains(&e.as_str()) {
            distinct.push(e);
        }
    }
    match distinct.len() {
        0 => None,
        1 => Some(distinct[0].to_string()),
        _ => Some(format!("[{}]", distinct.join(", "))),
    }
}

fn status_mut(node: &mut Node) -> &mut NodeStatus {
    node.status.get_or_insert_with(NodeStatus::default)
}

fn node_info_mut(status: &mut NodeStatus) -> &mut NodeSystemInfo {
    status.node_info.get_or_insert_with(NodeSystemInfo::default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodestatus::machine::{HugePages, MachineInfo};
    use crate::nodestatus::{
        AllocatableReservation, ImageInfo, Reserved, RuntimeCondition, RuntimeSync,
    };
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_751_306 + secs)
    }

    /// The reference machine (reference/node.yaml).
    pub(crate) fn reference_inputs() -> NodeStatusInputs {
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

    fn cond(t: &str, status: bool, reason: &str, message: &str) -> RuntimeCondition {
        RuntimeCondition {
            type_: t.into(),
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn apply(setter: fn(&mut Node, &NodeStatusInputs), inputs: &NodeStatusInputs) -> Node {
        let mut node = Node::default();
        setter(&mut node, inputs);
        node
    }

    fn status(node: &Node) -> &NodeStatus {
        node.status.as_ref().unwrap()
    }

    fn quantities(map: &Option<BTreeMap<String, Quantity>>) -> Vec<(String, String)> {
        map.as_ref()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn addresses_internal_ip_then_hostname() {
        let node = apply(node_address, &reference_inputs());
        let got: Vec<_> = status(&node)
            .addresses
            .as_ref()
            .unwrap()
            .iter()
            .map(|a| (a.type_.as_str(), a.address.as_str()))
            .collect();
        assert_eq!(
            got,
            [("InternalIP", "192.0.2.2"), ("Hostname", "rust-node")]
        );
        // No IP: the previous addresses stay.
        let mut inputs = reference_inputs();
        inputs.node_ips.clear();
        let mut kept = node.clone();
        node_address(&mut kept, &inputs);
        assert_eq!(kept, node);
    }

    #[test]
    fn capacity_and_allocatable_match_reference_node() {
        let node = apply(machine_info, &reference_inputs());
        let s = status(&node);
        assert_eq!(
            quantities(&s.capacity),
            pairs(&[
                ("cpu", "2"),
                ("ephemeral-storage", "264212084Ki"),
                ("hugepages-1Gi", "0"),
                ("hugepages-2Mi", "0"),
                ("memory", "24684084Ki"),
                ("pods", "110"),
            ])
        );
        assert_eq!(
            quantities(&s.allocatable),
            pairs(&[
                ("cpu", "2"),
                ("ephemeral-storage", "243497856212"),
                ("hugepages-1Gi", "0"),
                ("hugepages-2Mi", "0"),
                ("memory", "24581684Ki"),
                ("pods", "110"),
            ])
        );
        let info = s.node_info.as_ref().unwrap();
        assert_eq!(info.machine_id, "3d1219c7c4c5404aaa1f6d2a48adfda4");
        assert_eq!(info.boot_id, "2ce5c0d8-6426-4a48-ab5a-4318a073de9d");
    }

    #[test]
    fn allocatable_arithmetic() {
        struct Case {
            name: &'static str,
            reservation: AllocatableReservation,
            hugepages_1g: u64,
            pods_per_core: u32,
            want: &'static [(&'static str, &'static str)],
        }
        let reserved = Reserved {
            cpu_millis: 500,
            memory_bytes: 1 << 30,
            ephemeral_storage_bytes: 1 << 30,
        };
        let cases = [
            Case {
                name: "no reservation, no eviction",
                reservation: AllocatableReservation {
                    eviction_memory_available: None,
                    eviction_nodefs_available: None,
                    ..Default::default()
                },
                hugepages_1g: 0,
                pods_per_core: 0,
                want: &[
                    ("cpu", "2"),
                    ("ephemeral-storage", "264212084Ki"),
                    ("memory", "24684084Ki"),
                ],
            },
            Case {
                name: "system + kube reserved",
                reservation: AllocatableReservation {
                    system_reserved: reserved,
                    kube_reserved: Reserved {
                        cpu_millis: 100,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                hugepages_1g: 0,
                pods_per_core: 0,
                want: &[
                    ("cpu", "1400m"),
                    ("ephemeral-storage", "242424114388"),
                    ("memory", "23533108Ki"),
                ],
            },
            Case {
                name: "hugepages come out of memory, pods per core",
                reservation: AllocatableReservation::default(),
                hugepages_1g: 2,
                pods_per_core: 10,
                want: &[
                    ("hugepages-1Gi", "2Gi"),
                    ("memory", "22484532Ki"),
                    ("pods", "20"),
                ],
            },
            Case {
                name: "never negative",
                reservation: AllocatableReservation {
                    system_reserved: Reserved {
                        cpu_millis: 5000,
                        memory_bytes: i64::MAX,
                        ephemeral_storage_bytes: 0,
                    },
                    ..Default::default()
                },
                hugepages_1g: 0,
                pods_per_core: 0,
                want: &[("cpu", "0"), ("memory", "0")],
            },
        ];
        for case in cases {
            let mut inputs = reference_inputs();
            inputs.reservation = case.reservation;
            inputs.machine.hugepages[1].pages = case.hugepages_1g;
            inputs.pods_per_core = case.pods_per_core;
            let node = apply(machine_info, &inputs);
            let alloc = status(&node).allocatable.as_ref().unwrap();
            for (name, want) in case.want {
                assert_eq!(alloc[*name].0, *want, "{}: {name}", case.name);
            }
        }
    }

    #[test]
    fn foreign_capacity_is_kept_and_storage_may_be_unknown() {
        let mut node = Node::default();
        status_mut(&mut node).capacity = Some(
            [("example.com/gpu".to_string(), Quantity("4".into()))]
                .into_iter()
                .collect(),
        );
        let mut inputs = reference_inputs();
        inputs.machine.ephemeral_storage_bytes = None;
        machine_info(&mut node, &inputs);
        let s = status(&node);
        assert_eq!(s.capacity.as_ref().unwrap()["example.com/gpu"].0, "4");
        assert_eq!(s.allocatable.as_ref().unwrap()["example.com/gpu"].0, "4");
        assert!(!s
            .capacity
            .as_ref()
            .unwrap()
            .contains_key("ephemeral-storage"));
    }

    #[test]
    fn versions() {
        let cases = [
            (Some("v1.6.20"), "containerd://1.6.20"),
            (Some("1.28.1"), "containerd://1.28.1"),
            (Some("vNext"), "containerd://vNext"),
            (None, "containerd://Unknown"),
        ];
        for (version, want) in cases {
            let mut inputs = reference_inputs();
            inputs.runtime_version = version.map(String::from);
            let mut node = apply(version_info, &inputs);
            go_runtime(&mut node, &inputs);
            let info = status(&node).node_info.as_ref().unwrap();
            assert_eq!(info.container_runtime_version, want);
            assert_eq!(info.kernel_version, "6.18.44-fc-v669");
            assert_eq!(info.os_image, "Debian GNU/Linux 12 (bookworm)");
            assert_eq!(
                info.kubelet_version,
                format!("v{}", env!("CARGO_PKG_VERSION"))
            );
            assert_eq!(info.kube_proxy_version, "");
            assert_eq!(
                (info.operating_system.as_str(), info.architecture.as_str()),
                ("linux", "amd64")
            );
        }
    }

    #[test]
    fn kubelet_endpoint_port() {
        let mut inputs = reference_inputs();
        let node = apply(daemon_endpoints, &inputs);
        let json = serde_json::to_value(status(&node).daemon_endpoints.as_ref().unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kubeletEndpoint": {"Port": 10250}})
        );
        inputs.kubelet_port = 10255;
        let node = apply(daemon_endpoints, &inputs);
        let port = status(&node)
            .daemon_endpoints
            .as_ref()
            .unwrap()
            .kubelet_endpoint
            .as_ref()
            .unwrap()
            .port;
        assert_eq!(port, 10255);
    }

    #[test]
    fn image_list_sorted_capped_and_named() {
        let image = |id: &str, size: u64, tags: &[&str], digests: &[&str]| ImageInfo {
            id: id.into(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            size_bytes: size,
        };
        let mut inputs = reference_inputs();
        inputs.images = vec![
            image("a", 1997425, &[], &[]),
            image("b", 2130562, &["registry.k8s.io/pause:3.6"], &[]),
            image("c", 2130545, &["t1", "t2", "t3", "t4"], &["d1", "d2"]),
        ];
        let node = apply(images, &inputs);
        let got: Vec<_> = status(&node)
            .images
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| (i.names.clone(), i.size_bytes))
            .collect();
        let names = |n: &[&str]| Some(n.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            got,
            vec![
                (names(&["registry.k8s.io/pause:3.6"]), Some(2130562)),
                (names(&["d1", "d2", "t1", "t2", "t3"]), Some(2130545)),
                (None, Some(1997425)),
            ]
        );
        inputs.max_images = Some(1);
        assert_eq!(
            status(&apply(images, &inputs))
                .images
                .as_ref()
                .unwrap()
                .len(),
            1
        );
        inputs.images.clear();
        assert_eq!(status(&apply(images, &inputs)).images, None);
    }

    fn find<'a>(node: &'a Node, type_: &str) -> &'a NodeCondition {
        status(node)
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    #[test]
    fn pressure_conditions() {
        type PressureCase = (
            fn(&mut Node, &NodeStatusInputs),
            &'static str,
            fn(&mut NodeStatusInputs),
            &'static str,
            &'static str,
            &'static str,
            &'static str,
        );
        let cases: [PressureCase; 3] = [
            (
                memory_pressure,
                "MemoryPressure",
                |i| i.memory_pressure = true,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (
                disk_pressure,
                "DiskPressure",
                |i| i.disk_pressure = true,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
            ),
            (
                pid_pressure,
                "PIDPressure",
                |i| i.pid_pressure = true,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
        ];
        for (setter, type_, press, ok_reason, ok_msg, bad_reason, bad_msg) in cases {
            let mut inputs = reference_inputs();
            let mut node = apply(setter, &inputs);
            let c = find(&node, type_).clone();
            assert_eq!(
                (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
                ("False", Some(ok_reason), Some(ok_msg))
            );
            assert_eq!(c.last_transition_time, Some(to_time(at(0))));
            // Heartbeat moves, transition stays.
            inputs.now = at(10);
            setter(&mut node, &inputs);
            let c = find(&node, type_).clone();
            assert_eq!(c.last_heartbeat_time, Some(to_time(at(10))));
            assert_eq!(c.last_transition_time, Some(to_time(at(0))));
            // Pressure: flips with a new transition time.
            inputs.now = at(20);
            press(&mut inputs);
            setter(&mut node, &inputs);
            let c = find(&node, type_);
            assert_eq!(
                (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
                ("True", Some(bad_reason), Some(bad_msg))
            );
            assert_eq!(c.last_transition_time, Some(to_time(at(20))));
            assert_eq!(status(&node).conditions.as_ref().unwrap().len(), 1);
        }
    }

    #[test]
    fn ready_messages() {
        let with_capacity = |inputs: &NodeStatusInputs| {
            let mut node = apply(machine_info, inputs);
            ready_condition(&mut node, inputs);
            find(&node, "Ready").clone()
        };
        let cni = cond(
            "NetworkReady",
            false,
            "NetworkPluginNotReady",
            "Network plugin returns error: cni plugin not initialized",
        );
        type Tweak = fn(&mut NodeStatusInputs);
        let cases: Vec<(&str, Tweak, &str, &str, &str)> = vec![
            ("ready", |_| {}, "True", "KubeletReady", "kubelet is posting ready status"),
            ("before the first status", |i| {
                i.runtime_sync = RuntimeSync::NotYet;
                i.runtime_conditions = None;
            }, "False", "KubeletNotReady",
             "[container runtime status check may not have completed yet, network state unknown]"),
            ("runtime down", |i| i.runtime_sync = RuntimeSync::Stale, "False", "KubeletNotReady",
             "container runtime is down"),
            ("network not ready", |i| {
                i.runtime_conditions = Some(vec![
                    cond("RuntimeReady", true, "", ""),
                    cond("NetworkReady", false, "NetworkPluginNotReady",
                         "Network plugin returns error: cni plugin not initialized"),
                ]);
            }, "False", "KubeletNotReady",
             "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"),
            ("runtime condition missing", |i| {
                i.runtime_conditions = Some(vec![cond("NetworkReady", true, "", "")]);
            }, "False", "KubeletNotReady", "container runtime not ready: <nil>"),
            ("PLEG unhealthy and storage", |i| {
                i.pleg_healthy = false;
                i.pleg_message = "pleg was last seen active 3m0.5s ago; threshold is 3m0s".into();
                i.other_errors = vec!["storage broken".into(), "storage broken".into()];
            }, "False", "KubeletNotReady",
             "[PLEG is not healthy: pleg was last seen active 3m0.5s ago; threshold is 3m0s, storage broken]"),
            ("missing storage capacity", |i| i.machine.ephemeral_storage_bytes = None,
             "False", "KubeletNotReady", "missing node capacity for resources: ephemeral-storage"),
        ];
        for (name, tweak, status_, reason, message) in cases {
            let mut inputs = reference_inputs();
            tweak(&mut inputs);
            let c = with_capacity(&inputs);
            assert_eq!(
                (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
                (status_, Some(reason), Some(message)),
                "{name}"
            );
        }
        assert_eq!(cni.to_string(), "NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized");
        // Without machine_info nothing is known.
        let node = apply(ready_condition, &reference_inputs());
        assert_eq!(
            find(&node, "Ready").message.as_deref(),
            Some("missing node capacity for resources: cpu, memory, pods, ephemeral-storage")
        );
    }

    #[test]
    fn ready_transition_time_kept_until_status_changes() {
        let mut inputs = reference_inputs();
        inputs.runtime_sync = RuntimeSync::NotYet;
        let mut node = apply(machine_info, &inputs);
        ready_condition(&mut node, &inputs);
        assert_eq!(find(&node, "Ready").status, "False");
        // Still not ready, different message: transition time kept.
        inputs.now = at(5);
        inputs.runtime_sync = RuntimeSync::Stale;
        ready_condition(&mut node, &inputs);
        let c = find(&node, "Ready");
        assert_eq!(c.last_transition_time, Some(to_time(at(0))));
        assert_eq!(c.last_heartbeat_time, Some(to_time(at(5))));
        assert_eq!(c.message.as_deref(), Some("container runtime is down"));
        // Ready: new transition time, still one Ready condition, last.
        inputs.now = at(10);
        inputs.runtime_sync = RuntimeSync::Recent;
        memory_pressure(&mut node, &inputs);
        ready_condition(&mut node, &inputs);
        let c = find(&node, "Ready");
        assert_eq!(c.status, "True");
        assert_eq!(c.last_transition_time, Some(to_time(at(10))));
        let types: Vec<_> = status(&node)
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(types, ["Ready", "MemoryPressure"]);
    }

    #[test]
    fn aggregate_like_upstream() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(aggregate(&[]), None);
        assert_eq!(aggregate(&s(&["a"])).as_deref(), Some("a"));
        assert_eq!(aggregate(&s(&["a", "a"])).as_deref(), Some("a"));
        assert_eq!(aggregate(&s(&["a", "b", "a"])).as_deref(), Some("[a, b]"));
    }

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
