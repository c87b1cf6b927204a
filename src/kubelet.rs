//! The kubelet: subsystem handles, the [`Bootstrap`] and [`SyncHandler`] traits and the
//! `handle_pod_*` handlers the sync loop (in `sync_loop.rs`, on the `sync-loop` thread)
//! calls. Construction follows upstream's chain: `main → create_and_init_kubelet →
//! new_main_kubelet → start_kubelet → Kubelet::run`.

pub mod admission;
mod gc;
pub mod host;
pub mod node_status;
mod run_once;
mod sync_loop;
pub mod sysctl;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::KubeClient;
use crate::clock::Clock;
use crate::config::mux::SourcesReady;
use crate::config::settings::KubeletConfig;
use crate::config::update::PodUpdate;
use crate::cri::{ImageService, RuntimeService};
use crate::events::{EventType, Recorder};
use crate::kuberuntime::{RunningPod, RuntimeManager, RuntimeSettings};
use crate::mirror::MirrorPods;
use crate::nodestatus::record::NodeRecord;
use crate::pleg::{GenericPleg, PodLifecycleEvent, EVENT_CHANNEL_CAPACITY};
use crate::pod_manager::PodManager;
use crate::pod_sync::ApiContext;
use crate::pod_sync::PodSync;
use crate::pod_workers::{PodWorkers, UpdatePodOptions, UpdateType};
use crate::status::sync::{is_mirror_pod, StatusSync};
use crate::status::{PodStatusEntry, StatusManager};
use crate::types::{pod_key, uid_of};
use crate::volume::{NodeResources, VolumeManager, VolumeSettings};
use crate::waiters::Waiters;

pub use run_once::{PodRunResult, RunOnceOutcome};
pub use sync_loop::LoopTicks;

