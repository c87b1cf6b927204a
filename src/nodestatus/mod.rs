//! Node registration, node status and the node Lease (upstream `kubelet_node_status.go`,
//! `pkg/kubelet/nodestatus` and `pkg/kubelet/nodelease`).
//!
//! - [`machine`] and [`node_ip`] read this machine's facts (main thread, at start-up).
//! - [`setters`] turn a plain [`NodeStatusInputs`] into the Node's status, one small function
//!   per concern, applied in upstream's order by [`set_node_status`].
//! - [`registration`] builds the initial Node and registers (or adopts) it.
//! - [`updater::NodeStatusUpdater`] runs on the `node-status` thread: registers, then patches
//!   `nodes/{name}/status` when something changed or the report period passed.
//! - [`lease::NodeLeaseController`] runs on the `node-lease` thread: renews the Lease in
//!   `kube-node-lease` every 10 s.
//!
//! Condition transitions become [`NodeEvent`]s (`NodeReady`, `NodeHasSufficientMemory`...)
//! found by comparing the node before and after the setters ([`node_events`]), so setters stay
//! pure.

pub mod lease;
pub mod machine;
pub mod node_ip;
pub mod record;
pub mod registration;
pub mod runtime_health;
pub mod setters;
pub mod updater;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;

use crate::quantity;
pub use crate::quantity::{QuantityError, ThresholdValue};
pub use machine::MachineInfo;

/// Upstream default `maxPods`.
pub const DEFAULT_MAX_PODS: u32 = 110;
/// Upstream default kubelet port, reported as `daemonEndpoints.kubeletEndpoint.Port`.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
/// Upstream default `nodeStatusMaxImages`.
pub const DEFAULT_MAX_IMAGES: usize = 50;

/// A condition of the container runtime from CRI `Status` (`RuntimeReady`, `NetworkReady`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeCondition {
    /// `RuntimeReady` or `NetworkReady`.
    pub type_: String,
    /// Whether the condition holds.
    pub status: bool,
    /// Brief reason (`NetworkPluginNotReady`).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl fmt::Display for RuntimeCondition {
    /// Upstream `RuntimeCondition.String()`, which Ready condition messages quote.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={} reason:{} message:{}",
            self.type_, self.status, self.reason, self.message
        )
    }
}

/// How recent the last good CRI `Status` is (upstream `runtimeState.lastBaseRuntimeSync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeSync {
    /// No `Status` call has succeeded yet.
    NotYet,
    /// The last success is within the threshold.
    Recent,
    /// The last success is older than the threshold: the runtime is down.
    Stale,
}

/// Amounts held back from capacity for one reservation (`systemReserved`, `kubeReserved`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage_bytes: i64,
    /// Process IDs (`pid`), held back from the kubepods cgroup's `pids.max`.
    pub pids: i64,
}

impl Reserved {
    /// From a config map such as `{cpu: 500m, memory: 1Gi, ephemeral-storage: 1Gi, pid: 1000}`; other
    /// resource names are ignored (logged).
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Self, QuantityError> {
        let mut out = Reserved::default();
        for (name, value) in map {
            match name.as_str() {
                "cpu" => {
                    out.cpu_millis =
                        i64::try_from(quantity::parse_millis(value)?).unwrap_or(i64::MAX)
                }
                "memory" => out.memory_bytes = quantity::parse_value(value)?,
                "ephemeral-storage" => out.ephemeral_storage_bytes = quantity::parse_value(value)?,
                "pid" => out.pids = quantity::parse_value(value)?,
                other => log::warn!("Ignoring reservation of unsupported resource {other:?}"),
            }
        }
        Ok(out)
    }
}

/// What allocatable subtracts from capacity (upstream `GetNodeAllocatableReservation`).
#[derive(Debug, Clone, PartialEq)]
pub struct AllocatableReservation {
    /// `systemReserved`.
    pub system_reserved: Reserved,
    /// `kubeReserved`.
    pub kube_reserved: Reserved,
    /// Hard eviction `memory.available`.
    pub eviction_memory_available: Option<ThresholdValue>,
    /// Hard eviction `nodefs.available`.
    pub eviction_nodefs_available: Option<ThresholdValue>,
}

impl Default for AllocatableReservation {
    /// No reservations, upstream's default hard eviction: `memory.available<100Mi`,
    /// `nodefs.available<10%`.
    fn default() -> Self {
        AllocatableReservation {
            system_reserved: Reserved::default(),
            kube_reserved: Reserved::default(),
            eviction_memory_available: Some(ThresholdValue::Quantity(100 << 20)),
            eviction_nodefs_available: Some(ThresholdValue::Percentage(0.1)),
        }
    }
}

