//! Bringing the runtime in line with a pod (upstream `SyncPod`): volumes, the sandbox and
//! its RuntimeClass handler, then the containers to start in order, each held by its restart
//! back-off (CrashLoopBackOff). Runs on the pod worker; stopping containers, pulling images
//! and postStart hooks are handed over as [`Deferred`] work.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;

use super::labels::{self, pod_name};
use super::{
    actions, container, deferred, gc, sandbox, ContainerState, ContainerStatus, Deferred,
    PodActions, RuntimeManager, RuntimePodStatus, StartFailure, SyncError,
};
use crate::clock::from_unix_nanos;
use crate::cri::api;
use crate::events::EventType;
use crate::types::{pod_key, uid_of};
use crate::util::duration::{format_duration, GoDuration};

/// Result of one sync: what was decided, which containers failed to start and the work
/// that waits (the sync stopped there; run it on the waiters, then sync again).
#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// The actions computed.
    pub actions: PodActions,
    /// `(container name, failure)` for containers that could not be started.
    pub failures: Vec<(String, StartFailure)>,
    /// Work handed over because it waits.
    pub deferred: Option<Deferred>,
    /// The sandbox this sync made, as read for its IP (not read for a host-network pod).
    pub new_sandbox: Option<api::PodSandboxStatus>,
    /// Ids of the containers this sync started, in order.
    pub started: Vec<String>,
}

/// How one container start ended.
enum Step {
    /// It runs: its id.
    Running(String),
    /// It waits for this work.
    Waits(Deferred),
}

impl RuntimeManager {
    /// Brings the runtime in line with `pod` (upstream `SyncPod`).
    pub fn sync_pod(&self, pod: &Pod, status: &RuntimePodStatus) -> Result<SyncOutcome, SyncError> {
        let key = pod_key(pod);
        let uid = uid_of(pod);
        let probes = self.probes.clone();
        let unhealthy = move |c: &ContainerStatus| -> Option<&'static str> {
            let probes = probes.as_ref()?;
            let failed =
                |kind| probes.get(&c.id.0, kind) == Some(crate::prober::ProbeResult::Failure);
            if failed(crate::prober::ProbeKind::Liveness) {
                Some("liveness")
            } else if failed(crate::prober::ProbeKind::Startup) {
                Some("startup")
            } else {
                None
            }
        };
        let actions = actions::compute_pod_actions_with(pod, status, &unhealthy);
        log::debug!("pod=\"{key}\" uid={uid} actions: {actions:?}");
        let mut outcome = SyncOutcome {
            actions: actions.clone(),
            ..Default::default()
        };
        // Volumes first, on every sync: API-backed ones are refreshed, and nothing starts
        // (or is restarted) while one of them fails, as upstream waits for mounts.
        let mut volumes = self.volumes.setup_pod(pod, &uid);
        // A volume of a type this kubelet cannot set up fails the pod's mounts: nothing
        // starts without it (a container writing where its claim should be would lose data).
        if !volumes.unsupported.is_empty() {
            let error = SyncError::UnsupportedVolumes {
                pod: key,
                volumes: std::mem::take(&mut volumes.unsupported),
            };
            self.recorder.pod_event(
                pod,
                EventType::Warning,
                "FailedMount",
                error.event_message(),
            );
            return Err(error);
        }
        if !volumes.failed.is_empty() {
            for message in failed_mount_messages(&volumes.failed) {
                self.recorder
                    .pod_event(pod, EventType::Warning, "FailedMount", message);
            }
            let first = volumes.failed.remove(0);
            return Err(SyncError::Volume {
                pod: key,
                source: first,
            });
        }
        // Stopping containers waits for their grace period: handed over, and the next sync
        // (once they stopped) starts what must run. A pod without live containers only has
        // its sandboxes stopped, which does not wait.
        let live = status
            .containers
            .iter()
            .any(|c| matches!(c.state, ContainerState::Running | ContainerState::Created));
        if actions.kill_pod && live {
            outcome.deferred = Some(Deferred::Stop(deferred::StopWork {
                whole_pod: true,
                status: status.clone(),
                kills: Vec::new(),
            }));
            return Ok(outcome);
        } else if actions.kill_pod {
            self.kill_pod(Some(pod), &key, status, 0)
                .map_err(|source| SyncError::Cri {
                    pod: key.clone(),
                    op: "stopping the sandbox before recreating it",
                    source,
                })?;
        } else if !actions.containers_to_kill.is_empty() {
            outcome.deferred = Some(Deferred::Stop(deferred::StopWork {
                whole_pod: false,
                status: status.clone(),
                kills: actions.containers_to_kill.clone(),
            }));
            return Ok(outcome);
        }

