//! The runtime manager (upstream `kuberuntime`): turns a pod spec into CRI calls. A pod worker
//! thread calls [`RuntimeManager::sync_pod`] for one pod at a time; PLEG and housekeeping call
//! the read-only listing functions. The manager keeps no state the runtime does not also hold,
//! apart from back-off and the last start failure per container (both rebuilt harmlessly
//! after a restart).
//!
//! This file holds the manager, its settings and what it remembers per container (start
//! failures, postStart hooks still running); a sync is in `sync`, stopping and removing a pod
//! in `kill`, reading a pod's state in [`runtime_pod`].

pub mod actions;
mod container;
pub mod deferred;
pub mod env;
mod error;
pub mod gc;
pub mod hash;
pub(crate) mod images;
mod kill;
pub mod labels;
pub mod lifecycle;
pub mod logs;
pub mod runtime_pod;
pub mod sandbox;
pub mod security;
mod sync;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::clock::Clock;
use crate::cri::{CriError, ImageService, RuntimeService};
use crate::events::Recorder;
use crate::types::{ContainerId, PodUid};
use crate::util::backoff::Backoff;
use crate::volume::VolumeManager;

pub use actions::{compute_pod_actions, PodActions};
pub use container::generate_container_config;
pub use deferred::Deferred;
pub use error::{StartFailure, SyncError};
pub use images::{pull_limit, pull_policy};
pub use runtime_pod::{ContainerState, ContainerStatus, RunningPod, RuntimePodStatus};
pub use sync::SyncOutcome;

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
    pub cgroups: Option<crate::cm::CgroupManager>,
    /// Image credential provider plugins, tried for pulls after `imagePullSecrets`.
    pub credential_providers: Option<Arc<crate::credential_provider::CredentialProviders>>,
    /// Device plugins: the devices containers were given at admission.
    pub devices: Option<Arc<crate::devicemanager::DeviceManager>>,
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
            credential_providers: None,
            devices: None,
        }
    }
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
    /// The log path of each container created, for the log manager (which would otherwise
    /// ask the runtime for it).
    log_paths: crate::log_manager::LogPaths,
    /// The last relist's pods with the two listings they were grouped from: handed out
    /// again while the runtime hands out the same listings.
    last_pods: Mutex<Option<runtime_pod::LastPods>>,
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
            log_paths: crate::log_manager::LogPaths::default(),
            last_pods: Mutex::new(None),
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

    /// The device manager, when device plugins are served.
    pub fn devices(&self) -> Option<&Arc<crate::devicemanager::DeviceManager>> {
        self.settings.devices.as_ref()
    }

    /// Pod cgroups, when managed.
    pub fn cgroups(&self) -> Option<&crate::cm::CgroupManager> {
        self.settings.cgroups.as_ref()
    }

    /// The log paths of the containers this manager created (shared with the log manager).
    pub fn log_paths(&self) -> crate::log_manager::LogPaths {
        Arc::clone(&self.log_paths)
    }

    /// The image service (image GC).
    pub fn images(&self) -> &Arc<dyn ImageService> {
        &self.images
    }

    /// The runtime service (for PLEG and the server).
    pub fn runtime(&self) -> &Arc<dyn RuntimeService> {
        &self.runtime
    }

    /// The last start failure of a container, if it has not started since.
    pub fn start_failure(&self, uid: &PodUid, container: &str) -> Option<StartFailure> {
        self.reasons
            .lock()
            .ok()?
            .get(&(uid.clone(), container.to_string()))
            .cloned()
    }

    /// How many entries each per-pod table holds, the volume manager's included (all are
    /// emptied when a pod is removed).
    pub fn per_pod_entries(&self) -> Vec<(&'static str, usize)> {
        fn count<T>(m: &Mutex<T>, len: impl Fn(&T) -> usize) -> usize {
            m.lock().map_or(0, |m| len(&m))
        }
        let mut entries = vec![
            (
                "restart back-offs",
                count(&self.restart_backoff, Backoff::len),
            ),
            ("image pulls", count(&self.pulls, images::Pulls::len)),
            ("start failures", count(&self.reasons, HashMap::len)),
            (
                "postStart hooks pending",
                count(&self.post_start_pending, std::collections::HashSet::len),
            ),
        ];
        entries.extend(self.volumes.per_pod_entries());
        entries
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

    /// Removes a container by id (used for containers whose pod is unknown).
    pub fn remove_container(&self, id: &ContainerId) -> Result<(), CriError> {
        self.runtime.remove_container(&id.0)
    }
}