impl AllocatableReservation {
    /// From the config's maps; `None` keeps the default, an `evictionHard` map replaces the
    /// default thresholds with its `memory.available` and `nodefs.available`.
    pub fn from_config(
        system_reserved: Option<&BTreeMap<String, String>>,
        kube_reserved: Option<&BTreeMap<String, String>>,
        eviction_hard: Option<&BTreeMap<String, String>>,
    ) -> Result<Self, QuantityError> {
        let mut out = AllocatableReservation::default();
        if let Some(map) = system_reserved {
            out.system_reserved = Reserved::from_map(map)?;
        }
        if let Some(map) = kube_reserved {
            out.kube_reserved = Reserved::from_map(map)?;
        }
        if let Some(map) = eviction_hard {
            let threshold = |key: &str| map.get(key).map(|v| ThresholdValue::parse(v)).transpose();
            out.eviction_memory_available = threshold("memory.available")?;
            out.eviction_nodefs_available = threshold("nodefs.available")?;
        }
        Ok(out)
    }
}

/// An image the runtime holds (from CRI `ListImages`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    /// Image id, to order images of equal size as upstream does.
    pub id: String,
    /// `repoTags`.
    pub repo_tags: Vec<String>,
    /// `repoDigests`.
    pub repo_digests: Vec<String>,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// Everything the setters read, filled by the kubelet for each status computation. A plain
/// struct so every setter is testable with a literal.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatusInputs {
    /// The time of this computation (heartbeats, transitions). The updater sets it from its
    /// clock.
    pub now: SystemTime,
    /// Hostname reported as the `Hostname` address.
    pub hostname: String,
    /// `InternalIP` addresses in order (`--node-ip`, or [`node_ip::detect_node_ip`]). Empty
    /// keeps the node's current addresses and logs an error, as upstream.
    pub node_ips: Vec<IpAddr>,
    /// Machine facts.
    pub machine: MachineInfo,
    /// `maxPods`.
    pub max_pods: u32,
    /// `podsPerCore` (0 = no limit).
    pub pods_per_core: u32,
    /// What allocatable holds back.
    pub reservation: AllocatableReservation,
    /// CRI `Version.runtime_name` (`containerd`).
    pub runtime_name: String,
    /// CRI `Version.runtime_version` (`v1.6.20`); `None` when `Version` failed.
    pub runtime_version: Option<String>,
    /// `nodeInfo.kubeletVersion`.
    pub kubelet_version: String,
    /// Port of the kubelet API.
    pub kubelet_port: u16,
    /// Images from the runtime, any order.
    pub images: Vec<ImageInfo>,
    /// `nodeStatusMaxImages`; `None` reports all.
    pub max_images: Option<usize>,
    /// Freshness of the runtime status.
    pub runtime_sync: RuntimeSync,
    /// Conditions of the last CRI `Status`; `None` before the first answer.
    pub runtime_conditions: Option<Vec<RuntimeCondition>>,
    /// Whether PLEG relisted recently.
    pub pleg_healthy: bool,
    /// PLEG's reason when unhealthy (`pleg was last seen active 3m0s ago; threshold is 3m0s`).
    pub pleg_message: String,
    /// Other errors that keep the node NotReady (storage, node shutdown), in order.
    pub other_errors: Vec<String>,
    /// Eviction manager: under memory pressure.
    pub memory_pressure: bool,
    /// Eviction manager: under disk pressure.
    pub disk_pressure: bool,
    /// Eviction manager: under PID pressure.
    pub pid_pressure: bool,
    /// The volume manager's attachable volumes in use (unique names, sorted).
    pub volumes_in_use: Vec<String>,
    /// The extended resources device plugins provide.
    pub devices: crate::devicemanager::DeviceCapacity,
}

impl Default for NodeStatusInputs {
    fn default() -> Self {
        NodeStatusInputs {
            now: UNIX_EPOCH,
            hostname: String::new(),
            node_ips: Vec::new(),
            machine: MachineInfo::default(),
            max_pods: DEFAULT_MAX_PODS,
            pods_per_core: 0,
            reservation: AllocatableReservation::default(),
            runtime_name: String::new(),
            runtime_version: None,
            kubelet_version: default_kubelet_version(),
            kubelet_port: DEFAULT_KUBELET_PORT,
            images: Vec::new(),
            max_images: Some(DEFAULT_MAX_IMAGES),
            runtime_sync: RuntimeSync::NotYet,
            runtime_conditions: None,
            pleg_healthy: true,
            pleg_message: String::new(),
            other_errors: Vec::new(),
            memory_pressure: false,
            disk_pressure: false,
            pid_pressure: false,
            volumes_in_use: Vec::new(),
            devices: crate::devicemanager::DeviceCapacity::default(),
        }
    }
}

