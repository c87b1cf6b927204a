//! The runtime manager (upstream `kuberuntime`): turns a pod spec into CRI calls. A pod worker
//! thread calls [`RuntimeManager::sync_pod`] for one pod at a time; PLEG and housekeeping call
//! the read-only listing functions. The manager keeps no state the runtime does not also hold,
//! apart from back-off and the last start failure per container (both rebuilt harmlessly
//! after a restart).

pub mod actions;
mod container;
pub mod env;
pub mod gc;
pub mod hash;
mod images;
pub mod labels;
pub mod lifecycle;
pub mod logs;
pub mod runtime_pod;
pub mod sandbox;
pub mod security;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::clock::{from_unix_nanos, Clock};
use crate::cri::{api, CriError, ImageService, RuntimeService};
use crate::events::{EventType, Recorder};
use crate::types::{pod_key, uid_of, ContainerId, PodUid};
use crate::util::backoff::Backoff;
use crate::volume::VolumeManager;

pub use actions::{compute_pod_actions, PodActions};
pub use images::pull_policy;
pub use runtime_pod::{ContainerState, ContainerStatus, RunningPod, RuntimePodStatus};

use labels::{pod_name, POD_TERMINATION_GRACE_PERIOD_ANNOTATION, POD_UID_LABEL};

/// Initial container restart back-off (upstream 10 s).
pub const RESTART_BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// Cap of the container restart back-off (upstream 5 min).
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Upstream never gives a container less than this to stop.
const MIN_GRACE_PERIOD_SECS: i64 = 2;

/// What the runtime manager needs from the kubelet's settings.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Node name (hostname of host-network pods).
    pub node_name: String,
    /// `/var/log/pods` or its override.
    pub pod_logs_dir: PathBuf,
    /// `/var/log/containers` or its override.
    pub container_logs_dir: PathBuf,
    /// Host resolv.conf for pod DNS (`None` disables).
    pub resolv_conf: Option<PathBuf>,
    /// Cluster DNS servers.
    pub cluster_dns: Vec<IpAddr>,
    /// Cluster domain.
    pub cluster_domain: Option<String>,
    /// `--root-dir` (pod volume directories live under it).
    pub root_dir: PathBuf,
    /// `serializeImagePulls`.
    pub serialize_image_pulls: bool,
    /// `maxParallelImagePulls` (unlimited when unset).
    pub max_parallel_image_pulls: Option<u32>,
    /// The node's IP (`status.hostIP` in env).
    pub node_ip: Option<String>,
    /// Pod cgroups (`cgroupsPerQOS` with the cgroupfs driver); `None` leaves cgroups to the
    /// runtime's defaults.
    pub cgroups: Option<crate::cgroups::CgroupManager>,
}

impl RuntimeSettings {
    /// Settings rooted in a scratch directory, for tests and benchmarks.
    pub fn for_tests(dir: &Path) -> Self {
        RuntimeSettings {
            node_name: "node".into(),
            pod_logs_dir: dir.join("pods"),
            container_logs_dir: dir.join("containers"),
            resolv_conf: None,
            cluster_dns: Vec::new(),
            cluster_domain: None,
            root_dir: dir.join("root"),
            serialize_image_pulls: true,
            max_parallel_image_pulls: None,
            node_ip: None,
            cgroups: None,
        }
    }
}

/// Why a container could not be started, with the waiting reason users see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    /// Upstream waiting reason: `ErrImagePull`, `CrashLoopBackOff`, `CreateContainerError`...
    pub reason: String,
    /// Details.
    pub message: String,
}

impl StartFailure {
    /// A failure with a reason and message.
    pub fn new(reason: &str, message: String) -> Self {
        StartFailure {
            reason: reason.to_string(),
            message,
        }
    }
}

/// Errors of a sync that stop it early (container start failures are reported per container).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A CRI call failed.
    #[error("pod {pod}: {op}: {source}")]
    Cri {
        /// `namespace/name`.
        pod: String,
        /// What was being done.
        op: &'static str,
        /// The runtime's error.
        #[source]
        source: CriError,
    },
    /// A volume could not be set up; the pod waits in ContainerCreating and is retried.
    #[error("pod {pod}: {source}")]
    Volume {
        /// `namespace/name`.
        pod: String,
        /// The volume and its error.
        #[source]
        source: crate::volume::MountError,
    },
    /// Preparing files on disk failed.
    #[error("pod {pod}: creating {path}: {source}")]
    Io {
        /// `namespace/name`.
        pod: String,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl SyncError {
    /// Whether retrying later can help.
    pub fn is_retriable(&self) -> bool {
        match self {
            SyncError::Cri { source, .. } => source.is_retriable(),
            SyncError::Io { .. } => true,
            SyncError::Volume { source, .. } => source.source.is_retriable(),
        }
    }
}

/// Result of one sync: what was decided and which containers failed to start.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    /// The actions computed.
    pub actions: PodActions,
    /// `(container name, failure)` for containers that could not be started.
    pub failures: Vec<(String, StartFailure)>,
}

