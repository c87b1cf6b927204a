//! The sync loop (upstream `syncLoop` / `syncLoopIteration`), on the `sync-loop` thread: one
//! `select!` over config updates, PLEG events, the sync tick and the housekeeping tick; each
//! arm calls one handler. Handlers only queue work for the pod workers, so an iteration never
//! waits on the runtime.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, tick, Receiver};

use crate::config::update::{PodOperation, PodUpdate};
use crate::pleg::PodLifecycleEvent;

use super::{Bootstrap, Kubelet, KubeletError, RunOnceOutcome, SyncHandler};
use crate::config::settings::KubeletConfig;
use crate::events::EventType;

/// How often pods due for a resync or retry are dispatched (upstream 1 s).
pub const SYNC_TICK: Duration = Duration::from_secs(1);
/// How often housekeeping runs (upstream 2 s).
pub const HOUSEKEEPING_TICK: Duration = Duration::from_secs(2);

/// How early a polled sync loop may take a tick.
const TICK_SLACK: Duration = Duration::from_millis(100);

/// When a polled sync loop ([`Kubelet::sync_loop_poll`]) next syncs due pods and does
/// housekeeping.
#[derive(Debug, Clone, Copy)]
pub struct LoopTicks {
    /// Next sync tick.
    pub next_sync: std::time::Instant,
    /// Next housekeeping tick.
    pub next_housekeeping: std::time::Instant,
}

impl Default for LoopTicks {
    fn default() -> Self {
        let now = std::time::Instant::now();
        LoopTicks {
            next_sync: now + SYNC_TICK,
            next_housekeeping: now + HOUSEKEEPING_TICK,
        }
    }
}

/// What one iteration saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Iteration {
    /// Keep looping.
    Continue,
    /// The config channel closed or stop fired.
    Stop,
}

impl Kubelet {
    /// One iteration of the sync loop.
    pub fn sync_loop_iteration(
        &self,
        updates: &Receiver<PodUpdate>,
        sync_tick: &Receiver<std::time::Instant>,
        housekeeping_tick: &Receiver<std::time::Instant>,
        stop: &Receiver<()>,
    ) -> Iteration {
        if let Ok(mut entered) = self.sync_loop_entered.lock() {
            *entered = Some(self.clock.now());
        }
        select! {
            recv(updates) -> update => match update {
                Ok(u) => self.handle_config_update(u),
                Err(_) => {
                    log::info!("pod config channel closed, sync loop exiting");
                    return Iteration::Stop;
                }
            },
            recv(self.pleg_events) -> event => {
                if let Ok(e) = event {
                    self.handle_pleg_event(e);
                }
            },
            recv(self.probe_updates) -> update => {
                if let Ok(u) = update {
                    self.handle_probe_update(u);
                }
            },
            recv(sync_tick) -> _ => self.handle_pod_syncs(self.pod_workers.pods_due()),
            recv(housekeeping_tick) -> _ => self.handle_pod_cleanups(),
            recv(stop) -> _ => return Iteration::Stop,
        }
        Iteration::Continue
    }

    /// The sync loop without a thread of its own (hollow nodes): handles whatever config
    /// updates, PLEG events and probe updates are waiting, and the sync and housekeeping
    /// ticks that are due, then returns. Calls for one kubelet must not overlap.
    pub fn sync_loop_poll(&self, updates: &Receiver<PodUpdate>, ticks: &mut LoopTicks) {
        if let Ok(mut entered) = self.sync_loop_entered.lock() {
            *entered = Some(self.clock.now());
        }
        while let Ok(u) = updates.try_recv() {
            self.handle_config_update(u);
        }
        while let Ok(e) = self.pleg_events.try_recv() {
            self.handle_pleg_event(e);
        }
        while let Ok(u) = self.probe_updates.try_recv() {
            self.handle_probe_update(u);
        }
        // A poll a little early still takes its tick, so ticks keep their period.
        let now = std::time::Instant::now() + TICK_SLACK;
        if now >= ticks.next_sync {
            ticks.next_sync = (ticks.next_sync + SYNC_TICK).max(now - TICK_SLACK);
            self.handle_pod_syncs(self.pod_workers.pods_due());
        }
        if now >= ticks.next_housekeeping {
            ticks.next_housekeeping =
                (ticks.next_housekeeping + HOUSEKEEPING_TICK).max(now - TICK_SLACK);
            self.handle_pod_cleanups();
        }
    }