/// Errors building or running the kubelet.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// A thread could not be started.
    #[error("starting thread {name}: {source}")]
    Thread {
        /// Thread name.
        name: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A kubelet API server could not start.
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    /// A setting cannot be used as given.
    #[error(transparent)]
    Sysctls(#[from] sysctl::AllowlistError),
    /// Run-once mode got no pods from its sources in time.
    #[error("run once: no pod update from the sources within {0:?}")]
    NoPods(std::time::Duration),
}

/// The external services and seams the kubelet is built on.
pub struct Deps {
    /// CRI runtime service.
    pub runtime: Arc<dyn RuntimeService>,
    /// CRI image service.
    pub images: Arc<dyn ImageService>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Where events go.
    pub recorder: Arc<dyn Recorder>,
    /// Runtime name for container ids (`containerd`).
    pub runtime_name: String,
    /// Which sources have delivered their first full set.
    pub sources_ready: Arc<SourcesReady>,
    /// The API server, when the kubelet has a kubeconfig.
    pub api: Option<Arc<dyn KubeClient>>,
    /// Whether memory-backed volumes (secret, projected, `emptyDir.medium: Memory`) are
    /// real tmpfs mounts; hollow nodes and in-process tests use plain directories.
    pub tmpfs: bool,
    /// Whether the kubelet manages host cgroups for pods (`cgroupsPerQOS`); off for hollow
    /// nodes and in-process tests.
    pub host_cgroups: bool,
    /// Set for hollow nodes: pods are synced by a pool shared with other kubelets (woken
    /// through this notifier) and no threads of this kubelet's own are started; probes do
    /// not run.
    pub shared_pod_work: Option<crate::pod_workers::WorkNotifier>,
    /// Waiters shared with other kubelets (hollow nodes); `None`: the kubelet has its own.
    pub waiters: Option<Arc<Waiters>>,
    /// The service informer (service environment variables); `None`: services are listed
    /// from the API server when a container is created.
    pub services: Option<Arc<crate::api::services::ServiceInformer>>,
}

/// The most waiter threads a kubelet starts: enough for every pod it may run to be
/// stopping (or pulling) at once, so one pod's grace period never delays another's.
fn waiter_threads(max_pods: u32) -> usize {
    usize::try_from(max_pods)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
        .max(32)
}

/// Upstream's `Bootstrap` interface: what starting a kubelet needs from it. The three serving
/// methods join this trait with the kubelet API.
pub trait Bootstrap {
    /// The settings the kubelet runs with.
    fn get_configuration(&self) -> Arc<KubeletConfig>;
    /// Logs that the kubelet started (upstream emits a `Starting` event on the node).
    fn birth_cry(&self);
    /// Starts container and image garbage collection; the threads end when `stop` closes.
    fn start_garbage_collection(
        self: &Arc<Self>,
        stop: &Receiver<()>,
    ) -> Result<Vec<JoinHandle<()>>, KubeletError>;
    /// Starts the authenticated kubelet API on `address:port` unless `enableServer` is
    /// false; its threads end when `stop` closes.
    fn listen_and_serve(
        self: &Arc<Self>,
        stop: &Receiver<()>,
    ) -> Result<Vec<JoinHandle<()>>, KubeletError>;
    /// Starts the read-only API when `readOnlyPort` is not 0.
    fn listen_and_serve_read_only(
        self: &Arc<Self>,
        stop: &Receiver<()>,
    ) -> Result<Vec<JoinHandle<()>>, KubeletError>;
    /// Starts the pod-resources gRPC API on `<root-dir>/pod-resources/kubelet.sock`; it
    /// stops when `stop` closes.
    fn listen_and_serve_pod_resources(
        self: &Arc<Self>,
        stop: &Receiver<()>,
    ) -> Result<Vec<JoinHandle<()>>, KubeletError>;
    /// Runs the main loop until `stop` fires; returns after every thread it started joined.
    fn run(
        self: Arc<Self>,
        updates: Receiver<PodUpdate>,
        stop: Receiver<()>,
    ) -> Result<(), KubeletError>;
    /// Runs the pods of the first update once and reports each one's result.
    fn run_once(
        self: Arc<Self>,
        updates: Receiver<PodUpdate>,
    ) -> Result<RunOnceOutcome, KubeletError>;
}

/// Upstream's `SyncHandler`: what the sync loop calls for each kind of event.
pub trait SyncHandler {
    /// New pods.
    fn handle_pod_additions(&self, pods: Vec<Arc<Pod>>);
    /// Changed pods (including graceful deletion).
    fn handle_pod_updates(&self, pods: Vec<Arc<Pod>>);
    /// Pods gone from their source.
    fn handle_pod_removes(&self, pods: Vec<Arc<Pod>>);
    /// Pods whose status only changed.
    fn handle_pod_reconcile(&self, pods: Vec<Arc<Pod>>);
    /// Pods due for a sync.
    fn handle_pod_syncs(&self, pods: Vec<Arc<Pod>>);
    /// Housekeeping: forget finished pods, stop pods no source wants.
    fn handle_pod_cleanups(&self);
}

/// The kubelet.
pub struct Kubelet {
    config: Arc<KubeletConfig>,
    runtime_manager: Arc<RuntimeManager>,
    /// Desired pods; only the sync loop thread writes it (the mutex makes `&self` handlers work).
    pod_manager: Mutex<PodManager>,
    pod_workers: Arc<PodWorkers>,
    pleg: Arc<GenericPleg>,
    /// PLEG's events, read by the sync loop.
    pleg_events: Receiver<PodLifecycleEvent>,
    status_manager: Arc<StatusManager>,
    sources_ready: Arc<SourcesReady>,
    /// The API server, when configured.
    api: Option<Arc<dyn KubeClient>>,
    /// Mirror pods seen from the API source.
    mirrors: Arc<MirrorPods>,
    /// Node events (the birth cry).
    recorder: Arc<dyn Recorder>,
    /// What is known of this node's Node object (UID, host IPs).
    node_record: Arc<NodeRecord>,
    /// Where pod work that waits goes (its own, or shared by hollow nodes).
    waiters: Arc<Waiters>,
    /// Time.
    clock: Arc<dyn Clock>,
    /// What pods may request in all (admission).
    allocatable: admission::Allocatable,
    /// The sysctls pods may set (admission).
    sysctls: sysctl::SysctlAllowlist,
    /// Probes.
    probes: Arc<crate::prober::ProbeManager>,
    /// Published probe result changes, read by the sync loop.
    probe_updates: Receiver<crate::prober::ProbeUpdate>,
    /// The Node's labels for admission and when they were read (re-read at most every
    /// [`NODE_LABELS_TTL`], so pod additions do not each cost an API call).
    node_labels: Mutex<
        Option<(
            std::time::Instant,
            std::collections::BTreeMap<String, String>,
        )>,
    >,
    /// When the sync loop last began an iteration (the `syncloop` health check).
    sync_loop_entered: Mutex<Option<std::time::Instant>>,
    /// Set when `run` returns, so handles to threads started there can be joined.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Whether the API says the pod finished (`Succeeded` or `Failed`): it never runs again.
fn is_terminal_in_api(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// What is left of a deleted pod's grace period: its `deletionTimestamp` is when the grace
/// period ends, so the time until then, at most `deletionGracePeriodSeconds`. `None` for a
/// pod not being deleted.
fn deletion_grace_left(pod: &Pod, now: std::time::SystemTime) -> Option<i64> {
    let deadline = pod.metadata.deletion_timestamp.as_ref()?.0.as_second();
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let left = deadline.saturating_sub(now).max(0);
    Some(match pod.metadata.deletion_grace_period_seconds {
        Some(period) => left.min(period.max(0)),
        None => left,
    })
}

/// How long the Node's labels read for admission are reused.
const NODE_LABELS_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// The machine's CPU, memory and root-dir filesystem size.
fn node_resources(root_dir: &std::path::Path) -> NodeResources {
    use crate::nodestatus::machine::{filesystem_capacity, read_memory_capacity, read_num_cores};
    let root = std::path::Path::new("/");
    NodeResources {
        cpu_millis: read_num_cores(root).map_or(0, |n| i128::from(n) * 1000),
        memory_bytes: read_memory_capacity(root).map_or(0, i128::from),
        ephemeral_storage_bytes: filesystem_capacity(root_dir).map_or(0, i128::from),
    }
}

/// The cgroup manager when `cgroupsPerQOS` is on and the driver is cgroupfs, with the QoS
/// cgroups created; `None` (logged) otherwise.
fn pod_cgroups(
    config: &KubeletConfig,
    allocatable: &admission::Allocatable,
) -> Option<crate::cgroups::CgroupManager> {
    if config.raw.cgroups_per_qos == Some(false) {
        log::info!("cgroupsPerQOS is false: pods get the runtime's default cgroups");
        return None;
    }
    if config.cgroup_driver != "cgroupfs" {
        log::error!(
            "cgroup driver {} is not supported, only cgroupfs: pod cgroups are not managed",
            config.cgroup_driver
        );
        return None;
    }
    let root = config
        .raw
        .cgroup_root
        .as_deref()
        .filter(|r| !r.is_empty())
        .unwrap_or("/");
    let manager =
        match crate::cgroups::CgroupManager::detect(std::path::Path::new("/sys/fs/cgroup"), root) {
            Ok(m) => m.with_pod_pids_limit(config.raw.pod_pids_limit),
            Err(e) => {
                log::error!("pod cgroups are not managed: {e}");
                return None;
            }
        };
    let cpu = i64::try_from(allocatable.cpu_millis).unwrap_or(i64::MAX);
    let memory = i64::try_from(allocatable.memory_bytes).unwrap_or(i64::MAX);
    if let Err(e) = manager.ensure_qos_cgroups(cpu, memory) {
        log::error!("creating the QoS cgroups failed, pod cgroups are not managed: {e}");
        return None;
    }
    log::info!(
        "pod cgroups under {} ({:?})",
        manager.qos_cgroup("Guaranteed"),
        manager.version()
    );
    Some(manager)
}

/// Capacity less `systemReserved`, `kubeReserved` and the hard eviction thresholds, as node
/// status reports allocatable: what admission counts against (pods from `maxPods`) and what a
/// downward API `limits.*` field of a container without that limit reports (upstream
/// `MergeContainerResourceLimits`).
fn node_allocatable(
    config: &KubeletConfig,
    node: &NodeResources,
) -> (admission::Allocatable, NodeResources) {
    use crate::nodestatus::AllocatableReservation;
    use crate::quantity::ThresholdValue;
    let raw = &config.raw;
    let reservation = AllocatableReservation::from_config(
        raw.system_reserved.as_ref(),
        raw.kube_reserved.as_ref(),
        raw.eviction_hard.as_ref(),
    )
    .unwrap_or_default();
    let reserved = |f: fn(&crate::nodestatus::Reserved) -> i64| {
        i128::from(f(&reservation.system_reserved)) + i128::from(f(&reservation.kube_reserved))
    };
    let eviction = match reservation.eviction_memory_available {
        Some(ThresholdValue::Quantity(bytes)) => i128::from(bytes),
        Some(ThresholdValue::Percentage(p)) => (node.memory_bytes as f64 * f64::from(p)) as i128,
        None => 0,
    };
    let nodefs_eviction = match reservation.eviction_nodefs_available {
        Some(ThresholdValue::Quantity(bytes)) => i128::from(bytes),
        Some(ThresholdValue::Percentage(p)) => {
            (node.ephemeral_storage_bytes as f64 * f64::from(p)) as i128
        }
        None => 0,
    };
    let cpu_millis = (node.cpu_millis - reserved(|r| r.cpu_millis)).max(0);
    let memory_bytes = (node.memory_bytes - reserved(|r| r.memory_bytes) - eviction).max(0);
    let ephemeral_storage_bytes =
        (node.ephemeral_storage_bytes - reserved(|r| r.ephemeral_storage_bytes) - nodefs_eviction)
            .max(0);
    (
        admission::Allocatable {
            cpu_millis,
            memory_bytes,
            pods: config.max_pods,
        },
        NodeResources {
            cpu_millis,
            memory_bytes,
            ephemeral_storage_bytes,
        },
    )
}

impl Kubelet {
    /// Builds a kubelet and starts its pod workers (upstream `NewMainKubelet`).
    pub fn new(config: Arc<KubeletConfig>, deps: Deps) -> Result<Kubelet, KubeletError> {
        // A node in a cluster reports an address even without --node-ip (upstream resolves
        // its hostname); standalone, pods get a host IP only from --node-ip, as upstream.
        let node_ips = if config.node_ips.is_empty() && deps.api.is_some() {
            crate::nodestatus::node_ip::detect_node_ip(std::path::Path::new("/"), &config.node_name)
                .into_iter()
                .collect()
        } else {
            config.node_ips.clone()
        };
        let node_record = NodeRecord::new(&node_ips);
        let settings = RuntimeSettings {
            node_name: config.node_name.clone(),
            pod_logs_dir: config.pod_logs_dir.clone(),
            container_logs_dir: config.container_logs_dir.clone(),
            resolv_conf: (!config.resolv_conf.as_os_str().is_empty())
                .then(|| config.resolv_conf.clone()),
            cluster_dns: config.cluster_dns.clone(),
            cluster_domain: config.cluster_domain.clone(),
            root_dir: config.root_dir.clone(),
            seccomp_default: config.raw.seccomp_default.unwrap_or(false),
            memory_capacity_bytes: 0,
            node: Arc::clone(&node_record),
            cgroups: None,
        };
        let node = node_resources(&config.root_dir);
        let (allocatable, downward_api_limits) = node_allocatable(&config, &node);
        let sysctls = sysctl::SysctlAllowlist::new(
            config
                .raw
                .allowed_unsafe_sysctls
                .as_deref()
                .unwrap_or_default(),
            sysctl::kernel_version(),
        )?;
        let mut settings = settings;
        settings.memory_capacity_bytes = node.memory_bytes;
        settings.cgroups = deps
            .host_cgroups
            .then(|| pod_cgroups(&config, &allocatable))
            .flatten();
        let volumes = VolumeManager::with_settings(
            &config.root_dir,
            VolumeSettings {
                api: deps.api.clone(),
                clock: Arc::clone(&deps.clock),
                tmpfs: deps.tmpfs,
                node: downward_api_limits,
                services: deps.services.clone(),
            },
        );
        let (probes, probe_updates, prober_threads) = if deps.shared_pod_work.is_some() {
            let (probes, updates) = crate::prober::ProbeManager::disabled();
            (probes, updates, Vec::new())
        } else {
            crate::prober::ProbeManager::start(crate::prober::ProberDeps {
                runtime: Arc::clone(&deps.runtime),
                clock: Arc::clone(&deps.clock),
                recorder: Arc::clone(&deps.recorder),
                workers: config.prober_workers,
            })
            .map_err(|source| KubeletError::Thread {
                name: "prober",
                source,
            })?
        };
        let probes = Arc::new(probes);
        let runtime_manager = Arc::new(RuntimeManager::new(
            deps.runtime,
            deps.images,
            Arc::clone(&deps.clock),
            Arc::clone(&deps.recorder),
            settings,
            volumes,
            Some(Arc::clone(probes.results())),
        ));
        let status_manager = Arc::new(StatusManager::default());
        let mirrors = Arc::new(MirrorPods::default());
        let api = deps.api.as_ref().map(|client| ApiContext {
            client: Arc::clone(client),
            mirrors: Arc::clone(&mirrors),
            node_name: config.node_name.clone(),
        });
        let waiters = deps.waiters.clone().unwrap_or_else(|| {
            Waiters::new(
                "pod-waiter",
                waiter_threads(config.max_pods),
                crate::kuberuntime::pull_limit(
                    config.raw.serialize_image_pulls.unwrap_or(true),
                    config
                        .raw
                        .max_parallel_image_pulls
                        .and_then(|n| u32::try_from(n).ok()),
                ),
            )
        });
        let syncer = Arc::new_cyclic(|me| PodSync {
            runtime_manager: Arc::clone(&runtime_manager),
            status_manager: Arc::clone(&status_manager),
            recorder: Arc::clone(&deps.recorder),
            clock: Arc::clone(&deps.clock),
            runtime_name: deps.runtime_name,
            node: Arc::clone(&node_record),
            api,
            probes: Arc::clone(&probes),
            waiters: Arc::clone(&waiters),
            me: me.clone(),
        });
        let pod_workers = match deps.shared_pod_work {
            Some(notify) => PodWorkers::external(
                syncer,
                Arc::clone(&deps.clock),
                config.sync_frequency,
                notify,
            ),
            None => PodWorkers::start(
                config.pod_workers,
                syncer,
                Arc::clone(&deps.clock),
                config.sync_frequency,
            )
            .map_err(|source| KubeletError::Thread {
                name: "pod-worker",
                source,
            })?,
        };
        // Capacity as upstream; when full, PLEG drops and counts events (see pleg).
        let (pleg_tx, pleg_events) = crossbeam_channel::bounded(EVENT_CHANNEL_CAPACITY);
        let pleg = Arc::new(GenericPleg::new(
            Arc::clone(&runtime_manager) as Arc<dyn crate::pleg::PodLister>,
            Arc::clone(&deps.clock),
            pleg_tx,
        ));
        Ok(Kubelet {
            config,
            runtime_manager,
            pod_manager: Mutex::new(PodManager::default()),
            pod_workers,
            pleg,
            pleg_events,
            status_manager,
            sources_ready: deps.sources_ready,
            clock: Arc::clone(&deps.clock),
            allocatable,
            sysctls,
            probes,
            probe_updates,
            sync_loop_entered: Mutex::new(None),
            node_labels: Mutex::new(None),
            api: deps.api,
            mirrors,
            recorder: Arc::clone(&deps.recorder),
            node_record,
            waiters,
            threads: Mutex::new(prober_threads),
        })
    }

    fn pods(&self) -> std::sync::MutexGuard<'_, PodManager> {
        self.pod_manager.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pods with `hostUsers: false` want their own user namespace. rkubelet does not map
    /// user namespaces yet, so such a pod is rejected with a reason that says whether the
    /// runtime could have run it; it never runs in the host's user namespace.
    fn admit_user_namespace(&self, pod: &Pod) -> Result<(), admission::Rejection> {
        let wants_own = pod.spec.as_ref().and_then(|s| s.host_users) == Some(false);
        if !wants_own {
            return Ok(());
        }
        let runtime_supports = self
            .runtime_manager
            .runtime()
            .status(false)
            .map(|status| {
                status
                    .get_runtime_handlers()
                    .iter()
                    .any(|h| h.get_features().get_user_namespaces())
            })
            .unwrap_or(false);
        let why = if runtime_supports {
            "user namespace ID mappings are not implemented by this kubelet"
        } else {
            "the container runtime does not support user namespaces"
        };
        Err(admission::Rejection {
            reason: "UserNamespacesNotSupported".into(),
            message: format!("pod asks for its own user namespace (hostUsers: false): {why}"),
        })
    }

    /// Stops a pod its source still has (deleted with a grace period, or finished), with
    /// its deletion grace period (`deletionGracePeriodSeconds`, as upstream); `first_seen`
    /// (a restarted kubelet finds the deletion under way): with what is left of it.
    fn kill(&self, pod: &Arc<Pod>, first_seen: bool) {
        let grace = if first_seen {
            deletion_grace_left(pod, self.clock.wall())
        } else {
            pod.metadata.deletion_grace_period_seconds
        };
        self.pod_workers.update_pod(UpdatePodOptions {
            update_type: UpdateType::Kill,
            grace_period_override: grace,
            pod: Arc::clone(pod),
            removed: false,
        });
    }

    /// Sends work for a pod to the pod workers (upstream `dispatchWork`).
    fn dispatch_work(&self, pod: &Arc<Pod>, update_type: UpdateType) {
        self.pod_workers.update_pod(UpdatePodOptions {
            update_type,
            pod: Arc::clone(pod),
            grace_period_override: None,
            removed: false,
        });
    }

    /// The latest API status of every pod.
    pub fn pod_statuses(&self) -> Vec<(crate::types::PodUid, PodStatusEntry)> {
        self.status_manager.all()
    }

    /// The pod workers (for benchmarks and tests that wait for them).
    pub fn pod_workers(&self) -> &Arc<PodWorkers> {
        &self.pod_workers
    }

    /// The API client, when configured.
    pub fn api(&self) -> Option<&Arc<dyn KubeClient>> {
        self.api.as_ref()
    }

    /// What is known of this node's Node object: the node status threads update it, pod
    /// workers read its UID (mirror pods) and host IPs.
    pub fn node_record(&self) -> &Arc<NodeRecord> {
        &self.node_record
    }

    /// The status sync of this kubelet (what the `status-manager` thread runs), when an API
    /// server is configured.
    pub fn status_sync(&self) -> Option<StatusSync> {
        let client = self.api.clone()?;
        Some(
            StatusSync::new(Arc::clone(&self.status_manager), client)
                .with_mirrors(Arc::clone(&self.mirrors)),
        )
    }

    /// Starts the `status-manager` thread when an API server is configured.
    fn start_status_sync(&self, stop: Receiver<()>) -> Result<(), KubeletError> {
        let Some(sync) = self.status_sync() else {
            return Ok(());
        };
        let handle = std::thread::Builder::new()
            .name("status-manager".into())
            .spawn(move || sync.run(stop))
            .map_err(|source| KubeletError::Thread {
                name: "status-manager",
                source,
            })?;
        if let Ok(mut t) = self.threads.lock() {
            t.push(handle);
        }
        Ok(())
    }

    /// Records mirror pods and syncs their static pods; returns the pods that are not mirrors.
    fn split_mirror_pods(&self, pods: Vec<Arc<Pod>>, removed: bool) -> Vec<Arc<Pod>> {
        let (mirrors, regular): (Vec<_>, Vec<_>) = pods.into_iter().partition(|p| is_mirror_pod(p));
        for mirror in mirrors {
            if removed {
                self.mirrors.remove(&mirror);
            } else {
                self.mirrors.set(&mirror);
            }
            // The static pod's worker creates a new mirror if this one is gone or going.
            let key = pod_key(&mirror);
            let static_pod = self
                .pods()
                .pods()
                .find(|p| pod_key(p) == key && !is_mirror_pod(p))
                .cloned();
            if let Some(static_pod) = static_pod {
                self.dispatch_work(&static_pod, UpdateType::Sync);
            }
        }
        regular
    }

    /// The runtime manager.
    pub fn runtime_manager(&self) -> &Arc<RuntimeManager> {
        &self.runtime_manager
    }

    /// The status manager.
    pub fn status_manager(&self) -> &Arc<StatusManager> {
        &self.status_manager
    }

    /// PLEG (its health and metrics).
    pub fn pleg(&self) -> &Arc<GenericPleg> {
        &self.pleg
    }

    /// The pods the kubelet wants on the node (static pods, not their mirrors).
    pub fn desired_pods(&self) -> Vec<Arc<Pod>> {
        self.pods().pods().cloned().collect()
    }

    /// Probe counters.
    pub fn probe_metrics(&self) -> Arc<crate::prober::ProberMetrics> {
        Arc::clone(self.probes.metrics())
    }

    /// The health checks of `/healthz`: `ping`, `log` and `syncloop`.
    pub fn health_checks(self: &Arc<Self>) -> Vec<crate::healthz::Check> {
        let k = Arc::clone(self);
        vec![
            ("ping", Box::new(|| Ok(()))),
            ("log", Box::new(|| Ok(()))),
            ("syncloop", Box::new(move || k.sync_loop_health())),
        ]
    }

    fn server_host(self: &Arc<Self>) -> Arc<dyn crate::server::HostInterface> {
        Arc::new(host::KubeletHost::new(
            Arc::clone(self),
            Arc::clone(&self.config),
            self.health_checks(),
        ))
    }

    /// The `syncloop` health check (upstream `syncLoopHealthCheck`): failing once an
    /// iteration has not begun for twice the sync frequency, and at least 5 minutes.
    pub fn sync_loop_health(&self) -> Result<(), String> {
        let limit = (self.config.sync_frequency * 2).max(std::time::Duration::from_secs(300));
        let entered = self.sync_loop_entered.lock().ok().and_then(|t| *t);
        match entered {
            Some(t) if self.clock.now().saturating_duration_since(t) > limit => {
                Err("sync Loop took longer than expected".into())
            }
            _ => Ok(()),
        }
    }

    /// Pods admitted earlier that still run or may still start containers.
    fn active_pods<'a>(&self, pods: &'a PodManager) -> Vec<&'a Pod> {
        pods.pods()
            .filter(|p| {
                self.pod_workers
                    .state(&uid_of(p))
                    .is_none_or(|s| s.can_start_containers())
            })
            .map(|p| p.as_ref())
            .collect()
    }

    /// The node's labels for admission: from the API's Node when there is one (labels set by
    /// others count), else the ones rkubelet registers with.
    fn node_labels(&self) -> std::collections::BTreeMap<String, String> {
        use crate::nodestatus::registration::{initial_node, NodeRegistration};
        let now = self.clock.now();
        if let Some((read, labels)) = self.node_labels.lock().ok().and_then(|c| c.clone()) {
            if now.saturating_duration_since(read) < NODE_LABELS_TTL {
                return labels;
            }
        }
        let registered = initial_node(&NodeRegistration::new(
            self.config.node_name.clone(),
            self.config.node_name.clone(),
        ))
        .metadata
        .labels
        .unwrap_or_default();
        let labels = match self
            .api
            .as_ref()
            .map(|api| api.get_node(&self.config.node_name))
        {
            Some(Ok(node)) => node.metadata.labels.unwrap_or(registered),
            _ => registered,
        };
        if let Ok(mut cache) = self.node_labels.lock() {
            *cache = Some((now, labels.clone()));
        }
        labels
    }

    /// A stand-in pod object for a runtime pod no source knows, so the workers can stop it.
    fn orphan_pod(&self, running: &RunningPod) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(running.name.clone()),
                namespace: Some(running.namespace.clone()),
                uid: Some(running.uid.0.clone()),
                ..Default::default()
            },
            ..Default::default()
        })
    }
}

