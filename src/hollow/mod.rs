//! `rkubelet hollow`: many hollow nodes in one process, each a real kubelet (node
//! registration and status, Lease, pod workers, status manager, PLEG, events) over its own
//! in-memory fake runtime, on threads shared by all of them so the process does not grow by
//! a thread set per node:
//!
//! - `hollow-source`: one list+watch of all pods, demultiplexed by `spec.nodeName` into
//!   each node's pod config mux (what each kubelet's own watch would have delivered);
//! - `hollow-timer`: one timer that queues each node's periodic steps (the sync loop's 1 s
//!   tick, PLEG relist every second, status sync, event writes, node status and Lease);
//!   config updates and PLEG events queue a sync loop poll at once;
//! - `hollow-worker` (`--workers` of them): a bounded pool running those steps and the
//!   nodes' pod syncs; `hollow-waiter-N` take the waits those steps hand off;
//! - one API client with a connection pool, seen by each node through its own rate limiter
//!   (`kubeAPIQPS`/`kubeAPIBurst`), so each node's API traffic stays a real kubelet's.
//!
//! Hollow nodes run no probes and serve no kubelet API.

mod demux;
mod run;

pub use run::run;

use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use structopt::StructOpt;

use crate::api::limited::RateLimitedClient;
use crate::api::services::ServiceInformer;
use crate::api::{KubeClient, RestClient};
use crate::clock::{Clock, RealClock};
use crate::config::apiserver::ApiserverSource;
use crate::config::mux::PodConfig;
use crate::config::settings::KubeletConfig;
use crate::config::update::{PodUpdate, API_SOURCE};
use crate::cri::FakeRuntime;
use crate::events::{ApiRecorder, EventQueue, Recorder};
use crate::kubelet::node_status::{node_controllers, KubeletNodeStatus, NodeStatusDeps};
use crate::kubelet::{Deps, Kubelet, LoopTicks};
use crate::nodestatus::lease::NodeLeaseController;
use crate::nodestatus::updater::NodeStatusUpdater;
use crate::status::sync::StatusSync;
use crate::util::duration::GoDuration;
use crate::waiters::Waiters;

/// Flags of `rkubelet hollow`.
#[derive(Debug, Clone, StructOpt)]
#[structopt(
    name = "rkubelet hollow",
    about = "Run many hollow nodes (real kubelets over fake runtimes) in one process"
)]
pub struct HollowArgs {
    /// How many nodes
    #[structopt(long)]
    pub nodes: usize,

    /// kubeconfig used by every node (its user must be allowed what the nodes do: nodes,
    /// leases, pods, pods/status and events of all of them)
    #[structopt(long, parse(from_os_str))]
    pub kubeconfig: PathBuf,

    /// Node names are this prefix and the node's number
    #[structopt(long, default_value = "hollow-")]
    pub name_prefix: String,

    /// Directory under which each node keeps its root dir
    #[structopt(long, parse(from_os_str), default_value = "/var/tmp/rkubelet-hollow")]
    pub root_dir: PathBuf,

    /// Threads running the nodes' steps and pod syncs
    #[structopt(long, default_value = "16")]
    pub workers: usize,

    /// How long each image pull takes on the fake runtimes
    #[structopt(long, default_value = "0s")]
    pub pull_delay: GoDuration,

    /// Per-node API rate limit (kubeAPIQPS)
    #[structopt(long, default_value = "50")]
    pub kube_api_qps: f32,

    /// Per-node API burst (kubeAPIBurst)
    #[structopt(long, default_value = "100")]
    pub kube_api_burst: u32,

    /// Stop after this long (default: run until SIGTERM or SIGINT)
    #[structopt(long)]
    pub duration: Option<GoDuration>,

    /// How often a progress line is printed
    #[structopt(long, default_value = "5s")]
    pub progress_interval: GoDuration,

    /// Log verbosity (0-5)
    #[structopt(short = "v", long = "v", default_value = "0")]
    pub v: u8,
}