    /// Whether PLEG events or probe updates wait for a polled sync loop.
    pub fn sync_loop_has_events(&self) -> bool {
        !self.pleg_events.is_empty() || !self.probe_updates.is_empty()
    }

    fn handle_config_update(&self, u: PodUpdate) {
        log::debug!(
            "config update from {}: {:?} of {} pods",
            u.source,
            u.op,
            u.pods.len()
        );
        match u.op {
            PodOperation::Add => self.handle_pod_additions(u.pods),
            PodOperation::Update | PodOperation::Delete => self.handle_pod_updates(u.pods),
            PodOperation::Remove => self.handle_pod_removes(u.pods),
            PodOperation::Reconcile => self.handle_pod_reconcile(u.pods),
            // The mux turns full sets into the incremental operations above.
            PodOperation::Set => {
                log::warn!("unexpected SET update from {} in the sync loop", u.source)
            }
        }
    }

    /// A container of a pod changed: sync that pod if a source still wants it; pods no source
    /// wants are left to housekeeping.
    fn handle_pleg_event(&self, e: PodLifecycleEvent) {
        log::debug!("PLEG event {e:?}");
        let pod = self.pods().get(&e.id).cloned();
        if let Some(pod) = pod {
            self.handle_pod_syncs(vec![pod]);
        }
    }

    /// A probe result changed: sync the pod (readiness into its status, a failed liveness
    /// or startup probe into a restart).
    fn handle_probe_update(&self, u: crate::prober::ProbeUpdate) {
        log::debug!("probe update {u:?}");
        let pod = self.pods().get(&u.uid).cloned();
        if let Some(pod) = pod {
            self.handle_pod_syncs(vec![pod]);
        }
    }

    fn sync_loop(&self, updates: Receiver<PodUpdate>, stop: Receiver<()>) {
        let sync_tick = tick(SYNC_TICK);
        let housekeeping_tick = tick(HOUSEKEEPING_TICK);
        log::info!("starting the sync loop");
        while self.sync_loop_iteration(&updates, &sync_tick, &housekeeping_tick, &stop)
            == Iteration::Continue
        {}
        log::info!("sync loop stopped");
    }
}

/// How long shutdown waits for jobs on the waiters (a container stop in its grace period
/// goes on in the runtime without the kubelet).
const WAITERS_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl Kubelet {
    /// The containers (pod UID, container name) the runtime runs now; empty (and logged)
    /// when it cannot be asked.
    fn running_containers(&self) -> std::collections::HashSet<(String, String)> {
        use crate::cri::api;
        let mut filter = api::ContainerFilter::new();
        filter
            .mut_state()
            .set_state(api::ContainerState::CONTAINER_RUNNING);
        match self
            .runtime_manager
            .runtime()
            .list_containers(Some(&filter))
        {
            Ok(list) => list
                .iter()
                .filter_map(|c| {
                    let labels = c.get_labels();
                    Some((
                        labels.get("io.kubernetes.pod.uid")?.clone(),
                        labels.get("io.kubernetes.container.name")?.clone(),
                    ))
                })
                .collect(),
            Err(e) => {
                log::warn!("listing running containers for the device manager: {e}");
                Default::default()
            }
        }
    }
}

impl Bootstrap for Kubelet {
    fn get_configuration(&self) -> Arc<KubeletConfig> {
        Arc::clone(&self.config)
    }