impl SyncHandler for Kubelet {
    fn handle_pod_additions(&self, pods: Vec<Arc<Pod>>) {
        let mut pods = self.split_mirror_pods(pods, false);
        pods.sort_by(|a, b| {
            let ts = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            ts(a).cmp(&ts(b))
        });
        let node_labels = self.node_labels();
        for pod in pods {
            // A pod being deleted, or already finished, when first seen (a restarted kubelet
            // lists it): never started again, only stopped and, when deleted, removed from
            // the API with what is left of its grace period.
            if pod.metadata.deletion_timestamp.is_some() || is_terminal_in_api(&pod) {
                self.pods().add_or_update(&pod);
                log::info!(
                    "pod=\"{}\" uid={} added while {}: terminating it",
                    pod_key(&pod),
                    uid_of(&pod),
                    if pod.metadata.deletion_timestamp.is_some() {
                        "being deleted"
                    } else {
                        "finished"
                    }
                );
                self.kill(&pod, true);
                continue;
            }
            let mut manager = self.pods();
            let verdict = self
                .sysctls
                .admit(&pod)
                .and_then(|()| self.admit_user_namespace(&pod))
                .and_then(|()| {
                    let active = self.active_pods(&manager);
                    admission::admit(
                        &pod,
                        &active,
                        &self.allocatable,
                        &node_labels,
                        &self.config.node_name,
                    )
                });
            if let Err(rejection) = verdict {
                log::warn!(
                    "pod=\"{}\" uid={} rejected: {}: {}",
                    pod_key(&pod),
                    uid_of(&pod),
                    rejection.reason,
                    rejection.message
                );
                self.recorder.pod_event(
                    &pod,
                    EventType::Warning,
                    &rejection.reason,
                    rejection.message.clone(),
                );
                self.status_manager.set_pod_status(
                    &pod,
                    k8s_openapi::api::core::v1::PodStatus {
                        phase: Some("Failed".into()),
                        reason: Some(rejection.reason),
                        message: Some(format!("Pod was rejected: {}", rejection.message)),
                        qos_class: Some(crate::resources::qos_class(&pod).into()),
                        ..Default::default()
                    },
                );
                continue;
            }
            manager.add_or_update(&pod);
            drop(manager);
            log::info!("pod=\"{}\" uid={} added", pod_key(&pod), uid_of(&pod));
            self.dispatch_work(&pod, UpdateType::Create);
        }
    }