/// Errors starting hollow nodes.
#[derive(Debug, thiserror::Error)]
pub enum HollowError {
    /// A node's configuration was invalid.
    #[error("node {node}: {message}")]
    Config {
        /// The node.
        node: String,
        /// What was wrong.
        message: String,
    },
    /// The API client could not be built.
    #[error("--kubeconfig: {0}")]
    Api(#[from] crate::api::ApiError),
    /// A thread could not be started.
    #[error("starting thread {name}: {source}")]
    Thread {
        /// Thread name.
        name: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A node's periodic steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Loop,
    Relist,
    Status,
    Events,
    NodeStatus,
    Lease,
}

const KINDS: [(Kind, Duration); 6] = [
    (Kind::Loop, Duration::from_secs(1)),
    (Kind::Relist, Duration::from_secs(1)),
    (Kind::Status, Duration::from_millis(500)),
    (Kind::Events, Duration::from_secs(1)),
    (Kind::NodeStatus, Duration::from_secs(1)),
    (Kind::Lease, Duration::from_secs(1)),
];

#[derive(Debug, Clone, Copy)]
enum Task {
    Step(Kind, usize),
    PodWork(usize),
}

struct Node {
    name: String,
    kubelet: Arc<Kubelet>,
    mux: Mutex<PodConfig>,
    updates_tx: Sender<PodUpdate>,
    updates_rx: Receiver<PodUpdate>,
    /// The polled sync loop's ticks; held while it runs, so polls of a node never overlap.
    ticks: Mutex<LoopTicks>,
    status_sync: Option<Mutex<StatusSync>>,
    updater: Arc<NodeStatusUpdater>,
    lease: Arc<NodeLeaseController>,
    events: Mutex<EventQueue>,
    pod_work_queued: Arc<AtomicBool>,
    /// Steps of each kind queued and not yet started (the timer queues no duplicates; a
    /// sync loop poll is also queued by config updates and PLEG events between ticks).
    queued: [AtomicBool; 6],
    /// Steps of this node running now (one of each kind at a time).
    busy: Mutex<Vec<Kind>>,
    next_node_status: Mutex<Instant>,
    next_lease: Mutex<Instant>,
    node_status_period: Duration,
}

struct Shared {
    /// Where the nodes' pod work that waits goes.
    waiters: Arc<Waiters>,
    nodes: Vec<Arc<Node>>,
    /// Per step kind (and pod work, last): steps run and nanoseconds spent.
    spent: [(AtomicU64, AtomicU64); 7],
    errors: AtomicU64,
    skipped: AtomicU64,
    stopping: AtomicBool,
}

/// Progress of the hollow nodes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Nodes.
    pub nodes: usize,
    /// Nodes registered with the API server.
    pub registered: usize,
    /// Pods whose latest status is Running.
    pub running: usize,
    /// Pods whose latest status is Succeeded or Failed.
    pub finished: usize,
    /// API requests sent so far.
    pub requests: u64,
    /// Failed node status, Lease and PLEG steps so far.
    pub errors: u64,
}

/// Running hollow nodes.
pub struct Hollow {
    shared: Arc<Shared>,
    client: Arc<RestClient>,
    stop_tx: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    /// The pod watch (may sit in a blocking read at shutdown; not joined).
    source: Option<JoinHandle<()>>,
    /// The service watch (likewise).
    service_watch: Option<JoinHandle<()>>,
    started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hollow {
    /// Builds `args.nodes` hollow kubelets and starts the shared threads.
    pub fn start(args: &HollowArgs) -> Result<Hollow, HollowError> {
        let rest = crate::api::kubeconfig::load(&args.kubeconfig)?;
        // The shared client is not limited itself: each node's view is.
        let client = Arc::new(RestClient::new(
            rest,
            0.0,
            1,
            crate::api::client::DEFAULT_TIMEOUT,
        )?);
        let (task_tx, task_rx) =
            crossbeam_channel::bounded::<Task>(args.nodes.saturating_mul(16).max(1024));
        let clock: Arc<dyn Clock> = Arc::new(RealClock);
        // Waits of every node's pods (stops within grace periods, pulls with a delay) share
        // one pool; pulls are not limited per node.
        let waiters = Waiters::new("hollow-waiter", args.workers.max(1).saturating_mul(4), None);
        // One service watch for every node (their containers' service variables).
        let services = ServiceInformer::new(Arc::clone(&client) as Arc<dyn KubeClient>);
        let mut nodes = Vec::with_capacity(args.nodes);
        for i in 0..args.nodes {
            nodes.push(Arc::new(build_node(
                args, i, &client, &clock, &task_tx, &waiters, &services,
            )?));
        }
        let shared = Arc::new(Shared {
            waiters,
            nodes,
            spent: Default::default(),
            errors: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        });
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let spawn = |name: &'static str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|source| HollowError::Thread { name, source })
        };
        let mut threads = Vec::new();
        for _ in 0..args.workers.max(1) {
            let (shared, rx, tx) = (Arc::clone(&shared), task_rx.clone(), task_tx.clone());
            threads.push(spawn(
                "hollow-worker",
                Box::new(move || worker(&shared, &rx, &tx)),
            )?);
        }
        {
            let (shared, tx, stop) = (Arc::clone(&shared), task_tx.clone(), stop_rx.clone());
            threads.push(spawn(
                "hollow-timer",
                Box::new(move || timer(&shared, &tx, &stop)),
            )?);
        }
        let source = {
            let demux = demux::Demux::new(Arc::clone(&shared), task_tx.clone());
            let api: Arc<dyn KubeClient> = Arc::clone(&client) as Arc<dyn KubeClient>;
            let stop = stop_rx.clone();
            spawn(
                "hollow-source",
                Box::new(move || ApiserverSource::all_nodes(api).run_into(&demux, stop)),
            )?
        };
        // Like the pod watch, the service watch may sit in a read at shutdown: not joined.
        let service_watch =
            services
                .start(stop_rx.clone())
                .map_err(|source| HollowError::Thread {
                    name: "service-informer",
                    source,
                })?;
        drop(task_tx);
        log::info!(
            "{} hollow nodes started ({} worker threads)",
            args.nodes,
            args.workers
        );
        Ok(Hollow {
            shared,
            client,
            stop_tx: Some(stop_tx),
            threads,
            source: Some(source),
            service_watch: Some(service_watch),
            started: Instant::now(),
        })
    }