        let mut sandbox_config =
            sandbox::generate_sandbox_config(pod, actions.attempt, &self.settings);
        if let Some(cgroups) = &self.settings.cgroups {
            let qos = crate::resources::qos_class(pod);
            // As upstream's syncPod, on every sync: a pod cgroup removed behind the kubelet's
            // back comes back, and the QoS cgroups count the pod after a restart too.
            let parent = cgroups
                .ensure_pod_cgroup(pod, &uid, qos)
                .map_err(|source| SyncError::Io {
                    pod: key.clone(),
                    path: PathBuf::from(cgroups.pod_cgroup(&uid, qos)),
                    source,
                })?;
            sandbox_config.mut_linux().set_cgroup_parent(parent);
        }
        let sandbox_id = if actions.create_sandbox {
            let dir = PathBuf::from(sandbox_config.get_log_directory());
            std::fs::create_dir_all(&dir).map_err(|source| SyncError::Io {
                pod: key.clone(),
                path: dir.clone(),
                source,
            })?;
            log::info!(
                "pod=\"{key}\" uid={uid} creating sandbox (attempt {})",
                actions.attempt
            );
            let metrics = crate::util::metrics::kubelet();
            metrics.started_pods.inc();
            let handler = match self.runtime_handler(pod) {
                Ok(handler) => handler,
                Err(message) => {
                    metrics.started_pods_errors.inc();
                    self.recorder.pod_event(
                        pod,
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {message}"),
                    );
                    return Err(SyncError::RuntimeClass { pod: key, message });
                }
            };
            match self.runtime.run_pod_sandbox(&sandbox_config, &handler) {
                Ok(id) => id,
                Err(source) => {
                    metrics.started_pods_errors.inc();
                    self.recorder.pod_event(
                        pod,
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {source}"),
                    );
                    return Err(SyncError::Cri {
                        pod: key,
                        op: "creating sandbox",
                        source,
                    });
                }
            }
        } else {
            match &actions.sandbox_id {
                Some(id) => id.clone(),
                None => return Ok(outcome),
            }
        };