    fn handle_pod_updates(&self, pods: Vec<Arc<Pod>>) {
        for pod in self.split_mirror_pods(pods, false) {
            self.pods().add_or_update(&pod);
            if pod.metadata.deletion_timestamp.is_some() {
                self.kill(&pod, false);
            } else {
                log::info!("pod=\"{}\" uid={} updated", pod_key(&pod), uid_of(&pod));
                self.dispatch_work(&pod, UpdateType::Update);
            }
        }
    }

    fn handle_pod_removes(&self, pods: Vec<Arc<Pod>>) {
        for pod in self.split_mirror_pods(pods, true) {
            self.pods().remove(&pod);
            log::info!(
                "pod=\"{}\" uid={} removed from its source",
                pod_key(&pod),
                uid_of(&pod)
            );
            // A forced deletion's last form says grace 0: the containers go at once.
            self.pod_workers.update_pod(UpdatePodOptions {
                update_type: UpdateType::Kill,
                grace_period_override: pod.metadata.deletion_grace_period_seconds,
                pod,
                removed: true,
            });
        }
    }

    fn handle_pod_reconcile(&self, pods: Vec<Arc<Pod>>) {
        let pods = self.split_mirror_pods(pods, false);
        let mut manager = self.pods();
        for pod in &pods {
            manager.add_or_update(pod);
        }
        drop(manager);
        // A readiness gate's condition changed: Ready is recomputed by a sync.
        for pod in pods
            .iter()
            .filter(|p| crate::status::generate::needs_readiness_reconcile(p))
        {
            self.dispatch_work(pod, UpdateType::Sync);
        }
    }