    /// Nodes registered, pods running, API requests and errors so far.
    pub fn progress(&self) -> Progress {
        let mut p = Progress {
            nodes: self.shared.nodes.len(),
            requests: self.client.stats().total(),
            errors: self.shared.errors.load(Ordering::Relaxed),
            ..Progress::default()
        };
        for node in &self.shared.nodes {
            if node.updater.is_registered() {
                p.registered += 1;
            }
            for (_, entry) in node.kubelet.pod_statuses() {
                match entry.status.phase.as_deref() {
                    Some("Running") => p.running += 1,
                    Some("Succeeded" | "Failed") => p.finished += 1,
                    _ => {}
                }
            }
        }
        p
    }

    /// The shared API client's request counters.
    pub fn request_stats(&self) -> crate::api::RequestStats {
        self.client.stats()
    }

    /// Steps run so far and the time they took, per kind (`loop`, `relist`, `status`,
    /// `events`, `node-status`, `lease`, `pod-work`).
    pub fn step_stats(&self) -> Vec<(&'static str, u64, Duration)> {
        const NAMES: [&str; 7] = [
            "loop",
            "relist",
            "status",
            "events",
            "node-status",
            "lease",
            "pod-work",
        ];
        NAMES
            .iter()
            .zip(&self.shared.spent)
            .map(|(name, (count, nanos))| {
                (
                    *name,
                    count.load(Ordering::Relaxed),
                    Duration::from_nanos(nanos.load(Ordering::Relaxed)),
                )
            })
            .collect()
    }

    /// Periodic steps skipped because the worker queue was full.
    pub fn skipped_steps(&self) -> u64 {
        self.shared.skipped.load(Ordering::Relaxed)
    }

