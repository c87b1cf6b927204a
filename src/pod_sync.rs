//! The work a pod worker does for one pod (upstream `Kubelet.SyncPod`,
//! `SyncTerminatingPod`, `SyncTerminatedPod`): read the pod's runtime status, let the runtime
//! manager act, and record the resulting API status. Runs on `pod-worker-N` threads.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::api::KubeClient;
use crate::clock::Clock;
use crate::events::{EventType, Recorder};
use crate::kuberuntime::{RuntimeManager, RuntimePodStatus, SyncError};
use crate::mirror::{delete_mirror_pod, ensure_mirror_pod, MirrorPods};
use crate::pod_workers::{PodSyncer, UpdateType};
use crate::prober::{ContainerState as ProbeContainer, ProbeManager};
use crate::status::sync::is_api_pod;
use crate::status::{generate_api_pod_status, StatusContext, StatusManager};
use crate::types::{pod_key, termination_grace_period, uid_of};

/// Implements [`PodSyncer`] over the runtime manager and status manager.
pub struct PodSync {
    /// Drives the runtime.
    pub runtime_manager: Arc<RuntimeManager>,
    /// Where statuses go.
    pub status_manager: Arc<StatusManager>,
    /// Events.
    pub recorder: Arc<dyn Recorder>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Runtime name for container ids in statuses (`containerd`).
    pub runtime_name: String,
    /// The node IP for `status.hostIP`.
    pub host_ip: Option<String>,
    /// The API server, when the kubelet has one (mirror pods).
    pub api: Option<ApiContext>,
    /// Probes: told about each pod's containers after every sync.
    pub probes: Arc<ProbeManager>,
}

/// What pod workers need to keep static pods' mirror pods in the API.
pub struct ApiContext {
    /// The API client.
    pub client: Arc<dyn KubeClient>,
    /// Mirror pods the API source reported.
    pub mirrors: Arc<MirrorPods>,
    /// This node's name.
    pub node_name: String,
    /// This node's UID once registered (owner of mirror pods).
    pub node_uid: Arc<std::sync::Mutex<Option<String>>>,
}

impl PodSync {
    fn status_of(&self, pod: &Pod) -> Result<RuntimePodStatus, SyncError> {
        self.runtime_manager
            .get_pod_status(&uid_of(pod))
            .map_err(|source| SyncError::Cri {
                pod: pod_key(pod),
                op: "reading pod status",
                source,
            })
    }

    /// Tells the prober which attempt of each container runs now.
    fn update_probes(&self, pod: &Arc<Pod>, runtime: &RuntimePodStatus) {
        let containers =
            runtime
                .containers
                .iter()
                .fold(Vec::<ProbeContainer>::new(), |mut out, c| {
                    // Statuses come newest first: the first of each name is the latest attempt.
                    if !out.iter().any(|o| o.name == c.name) {
                        out.push(ProbeContainer {
                            name: c.name.clone(),
                            id: Some(c.id.0.clone()),
                            running: c.state == crate::kuberuntime::ContainerState::Running,
                            started_at: (c.started_at > 0)
                                .then(|| crate::clock::from_unix_nanos(c.started_at)),
                        });
                    }
                    out
                });
        self.probes.set_pod(
            Arc::clone(pod),
            runtime.ip().map(str::to_string),
            containers,
        );
    }

    /// Generates and stores the API status; returns its phase.
    fn record_status(&self, pod: &Arc<Pod>, runtime: &RuntimePodStatus) -> String {
        let uid = uid_of(pod);
        let lookup = |name: &str| self.runtime_manager.start_failure(&uid, name);
        let ctx = StatusContext {
            runtime_name: &self.runtime_name,
            host_ip: self.host_ip.clone(),
            start_failure: &lookup,
            now: self.clock.wall(),
            probes: Some(self.probes.results()),
        };
        let mut status = generate_api_pod_status(pod, runtime, &ctx);
        if past_active_deadline(pod, &status, ctx.now).is_some_and(|left| left.is_zero()) {
            status.phase = Some("Failed".into());
            status.reason = Some(DEADLINE_EXCEEDED.into());
            status.message = Some(DEADLINE_MESSAGE.into());
        }
        let phase = status.phase.clone().unwrap_or_default();
        let was_running = self
            .status_manager
            .get(&uid)
            .is_some_and(|s| s.phase.as_deref() == Some("Running"));
        if phase == "Running" && !was_running {
            observe_pod_start(pod);
        }
        self.status_manager.set_pod_status(pod, status);
        phase
    }
}

/// Records `kubelet_pod_start_duration_seconds`: from when the kubelet first saw the pod
/// (its `kubernetes.io/config.seen` annotation) to its first Running status.
fn observe_pod_start(pod: &Pod) {
    let seen = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::config::update::CONFIG_SEEN_ANNOTATION))
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    let Some(seen) = seen else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let elapsed = i128::try_from(now).unwrap_or(0) - seen.as_nanosecond();
    if let Ok(nanos) = u64::try_from(elapsed) {
        crate::util::metrics::kubelet()
            .pod_start_duration
            .observe(std::time::Duration::from_nanos(nanos));
    }
}