/// The reported kubelet version (see [`crate::version::kubelet_version`]).
pub fn default_kubelet_version() -> String {
    crate::version::kubelet_version()
}

/// A node status setter (upstream `nodestatus.Setter`): updates one concern of the node.
pub type Setter = fn(&mut Node, &NodeStatusInputs);

/// The setters in upstream's order (`defaultNodeStatusFuncs`); Ready stays the last condition.
pub const DEFAULT_SETTERS: &[Setter] = &[
    setters::node_address,
    setters::machine_info,
    setters::version_info,
    setters::daemon_endpoints,
    setters::images,
    setters::go_runtime,
    setters::memory_pressure,
    setters::disk_pressure,
    setters::pid_pressure,
    setters::ready_condition,
    setters::volumes_in_use,
];

/// Applies [`DEFAULT_SETTERS`] (upstream `setNodeStatus`).
pub fn set_node_status(node: &mut Node, inputs: &NodeStatusInputs) {
    for setter in DEFAULT_SETTERS {
        setter(node, inputs);
    }
}

/// A node event to record (upstream `recordNodeStatusEvent` and `NodeRebooted`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEvent {
    /// Upstream reason: `NodeReady`, `NodeNotReady`, `NodeHasSufficientMemory`...
    pub reason: &'static str,
    /// `Warning` (only `NodeRebooted`) rather than `Normal`.
    pub warning: bool,
    /// `Node rust-node status is now: NodeReady`.
    pub message: String,
}

impl NodeEvent {
    fn status(node_name: &str, reason: &'static str) -> Self {
        NodeEvent {
            reason,
            warning: false,
            message: format!("Node {node_name} status is now: {reason}"),
        }
    }
}

/// The events the setters' changes call for, comparing `before` with `after` as upstream's
/// setters do while they run: a pressure condition records an event when it appears or
/// flips, Ready only when it flips, and a changed boot id records `NodeRebooted`.
pub fn node_events(node_name: &str, before: &Node, after: &Node) -> Vec<NodeEvent> {
    let mut events = Vec::new();
    let old_boot = boot_id(before);
    let new_boot = boot_id(after);
    if !old_boot.is_empty() && old_boot != new_boot {
        events.push(NodeEvent {
            reason: "NodeRebooted",
            warning: true,
            message: format!("Node {node_name} has been rebooted, boot id: {new_boot}"),
        });
    }
    for cond in conditions(after) {
        let old = conditions(before).iter().find(|c| c.type_ == cond.type_);
        let flipped = old.is_some_and(|o| o.status != cond.status);
        let is_true = cond.status == "True";
        let reason = match cond.type_.as_str() {
            "Ready" if flipped => Some(if is_true { "NodeReady" } else { "NodeNotReady" }),
            "Ready" => None,
            _ if !flipped && old.is_some() => None,
            "MemoryPressure" if is_true => Some("NodeHasInsufficientMemory"),
            "MemoryPressure" => Some("NodeHasSufficientMemory"),
            "DiskPressure" if is_true => Some("NodeHasDiskPressure"),
            "DiskPressure" => Some("NodeHasNoDiskPressure"),
            "PIDPressure" if is_true => Some("NodeHasInsufficientPID"),
            "PIDPressure" => Some("NodeHasSufficientPID"),
            _ => None,
        };
        if let Some(reason) = reason {
            events.push(NodeEvent::status(node_name, reason));
        }
    }
    events
}