        if actions.next_init_container.is_none()
            && actions.sidecars_to_restart.is_empty()
            && actions.containers_to_start.is_empty()
            && actions.ephemeral_to_start.is_empty()
        {
            return Ok(outcome);
        }
        let pod_ips: Vec<String> = if crate::types::is_host_network(pod) {
            self.settings.node.host_ips()
        } else if actions.create_sandbox {
            match self.runtime.pod_sandbox_status(&sandbox_id, false) {
                Ok(mut resp) => {
                    let sandbox = resp.take_status();
                    let ip = sandbox.get_network().get_ip();
                    let ips = (!ip.is_empty())
                        .then(|| ip.to_string())
                        .into_iter()
                        .collect();
                    outcome.new_sandbox = Some(sandbox);
                    ips
                }
                Err(_) => Vec::new(),
            }
        } else {
            status.ip().map(str::to_string).into_iter().collect()
        };
        let pod_ip = pod_ips.first().map(String::as_str);
        let hostname = sandbox::pod_hostname(pod, &self.settings.node_name);
        let domain = pod
            .spec
            .as_ref()
            .and_then(|s| s.subdomain.as_deref())
            .filter(|s| !s.is_empty())
            .map(|sub| {
                format!(
                    "{sub}.{}.svc.{}",
                    labels::pod_namespace(pod),
                    self.settings.cluster_domain.as_deref().unwrap_or_default()
                )
            });
        match self
            .volumes
            .etc_hosts(pod, &uid, &pod_ips, &hostname, domain.as_deref())
        {
            Ok(path) => volumes.etc_hosts = path,
            Err(source) => {
                return Err(SyncError::Volume {
                    pod: key,
                    source: crate::volume::MountError {
                        volume: "etc-hosts".into(),
                        source,
                    },
                })
            }
        }
        let target = container::StartTarget {
            sandbox_id: &sandbox_id,
            sandbox_config: &sandbox_config,
            volumes: &volumes,
            pod_ip,
            pid_target: None,
        };
        // Ephemeral containers first, as upstream: a debugging container starts even while
        // an init container keeps failing. One aimed at another container joins its process
        // namespace.
        let ephemeral = crate::types::ephemeral_containers(pod);
        let mut order: Vec<(&k8s_openapi::api::core::v1::Container, Option<&str>)> = Vec::new();
        for (c, target_name) in actions
            .ephemeral_to_start
            .iter()
            .filter_map(|i| ephemeral.get(*i))
        {
            match target_name
                .as_deref()
                .map(|name| (name, status.latest(name)))
            {
                None => order.push((c, None)),
                Some((_, Some(s))) => order.push((c, Some(s.id.0.as_str()))),
                Some((name, None)) => outcome.failures.push((
                    c.name.clone(),
                    StartFailure::new(
                        "CreateContainerConfigError",
                        format!("unable to find target container {name}"),
                    ),
                )),
            }
        }
        // Then restarted sidecars, the next init container, the main containers. A
        // container that waits (for its image, for its postStart hook) ends the sync there,
        // as upstream starts them one after the other.
        let spec = pod.spec.as_ref();
        let init_specs = spec
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default();
        let main_specs = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
        order.extend(
            actions
                .sidecars_to_restart
                .iter()
                .filter_map(|i| init_specs.get(*i))
                .chain(actions.next_init_container.and_then(|i| init_specs.get(i)))
                .chain(
                    actions
                        .containers_to_start
                        .iter()
                        .filter_map(|i| main_specs.get(*i)),
                )
                .map(|c| (c, None)),
        );
        for (c, pid_target) in order {
            let aimed = container::StartTarget {
                pid_target,
                ..target
            };
            match self.start_with_backoff(pod, c, &aimed, status) {
                Ok(Step::Running(id)) => outcome.started.push(id),
                Ok(Step::Waits(wait)) => {
                    outcome.deferred = Some(wait);
                    break;
                }
                Err(f) => outcome.failures.push((c.name.clone(), f)),
            }
        }
        Ok(outcome)
    }

    /// Starts a container unless its restart back-off holds it (CrashLoopBackOff), recording
    /// the outcome in the reason cache. [`Step::Waits`]: the start waits for its image pull,
    /// or for its postStart hook once it runs.
    fn start_with_backoff(
        &self,
        pod: &Pod,
        container: &k8s_openapi::api::core::v1::Container,
        target: &container::StartTarget<'_>,
        status: &RuntimePodStatus,
    ) -> Result<Step, StartFailure> {
        let uid = uid_of(pod);
        let latest = status.latest(&container.name);
        // A container created but never started (the kubelet stopped between create and
        // start) is no restart: it is replaced under the same attempt number.
        let never_started = latest.filter(|c| c.state == ContainerState::Created);
        if let Some(created) = never_started {
            self.remove_unstarted(pod, created);
        }
        let previous = if never_started.is_some() {
            status
                .containers
                .iter()
                .filter(|c| c.name == container.name)
                .nth(1)
        } else {
            latest
        };
        let restart_count = match (never_started, previous) {
            (Some(created), _) => created.restart_count,
            (None, Some(c)) => c.restart_count + 1,
            (None, None) => 0,
        };
        if let Some(exited) = latest.filter(|c| c.state == ContainerState::Exited) {
            let key = (uid.clone(), container.name.clone());
            let finished = from_unix_nanos(exited.finished_at);
            let now = self.clock.wall();
            if let Ok(mut backoff) = self.restart_backoff.lock() {
                if backoff.is_in_backoff_since(&key, finished, now) {
                    let failure = StartFailure::new(
                        "CrashLoopBackOff",
                        format!(
                            "back-off {} restarting failed container={} pod={}_{}({})",
                            format_duration(GoDuration::from_std(backoff.delay(&key))),
                            container.name,
                            pod_name(pod),
                            labels::pod_namespace(pod),
                            uid
                        ),
                    );
                    drop(backoff);
                    self.recorder.pod_event(
                        pod,
                        EventType::Warning,
                        "BackOff",
                        "Back-off restarting failed container".to_string(),
                    );
                    self.set_start_failure(&uid, &container.name, Some(failure.clone()));
                    return Err(failure);
                }
                backoff.next(&key, finished);
            }
        }
        match self.start_container(pod, container, target, restart_count) {
            Ok(container::Started::Pull(work)) => Ok(Step::Waits(Deferred::Pull(work))),
            Ok(container::Started::Running(id, hook)) => {
                log::info!(
                    "pod=\"{}\" container={} id={id} started (restart count {restart_count})",
                    pod_key(pod),
                    container.name
                );
                self.set_start_failure(&uid, &container.name, None);
                self.prune_dead_containers(pod, status, &container.name);
                match hook {
                    Some(hook) => {
                        self.set_post_start_pending(&uid, &container.name, true);
                        Ok(Step::Waits(Deferred::PostStart(hook)))
                    }
                    None => Ok(Step::Running(id.0)),
                }
            }
            Err(f) => {
                log::warn!(
                    "pod=\"{}\" container={} failed to start: {}: {}",
                    pod_key(pod),
                    container.name,
                    f.reason,
                    f.message
                );
                self.set_start_failure(&uid, &container.name, Some(f.clone()));
                Err(f)
            }
        }
    }

    /// Removes a container that was created but never started, with its log file.
    fn remove_unstarted(&self, pod: &Pod, created: &ContainerStatus) {
        log::info!(
            "pod=\"{}\" container={} id={} was created but never started: replacing it",
            pod_key(pod),
            created.name,
            created.id
        );
        match self.runtime.remove_container(&created.id.0) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => log::warn!("removing unstarted container {}: {e}", created.id),
        }
        gc::remove_container_log(
            &self.settings.pod_logs_dir,
            &self.settings.container_logs_dir,
            (labels::pod_namespace(pod), pod_name(pod), &created.name),
            created.restart_count,
            &created.id.0,
        );
    }

    /// After a new attempt of `name` started, removes its older dead attempts, keeping the most
    /// recent one for `lastState` and `--previous` logs (upstream keeps one per container).
    fn prune_dead_containers(&self, pod: &Pod, status: &RuntimePodStatus, name: &str) {
        let dead = status
            .containers
            .iter()
            // A created-but-never-started one was just replaced, not a dead attempt to keep.
            .filter(|c| {
                c.name == name
                    && !matches!(c.state, ContainerState::Running | ContainerState::Created)
            })
            .skip(1);
        for c in dead {
            match self.runtime.remove_container(&c.id.0) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    log::warn!("removing dead container {} ({name}): {e}", c.id);
                    continue;
                }
            }
            gc::remove_container_log(
                &self.settings.pod_logs_dir,
                &self.settings.container_logs_dir,
                (labels::pod_namespace(pod), pod_name(pod), name),
                c.restart_count,
                &c.id.0,
            );
        }
    }

    /// The CRI runtime handler of the pod's `runtimeClassName` (upstream
    /// `LookupRuntimeHandler`): empty without one; an error, with upstream's wording, when
    /// the RuntimeClass does not exist or cannot be read.
    fn runtime_handler(&self, pod: &Pod) -> Result<String, String> {
        let Some(name) = pod
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.as_deref())
            .filter(|n| !n.is_empty())
        else {
            return Ok(String::new());
        };
        match self.volumes.objects().runtime_class(name) {
            Ok(Some(class)) => {
                log::debug!(
                    "pod=\"{}\" runs with runtime handler {:?}",
                    pod_key(pod),
                    class.handler
                );
                Ok(class.handler)
            }
            Ok(None) => Err(format!("runtimeclasses.node.k8s.io \"{name}\" not found")),
            Err(e) => Err(format!("failed to lookup RuntimeClass {name}: {e}")),
        }
    }
}

