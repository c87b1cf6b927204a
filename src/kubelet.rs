//! The kubelet: subsystem handles, the [`Bootstrap`] and [`SyncHandler`] traits and the
//! `handle_pod_*` handlers (in `handlers.rs`) the sync loop (in `sync_loop.rs`, on the
//! `sync-loop` thread) calls. Construction follows upstream's chain: `main →
//! create_and_init_kubelet → new_main_kubelet → start_kubelet → Kubelet::run`; what it reads
//! from the machine (resources, allocatable, pod cgroups) is in `machine.rs`.

pub mod admission;
mod eviction;
mod gc;
mod handlers;
pub mod host;
mod machine;
pub mod node_status;
mod run_once;
mod sync_loop;
pub mod sysctl;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use k8s_openapi::api::core::v1::Pod;

use crate::api::KubeClient;
use crate::clock::Clock;
use crate::config::mux::SourcesReady;
use crate::config::settings::KubeletConfig;
use crate::config::update::PodUpdate;
use crate::cri::{ImageService, RuntimeService};
use crate::events::Recorder;
use crate::kuberuntime::{RuntimeManager, RuntimeSettings};
use crate::mirror::MirrorPods;
use crate::nodestatus::record::NodeRecord;
use crate::pleg::{GenericPleg, PodLifecycleEvent, EVENT_CHANNEL_CAPACITY};
use crate::pod_manager::PodManager;
use crate::pod_sync::ApiContext;
use crate::pod_sync::PodSync;
use crate::pod_workers::PodWorkers;
use crate::status::sync::StatusSync;
use crate::status::{PodStatusEntry, StatusManager};
use crate::volume::{VolumeManager, VolumeSettings};
use crate::waiters::Waiters;