fn conditions(node: &Node) -> &[NodeCondition] {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

fn boot_id(node: &Node) -> &str {
    node.status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map_or("", |i| i.boot_id.as_str())
}

/// A `meta/v1 Time` (whole seconds, as it travels on the wire) for a wall-clock time.
pub fn to_time(t: SystemTime) -> Time {
    Time(timestamp(t, 1_000_000_000))
}

/// A `MicroTime` (microsecond precision, as it travels on the wire) for a wall-clock time.
pub fn to_micro_time(t: SystemTime) -> MicroTime {
    MicroTime(timestamp(t, 1_000))
}

/// `t` truncated to a multiple of `unit_nanos`; times before the epoch become the epoch.
fn timestamp(t: SystemTime, unit_nanos: u32) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let nanos = d.subsec_nanos() - d.subsec_nanos() % unit_nanos;
    i64::try_from(d.as_secs())
        .ok()
        .and_then(|secs| Timestamp::new(secs, i32::try_from(nanos).ok()?).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeStatus, NodeSystemInfo};
    use std::time::Duration;

    fn node_with(conds: &[(&str, &str)], boot: &str) -> Node {
        Node {
            status: Some(NodeStatus {
                conditions: Some(
                    conds
                        .iter()
                        .map(|(t, s)| NodeCondition {
                            type_: t.to_string(),
                            status: s.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                node_info: Some(NodeSystemInfo {
                    boot_id: boot.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn events_for_transitions() {
        let all_good = [
            ("MemoryPressure", "False"),
            ("DiskPressure", "False"),
            ("PIDPressure", "False"),
            ("Ready", "True"),
        ];
        let reasons = |before: &Node, after: &Node| -> Vec<&'static str> {
            node_events("rust-node", before, after)
                .iter()
                .map(|e| e.reason)
                .collect()
        };
        // First status: pressure conditions appear, Ready appears without an event.
        let first = reasons(&Node::default(), &node_with(&all_good, "b1"));
        assert_eq!(
            first,
            [
                "NodeHasSufficientMemory",
                "NodeHasNoDiskPressure",
                "NodeHasSufficientPID"
            ]
        );
        // NotReady → Ready, as in events.txt.
        let mut not_ready = all_good;
        not_ready[3].1 = "False";
        let events = node_events(
            "rust-node",
            &node_with(&not_ready, "b1"),
            &node_with(&all_good, "b1"),
        );
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].message, "Node rust-node status is now: NodeReady");
        assert_eq!(
            reasons(&node_with(&all_good, "b1"), &node_with(&not_ready, "b1")),
            ["NodeNotReady"]
        );
        // Nothing changed.
        assert!(reasons(&node_with(&all_good, "b1"), &node_with(&all_good, "b1")).is_empty());
        // Memory pressure flips; reboot noticed.
        let mut pressure = all_good;
        pressure[0].1 = "True";
        let events = node_events(
            "rust-node",
            &node_with(&all_good, "b1"),
            &node_with(&pressure, "b2"),
        );
        assert_eq!(events[0].reason, "NodeRebooted");
        assert!(events[0].warning);
        assert_eq!(
            events[0].message,
            "Node rust-node has been rebooted, boot id: b2"
        );
        assert_eq!(events[1].reason, "NodeHasInsufficientMemory");
    }

    #[test]
    fn times_truncate_to_wire_precision() {
        let t = UNIX_EPOCH + Duration::new(1_795_751_358, 151_422_999);
        let json = |v: serde_json::Value| v.as_str().unwrap().to_string();
        assert_eq!(
            json(serde_json::to_value(to_micro_time(t)).unwrap()),
            "2026-11-27T03:49:18.151422Z"
        );
        assert_eq!(
            json(serde_json::to_value(to_time(t)).unwrap()),
            "2026-11-27T03:49:18Z"
        );
        assert_eq!(
            to_time(t),
            to_time(UNIX_EPOCH + Duration::from_secs(1_795_751_358))
        );
        assert_eq!(
            to_time(UNIX_EPOCH - Duration::from_secs(5)).0,
            Timestamp::UNIX_EPOCH
        );
    }

    #[test]
    fn reservations_from_config() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let r = AllocatableReservation::from_config(
            Some(&map(&[("cpu", "500m"), ("memory", "1Gi"), ("pid", "100")])),
            None,
            Some(&map(&[("memory.available", "200Mi")])),
        )
        .unwrap();
        assert_eq!(r.system_reserved.cpu_millis, 500);
        assert_eq!(r.system_reserved.memory_bytes, 1 << 30);
        assert_eq!(r.kube_reserved, Reserved::default());
        assert_eq!(
            r.eviction_memory_available,
            Some(ThresholdValue::Quantity(200 << 20))
        );
        assert_eq!(r.eviction_nodefs_available, None);
        let d = AllocatableReservation::from_config(None, None, None).unwrap();
        assert_eq!(d, AllocatableReservation::default());
        assert!(
            AllocatableReservation::from_config(Some(&map(&[("memory", "lots")])), None, None)
                .is_err()
        );
    }
}
