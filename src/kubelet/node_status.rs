//! What the node status threads need from the kubelet: [`KubeletNodeStatus`] gathers the
//! inputs of the node status setters (machine facts read once at start-up, the runtime's
//! `Status` conditions and images, PLEG health) and turns condition transitions into node
//! events; [`start_node_threads`] starts `node-status` and `node-lease`.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

use crate::api::KubeClient;
use crate::clock::Clock;
use crate::cri::{ImageService, RuntimeService};
use crate::events::{EventType, Recorder};
use crate::nodestatus::lease::{NodeLeaseController, DEFAULT_LEASE_DURATION_SECONDS};
use crate::nodestatus::machine::{read_machine_info, MachineInfo};
use crate::nodestatus::record::NodeRecord;
use crate::nodestatus::registration::NodeRegistration;
use crate::nodestatus::runtime_health::RuntimeHealth;
use crate::nodestatus::updater::{NodeStatusConfig, NodeStatusSource, NodeStatusUpdater};
use crate::nodestatus::{
    AllocatableReservation, ImageInfo, NodeEvent, NodeStatusInputs, RuntimeCondition,
};
use crate::pleg::GenericPleg;

use super::KubeletError;

/// `nodeStatusMaxImages`: -1 (or any negative) reports every image, 0 none, else the largest
/// that many (upstream default 50).
fn max_images(configured: Option<i32>) -> Option<usize> {
    match configured {
        None => Some(crate::nodestatus::DEFAULT_MAX_IMAGES),
        Some(n) => usize::try_from(n).ok(),
    }
}

/// The kubelet side of node status.
pub struct KubeletNodeStatus {
    node_name: String,
    node_ips: Vec<IpAddr>,
    machine: MachineInfo,
    max_pods: u32,
    pods_per_core: u32,
    reservation: AllocatableReservation,
    kubelet_port: u16,
    max_images: Option<usize>,
    runtime_name: String,
    runtime_version: String,
    runtime: Arc<dyn RuntimeService>,
    images: Arc<dyn ImageService>,
    pleg: Arc<GenericPleg>,
    recorder: Arc<dyn Recorder>,
    node: Arc<NodeRecord>,
    pressure: Arc<crate::eviction::NodePressure>,
    runtime_manager: Option<Arc<crate::kuberuntime::RuntimeManager>>,
    runtime_health: std::sync::Mutex<RuntimeHealth>,
}

/// Everything [`KubeletNodeStatus`] is built from.
pub struct NodeStatusDeps {
    /// CRI runtime (Status).
    pub runtime: Arc<dyn RuntimeService>,
    /// CRI images (node images list).
    pub images: Arc<dyn ImageService>,
    /// PLEG (health).
    pub pleg: Arc<GenericPleg>,
    /// Node events.
    pub recorder: Arc<dyn Recorder>,
    /// Runtime name from CRI Version (`containerd`).
    pub runtime_name: String,
    /// Runtime version from CRI Version (`1.6.20`).
    pub runtime_version: String,
    /// The kubelet's record of its Node (node IPs in; UID and addresses out).
    pub node: Arc<NodeRecord>,
    /// The eviction manager's node conditions.
    pub pressure: Arc<crate::eviction::NodePressure>,
    /// The runtime manager, whose volume manager reports `volumesInUse`.
    pub runtime_manager: Option<Arc<crate::kuberuntime::RuntimeManager>>,
}