    /// Stops the shared threads and returns the final progress.
    pub fn stop(mut self) -> Progress {
        let last = self.progress();
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.stop_tx.take();
        // Pod work in progress ends after its current step.
        for node in &self.shared.nodes {
            node.kubelet.pod_workers().stop();
        }
        self.shared.waiters.stop(Duration::from_secs(2));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // The pod watch ends with its next event or timeout; it is not waited for.
        drop(self.source.take());
        drop(self.service_watch.take());
        log::info!("hollow nodes stopped after {:?}", self.started.elapsed());
        last
    }
}

fn build_node(
    args: &HollowArgs,
    index: usize,
    client: &Arc<RestClient>,
    clock: &Arc<dyn Clock>,
    tasks: &Sender<Task>,
    waiters: &Arc<Waiters>,
    services: &Arc<ServiceInformer>,
) -> Result<Node, HollowError> {
    let name = format!("{}{index}", args.name_prefix);
    let root = args.root_dir.join(&name);
    // Node i gives its pods 10.64.0.0/10 + i*256 (a /24) and has node IP 10.0.0.0 + i + 1.
    let base = 0x0a40_0000u32.wrapping_add((index as u32) << 8);
    let pod_network = format!("{}/24", std::net::Ipv4Addr::from(base));
    let node_ip = std::net::Ipv4Addr::from(0x0a00_0000u32 | ((index as u32 + 1) & 0x003f_ffff));
    let flags = [
        "rkubelet".to_string(),
        format!("--kubeconfig={}", args.kubeconfig.display()),
        format!("--hostname-override={name}"),
        format!("--node-ip={node_ip}"),
        format!("--root-dir={}", root.display()),
        format!("--pod-logs-dir={}", root.join("logs/pods").display()),
        "--resolv-conf=".into(),
        "--cgroups-per-qos=false".into(),
    ];
    let config_err = |message: String| HollowError::Config {
        node: name.clone(),
        message,
    };
    let config = Arc::new(
        KubeletConfig::from_args(flags.iter().map(Into::into))
            .map_err(|e| config_err(e.to_string()))?,
    );
    std::fs::create_dir_all(&config.root_dir)
        .map_err(|e| config_err(format!("{}: {e}", config.root_dir.display())))?;
    let runtime = Arc::new(FakeRuntime::without_call_log());
    runtime.allow_any_image();
    runtime.set_pod_network(&pod_network).map_err(config_err)?;
    runtime.set_pull_delay(args.pull_delay.to_std().unwrap_or_default());
    let api: Arc<dyn KubeClient> = Arc::new(RateLimitedClient::new(
        Arc::clone(client) as Arc<dyn KubeClient>,
        args.kube_api_qps,
        args.kube_api_burst,
    ));
    let (recorder, events) = ApiRecorder::detached(Arc::clone(&api), Arc::clone(clock), &name);
    let recorder: Arc<dyn Recorder> = recorder;
    let (mut mux, _unused) = PodConfig::new(1);
    let _ = mux.channel(API_SOURCE);
    let pod_work_queued = Arc::new(AtomicBool::new(false));
    let notify = {
        let (queued, tasks) = (Arc::clone(&pod_work_queued), tasks.clone());
        Arc::new(move || {
            if !queued.swap(true, Ordering::SeqCst) && tasks.try_send(Task::PodWork(index)).is_err()
            {
                // The queue is full: the next sync loop poll runs the pods instead.
                queued.store(false, Ordering::SeqCst);
            }
        }) as crate::pod_workers::WorkNotifier
    };
    let deps = Deps {
        runtime: Arc::clone(&runtime) as Arc<dyn crate::cri::RuntimeService>,
        images: Arc::clone(&runtime) as Arc<dyn crate::cri::ImageService>,
        clock: Arc::clone(clock),
        recorder: Arc::clone(&recorder),
        runtime_name: "rkubelet-fake".into(),
        sources_ready: mux.sources_ready(),
        api: Some(Arc::clone(&api)),
        tmpfs: false,
        host_cgroups: false,
        shared_pod_work: Some(notify),
        waiters: Some(Arc::clone(waiters)),
        services: Some(Arc::clone(services)),
    };
    let kubelet =
        Arc::new(Kubelet::new(Arc::clone(&config), deps).map_err(|e| config_err(e.to_string()))?);
    let source = Arc::new(KubeletNodeStatus::new(
        &config,
        NodeStatusDeps {
            runtime: Arc::clone(&runtime) as Arc<dyn crate::cri::RuntimeService>,
            images: runtime as Arc<dyn crate::cri::ImageService>,
            pleg: Arc::clone(kubelet.pleg()),
            recorder,
            runtime_name: "rkubelet-fake".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            node: Arc::clone(kubelet.node_record()),
            pressure: Arc::clone(kubelet.node_pressure()),
            // Hollow nodes mount no attachable volumes.
            runtime_manager: None,
        },
    ));
    // Hollow nodes run no eviction manager: their pressure never changes.
    let (updater, lease) =
        node_controllers(&config, Arc::clone(&api), Arc::clone(clock), source, None);
    let node_status_period = config
        .raw
        .node_status_update_frequency
        .and_then(|d| d.to_std())
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(10));
    let (updates_tx, updates_rx) = crossbeam_channel::unbounded();
    let status_sync = kubelet.status_sync().map(Mutex::new);
    crate::kubelet::Bootstrap::birth_cry(&*kubelet);
    Ok(Node {
        name,
        kubelet,
        mux: Mutex::new(mux),
        updates_tx,
        updates_rx,
        ticks: Mutex::new(LoopTicks::default()),
        status_sync,
        updater,
        lease,
        events: Mutex::new(events),
        pod_work_queued,
        queued: Default::default(),
        busy: Mutex::new(Vec::new()),
        next_node_status: Mutex::new(Instant::now()),
        next_lease: Mutex::new(Instant::now()),
        node_status_period,
    })
}

