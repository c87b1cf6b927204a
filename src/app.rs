//! Start-up and shutdown of a kubelet process (upstream `cmd/kubelet/app`): connect to the
//! runtime, build the kubelet, start the pod sources, run until a stop signal, join every
//! thread. `main` calls [`run`] and maps its result to an exit code.

pub mod certificates;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::api::client::RestClient;
use crate::api::services::ServiceInformer;
use crate::api::{ApiError, KubeClient};
use crate::clock::{Clock, RealClock};
use crate::config::apiserver::ApiserverSource;
use crate::config::file::FileSource;
use crate::config::http::{HttpSource, HttpSourceError};
use crate::config::mux::{MuxError, PodConfig};
use crate::config::settings::KubeletConfig;
use crate::config::update::{PodUpdate, API_SOURCE, FILE_SOURCE, HTTP_SOURCE};
use crate::cri::{wait_for_runtime, CriError, RemoteRuntime};
use crate::events::{ApiRecorder, LogRecorder, Recorder};
use crate::kubelet::node_status::{start_node_threads, KubeletNodeStatus, NodeStatusDeps};
use crate::kubelet::{Bootstrap, Deps, Kubelet, KubeletError, RunOnceOutcome};
use crate::util::sd_notify;

/// How long start-up waits for the runtime to answer.
const RUNTIME_WAIT: Duration = Duration::from_secs(60);
/// Capacity of the mux's output channel (upstream 50); the mux waits when it is full.
const POD_UPDATES_CAPACITY: usize = 50;
/// How long shutdown waits for threads to finish their current step.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// Errors that end the process with exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The runtime could not be reached or is unsuitable.
    #[error("container runtime at {endpoint}: {source}")]
    Runtime {
        /// The endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: CriError,
    },
    /// The kubelet could not be built or run.
    #[error(transparent)]
    Kubelet(#[from] KubeletError),
    /// The runtime uses another cgroup driver than the configured one, and taking the
    /// runtime's is switched off (feature gate `KubeletCgroupDriverFromCRI=false`).
    #[error(
        "cgroupDriver is {configured:?} but the container runtime uses {runtime:?}; the runtime \
         would reject the pods' cgroup parents (set cgroupDriver: {runtime} or let the kubelet \
         take the runtime's with the KubeletCgroupDriverFromCRI feature gate)"
    )]
    CgroupDriverMismatch {
        /// The kubelet's configuration.
        configured: String,
        /// What the runtime reported.
        runtime: String,
    },
    /// The kubeconfig or API client could not be set up.
    #[error("--kubeconfig: {0}")]
    Api(#[from] ApiError),
    /// The node's client certificate could not be bootstrapped, or rotation not set up.
    #[error("certificates: {0}")]
    Certificate(#[from] crate::certificate::CertError),
    /// The manifest URL source could not be set up.
    #[error("--manifest-url: {0}")]
    HttpSource(#[from] HttpSourceError),
    /// The pod config mux could not start.
    #[error(transparent)]
    Mux(#[from] MuxError),
    /// A thread could not be started.
    #[error("starting thread {name}: {source}")]
    Thread {
        /// Thread name.
        name: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The root directory could not be created.
    #[error("creating {}: {source}", .path.display())]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// Some pods did not start in run-once mode.
    #[error("run once: {failed} of {total} pods did not start")]
    RunOnceFailed {
        /// Pods that did not start.
        failed: usize,
        /// All pods.
        total: usize,
    },
}

/// The pod sources and the mux feeding the kubelet, with their threads.
pub struct PodSources {
    /// The mux's output (incremental updates).
    pub updates: Receiver<PodUpdate>,
    /// Which sources have reported.
    pub sources_ready: Arc<crate::config::mux::SourcesReady>,
    /// Source and mux threads.
    pub threads: Vec<JoinHandle<()>>,
}

/// Creates the root directory and its `pods` directory (upstream `setupDataDirs`).
pub fn setup_data_dirs(config: &KubeletConfig) -> Result<(), AppError> {
    for dir in [config.root_dir.clone(), config.root_dir.join("pods")] {
        std::fs::create_dir_all(&dir).map_err(|source| AppError::DataDir {
            path: dir.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Builds the API client from `--kubeconfig` with the configured rate limits
/// (`kubeAPIQPS`/`kubeAPIBurst`, upstream defaults 50/100). The certificate rotation threads
/// swap new client certificates into it.
pub fn make_rest_client(config: &KubeletConfig) -> Result<Option<Arc<RestClient>>, AppError> {
    let Some(path) = &config.kubeconfig else {
        return Ok(None);
    };
    let rest = crate::api::kubeconfig::load(path)?;
    let qps = config.raw.kube_api_qps.unwrap_or(50) as f32;
    let burst = config
        .raw
        .kube_api_burst
        .and_then(|b| u32::try_from(b).ok())
        .unwrap_or(100);
    log::info!("API server {} (qps {qps}, burst {burst})", rest.server);
    let client = RestClient::new(rest, qps, burst, crate::api::client::DEFAULT_TIMEOUT)?;
    Ok(Some(Arc::new(client)))
}

/// Starts the pod sources the config names (manifest directory, manifest URL, API server)
/// and the mux (upstream `makePodSourceConfig`).
pub fn make_pod_sources(
    config: &KubeletConfig,
    api: Option<Arc<dyn KubeClient>>,
    stop: &Receiver<()>,
) -> Result<PodSources, AppError> {
    let (mut mux, updates) = PodConfig::new(POD_UPDATES_CAPACITY);
    let mut threads = Vec::new();
    if let Some(client) = api {
        let tx = mux.channel(API_SOURCE);
        threads.push(
            ApiserverSource::new(client, &config.node_name)
                .start(tx, stop.clone())
                .map_err(|source| AppError::Thread {
                    name: "source-apiserver",
                    source,
                })?,
        );
    }
    if let Some(path) = &config.static_pod_path {
        let tx = mux.channel(FILE_SOURCE);
        let source = FileSource::new(path.clone(), &config.node_name, config.file_check_frequency);
        threads.push(
            source
                .start(tx, stop.clone())
                .map_err(|source| AppError::Thread {
                    name: "source-file",
                    source,
                })?,
        );
    }
    if let Some(url) = &config.static_pod_url {
        let tx = mux.channel(HTTP_SOURCE);
        let source = HttpSource::new(
            url,
            &config.static_pod_url_header,
            &config.node_name,
            config.http_check_frequency,
        )?;
        threads.push(
            source
                .start(tx, stop.clone())
                .map_err(|source| AppError::Thread {
                    name: "source-http",
                    source,
                })?,
        );
    }
    let sources_ready = mux.sources_ready();
    threads.push(mux.start(stop.clone())?);
    Ok(PodSources {
        updates,
        sources_ready,
        threads,
    })
}

/// The configuration with the cgroup driver the runtime reports through CRI `RuntimeConfig`
/// (upstream from 1.31, feature gate `KubeletCgroupDriverFromCRI`, on by default); the
/// configured driver when the runtime does not say. With the gate off, a runtime that uses
/// the other driver is a start-up error naming both.
fn with_runtime_cgroup_driver(
    config: Arc<KubeletConfig>,
    runtime: &dyn crate::cri::RuntimeService,
) -> Result<Arc<KubeletConfig>, AppError> {
    let from_cri = config
        .raw
        .feature_gates
        .as_ref()
        .and_then(|g| g.get("KubeletCgroupDriverFromCRI").copied())
        .unwrap_or(true);
    let reported =
        crate::cri::runtime_cgroup_driver(runtime).map_err(|source| AppError::Runtime {
            endpoint: config.container_runtime_endpoint.clone(),
            source,
        })?;
    let Some(driver) = reported else {
        return Ok(config);
    };
    if driver == config.cgroup_driver {
        log::info!("Using cgroup driver {driver}, as the container runtime reports");
        return Ok(config);
    }
    if !from_cri {
        return Err(AppError::CgroupDriverMismatch {
            configured: config.cgroup_driver.clone(),
            runtime: driver.to_string(),
        });
    }
    log::warn!(
        "Using cgroup driver setting received from the CRI runtime: {driver} \
         (cgroupDriver {:?} is not used)",
        config.cgroup_driver
    );
    let mut changed = (*config).clone();
    changed.cgroup_driver = driver.to_string();
    Ok(Arc::new(changed))
}

/// Connects to the runtime and builds the kubelet (upstream `createAndInitKubelet`).
pub fn create_and_init_kubelet(
    config: Arc<KubeletConfig>,
    sources_ready: Arc<crate::config::mux::SourcesReady>,
    rest: Option<Arc<RestClient>>,
    stop: &Receiver<()>,
) -> Result<(Arc<Kubelet>, Vec<JoinHandle<()>>), AppError> {
    let api = rest.clone().map(|c| c as Arc<dyn KubeClient>);
    let runtime_error = |endpoint: &str| {
        let endpoint = endpoint.to_string();
        move |source| AppError::Runtime { endpoint, source }
    };
    let runtime = Arc::new(
        RemoteRuntime::connect(
            &config.container_runtime_endpoint,
            config.runtime_request_timeout,
        )
        .map_err(runtime_error(&config.container_runtime_endpoint))?,
    );
    let version = wait_for_runtime(runtime.as_ref(), RUNTIME_WAIT)
        .map_err(runtime_error(&config.container_runtime_endpoint))?;
    log::info!(
        "container runtime {} {} (CRI {})",
        version.get_runtime_name(),
        version.get_runtime_version(),
        version.get_runtime_api_version()
    );
    let config = with_runtime_cgroup_driver(config, runtime.as_ref())?;
    let images: Arc<dyn crate::cri::ImageService> =
        if config.image_service_endpoint == config.container_runtime_endpoint {
            runtime.clone()
        } else {
            Arc::new(
                RemoteRuntime::connect(
                    &config.image_service_endpoint,
                    config.runtime_request_timeout,
                )
                .map_err(runtime_error(&config.image_service_endpoint))?,
            )
        };
    let clock: Arc<dyn Clock> = Arc::new(RealClock);
    let mut threads = Vec::new();
    let recorder: Arc<dyn Recorder> = match &api {
        Some(client) => {
            let (recorder, handle) = ApiRecorder::start(
                Arc::clone(client),
                Arc::clone(&clock),
                &config.node_name,
                stop.clone(),
            )
            .map_err(|source| AppError::Thread {
                name: "event-broadcaster",
                source,
            })?;
            threads.push(handle);
            recorder
        }
        None => Arc::new(LogRecorder),
    };
    let services = match api.as_ref() {
        Some(client) => {
            let informer = ServiceInformer::new(Arc::clone(client));
            let handle = informer
                .start(stop.clone())
                .map_err(|source| AppError::Thread {
                    name: "service-informer",
                    source,
                })?;
            threads.push(handle);
            Some(informer)
        }
        None => None,
    };
    let deps = Deps {
        runtime: Arc::clone(&runtime) as Arc<dyn crate::cri::RuntimeService>,
        images: Arc::clone(&images),
        clock: Arc::clone(&clock),
        recorder: Arc::clone(&recorder),
        runtime_name: version.get_runtime_name().to_string(),
        sources_ready,
        api: api.clone(),
        tmpfs: true,
        host_cgroups: true,
        shared_pod_work: None,
        waiters: None,
        services,
    };
    let kubelet = new_main_kubelet(Arc::clone(&config), deps)?;
    // The log manager learns each container's log path from the runtime manager, which set
    // it when it created the container.
    let log_manager = crate::log_manager::ContainerLogManager::new(
        runtime.clone(),
        crate::log_manager::LogPolicy::from_config(&config.raw),
    )
    .with_log_paths(kubelet.runtime_manager().log_paths());
    threads.push(
        log_manager
            .start(stop.clone())
            .map_err(|source| AppError::Thread {
                name: "container-log-manager",
                source,
            })?,
    );
    kubelet.birth_cry();
    threads.extend(kubelet.start_garbage_collection(stop)?);
    if let Some(handle) = start_healthz(&config, &kubelet, stop)? {
        threads.push(handle);
    }
    // As upstream, run-once mode serves no kubelet API.
    if !config.run_once {
        let node_ips = kubelet.node_record().node_ips().to_vec();
        let rotation =
            certificates::start_serving_rotation(&config, rest.as_ref(), node_ips, stop)?;
        let serving = rotation.map(|r| {
            threads.push(r.thread);
            r.cert
        });
        threads.extend(kubelet.listen_and_serve(stop, serving)?);
        threads.extend(kubelet.listen_and_serve_read_only(stop)?);
        threads.extend(kubelet.listen_and_serve_pod_resources(stop)?);
    }
    if let Some(client) = api {
        let source = Arc::new(KubeletNodeStatus::new(
            &config,
            NodeStatusDeps {
                runtime,
                images,
                pleg: Arc::clone(kubelet.pleg()),
                recorder,
                runtime_name: version.get_runtime_name().to_string(),
                runtime_version: version.get_runtime_version().to_string(),
                node: Arc::clone(kubelet.node_record()),
                pressure: Arc::clone(kubelet.node_pressure()),
                runtime_manager: Some(Arc::clone(kubelet.runtime_manager())),
            },
        ));
        threads.extend(start_node_threads(&config, client, clock, source, stop)?);
    }
    Ok((kubelet, threads))
}

/// Builds the kubelet from its dependencies (upstream `NewMainKubelet`).
pub fn new_main_kubelet(config: Arc<KubeletConfig>, deps: Deps) -> Result<Arc<Kubelet>, AppError> {
    Ok(Arc::new(Kubelet::new(config, deps)?))
}

/// Starts the sync loop on its own thread (upstream `startKubelet`).
pub fn start_kubelet(
    kubelet: Arc<Kubelet>,
    updates: Receiver<PodUpdate>,
    stop: Receiver<()>,
) -> Result<JoinHandle<Result<(), KubeletError>>, AppError> {
    start_kubelet_with_exit(kubelet, updates, stop, None)
}

/// [`start_kubelet`], dropping `exited` when the sync loop ends (for a thread waiting on it).
fn start_kubelet_with_exit(
    kubelet: Arc<Kubelet>,
    updates: Receiver<PodUpdate>,
    stop: Receiver<()>,
    exited: Option<crossbeam_channel::Sender<()>>,
) -> Result<JoinHandle<Result<(), KubeletError>>, AppError> {
    std::thread::Builder::new()
        .name("sync-loop".into())
        .spawn(move || {
            let _exited = exited;
            kubelet.run(updates, stop)
        })
        .map_err(|source| AppError::Thread {
            name: "sync-loop",
            source,
        })
}

/// Starts the healthz endpoint unless `healthzPort` is 0.
fn start_healthz(
    config: &KubeletConfig,
    kubelet: &Arc<Kubelet>,
    stop: &Receiver<()>,
) -> Result<Option<JoinHandle<()>>, AppError> {
    let port = config.raw.healthz_port.unwrap_or(10248);
    let Ok(port) = u16::try_from(port) else {
        return Ok(None);
    };
    if port == 0 {
        return Ok(None);
    }
    let ip: std::net::IpAddr = config
        .raw
        .healthz_bind_address
        .as_deref()
        .and_then(|a| a.parse().ok())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let checks = kubelet.health_checks();
    crate::healthz::start(std::net::SocketAddr::new(ip, port), checks, stop.clone())
        .map(Some)
        .map_err(|source| AppError::Thread {
            name: "healthz",
            source,
        })
}

/// Joins threads, giving up on any still running after `deadline` (a thread inside a
/// runtime call finishes it first; the process exit ends it).
fn join_until(threads: Vec<JoinHandle<()>>, deadline: Instant) {
    for t in threads {
        let name = t.thread().name().unwrap_or("unnamed").to_string();
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if t.is_finished() {
            if t.join().is_err() {
                log::error!("thread {name} panicked");
            }
        } else {
            log::warn!("thread {name} did not stop in time; exiting without it");
        }
    }
}

/// Runs a kubelet until SIGTERM or SIGINT (or, with `--runonce`, until its pods started).
pub fn run(config: KubeletConfig) -> Result<(), AppError> {
    let config = Arc::new(config);
    crate::config::unimplemented::warn_unimplemented(&config);
    setup_data_dirs(&config)?;
    // Dropping `stop_tx` disconnects every clone of `stop_rx`: the one broadcast that reaches
    // every thread. Capacity 0: nothing is ever sent.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    certificates::bootstrap(&config, &stop_rx)?;
    let rest = make_rest_client(&config)?;
    let rotation = match &rest {
        Some(rest) => certificates::start_client_rotation(&config, rest, &stop_rx)?,
        None => None,
    };
    let api = rest.clone().map(|c| c as Arc<dyn KubeClient>);
    let mut sources = make_pod_sources(&config, api, &stop_rx)?;
    sources.threads.extend(rotation);
    let (kubelet, threads) = create_and_init_kubelet(
        Arc::clone(&config),
        Arc::clone(&sources.sources_ready),
        rest,
        &stop_rx,
    )?;
    sources.threads.extend(threads);

    if config.run_once {
        let outcome = Arc::clone(&kubelet).run_once(sources.updates)?;
        drop(stop_tx);
        join_until(sources.threads, Instant::now() + SHUTDOWN_GRACE);
        return report_run_once(&outcome);
    }

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(AppError::Signals)?;
    let signal_handle = signals.handle();
    let checks = kubelet.health_checks();
    let watchdog_stop = stop_rx.clone();
    let (exited_tx, exited_rx) = crossbeam_channel::bounded::<()>(0);
    let sync_loop = start_kubelet_with_exit(kubelet, sources.updates, stop_rx, Some(exited_tx))?;
    let notifier = notify_ready();
    if let (Some(notifier), Some(every)) = (&notifier, sd_notify::watchdog_interval()) {
        sources.threads.push(start_watchdog(
            Arc::clone(notifier),
            every,
            checks,
            watchdog_stop,
        )?);
    }
    // The main thread waits for a signal; the sync loop ending by itself also ends the wait.
    let watcher = std::thread::Builder::new()
        .name("sync-loop-watch".into())
        .spawn(move || {
            // Blocks until the sync loop thread drops its end (it ended).
            let _ = exited_rx.recv();
            signal_handle.close();
            sync_loop.join()
        })
        .map_err(|source| AppError::Thread {
            name: "sync-loop-watch",
            source,
        })?;
    if let Some(sig) = signals.forever().next() {
        log::info!("received signal {sig}, shutting down (pods keep running)");
    }
    if let Some(notifier) = &notifier {
        if let Err(e) = notifier.notify("STOPPING=1") {
            log::warn!("telling systemd the kubelet stops: {e}");
        }
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    drop(stop_tx);
    join_until(sources.threads, deadline);
    while !watcher.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if watcher.is_finished() {
        match watcher.join() {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(e.into()),
            Ok(Err(_)) | Err(_) => log::error!("the sync loop thread panicked"),
        }
    } else {
        log::warn!("the sync loop did not stop in time; exiting without it");
    }
    log::info!("rkubelet stopped");
    Ok(())
}

/// Tells systemd the kubelet is ready (its sync loop runs), when started by a `Type=notify`
/// unit; the notifier is kept for the watchdog and the stop.
fn notify_ready() -> Option<Arc<sd_notify::Notifier>> {
    let notifier = match sd_notify::Notifier::from_env() {
        Ok(notifier) => notifier?,
        Err(e) => {
            log::error!("cannot notify systemd: {e}");
            return None;
        }
    };
    match notifier.notify("READY=1") {
        Ok(()) => log::info!("told systemd the kubelet is ready"),
        Err(e) => log::error!("cannot notify systemd of readiness: {e}"),
    }
    Some(Arc::new(notifier))
}

/// The `systemd-watchdog` thread: every `every`, `WATCHDOG=1` while every health check
/// passes (the sync loop, PLEG and the rest behind `/healthz`), so systemd restarts a hung
/// kubelet; it ends when `stop` fires or closes.
fn start_watchdog(
    notifier: Arc<sd_notify::Notifier>,
    every: Duration,
    checks: Vec<crate::healthz::Check>,
    stop: Receiver<()>,
) -> Result<JoinHandle<()>, AppError> {
    std::thread::Builder::new()
        .name("systemd-watchdog".into())
        .spawn(move || loop {
            crossbeam_channel::select! {
                recv(stop) -> _ => return,
                default(every) => {}
            }
            let failing: Vec<String> = checks
                .iter()
                .filter_map(|(name, check)| check().err().map(|e| format!("{name}: {e}")))
                .collect();
            if failing.is_empty() {
                if let Err(e) = notifier.notify("WATCHDOG=1") {
                    log::warn!("feeding the systemd watchdog: {e}");
                }
            } else {
                log::warn!(
                    "not feeding the systemd watchdog, health checks fail: {}",
                    failing.join("; ")
                );
            }
        })
        .map_err(|source| AppError::Thread {
            name: "systemd-watchdog",
            source,
        })
}

fn report_run_once(outcome: &RunOnceOutcome) -> Result<(), AppError> {
    for r in &outcome.results {
        println!(
            "{}\t{}\t{}",
            r.pod,
            if r.started { "started" } else { "failed" },
            r.detail
        );
    }
    let failed = outcome.results.iter().filter(|r| !r.started).count();
    if failed == 0 {
        Ok(())
    } else {
        Err(AppError::RunOnceFailed {
            failed,
            total: outcome.results.len(),
        })
    }
}