use machine::{node_allocatable, node_resources, pod_cgroups};
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
    /// The eviction settings do not parse.
    #[error(transparent)]
    Eviction(#[from] crate::eviction::threshold::ThresholdError),
    /// The node's cgroups could not be set up.
    #[error(transparent)]
    Cgroups(#[from] crate::cm::CmError),
    /// The image credential provider config cannot be used.
    #[error(transparent)]
    CredentialProviders(#[from] crate::credential_provider::ProviderError),
    /// The device-plugins directory or registration socket cannot be used.
    #[error(transparent)]
    Devices(#[from] crate::devicemanager::DeviceError),
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
    /// false, serving `serving` when given (a rotated certificate) or the configured or
    /// self-signed one; its threads end when `stop` closes.
    fn listen_and_serve(
        self: &Arc<Self>,
        stop: &Receiver<()>,
        serving: Option<Arc<crate::server::tls::ServingCert>>,
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
    /// What the pod workers call (kept here for [`Kubelet::per_pod_entries`]).
    pod_sync: Arc<PodSync>,
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
    /// Node-pressure eviction: its conditions gate admission and feed node status.
    eviction: Arc<crate::eviction::Manager>,
    /// When the sync loop last began an iteration (the `syncloop` health check).
    sync_loop_entered: Mutex<Option<std::time::Instant>>,
    /// Pods whose workers housekeeping forgot (their removal done), with when: a runtime
    /// listing begun before then may still show them, and must not make them orphans.
    just_forgotten: Mutex<std::collections::HashMap<crate::types::PodUid, std::time::Instant>>,
    /// Pods admission rejected (they have a status but no worker) until their source
    /// removes them: housekeeping keeps their status.
    rejected: Mutex<std::collections::HashSet<crate::types::PodUid>>,
    /// Set when `run` returns, so handles to threads started there can be joined.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The registered CSI drivers (none for hollow nodes).
    csi_drivers: Option<Arc<crate::csi::CsiDrivers>>,
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
            credential_providers: match &config.image_credential_providers {
                Some((file, bin_dir)) => Some(Arc::new(
                    crate::credential_provider::CredentialProviders::load(file, bin_dir)?,
                )),
                None => None,
            },
            // Hollow nodes have no device plugins.
            devices: if deps.shared_pod_work.is_none() {
                Some(Arc::new(crate::devicemanager::DeviceManager::new(
                    &config.root_dir,
                    Arc::clone(&deps.clock),
                )?))
            } else {
                None
            },
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
        settings.cgroups = if deps.host_cgroups {
            pod_cgroups(&config, &node)?
        } else {
            None
        };
        let eviction_stats = crate::eviction::HostStats::new(
            Arc::clone(&deps.runtime),
            Arc::clone(&deps.images),
            &config.root_dir,
            &config.pod_logs_dir,
            settings.cgroups.clone(),
        )
        .with_volume_stats_period(
            config
                .raw
                .volume_stats_agg_period
                .and_then(|d| d.to_std())
                .unwrap_or(crate::eviction::stats::DEFAULT_VOLUME_STATS_AGG_PERIOD),
        );
        let eviction = Arc::new(crate::eviction::Manager::new(
            crate::eviction::EvictionConfig::from_config(&config.raw)?,
            &config.node_name,
            Arc::clone(&deps.clock),
            Arc::new(eviction_stats),
            Arc::clone(&deps.recorder),
            Arc::new(crate::eviction::NodePressure::default()),
        ));
        // Hollow nodes have no CSI drivers (and start no threads of their own).
        let csi_drivers = deps
            .shared_pod_work
            .is_none()
            .then(|| Arc::new(crate::csi::CsiDrivers::new()));
        let volumes = VolumeManager::with_settings(
            &config.root_dir,
            VolumeSettings {
                api: deps.api.clone(),
                clock: Arc::clone(&deps.clock),
                tmpfs: deps.tmpfs,
                node: downward_api_limits,
                services: deps.services.clone(),
                csi: csi_drivers.clone(),
            },
        )
        .with_node_name(&config.node_name);
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
        // Capacity as upstream; when full, PLEG drops and counts events (see pleg). The
        // channel's memory follows what is queued, not its capacity.
        let (pleg_tx, pleg_events) = crate::util::capped::channel(EVENT_CHANNEL_CAPACITY);
        let pleg = Arc::new(GenericPleg::new(
            Arc::clone(&runtime_manager) as Arc<dyn crate::pleg::PodLister>,
            Arc::clone(&deps.clock),
            pleg_tx,
        ));
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
            pleg: Some(Arc::clone(&pleg)),
            statuses: Mutex::new(std::collections::HashMap::new()),
            last_forgotten: Mutex::new(None),
            acted: Mutex::new(std::collections::HashSet::new()),
        });
        let pod_sync = Arc::clone(&syncer);
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
        Ok(Kubelet {
            config,
            runtime_manager,
            pod_manager: Mutex::new(PodManager::default()),
            pod_workers,
            pod_sync,
            pleg,
            pleg_events,
            status_manager,
            sources_ready: deps.sources_ready,
            clock: Arc::clone(&deps.clock),
            allocatable,
            sysctls,
            probes,
            probe_updates,
            eviction,
            sync_loop_entered: Mutex::new(None),
            just_forgotten: Mutex::new(std::collections::HashMap::new()),
            rejected: Mutex::new(std::collections::HashSet::new()),
            node_labels: Mutex::new(None),
            api: deps.api,
            mirrors,
            recorder: Arc::clone(&deps.recorder),
            node_record,
            waiters,
            threads: Mutex::new(prober_threads),
            csi_drivers,
        })
    }

    /// Starts the plugin watcher on `<root-dir>/plugins_registry` (CSI driver
    /// registration), unless this kubelet has no CSI drivers (hollow nodes).
    fn start_plugin_watcher(&self, stop: Receiver<()>) -> Result<(), KubeletError> {
        let Some(drivers) = &self.csi_drivers else {
            return Ok(());
        };
        let node_info = self
            .api
            .clone()
            .map(|api| crate::csi::node_info::NodeInfoManager::new(api, &self.config.node_name));
        let dir = self.config.root_dir.join("plugins_registry");
        let watcher = crate::csi::PluginWatcher::start(&dir, Arc::clone(drivers), node_info, stop)
            .map_err(|source| KubeletError::Thread {
                name: "plugin-watcher",
                source,
            })?;
        if let Ok(mut t) = self.threads.lock() {
            t.push(watcher.into_handle());
        }
        Ok(())
    }

    fn pods(&self) -> std::sync::MutexGuard<'_, PodManager> {
        self.pod_manager.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest API status of every pod.
    pub fn pod_statuses(&self) -> Vec<(crate::types::PodUid, PodStatusEntry)> {
        self.status_manager.all()
    }

    /// How many entries each of the kubelet's tables kept per pod or container holds: once
    /// every pod is gone, each is empty (a check for leaks over churn).
    pub fn per_pod_entries(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("pod workers", self.pod_workers.known_pods().len()),
            ("pod statuses", self.status_manager.all().len()),
            ("runtime statuses", self.pod_sync.cached_statuses()),
            ("probe results", self.probes.results().len()),
            ("probe series", self.probes.metrics().series().len()),
            (
                "desired pods",
                self.pod_manager.lock().map_or(0, |m| m.len()),
            ),
            (
                "pods just forgotten",
                self.just_forgotten.lock().map_or(0, |m| m.len()),
            ),
            ("rejected pods", self.rejected.lock().map_or(0, |m| m.len())),
        ]
        .into_iter()
        .chain(self.runtime_manager.per_pod_entries())
        .collect()
    }

    /// The node conditions the eviction manager reports.
    pub fn node_pressure(&self) -> &Arc<crate::eviction::NodePressure> {
        self.eviction.pressure()
    }

    /// The eviction manager.
    pub fn eviction_manager(&self) -> &Arc<crate::eviction::Manager> {
        &self.eviction
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
}
