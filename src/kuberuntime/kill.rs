//! Stopping and removing a whole pod (upstream `KillPod` and the pod cleanup after it):
//! containers within the grace period, sidecars last, then sandboxes; afterwards the
//! containers, sandboxes, cgroup, volumes, logs and what the manager remembers of the pod.
//! Runs on the pod worker, or on a waiter thread for a stop that waits.

use k8s_openapi::api::core::v1::Pod;

use super::labels::POD_TERMINATION_GRACE_PERIOD_ANNOTATION;
use super::{
    container_spec, logs, ContainerState, ContainerStatus, RuntimeManager, RuntimePodStatus,
};
use crate::cri::CriError;

impl RuntimeManager {
    /// Stops a pod (upstream `KillPod`): the main containers in parallel (each running its
    /// `preStop` hook first when the spec is known), then sidecars one by one in reverse
    /// order with what is left of the grace period, then every sandbox.
    pub fn kill_pod(
        &self,
        pod: Option<&Pod>,
        pod_desc: &str,
        status: &RuntimePodStatus,
        grace_secs: i64,
    ) -> Result<(), CriError> {
        let started = self.clock.now();
        let live: Vec<&ContainerStatus> = status
            .containers
            .iter()
            .filter(|c| matches!(c.state, ContainerState::Running | ContainerState::Created))
            .collect();
        let sidecars: Vec<&k8s_openapi::api::core::v1::Container> = pod
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default()
            .iter()
            .filter(|c| crate::types::is_sidecar(c))
            .collect();
        let is_sidecar = |name: &str| sidecars.iter().any(|c| c.name == name);
        let kill = |c: &ContainerStatus, grace: i64| {
            let spec = pod.and_then(|p| container_spec(p, &c.name).map(|spec| (p, spec)));
            let hook = spec
                .filter(|_| c.state == ContainerState::Running)
                .map(|(p, spec)| (p, spec, status.ip()));
            self.kill_container(
                pod_desc,
                &c.id,
                &c.name,
                grace,
                "pod is being stopped",
                hook,
            )
        };
        let main: Vec<&ContainerStatus> = live
            .iter()
            .copied()
            .filter(|c| !is_sidecar(&c.name))
            .collect();
        let results: Vec<Result<(), CriError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = main
                .iter()
                .map(|c| scope.spawn(|| kill(c, grace_secs)))
                .collect();
            // A stop that panicked did not stop its container: a failure, retried.
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(CriError::Transport {
                            method: "StopContainer",
                            message: "the stopping thread panicked".into(),
                        })
                    })
                })
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        for spec in sidecars.iter().rev() {
            if let Some(c) = live.iter().find(|c| c.name == spec.name) {
                let spent = self.clock.now().saturating_duration_since(started);
                let left =
                    grace_secs.saturating_sub(i64::try_from(spent.as_secs()).unwrap_or(i64::MAX));
                kill(c, left)?;
            }
        }
        for s in &status.sandboxes {
            match self.runtime.stop_pod_sandbox(&s.id) {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes every container and sandbox of a stopped pod, their log symlinks and the pod
    /// log directory.
    pub fn remove_pod(
        &self,
        namespace: &str,
        name: &str,
        status: &RuntimePodStatus,
    ) -> Result<(), CriError> {
        let ids: Vec<String> = status.containers.iter().map(|c| c.id.0.clone()).collect();
        for id in &ids {
            match self.runtime.remove_container(id) {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        for s in &status.sandboxes {
            match self.runtime.remove_pod_sandbox(&s.id) {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        logs::remove_legacy_symlinks(&self.settings.container_logs_dir, &ids);
        if let Some(cgroups) = &self.settings.cgroups {
            if let Err(e) = cgroups.remove_pod_cgroup(&status.uid) {
                log::warn!(
                    "pod=\"{namespace}/{name}\" uid={} removing pod cgroup: {e}",
                    status.uid
                );
            }
        }
        if let Err(e) = self.volumes.teardown_pod(&status.uid) {
            log::warn!(
                "pod=\"{namespace}/{name}\" uid={} tearing down volumes: {e}",
                status.uid
            );
        }
        let dir = logs::pod_log_dir(&self.settings.pod_logs_dir, namespace, name, &status.uid.0);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("removing pod log directory {}: {e}", dir.display()),
        }
        if let Ok(mut reasons) = self.reasons.lock() {
            reasons.retain(|(uid, _), _| uid != &status.uid);
        }
        if let Ok(mut b) = self.restart_backoff.lock() {
            b.retain(|(uid, _)| uid != &status.uid);
        }
        if let Ok(mut pulls) = self.pulls.lock() {
            pulls.forget(&status.uid);
        }
        if let Ok(mut pending) = self.post_start_pending.lock() {
            pending.retain(|(uid, _)| uid != &status.uid);
        }
        Ok(())
    }

    /// The grace period recorded on a pod's containers (for orphans whose spec is gone).
    pub fn recorded_grace_period(&self, status: &RuntimePodStatus) -> i64 {
        status
            .containers
            .iter()
            .find_map(|c| {
                let resp = self.runtime.container_status(&c.id.0, false).ok()?;
                resp.get_status()
                    .get_annotations()
                    .get(POD_TERMINATION_GRACE_PERIOD_ANNOTATION)?
                    .parse()
                    .ok()
            })
            .unwrap_or(30)
    }
}
