//! The Summary API document (upstream `k8s.io/kubelet/pkg/apis/stats/v1alpha1`), as
//! `/stats/summary` serves it and the eviction and metrics code read it: plain serde types,
//! filled by [`super::stats::StatsProvider`].

use serde::Serialize;

/// CPU figures.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When sampled.
    pub time: String,
    /// Average nanocores over the last sample window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// Cumulative core-nanoseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
}

/// Memory figures.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// When sampled.
    pub time: String,
    /// Bytes left before the limit (or capacity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// All memory in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    /// Memory that cannot be reclaimed easily.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    /// Anonymous and swap cache memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// Page faults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<u64>,
    /// Major page faults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major_page_faults: Option<u64>,
}

/// Filesystem figures.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    /// When sampled.
    pub time: String,
    /// Bytes free for unprivileged users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// Size of the filesystem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// Bytes used (by the object the figures are about).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// Free inodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_free: Option<u64>,
    /// All inodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    /// Inodes used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inodes_used: Option<u64>,
}

/// The runtime's filesystems.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStats {
    /// Where images live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_fs: Option<FsStats>,
}

/// The node.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// Node name.
    pub node_name: String,
    /// When the node (kubelet process) started.
    pub start_time: String,
    /// CPU.
    pub cpu: CpuStats,
    /// Memory.
    pub memory: MemoryStats,
    /// The root-dir filesystem.
    pub fs: FsStats,
    /// Runtime filesystems.
    pub runtime: RuntimeStats,
}

/// A pod's identity.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodReference {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID.
    pub uid: String,
}

/// One container.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// Name in the pod spec.
    pub name: String,
    /// When it was created.
    pub start_time: String,
    /// CPU.
    pub cpu: CpuStats,
    /// Memory.
    pub memory: MemoryStats,
    /// The writable layer.
    pub rootfs: FsStats,
    /// Its log file.
    pub logs: FsStats,
}

/// Counters of one network interface.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStats {
    /// Interface name (`eth0`).
    pub name: String,
    /// Bytes received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
    /// Receive errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_errors: Option<u64>,
    /// Bytes sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    /// Send errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_errors: Option<u64>,
}

/// A pod's network: its default interface inline, then every interface.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStats {
    /// When sampled.
    pub time: String,
    /// The default interface.
    #[serde(flatten)]
    pub default_interface: InterfaceStats,
    /// Every interface.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceStats>,
}

/// A PersistentVolumeClaim a volume comes from.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PvcReference {
    /// Claim name.
    pub name: String,
    /// Claim namespace.
    pub namespace: String,
}

/// One volume of a pod.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStats {
    /// Usage, and the capacity of the filesystem holding the volume.
    #[serde(flatten)]
    pub fs: FsStats,
    /// Volume name in the pod spec.
    pub name: String,
    /// The claim, for volumes from a PersistentVolumeClaim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pvc_ref: Option<PvcReference>,
}

/// One pod.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// Identity.
    pub pod_ref: PodReference,
    /// Earliest container start.
    pub start_time: String,
    /// Containers.
    pub containers: Vec<ContainerStats>,
    /// Sum over containers.
    pub cpu: CpuStats,
    /// Sum over containers.
    pub memory: MemoryStats,
    /// The sandbox's network counters (from CRI `ListPodSandboxStats`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    /// Volumes the kubelet set up under the pod's directory.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume: Vec<VolumeStats>,
    /// Writable layers plus logs.
    #[serde(rename = "ephemeral-storage")]
    pub ephemeral_storage: FsStats,
}

/// The Summary API document.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The node.
    pub node: NodeStats,
    /// Every pod with running containers.
    pub pods: Vec<PodStats>,
}