impl KubeletNodeStatus {
    /// Reads the machine facts once (they do not change while the kubelet runs) and resolves
    /// the node IP once (resolution may block on DNS).
    pub fn new(config: &crate::config::settings::KubeletConfig, deps: NodeStatusDeps) -> Self {
        let machine = read_machine_info(Path::new("/"), &config.root_dir).unwrap_or_else(|e| {
            log::error!("reading machine information: {e}");
            MachineInfo::default()
        });
        let node_ips = deps.node.node_ips().to_vec();
        let raw = &config.raw;
        let reservation = AllocatableReservation::from_config(
            raw.system_reserved.as_ref(),
            raw.kube_reserved.as_ref(),
            raw.eviction_hard.as_ref(),
        )
        .unwrap_or_else(|e| {
            log::error!("systemReserved/kubeReserved/evictionHard: {e}; reserving nothing");
            AllocatableReservation::default()
        });
        KubeletNodeStatus {
            node_name: config.node_name.clone(),
            node_ips,
            machine,
            max_pods: config.max_pods,
            pods_per_core: raw
                .pods_per_core
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
            reservation,
            kubelet_port: raw
                .port
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(10250),
            max_images: max_images(raw.node_status_max_images),
            runtime_name: deps.runtime_name,
            runtime_version: deps.runtime_version,
            runtime: deps.runtime,
            images: deps.images,
            pleg: deps.pleg,
            recorder: deps.recorder,
            node: deps.node,
            pressure: deps.pressure,
            runtime_manager: deps.runtime_manager,
            runtime_health: std::sync::Mutex::default(),
        }
    }
}

impl NodeStatusSource for KubeletNodeStatus {
    fn node_status_inputs(&self) -> NodeStatusInputs {
        let status = match self.runtime.status(false) {
            Ok(resp) => Some(
                resp.get_status()
                    .get_conditions()
                    .iter()
                    .map(|c| RuntimeCondition {
                        type_: c.get_field_type().to_string(),
                        status: c.get_status(),
                        reason: c.get_reason().to_string(),
                        message: c.get_message().to_string(),
                    })
                    .collect(),
            ),
            Err(e) => {
                log::warn!("container runtime status: {e}");
                None
            }
        };
        let (runtime_sync, runtime_conditions) = self
            .runtime_health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(std::time::Instant::now(), status);
        let images = match self.images.list_images(None) {
            Ok(list) => list
                .iter()
                .map(|i| ImageInfo {
                    id: i.get_id().to_string(),
                    repo_tags: i.get_repo_tags().to_vec(),
                    repo_digests: i.get_repo_digests().to_vec(),
                    size_bytes: i.get_size(),
                })
                .collect(),
            Err(e) => {
                log::warn!("listing images for node status: {e}");
                Vec::new()
            }
        };
        let pleg_healthy = self.pleg.healthy();
        let pressure = self.pressure.conditions();
        use crate::eviction::NodeCondition;
        NodeStatusInputs {
            memory_pressure: pressure.contains(&NodeCondition::MemoryPressure),
            disk_pressure: pressure.contains(&NodeCondition::DiskPressure),
            pid_pressure: pressure.contains(&NodeCondition::PidPressure),
            hostname: self.node_name.clone(),
            node_ips: self.node_ips.clone(),
            machine: self.machine.clone(),
            max_pods: self.max_pods,
            pods_per_core: self.pods_per_core,
            reservation: self.reservation.clone(),
            runtime_name: self.runtime_name.clone(),
            runtime_version: Some(self.runtime_version.clone()),
            kubelet_version: crate::version::kubelet_version(),
            kubelet_port: self.kubelet_port,
            images,
            max_images: self.max_images,
            runtime_sync,
            runtime_conditions,
            pleg_healthy,
            volumes_in_use: self
                .runtime_manager
                .as_ref()
                .map(|m| m.volumes().volumes_in_use())
                .unwrap_or_default(),
            devices: self
                .runtime_manager
                .as_ref()
                .and_then(|m| m.devices())
                .map(|d| d.capacity())
                .unwrap_or_default(),
            pleg_message: if pleg_healthy {
                String::new()
            } else {
                format!(
                    "pleg was last seen active more than {:?} ago",
                    crate::pleg::RELIST_THRESHOLD
                )
            },
            ..Default::default()
        }
    }

    fn node_observed(&self, node: &k8s_openapi::api::core::v1::Node) {
        self.node.observe(node);
        // Volumes the API server has in `volumesInUse` may be mounted (upstream marks them
        // reported in use after each node status update).
        if let Some(manager) = &self.runtime_manager {
            let reported = node
                .status
                .as_ref()
                .and_then(|s| s.volumes_in_use.clone())
                .unwrap_or_default();
            manager.volumes().mark_volumes_reported_in_use(&reported);
        }
    }

    fn record_node_event(&self, event: &NodeEvent) {
        let kind = if event.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.recorder
            .node_event(&self.node_name, kind, event.reason, event.message.clone());
    }
}

