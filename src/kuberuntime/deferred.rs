//! Work a sync hands over because it waits: stopping containers within their grace period
//! (and their preStop hooks), pulling an image, running a postStart hook. [`super::RuntimeManager::sync_pod`]
//! decides on the pod worker and returns at most one [`Deferred`]; the caller runs it on a
//! waiter thread with [`super::RuntimeManager::run_deferred`] and syncs the pod again when it
//! is done (see `crate::waiters`).

use k8s_openapi::api::core::v1::Pod;

use crate::events::EventType;
use crate::types::{pod_key, uid_of, ContainerId};

use super::actions::KillAction;
use super::images::PullWork;
use super::{container_spec, lifecycle, RuntimeManager, RuntimePodStatus, StartFailure, SyncError};

/// Work deferred by a sync.
#[derive(Debug)]
pub enum Deferred {
    /// Stop live containers before anything starts again.
    Stop(StopWork),
    /// Pull an image.
    Pull(Box<PullWork>),
    /// Run the postStart hook of a container that just started.
    PostStart(HookWork),
}

/// Containers to stop.
#[derive(Debug)]
pub struct StopWork {
    /// Every live container and the sandboxes go (the sandbox is being replaced).
    pub(super) whole_pod: bool,
    /// The runtime status the sync saw.
    pub(super) status: RuntimePodStatus,
    /// Otherwise, these containers (a failed liveness probe, a changed spec).
    pub(super) kills: Vec<KillAction>,
}

/// A postStart hook to run.
#[derive(Debug)]
pub struct HookWork {
    /// The container's name.
    pub(super) container: String,
    /// Its runtime id.
    pub(super) id: ContainerId,
    /// The pod IP (HTTP hooks without a host).
    pub(super) pod_ip: Option<String>,
}

impl Deferred {
    /// Whether this is an image pull (pulls wait for a pull slot).
    pub fn is_pull(&self) -> bool {
        matches!(self, Deferred::Pull(_))
    }
}

impl RuntimeManager {
    /// Runs deferred work (on a waiter thread). `Ok(true)`: sync the pod again at once;
    /// `Ok(false)`: a failure was recorded for the container, sync it when due.
    pub fn run_deferred(&self, pod: &Pod, work: Deferred) -> Result<bool, SyncError> {
        let key = pod_key(pod);
        match work {
            Deferred::Pull(pull) => Ok(self.pull(pod, *pull)),
            Deferred::Stop(stop) if stop.whole_pod => {
                let grace = crate::types::termination_grace_period(pod);
                self.kill_pod(Some(pod), &key, &stop.status, grace)
                    .map_err(|source| SyncError::Cri {
                        pod: key.clone(),
                        op: "stopping pod before recreating its sandbox",
                        source,
                    })?;
                Ok(true)
            }
            Deferred::Stop(stop) => {
                for kill in &stop.kills {
                    let grace = kill
                        .grace_seconds
                        .unwrap_or_else(|| crate::types::termination_grace_period(pod));
                    let spec = container_spec(pod, &kill.name);
                    let hook = spec.map(|c| (pod, c, stop.status.ip()));
                    self.recorder.pod_event(
                        pod,
                        EventType::Normal,
                        "Killing",
                        format!("Stopping container {}", kill.name),
                    );
                    self.kill_container(&key, &kill.id, &kill.name, grace, &kill.message, hook)
                        .map_err(|source| SyncError::Cri {
                            pod: key.clone(),
                            op: "stopping container",
                            source,
                        })?;
                }
                Ok(true)
            }
            Deferred::PostStart(hook) => {
                let name = hook.container.clone();
                let ok = self.run_post_start(pod, hook);
                self.set_post_start_pending(&uid_of(pod), &name, false);
                Ok(ok)
            }
        }
    }

    /// Runs a started container's postStart hook (bounded by
    /// [`super::container::POST_START_TIMEOUT`]); on failure the container is stopped and
    /// shows `PostStartHookError`. Returns whether the hook succeeded.
    fn run_post_start(&self, pod: &Pod, hook: HookWork) -> bool {
        let Some(container) = container_spec(pod, &hook.container) else {
            return true;
        };
        let Some(handler) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
        else {
            return true;
        };
        let result = lifecycle::run_handler(
            self.runtime.as_ref(),
            &hook.id.0,
            pod,
            container,
            handler,
            hook.pod_ip.as_deref(),
            super::container::POST_START_TIMEOUT,
        );
        let Err(message) = result else {
            return true;
        };
        self.recorder.pod_event(
            pod,
            EventType::Warning,
            "FailedPostStartHook",
            message.clone(),
        );
        let grace = crate::types::termination_grace_period(pod);
        if let Err(e) = self.kill_container(
            &pod_key(pod),
            &hook.id,
            &container.name,
            grace,
            "FailedPostStartHook",
            None,
        ) {
            log::warn!(
                "pod=\"{}\" stopping container {} after its postStart hook failed: {e}",
                pod_key(pod),
                container.name
            );
        }
        self.set_start_failure(
            &uid_of(pod),
            &container.name,
            Some(StartFailure::new("PostStartHookError", message)),
        );
        false
    }
}