type ContainerKey = (PodUid, String);

/// The spec of the container (main, init or sidecar) named `name`.
fn container_spec<'a>(
    pod: &'a Pod,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// Drives the CRI runtime for pods.
pub struct RuntimeManager {
    runtime: Arc<dyn RuntimeService>,
    images: Arc<dyn ImageService>,
    clock: Arc<dyn Clock>,
    recorder: Arc<dyn Recorder>,
    settings: RuntimeSettings,
    /// Restart back-off per (pod, container): the CrashLoopBackOff delay.
    restart_backoff: Mutex<Backoff<ContainerKey>>,
    /// Pull back-off per (pod, image): the ImagePullBackOff delay.
    pull_backoff: Mutex<Backoff<(PodUid, String)>>,
    /// Last start failure per (pod, container), shown as the waiting reason until it starts
    /// (upstream `ReasonCache`).
    reasons: Mutex<HashMap<ContainerKey, StartFailure>>,
    /// Pod volumes and `/etc/hosts`.
    volumes: VolumeManager,
    /// Bounds concurrent image pulls.
    pull_gate: images::PullGate,
    /// Probe results (liveness and startup failures restart containers).
    probes: Option<Arc<crate::prober::ProbeResults>>,
}

impl RuntimeManager {
    /// A manager over the given runtime and image services.
    pub fn new(
        runtime: Arc<dyn RuntimeService>,
        images: Arc<dyn ImageService>,
        clock: Arc<dyn Clock>,
        recorder: Arc<dyn Recorder>,
        settings: RuntimeSettings,
        volumes: VolumeManager,
        probes: Option<Arc<crate::prober::ProbeResults>>,
    ) -> Self {
        RuntimeManager {
            runtime,
            images,
            clock,
            recorder,
            restart_backoff: Mutex::new(Backoff::new(RESTART_BACKOFF_INITIAL, RESTART_BACKOFF_MAX)),
            pull_backoff: Mutex::new(Backoff::new(RESTART_BACKOFF_INITIAL, RESTART_BACKOFF_MAX)),
            reasons: Mutex::new(HashMap::new()),
            volumes,
            probes,
            pull_gate: images::PullGate::new(
                settings.serialize_image_pulls,
                settings.max_parallel_image_pulls,
            ),
            settings,
        }
    }

    /// The volume manager (housekeeping cleans up orphaned pod directories through it).
    pub fn volumes(&self) -> &VolumeManager {
        &self.volumes
    }

    /// Pod cgroups, when managed.
    pub fn cgroups(&self) -> Option<&crate::cgroups::CgroupManager> {
        self.settings.cgroups.as_ref()
    }

    /// The image service (image GC).
    pub fn images(&self) -> &Arc<dyn ImageService> {
        &self.images
    }

    /// The runtime service (for PLEG and the server).
    pub fn runtime(&self) -> &Arc<dyn RuntimeService> {
        &self.runtime
    }

    /// Every kubelet-made pod the runtime has, from two list calls.
    pub fn get_pods(&self) -> Result<Vec<RunningPod>, CriError> {
        let sandboxes = self.runtime.list_pod_sandbox(None)?;
        let containers = self.runtime.list_containers(None)?;
        Ok(runtime_pod::group_running_pods(&sandboxes, &containers))
    }

