//! What the runtime says about pods: the per-pod status a sync starts from
//! ([`RuntimePodStatus`], upstream `kubecontainer.PodStatus`) and the cheap all-pods listing
//! PLEG and housekeeping use ([`RunningPod`], upstream `kubecontainer.Pod`).

use std::collections::{BTreeMap, HashMap};

use crate::cri::api;
use crate::types::{ContainerId, PodUid};

use super::labels::{self, CONTAINER_NAME_LABEL};

/// A container's state, as CRI reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    /// Created but never started.
    Created,
    /// Running now.
    Running,
    /// Exited (see the exit code).
    Exited,
    /// The runtime does not know.
    Unknown,
}

impl ContainerState {
    /// Maps the CRI enum.
    pub fn from_cri(s: api::ContainerState) -> Self {
        match s {
            api::ContainerState::CONTAINER_CREATED => ContainerState::Created,
            api::ContainerState::CONTAINER_RUNNING => ContainerState::Running,
            api::ContainerState::CONTAINER_EXITED => ContainerState::Exited,
            api::ContainerState::CONTAINER_UNKNOWN => ContainerState::Unknown,
        }
    }
}

/// One sandbox of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxStatus {
    /// Runtime id.
    pub id: String,
    /// `SANDBOX_READY`.
    pub ready: bool,
    /// Sandbox attempt from its metadata (grows each time the sandbox is recreated).
    pub attempt: u32,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
    /// Pod IP, when the runtime reported one.
    pub ip: Option<String>,
    /// Whether the sandbox uses the host network namespace.
    pub host_network: bool,
}

/// One container of a pod (any attempt).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStatus {
    /// Runtime id.
    pub id: ContainerId,
    /// Container name in the pod spec.
    pub name: String,
    /// Current state.
    pub state: ContainerState,
    /// Restart count recorded when this container was created.
    pub restart_count: u32,
    /// Spec hash recorded when this container was created.
    pub hash: Option<u32>,
    /// Image as requested.
    pub image: String,
    /// Image reference the runtime resolved (digest or id).
    pub image_ref: String,
    /// Creation, start and finish times, ns since the epoch (0 = not yet).
    pub created_at: i64,
    /// When the process started.
    pub started_at: i64,
    /// When the process exited.
    pub finished_at: i64,
    /// Exit code once exited.
    pub exit_code: i32,
    /// The runtime's reason (`Completed`, `Error`, `OOMKilled`).
    pub reason: String,
    /// The runtime's message.
    pub message: String,
    /// The sandbox the container belongs to.
    pub sandbox_id: String,
}

/// Everything the runtime knows about one pod; containers and sandboxes newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimePodStatus {
    /// Pod UID.
    pub uid: PodUid,
    /// Sandboxes, newest first.
    pub sandboxes: Vec<SandboxStatus>,
    /// Containers of every attempt, newest first.
    pub containers: Vec<ContainerStatus>,
}

impl RuntimePodStatus {
    /// The newest container with this name.
    pub fn latest(&self, name: &str) -> Option<&ContainerStatus> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The newest sandbox.
    pub fn latest_sandbox(&self) -> Option<&SandboxStatus> {
        self.sandboxes.first()
    }

    /// The pod IP of the newest sandbox.
    pub fn ip(&self) -> Option<&str> {
        self.latest_sandbox().and_then(|s| s.ip.as_deref())
    }
}

/// A container as the cheap list call shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainer {
    /// Runtime id.
    pub id: ContainerId,
    /// Container name in the pod spec.
    pub name: String,
    /// Current state.
    pub state: ContainerState,
    /// Sandbox id.
    pub sandbox_id: String,
}

/// A pod as the runtime's list calls show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningPod {
    /// Pod UID.
    pub uid: PodUid,
    /// Pod name from the labels.
    pub name: String,
    /// Pod namespace from the labels.
    pub namespace: String,
    /// `(sandbox id, ready)`.
    pub sandboxes: Vec<(String, bool)>,
    /// Containers of every attempt.
    pub containers: Vec<RunningContainer>,
}

/// Parses a decimal annotation.
fn annotation_u32(annotations: &HashMap<String, String>, key: &str) -> u32 {
    annotations
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Builds a container status from the CRI status response.
pub fn container_status_from_cri(s: &api::ContainerStatus) -> ContainerStatus {
    let annotations = s.get_annotations();
    ContainerStatus {
        id: ContainerId(s.get_id().to_string()),
        name: s
            .get_labels()
            .get(CONTAINER_NAME_LABEL)
            .cloned()
            .unwrap_or_else(|| s.get_metadata().get_name().to_string()),
        state: ContainerState::from_cri(s.get_state()),
        restart_count: annotation_u32(annotations, labels::CONTAINER_RESTART_COUNT_ANNOTATION),
        hash: annotations
            .get(labels::CONTAINER_HASH_ANNOTATION)
            .and_then(|h| u32::from_str_radix(h, 16).ok()),
        image: s.get_image().get_image().to_string(),
        image_ref: s.get_image_ref().to_string(),
        created_at: s.get_created_at(),
        started_at: s.get_started_at(),
        finished_at: s.get_finished_at(),
        exit_code: s.get_exit_code(),
        reason: s.get_reason().to_string(),
        message: s.get_message().to_string(),
        sandbox_id: String::new(),
    }
}

/// The pod entry for a labeled object, created empty on first sight.
fn entry_for(pods: &mut BTreeMap<PodUid, RunningPod>, id: labels::LabeledPod) -> &mut RunningPod {
    pods.entry(id.uid.clone()).or_insert_with(|| RunningPod {
        uid: id.uid,
        name: id.name,
        namespace: id.namespace,
        sandboxes: Vec::new(),
        containers: Vec::new(),
    })
}

/// Groups listed sandboxes and containers by the pod labels on them; objects without kubelet
/// labels are not ours and are left out.
pub fn group_running_pods(
    sandboxes: &[api::PodSandbox],
    containers: &[api::Container],
) -> Vec<RunningPod> {
    let mut pods: BTreeMap<PodUid, RunningPod> = BTreeMap::new();
    for s in sandboxes {
        let Some(id) = labels::labeled_pod(s.get_labels()) else {
            continue;
        };
        let pod = entry_for(&mut pods, id);
        let ready = s.get_state() == api::PodSandboxState::SANDBOX_READY;
        pod.sandboxes.push((s.get_id().to_string(), ready));
    }
    for c in containers {
        let Some(id) = labels::labeled_pod(c.get_labels()) else {
            continue;
        };
        let pod = entry_for(&mut pods, id);
        pod.containers.push(RunningContainer {
            id: ContainerId(c.get_id().to_string()),
            name: c
                .get_labels()
                .get(CONTAINER_NAME_LABEL)
                .cloned()
                .unwrap_or_else(|| c.get_metadata().get_name().to_string()),
            state: ContainerState::from_cri(c.get_state()),
            sandbox_id: c.get_pod_sandbox_id().to_string(),
        });
    }
    pods.into_values().collect()
}