/// The `FailedMount` events for volumes that failed, as upstream words them: claims that
/// cannot be used yet in one event as its volume manager reports them (`Unable to attach or
/// mount volumes: unmounted volumes=[...], unattached volumes=[...], failed to process
/// volumes=[...]: <errors>`), a failed mount-time check in its own words, other failures
/// one event each.
fn failed_mount_messages(failed: &[crate::volume::manager::MountError]) -> Vec<String> {
    use crate::volume::VolumeError;
    let mut out = Vec::new();
    let not_ready: Vec<_> = failed
        .iter()
        .filter(|f| matches!(f.source, VolumeError::ClaimNotReady { .. }))
        .collect();
    let timed_out: Vec<&str> = failed
        .iter()
        .filter(|f| {
            matches!(
                f.source,
                VolumeError::InProgress {
                    timed_out: true,
                    ..
                }
            )
        })
        .map(|f| f.volume.as_str())
        .collect();
    if not_ready.is_empty() && !timed_out.is_empty() {
        // Upstream's event once the mount wait times out.
        let mut unmounted: Vec<&str> = failed.iter().map(|f| f.volume.as_str()).collect();
        unmounted.sort_unstable();
        let mut unattached: Vec<&str> = failed
            .iter()
            .filter(|f| {
                matches!(
                    f.source,
                    VolumeError::InProgress {
                        unattached: true,
                        ..
                    }
                )
            })
            .map(|f| f.volume.as_str())
            .collect();
        unattached.sort_unstable();
        out.push(format!(
            "Unable to attach or mount volumes: unmounted volumes=[{}], unattached volumes=[{}], failed to process volumes=[]: timed out waiting for the condition",
            unmounted.join(" "),
            unattached.join(" ")
        ));
    }
    if !not_ready.is_empty() {
        let mut unmounted: Vec<&str> = failed.iter().map(|f| f.volume.as_str()).collect();
        unmounted.sort_unstable();
        let mut unprocessed: Vec<&str> = not_ready.iter().map(|f| f.volume.as_str()).collect();
        unprocessed.sort_unstable();
        let errors: Vec<String> = not_ready.iter().map(|f| f.source.to_string()).collect();
        out.push(format!(
            "Unable to attach or mount volumes: unmounted volumes=[{}], unattached volumes=[], failed to process volumes=[{}]: {}",
            unmounted.join(" "),
            unprocessed.join(" "),
            errors.join("; ")
        ));
    }
    for f in failed {
        match &f.source {
            // Waiting on a driver or an attachment: no event, as upstream's reconciler.
            VolumeError::ClaimNotReady { .. } | VolumeError::InProgress { .. } => {}
            VolumeError::MountCheck { message } => out.push(message.clone()),
            VolumeError::Csi { message } => {
                match message.strip_prefix("MountVolume.MountDevice failed: ") {
                    Some(rest) => out.push(format!(
                        "MountVolume.MountDevice failed for volume \"{}\" : {rest}",
                        f.volume
                    )),
                    None => out.push(f.to_string()),
                }
            }
            _ => out.push(f.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod mount_event_tests {
    use super::failed_mount_messages;
    use crate::volume::manager::MountError;
    use crate::volume::VolumeError;

    fn waiting(volume: &str, unattached: bool, timed_out: bool) -> MountError {
        MountError {
            volume: volume.into(),
            source: VolumeError::InProgress {
                message: "waiting".into(),
                unattached,
                timed_out,
            },
        }
    }

    #[test]
    fn volumes_in_progress_are_quiet_until_the_mount_timeout() {
        assert!(failed_mount_messages(&[waiting("b", true, false)]).is_empty());
        assert_eq!(
            failed_mount_messages(&[waiting("b", true, true), waiting("a", false, false)]),
            ["Unable to attach or mount volumes: unmounted volumes=[a b], unattached volumes=[b], failed to process volumes=[]: timed out waiting for the condition"]
        );
        let staged = MountError {
            volume: "c".into(),
            source: VolumeError::Csi {
                message: "MountVolume.MountDevice failed: rpc error: code = Internal desc = no"
                    .into(),
            },
        };
        assert_eq!(
            failed_mount_messages(&[staged]),
            ["MountVolume.MountDevice failed for volume \"c\" : rpc error: code = Internal desc = no"]
        );
    }
}