    /// Full status of one pod: its sandboxes (with IP) and every container's CRI status.
    pub fn get_pod_status(&self, uid: &PodUid) -> Result<RuntimePodStatus, CriError> {
        let mut sandbox_filter = api::PodSandboxFilter::new();
        sandbox_filter
            .mut_label_selector()
            .insert(POD_UID_LABEL.into(), uid.0.clone());
        let mut sandboxes = self.runtime.list_pod_sandbox(Some(&sandbox_filter))?;
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.get_created_at()));
        let mut sandbox_statuses = Vec::with_capacity(sandboxes.len());
        for (i, s) in sandboxes.iter().enumerate() {
            let ready = s.get_state() == api::PodSandboxState::SANDBOX_READY;
            let mut status = runtime_pod::SandboxStatus {
                id: s.get_id().to_string(),
                ready,
                attempt: s.get_metadata().get_attempt(),
                created_at: s.get_created_at(),
                ip: None,
                host_network: false,
            };
            // Only the newest sandbox's network matters; older ones are being replaced.
            if i == 0 {
                match self.runtime.pod_sandbox_status(s.get_id(), false) {
                    Ok(resp) => {
                        let st = resp.get_status();
                        let ip = st.get_network().get_ip();
                        status.ip = (!ip.is_empty()).then(|| ip.to_string());
                        status.host_network =
                            st.get_linux().get_namespaces().get_options().get_network()
                                == api::NamespaceMode::NODE;
                    }
                    Err(e) if e.is_not_found() => status.ready = false,
                    Err(e) => return Err(e),
                }
            }
            sandbox_statuses.push(status);
        }

        let mut container_filter = api::ContainerFilter::new();
        container_filter
            .mut_label_selector()
            .insert(POD_UID_LABEL.into(), uid.0.clone());
        let containers = self.runtime.list_containers(Some(&container_filter))?;
        let mut statuses = Vec::with_capacity(containers.len());
        for c in &containers {
            match self.runtime.container_status(c.get_id(), false) {
                Ok(resp) => {
                    let mut st = runtime_pod::container_status_from_cri(resp.get_status());
                    st.sandbox_id = c.get_pod_sandbox_id().to_string();
                    if st.state == ContainerState::Exited && st.message.is_empty() {
                        st.message = runtime_pod::termination_message(resp.get_status());
                    }
                    statuses.push(st);
                }
                // Removed between the list and the status call.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        statuses.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        Ok(RuntimePodStatus {
            uid: uid.clone(),
            sandboxes: sandbox_statuses,
            containers: statuses,
        })
    }

    /// The last start failure of a container, if it has not started since.
    pub fn start_failure(&self, uid: &PodUid, container: &str) -> Option<StartFailure> {
        self.reasons
            .lock()
            .ok()?
            .get(&(uid.clone(), container.to_string()))
            .cloned()
    }

    fn set_start_failure(&self, uid: &PodUid, container: &str, failure: Option<StartFailure>) {
        if let Ok(mut reasons) = self.reasons.lock() {
            let key = (uid.clone(), container.to_string());
            match failure {
                Some(f) => reasons.insert(key, f),
                None => reasons.remove(&key),
            };
        }
    }

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
            failures: Vec::new(),
        };
        // Volumes first, on every sync: API-backed ones are refreshed, and nothing starts
        // (or is restarted) while one of them fails, as upstream waits for mounts.
        let mut volumes = self.volumes.setup_pod(pod, &uid);
        if actions.create_sandbox {
            for (name, kind) in &volumes.unsupported {
                self.recorder.pod_event(
                    pod,
                    EventType::Warning,
                    "FailedMount",
                    format!("volume \"{name}\" of type {kind} is not supported; containers start without it"),
                );
            }
        }
        if !volumes.failed.is_empty() {
            for failure in &volumes.failed {
                self.recorder.pod_event(
                    pod,
                    EventType::Warning,
                    "FailedMount",
                    failure.to_string(),
                );
            }
            let first = volumes.failed.remove(0);
            return Err(SyncError::Volume {
                pod: key,
                source: first,
            });
        }
        if actions.kill_pod {
            self.kill_pod(
                Some(pod),
                &key,
                status,
                crate::types::termination_grace_period(pod),
            )
            .map_err(|source| SyncError::Cri {
                pod: key.clone(),
                op: "stopping pod before recreating its sandbox",
                source,
            })?;
        } else {
            for kill in &actions.containers_to_kill {
                let grace = kill
                    .grace_seconds
                    .unwrap_or_else(|| crate::types::termination_grace_period(pod));
                let spec = container_spec(pod, &kill.name);
                let hook = spec.map(|c| (pod, c, status.ip()));
                self.kill_container(&key, &kill.id, &kill.name, grace, &kill.message, hook)
                    .map_err(|source| SyncError::Cri {
                        pod: key.clone(),
                        op: "stopping container",
                        source,
                    })?;
                self.recorder.pod_event(
                    pod,
                    EventType::Normal,
                    "Killing",
                    format!("Stopping container {}", kill.name),
                );
            }
        }

        let mut sandbox_config =
            sandbox::generate_sandbox_config(pod, actions.attempt, &self.settings);
        if let Some(cgroups) = &self.settings.cgroups {
            let qos = crate::status::generate::qos_class(pod);
            let parent = if actions.create_sandbox {
                cgroups
                    .ensure_pod_cgroup(pod, &uid, qos)
                    .map_err(|source| SyncError::Io {
                        pod: key.clone(),
                        path: PathBuf::from(cgroups.pod_cgroup(&uid, qos)),
                        source,
                    })?
            } else {
                cgroups.pod_cgroup(&uid, qos)
            };
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
            match self.runtime.run_pod_sandbox(&sandbox_config, "") {
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
        {
            return Ok(outcome);
        }
        let pod_ips: Vec<String> = if actions.create_sandbox {
            match self.runtime.pod_sandbox_status(&sandbox_id, false) {
                Ok(resp) => {
                    let ip = resp.get_status().get_network().get_ip();
                    (!ip.is_empty())
                        .then(|| ip.to_string())
                        .into_iter()
                        .collect()
                }
                Err(_) => Vec::new(),
            }
        } else {
            status.ip().map(str::to_string).into_iter().collect()
        };
        let pod_ip = pod_ips.first().map(String::as_str);
        match self.volumes.etc_hosts(pod, &uid, &pod_ips) {
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
        };
        let spec = pod.spec.as_ref();
        let init_specs = spec
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default();
        for i in &actions.sidecars_to_restart {
            if let Some(c) = init_specs.get(*i) {
                if let Err(f) = self.start_with_backoff(pod, c, &target, status) {
                    outcome.failures.push((c.name.clone(), f));
                }
            }
        }
        if let Some(i) = actions.next_init_container {
            if let Some(c) = init_specs.get(i) {
                if let Err(f) = self.start_with_backoff(pod, c, &target, status) {
                    outcome.failures.push((c.name.clone(), f));
                }
            }
        }
        for i in &actions.containers_to_start {
            if let Some(c) = spec.and_then(|s| s.containers.get(*i)) {
                if let Err(f) = self.start_with_backoff(pod, c, &target, status) {
                    outcome.failures.push((c.name.clone(), f));
                }
            }
        }
        Ok(outcome)
    }

    /// Starts a container unless its restart back-off holds it (CrashLoopBackOff), recording
    /// the outcome in the reason cache.
    fn start_with_backoff(
        &self,
        pod: &Pod,
        container: &k8s_openapi::api::core::v1::Container,
        target: &container::StartTarget<'_>,
        status: &RuntimePodStatus,
    ) -> Result<(), StartFailure> {
        let uid = uid_of(pod);
        let latest = status.latest(&container.name);
        let restart_count = latest.map_or(0, |c| c.restart_count + 1);
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
                            go_duration(backoff.delay(&key)),
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
            Ok(id) => {
                log::info!(
                    "pod=\"{}\" container={} id={id} started (restart count {restart_count})",
                    pod_key(pod),
                    container.name
                );
                self.set_start_failure(&uid, &container.name, None);
                self.prune_dead_containers(pod, status, &container.name);
                Ok(())
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

    /// After a new attempt of `name` started, removes its older dead attempts, keeping the most
    /// recent one for `lastState` and `--previous` logs (upstream keeps one per container).
    fn prune_dead_containers(&self, pod: &Pod, status: &RuntimePodStatus, name: &str) {
        let dead = status
            .containers
            .iter()
            .filter(|c| c.name == name && c.state != ContainerState::Running)
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
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Ok(())))
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        for spec in sidecars.iter().rev() {
            if let Some(c) = live.iter().find(|c| c.name == spec.name) {
                let spent = self.clock.now().saturating_duration_since(started);
                let left = grace_secs - i64::try_from(spent.as_secs()).unwrap_or(i64::MAX);
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

    /// Removes a container by id (used for containers whose pod is unknown).
    pub fn remove_container(&self, id: &ContainerId) -> Result<(), CriError> {
        self.runtime.remove_container(&id.0)
    }
}

/// Formats a duration the way Go prints it (`10s`, `2m40s`, `5m0s`), as in upstream messages.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        return format!("{secs}s");
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else {
        format!("{m}m{s}s")
    }
}