    fn handle_pod_syncs(&self, pods: Vec<Arc<Pod>>) {
        for pod in pods {
            self.dispatch_work(&pod, UpdateType::Sync);
        }
    }

    fn handle_pod_cleanups(&self) {
        let desired = self.pods().uids();
        for uid in self.pod_workers.sync_known_pods(&desired) {
            log::debug!("uid={uid} forgotten by the pod workers");
        }
        // Until every source has delivered its first full set, a pod missing from the desired
        // set may simply not have been read yet: never stop anything before that.
        if !self.sources_ready.all_ready() {
            return;
        }
        let known = self.pod_workers.known_pods();
        let running_pods = self.pleg.running_pods();
        let keep: std::collections::HashSet<crate::types::PodUid> = desired
            .iter()
            .chain(known.iter())
            .chain(running_pods.iter().map(|p| &p.uid))
            .cloned()
            .collect();
        for uid in self.runtime_manager.volumes().cleanup_orphans(&keep) {
            log::info!("uid={uid} removed the directory of a pod that no longer exists");
        }
        if let Some(cgroups) = self.runtime_manager.cgroups() {
            for uid in cgroups.pods_with_cgroups() {
                if keep.contains(&uid) {
                    continue;
                }
                match cgroups.remove_pod_cgroup(&uid) {
                    Ok(()) => {
                        log::info!("uid={uid} removed the cgroup of a pod that no longer exists")
                    }
                    Err(e) => log::debug!("uid={uid} leftover pod cgroup stays for now: {e}"),
                }
            }
        }
        for running in running_pods.iter() {
            if desired.contains(&running.uid) || known.contains(&running.uid) {
                continue;
            }
            log::info!(
                "pod=\"{}/{}\" uid={} is not wanted by any source, stopping and removing it",
                running.namespace,
                running.name,
                running.uid
            );
            self.pod_workers.update_pod(UpdatePodOptions {
                update_type: UpdateType::Kill,
                pod: self.orphan_pod(running),
                grace_period_override: None,
                removed: true,
            });
        }
    }
}