/// Reason and message of a pod failed by its `activeDeadlineSeconds`, as upstream.
const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// Time left before the pod's `activeDeadlineSeconds` (counted from `status.startTime`) runs
/// out, zero once it has; `None` without a deadline or a start time.
fn past_active_deadline(
    pod: &Pod,
    status: &k8s_openapi::api::core::v1::PodStatus,
    now: std::time::SystemTime,
) -> Option<std::time::Duration> {
    let seconds = pod.spec.as_ref()?.active_deadline_seconds?;
    let start = status.start_time.as_ref()?.0.as_nanosecond();
    let start = crate::clock::from_unix_nanos(i64::try_from(start).ok()?);
    let deadline = start + std::time::Duration::from_secs(u64::try_from(seconds).ok()?);
    Some(deadline.duration_since(now).unwrap_or_default())
}

fn is_terminal(phase: &str) -> bool {
    phase == "Succeeded" || phase == "Failed"
}

impl PodSyncer for PodSync {
    fn sync_pod(&self, update_type: UpdateType, pod: &Arc<Pod>) -> Result<bool, SyncError> {
        log::debug!(
            "pod=\"{}\" uid={} sync ({update_type:?})",
            pod_key(pod),
            uid_of(pod)
        );
        if let Some(api) = self.api.as_ref().filter(|_| !is_api_pod(pod)) {
            let mut node_uid = api.node_uid.lock().ok().and_then(|u| u.clone());
            if node_uid.is_none() {
                // Learned once: the mirror pod names the node as its owner.
                if let Ok(node) = api.client.get_node(&api.node_name) {
                    node_uid = node.metadata.uid;
                    if let Ok(mut slot) = api.node_uid.lock() {
                        slot.clone_from(&node_uid);
                    }
                }
            }
            if let Err(e) = ensure_mirror_pod(
                api.client.as_ref(),
                &api.mirrors,
                pod,
                &api.node_name,
                node_uid.as_deref(),
            ) {
                log::warn!("pod=\"{}\" mirror pod: {e}", pod_key(pod));
            }
        }
        let before = self.status_of(pod)?;
        if is_terminal(&self.record_status(pod, &before)) {
            let deadline = self
                .status_manager
                .get(&uid_of(pod))
                .is_some_and(|s| s.reason.as_deref() == Some(DEADLINE_EXCEEDED));
            if deadline {
                self.recorder.pod_event(
                    pod,
                    EventType::Normal,
                    DEADLINE_EXCEEDED,
                    DEADLINE_MESSAGE.to_string(),
                );
            }
            return Ok(true);
        }
        let outcome = self.runtime_manager.sync_pod(pod, &before)?;
        if outcome.actions.init_failed {
            self.recorder.pod_event(
                pod,
                EventType::Warning,
                "Failed",
                "Init container failed and the restart policy is Never".to_string(),
            );
        }
        let after = if outcome.actions.is_noop() {
            before
        } else {
            self.status_of(pod)?
        };
        self.update_probes(pod, &after);
        Ok(is_terminal(&self.record_status(pod, &after)))
    }

    fn resync_within(&self, pod: &Pod) -> Option<std::time::Duration> {
        let status = self.status_manager.get(&uid_of(pod))?;
        // A second late at most, like upstream's check on every sync-loop tick.
        past_active_deadline(pod, &status, self.clock.wall())
            .map(|left| left + std::time::Duration::from_millis(200))
    }

    fn sync_terminating_pod(
        &self,
        pod: &Arc<Pod>,
        grace_override: Option<i64>,
    ) -> Result<(), SyncError> {
        let key = pod_key(pod);
        self.probes.remove_pod(&uid_of(pod));
        let status = self.status_of(pod)?;
        // A pod known only from the runtime (no spec) is stopped with the grace period its
        // containers were created with.
        let grace = grace_override.unwrap_or_else(|| match pod.spec {
            Some(_) => termination_grace_period(pod),
            None => self.runtime_manager.recorded_grace_period(&status),
        });
        log::info!(
            "pod=\"{key}\" uid={} terminating (grace period {grace}s)",
            uid_of(pod)
        );
        self.runtime_manager
            .kill_pod(Some(pod), &key, &status, grace)
            .map_err(|source| SyncError::Cri {
                pod: key.clone(),
                op: "stopping pod",
                source,
            })?;
        let after = self.status_of(pod)?;
        self.record_status(pod, &after);
        Ok(())
    }

    fn sync_terminated_pod(&self, pod: &Arc<Pod>, removed: bool) -> Result<(), SyncError> {
        let key = pod_key(pod);
        let uid = uid_of(pod);
        if !removed {
            log::info!("pod=\"{key}\" uid={uid} terminated");
            if pod.metadata.deletion_timestamp.is_some() && is_api_pod(pod) {
                self.status_manager.mark_deletable(&uid);
            }
            return Ok(());
        }
        if let Some(api) = self.api.as_ref().filter(|_| !is_api_pod(pod)) {
            if let Some(mirror) = api.mirrors.get(pod) {
                if let Err(e) = delete_mirror_pod(api.client.as_ref(), &mirror) {
                    log::warn!("pod=\"{key}\" deleting mirror pod: {e}");
                }
            }
        }
        let status = self.status_of(pod)?;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        self.runtime_manager
            .remove_pod(namespace, name, &status)
            .map_err(|source| SyncError::Cri {
                pod: key.clone(),
                op: "removing pod",
                source,
            })?;
        self.status_manager.remove(&uid);
        log::info!("pod=\"{key}\" uid={uid} removed");
        Ok(())
    }
}