/// The shared timer: queues each node's due steps, spread over their periods.
fn timer(shared: &Shared, tasks: &Sender<Task>, stop: &Receiver<()>) {
    let n = shared.nodes.len().max(1);
    let start = Instant::now();
    let mut heap: BinaryHeap<std::cmp::Reverse<(Instant, Kind, usize)>> = BinaryHeap::new();
    for i in 0..shared.nodes.len() {
        for (kind, period) in KINDS {
            let offset = period.mul_f64(i as f64 / n as f64);
            heap.push(std::cmp::Reverse((start + offset, kind, i)));
        }
    }
    let period_of = |kind: Kind| {
        KINDS
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(Duration::from_secs(1), |(_, p)| *p)
    };
    loop {
        let now = Instant::now();
        while let Some(std::cmp::Reverse((due, kind, i))) = heap.peek().copied() {
            if due > now {
                break;
            }
            heap.pop();
            let node = &shared.nodes[i];
            let queued = &node.queued[kind as usize];
            if has_work(node, kind, now)
                && !queued.swap(true, Ordering::SeqCst)
                && tasks.try_send(Task::Step(kind, i)).is_err()
            {
                queued.store(false, Ordering::SeqCst);
                shared.skipped.fetch_add(1, Ordering::Relaxed);
            }
            // The next one a period after this one was due, or now if far behind.
            let next = (due + period_of(kind)).max(now);
            heap.push(std::cmp::Reverse((next, kind, i)));
        }
        let wait = heap
            .peek()
            .map_or(Duration::from_millis(100), |r| {
                r.0 .0.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(100));
        match stop.recv_timeout(wait) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

/// Whether a due step of `kind` has anything to do, checked on the timer thread so that an
/// idle node wakes no pool thread: status sync only with statuses pending, events only
/// when queued, node status and Lease only when their own period is up (the sync loop and
/// PLEG run on every tick). A lock held by a running step counts as work: the step is
/// queued and finds itself busy.
fn has_work(node: &Node, kind: Kind, now: Instant) -> bool {
    fn not_before(at: &Mutex<Instant>, now: Instant) -> bool {
        at.try_lock().map_or(true, |at| now >= *at)
    }
    match kind {
        Kind::Loop | Kind::Relist => true,
        Kind::Status => node.status_sync.is_some() && node.kubelet.status_manager().has_pending(),
        Kind::Events => node.events.try_lock().map_or(true, |q| !q.is_empty()),
        Kind::NodeStatus => not_before(&node.next_node_status, now),
        Kind::Lease => node.updater.is_registered() && not_before(&node.next_lease, now),
    }
}

fn worker(shared: &Shared, tasks: &Receiver<Task>, resend: &Sender<Task>) {
    // The nodes' pod workers hold senders too, so the channel never closes: poll the flag.
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let task = match tasks.recv_timeout(Duration::from_millis(200)) {
            Ok(task) => task,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        let started = Instant::now();
        let slot = match task {
            Task::PodWork(i) => {
                pod_work(&shared.nodes[i], i, resend);
                6
            }
            Task::Step(kind, i) => {
                step(shared, &shared.nodes[i], i, kind, resend);
                kind as usize
            }
        };
        let (count, nanos) = &shared.spent[slot];
        count.fetch_add(1, Ordering::Relaxed);
        let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        nanos.fetch_add(took, Ordering::Relaxed);
    }
}

/// Queues a sync loop poll for a node now (between its 1 s ticks).
fn wake_loop(node: &Node, index: usize, tasks: &Sender<Task>) {
    let queued = &node.queued[Kind::Loop as usize];
    if !queued.swap(true, Ordering::SeqCst)
        && tasks.try_send(Task::Step(Kind::Loop, index)).is_err()
    {
        queued.store(false, Ordering::SeqCst);
    }
}

/// Pod steps a pool thread runs for one node before it lets other nodes in.
const POD_WORK_BUDGET: usize = 16;

fn pod_work(node: &Node, index: usize, resend: &Sender<Task>) {
    node.pod_work_queued.store(false, Ordering::SeqCst);
    let workers = node.kubelet.pod_workers();
    workers.run_queued(POD_WORK_BUDGET);
    if workers.has_queued()
        && !node.pod_work_queued.swap(true, Ordering::SeqCst)
        && resend.try_send(Task::PodWork(index)).is_err()
    {
        node.pod_work_queued.store(false, Ordering::SeqCst);
    }
}

fn step(shared: &Shared, node: &Node, index: usize, kind: Kind, resend: &Sender<Task>) {
    node.queued[kind as usize].store(false, Ordering::SeqCst);
    {
        let mut busy = lock(&node.busy);
        if busy.contains(&kind) {
            return;
        }
        busy.push(kind);
    }
    let failed = match kind {
        Kind::Loop => {
            if let Ok(mut ticks) = node.ticks.try_lock() {
                node.kubelet.sync_loop_poll(&node.updates_rx, &mut ticks);
            }
            // A wake-up that came while this poll ran (and found it busy) is not lost.
            if !node.updates_rx.is_empty() || node.kubelet.sync_loop_has_events() {
                lock(&node.busy).retain(|k| *k != Kind::Loop);
                wake_loop(node, index, resend);
                return;
            }
            // Pods a full queue kept from their notification are picked up here.
            if node.kubelet.pod_workers().has_queued()
                && !node.pod_work_queued.load(Ordering::SeqCst)
            {
                pod_work(node, index, resend);
            }
            false
        }
        Kind::Relist => {
            let failed = node.kubelet.pleg().relist().is_err();
            if node.kubelet.sync_loop_has_events() {
                wake_loop(node, index, resend);
            }
            failed
        }
        Kind::Status => {
            if let Some(sync) = &node.status_sync {
                lock(sync).sync_batch();
            }
            false
        }
        Kind::Events => {
            lock(&node.events).drain(100);
            false
        }
        Kind::NodeStatus => {
            let now = Instant::now();
            if now < *lock(&node.next_node_status) {
                false
            } else {
                let result = node.updater.sync_node_status();
                let wait = match (&result, node.updater.is_registered()) {
                    (Ok(_), _) | (Err(_), true) => node.node_status_period,
                    (Err(_), false) => Duration::from_secs(1),
                };
                *lock(&node.next_node_status) = now + wait;
                if let Err(e) = &result {
                    log::warn!("node {}: status: {e}", node.name);
                }
                result.is_err()
            }
        }
        Kind::Lease => {
            let now = Instant::now();
            // The Lease is owned by the Node: it waits for the registration.
            if now < *lock(&node.next_lease) || !node.updater.is_registered() {
                false
            } else {
                let result = node.lease.sync();
                let wait = if result.is_ok() {
                    node.lease.renew_interval()
                } else {
                    Duration::from_secs(1)
                };
                *lock(&node.next_lease) = now + wait;
                if let Err(e) = &result {
                    log::warn!("node {}: lease: {e}", node.name);
                }
                result.is_err()
            }
        }
    };
    if failed {
        shared.errors.fetch_add(1, Ordering::Relaxed);
    }
    lock(&node.busy).retain(|k| *k != kind);
}