/// Starts the `node-status` and `node-lease` threads.
pub fn start_node_threads(
    config: &crate::config::settings::KubeletConfig,
    client: Arc<dyn KubeClient>,
    clock: Arc<dyn Clock>,
    source: Arc<KubeletNodeStatus>,
    stop: &Receiver<()>,
) -> Result<Vec<JoinHandle<()>>, KubeletError> {
    // Capacity 1: one pending wake-up covers every change before the updater runs.
    let (nudge_tx, nudge_rx) = crossbeam_channel::bounded(1);
    source.pressure.notify_changes(nudge_tx);
    let (updater, lease) = node_controllers(config, client, clock, source, Some(nudge_rx));
    let stop_status = stop.clone();
    let stop_lease = stop.clone();
    let status = std::thread::Builder::new()
        .name("node-status".into())
        .spawn(move || updater.run(stop_status))
        .map_err(|source| KubeletError::Thread {
            name: "node-status",
            source,
        })?;
    let lease = std::thread::Builder::new()
        .name("node-lease".into())
        .spawn(move || lease.run(stop_lease))
        .map_err(|source| KubeletError::Thread {
            name: "node-lease",
            source,
        })?;
    Ok(vec![status, lease])
}

/// What the node registers with: `--node-labels`, `registerWithTaints` (plus the
/// uninitialized taint with `--cloud-provider=external`, as upstream) and `providerID`.
pub fn node_registration(config: &crate::config::settings::KubeletConfig) -> NodeRegistration {
    use crate::config::node_flags::TAINT_EXTERNAL_CLOUD_PROVIDER;
    use k8s_openapi::api::core::v1::Taint;
    let mut registration =
        NodeRegistration::new(config.node_name.clone(), config.node_name.clone());
    registration.node_labels = config.node_labels.clone();
    registration.register_with_taints = config
        .raw
        .register_with_taints
        .iter()
        .flatten()
        .map(|t| Taint {
            key: t.key.clone(),
            value: t.value.clone().filter(|v| !v.is_empty()),
            effect: t.effect.clone(),
            time_added: None,
        })
        .collect();
    if config.external_cloud_provider {
        registration.register_with_taints.push(Taint {
            key: TAINT_EXTERNAL_CLOUD_PROVIDER.to_string(),
            value: Some("true".to_string()),
            effect: "NoSchedule".to_string(),
            time_added: None,
        });
    }
    registration.provider_id = config.raw.provider_id.clone().filter(|id| !id.is_empty());
    registration
}

/// The node status updater and the Lease controller for the configured node, without
/// threads (their `run` loops, or a shared timer calling their sync steps, drive them).
pub fn node_controllers(
    config: &crate::config::settings::KubeletConfig,
    client: Arc<dyn KubeClient>,
    clock: Arc<dyn Clock>,
    source: Arc<KubeletNodeStatus>,
    nudge: Option<Receiver<()>>,
) -> (Arc<NodeStatusUpdater>, Arc<NodeLeaseController>) {
    let mut status_config = NodeStatusConfig::new(node_registration(config));
    status_config.register_node = config.raw.register_node.unwrap_or(true);
    if let Some(d) = config
        .raw
        .node_status_update_frequency
        .and_then(|d| d.to_std())
        .filter(|d| !d.is_zero())
    {
        status_config.update_frequency = d;
    }
    if let Some(d) = config
        .raw
        .node_status_report_frequency
        .and_then(|d| d.to_std())
        .filter(|d| !d.is_zero())
    {
        status_config.report_frequency = d;
    }
    let mut updater = NodeStatusUpdater::new(
        status_config,
        Arc::clone(&client),
        source,
        Arc::clone(&clock),
    );
    if let Some(nudge) = nudge {
        updater = updater.with_nudge(nudge);
    }
    let updater = Arc::new(updater);
    let lease = Arc::new(NodeLeaseController::new(
        client,
        clock,
        config.node_name.clone(),
        config
            .raw
            .node_lease_duration_seconds
            .unwrap_or(DEFAULT_LEASE_DURATION_SECONDS),
    ));
    (updater, lease)
}