    fn start_garbage_collection(
        self: &Arc<Self>,
        stop: &Receiver<()>,
    ) -> Result<Vec<std::thread::JoinHandle<()>>, KubeletError> {
        self.start_gc_threads(stop)
    }

    fn listen_and_serve(
        self: &Arc<Self>,
        stop: &Receiver<()>,
        serving: Option<Arc<crate::server::tls::ServingCert>>,
    ) -> Result<Vec<std::thread::JoinHandle<()>>, KubeletError> {
        let mut settings = crate::server::ServerSettings::from_config(&self.config)?;
        settings.tls.serving = serving;
        if !settings.enabled {
            log::info!("enableServer is false: the kubelet API is off");
            return Ok(Vec::new());
        }
        let server = crate::server::listen_and_serve(
            &settings,
            self.server_host(),
            self.api.clone(),
            stop.clone(),
        )?;
        Ok(vec![server.thread])
    }

    fn listen_and_serve_read_only(
        self: &Arc<Self>,
        stop: &Receiver<()>,
    ) -> Result<Vec<std::thread::JoinHandle<()>>, KubeletError> {
        let settings = crate::server::ServerSettings::from_config(&self.config)?;
        let (true, Some(addr)) = (settings.enabled, settings.read_only_addr) else {
            return Ok(Vec::new());
        };
        let server =
            crate::server::listen_and_serve_read_only(addr, self.server_host(), stop.clone())?;
        Ok(vec![server.thread])
    }

    fn listen_and_serve_pod_resources(
        self: &Arc<Self>,
        stop: &Receiver<()>,
    ) -> Result<Vec<std::thread::JoinHandle<()>>, KubeletError> {
        let settings = crate::server::ServerSettings::from_config(&self.config)?;
        let server = crate::server::podresources::listen_and_serve(
            &settings.pod_resources_socket,
            self.server_host(),
        )?;
        let stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("pod-resources".into())
            .spawn(move || {
                // Wait for stop (a message or the channel closing), then shut down.
                let _ = stop.recv();
                server.stop();
            })
            .map_err(|source| KubeletError::Thread {
                name: "pod-resources",
                source,
            })?;
        Ok(vec![handle])
    }

    fn birth_cry(&self) {
        log::info!(
            "Starting kubelet. node={} version={}",
            self.config.node_name,
            env!("CARGO_PKG_VERSION")
        );
        if self.api.is_some() {
            self.recorder.node_event(
                &self.config.node_name,
                EventType::Normal,
                "Starting",
                "Starting kubelet.".into(),
            );
        }
    }

    fn run(
        self: Arc<Self>,
        updates: Receiver<PodUpdate>,
        stop: Receiver<()>,
    ) -> Result<(), KubeletError> {
        let pleg = Arc::clone(&self.pleg);
        let pleg_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("pleg".into())
            .spawn(move || pleg.run(pleg_stop))
            .map_err(|source| KubeletError::Thread {
                name: "pleg",
                source,
            })?;
        if let Ok(mut t) = self.threads.lock() {
            t.push(handle);
        }
        self.start_status_sync(stop.clone())?;
        self.start_plugin_watcher(stop.clone())?;
        if let Some(devices) = self.runtime_manager.devices() {
            devices.set_running_containers(self.running_containers());
            devices.start()?;
        }
        self.sync_loop(updates, stop);
        if let Some(devices) = self.runtime_manager.devices() {
            devices.stop();
        }
        self.pod_workers.stop();
        self.waiters.stop(WAITERS_SHUTDOWN_GRACE);
        self.probes.shutdown();
        let handles = self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for h in handles {
            if h.join().is_err() {
                log::error!("a kubelet thread panicked");
            }
        }
        Ok(())
    }

    fn run_once(
        self: Arc<Self>,
        updates: Receiver<PodUpdate>,
    ) -> Result<RunOnceOutcome, KubeletError> {
        super::run_once::run_once(&self, &updates)
    }
}
