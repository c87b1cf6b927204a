//! The runtime manager (upstream `kuberuntime`): turns a pod spec into CRI calls. A pod worker
//! thread calls [`RuntimeManager::sync_pod`] for one pod at a time; PLEG and housekeeping call
//! the read-only listing functions. The manager keeps no state the runtime does not also hold,
//! apart from back-off and the last start failure per container (both rebuilt harmlessly
//! after a restart).

pub mod actions;
mod container;
pub mod deferred;
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
use crate::util::duration::{format_duration, GoDuration};
use crate::volume::VolumeManager;

pub use actions::{compute_pod_actions, PodActions};
pub use deferred::Deferred;
pub use images::{pull_limit, pull_policy};
pub use runtime_pod::{ContainerState, ContainerStatus, RunningPod, RuntimePodStatus};

use labels::{pod_name, POD_TERMINATION_GRACE_PERIOD_ANNOTATION, POD_UID_LABEL};

/// Initial container restart back-off (upstream 10 s).
pub const RESTART_BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// Cap of the container restart back-off (upstream 5 min).
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Upstream never gives a container less than this to stop.
const MIN_GRACE_PERIOD_SECS: i64 = 2;
/// The longest grace period waited for (ten years): anything longer in a pod spec is held
/// to it, so every deadline computed from it stays representable.
pub const MAX_GRACE_PERIOD_SECS: i64 = 10 * 365 * 24 * 3600;

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
    /// The machine's memory, for `oom_score_adj` of burstable containers (upstream uses the
    /// machine's capacity there, not allocatable).
    pub memory_capacity_bytes: i128,
    /// `seccompDefault`: containers without a seccomp profile get `RuntimeDefault`.
    pub seccomp_default: bool,
    /// This node's Node (`status.hostIP` in env, hostNetwork pods' IPs).
    pub node: Arc<crate::nodestatus::record::NodeRecord>,
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
            seccomp_default: false,
            memory_capacity_bytes: 0,
            node: crate::nodestatus::record::NodeRecord::new(&[]),
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
    /// Volumes of a type this kubelet does not implement: the pod waits in
    /// ContainerCreating, nothing of it starts.
    #[error("pod {pod}: {}", self.event_message())]
    UnsupportedVolumes {
        /// `namespace/name`.
        pod: String,
        /// `(volume name, volume type)`.
        volumes: Vec<(String, &'static str)>,
    },
    /// The pod's RuntimeClass cannot be resolved; its sandbox is not created.
    #[error("pod {pod}: {message}")]
    RuntimeClass {
        /// `namespace/name`.
        pod: String,
        /// Upstream's wording (`runtimeclasses.node.k8s.io "x" not found`).
        message: String,
    },
    /// The step panicked (a bug): logged with the pod and retried like a failure.
    #[error("pod {pod}: panicked: {message}")]
    Panic {
        /// `namespace/name`.
        pod: String,
        /// The panic's message.
        message: String,
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
    /// The `FailedMount` message for unsupported volumes, in upstream's words for volumes
    /// that never mount; empty for other errors.
    pub fn event_message(&self) -> String {
        let SyncError::UnsupportedVolumes { volumes, .. } = self else {
            return String::new();
        };
        let names: Vec<&str> = volumes.iter().map(|(n, _)| n.as_str()).collect();
        let kinds: Vec<String> = volumes.iter().map(|(n, k)| format!("{n} ({k})")).collect();
        format!(
            "Unable to attach or mount volumes: unmounted volumes=[{}], unattached volumes=[{}]: volume type not supported by this kubelet: {}",
            names.join(" "),
            names.join(" "),
            kinds.join(", ")
        )
    }

    /// Whether retrying later can help.
    pub fn is_retriable(&self) -> bool {
        match self {
            SyncError::Cri { source, .. } => source.is_retriable(),
            SyncError::Io { .. } | SyncError::Panic { .. } | SyncError::RuntimeClass { .. } => true,
            SyncError::Volume { source, .. } => source.source.is_retriable(),
            // Only a newer kubelet (or a changed spec) can mount them.
            SyncError::UnsupportedVolumes { .. } => false,
        }
    }
}

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
    /// Image pulls: back-off per (pod, image), last errors, pulls done for the next sync.
    pulls: Mutex<images::Pulls>,
    /// Last start failure per (pod, container), shown as the waiting reason until it starts
    /// (upstream `ReasonCache`).
    reasons: Mutex<HashMap<ContainerKey, StartFailure>>,
    /// Containers started whose postStart hook still runs: not yet Running to users or
    /// probes (upstream publishes nothing of them before the hook ends).
    post_start_pending: Mutex<std::collections::HashSet<ContainerKey>>,
    /// Pod volumes and `/etc/hosts`.
    volumes: VolumeManager,
    /// When this manager was made (ns since the epoch): a start that failed before then was
    /// cut short by an earlier kubelet's death, not by the container.
    born_ns: i64,
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
        let born_ns = clock
            .wall()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        RuntimeManager {
            born_ns,
            runtime,
            images,
            clock,
            recorder,
            restart_backoff: Mutex::new(Backoff::new(RESTART_BACKOFF_INITIAL, RESTART_BACKOFF_MAX)),
            pulls: Mutex::new(images::Pulls::new()),
            reasons: Mutex::new(HashMap::new()),
            post_start_pending: Mutex::new(std::collections::HashSet::new()),
            volumes,
            probes,
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
                        // A hostNetwork pod's IP is the node's (probes and hooks go there).
                        if status.host_network && status.ip.is_none() {
                            status.ip = self.settings.node.host_ips().into_iter().next();
                        }
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
                    // The runtime marks a start that was cut short (the kubelet died in
                    // StartContainer) as exited with StartError. It never ran: like a
                    // created one, it is replaced under the same attempt, not restarted.
                    if st.state == ContainerState::Exited
                        && st.reason == "StartError"
                        && st.created_at < self.born_ns
                    {
                        st.state = ContainerState::Created;
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
        {
            return Ok(outcome);
        }
        let pod_ips: Vec<String> = if crate::types::is_host_network(pod) {
            self.settings.node.host_ips()
        } else if actions.create_sandbox {
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
        };
        let spec = pod.spec.as_ref();
        let init_specs = spec
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or_default();
        // In order: restarted sidecars, the next init container, the main containers. A
        // container that waits (for its image, for its postStart hook) ends the sync there,
        // as upstream starts them one after the other.
        let main_specs = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
        let order = actions
            .sidecars_to_restart
            .iter()
            .filter_map(|i| init_specs.get(*i))
            .chain(actions.next_init_container.and_then(|i| init_specs.get(i)))
            .chain(
                actions
                    .containers_to_start
                    .iter()
                    .filter_map(|i| main_specs.get(*i)),
            );
        for c in order {
            match self.start_with_backoff(pod, c, &target, status) {
                Ok(None) => {}
                Ok(Some(wait)) => {
                    outcome.deferred = Some(wait);
                    break;
                }
                Err(f) => outcome.failures.push((c.name.clone(), f)),
            }
        }
        Ok(outcome)
    }

    /// Starts a container unless its restart back-off holds it (CrashLoopBackOff), recording
    /// the outcome in the reason cache. `Ok(Some(work))`: the start waits for `work` (its
    /// image pull, or its postStart hook once it runs).
    fn start_with_backoff(
        &self,
        pod: &Pod,
        container: &k8s_openapi::api::core::v1::Container,
        target: &container::StartTarget<'_>,
        status: &RuntimePodStatus,
    ) -> Result<Option<Deferred>, StartFailure> {
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
            Ok(container::Started::Pull(work)) => Ok(Some(Deferred::Pull(work))),
            Ok(container::Started::Running(id, hook)) => {
                log::info!(
                    "pod=\"{}\" container={} id={id} started (restart count {restart_count})",
                    pod_key(pod),
                    container.name
                );
                self.set_start_failure(&uid, &container.name, None);
                self.prune_dead_containers(pod, status, &container.name);
                if hook.is_some() {
                    self.set_post_start_pending(&uid, &container.name, true);
                }
                Ok(hook.map(Deferred::PostStart))
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

    /// Whether a started container's postStart hook still runs.
    pub fn post_start_pending(&self, uid: &PodUid, container: &str) -> bool {
        self.post_start_pending
            .lock()
            .is_ok_and(|p| p.contains(&(uid.clone(), container.to_string())))
    }

    pub(crate) fn set_post_start_pending(&self, uid: &PodUid, container: &str, pending: bool) {
        if let Ok(mut p) = self.post_start_pending.lock() {
            let key = (uid.clone(), container.to_string());
            if pending {
                p.insert(key);
            } else {
                p.remove(&key);
            }
        }
    }

    /// Whether a container of the pod failed to start (or waits in a back-off): such a pod
    /// is synced again soon (upstream requeues it after 10 s) instead of at the resync
    /// period.
    pub fn has_start_failures(&self, uid: &PodUid) -> bool {
        self.reasons
            .lock()
            .is_ok_and(|r| r.keys().any(|(u, _)| u == uid))
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
