//! Pod workers: a bounded pool of `pod-worker-N` threads that run each pod's sync, never one
//! pod on two workers at once (upstream `pod_workers.go`, with a fixed pool instead of a
//! goroutine per pod).
//!
//! A pod's life as the workers see it:
//!
//! ```text
//!   update_pod(Create/Update/Sync)        update_pod(Kill) or the sync reports
//!          │                              the pod terminal (Succeeded/Failed)
//!          ▼                                         │
//!     ┌──────────┐  sync_pod (repeat on updates,     ▼
//!     │ Syncing  │  resync and retry ticks) ──▶ ┌─────────────┐ sync_terminating_pod:
//!     └──────────┘                              │ Terminating │ stop containers with the
//!                                               └─────────────┘ grace period, stop sandbox
//!                                                      │ ok
//!                                                      ▼
//!                                               ┌─────────────┐ sync_terminated_pod: remove
//!                                               │ Terminated  │ containers and sandboxes of a
//!                                               └─────────────┘ removed pod; then finished
//!                                                      │
//!                                   housekeeping forgets it (sync_known_pods) once no
//!                                   source wants the pod any more
//! ```
//!
//! Updates that arrive while a worker holds the pod are coalesced: only the newest pod object
//! is kept, and a kill is never undone. Ready pods wait in two queues: `urgent` for creates,
//! spec updates, kills and lifecycle steps, `routine` for plain resyncs (PLEG events, the
//! periodic resync), so a burst of resyncs never delays a new pod. A pod is live in at most one
//! queue; promoting it from routine to urgent leaves a stale routine entry that is skipped
//! when popped, so the queues are bounded by twice the number of pods the kubelet tracks. Failed syncs are retried after a
//! back-off by the sync loop's tick ([`PodWorkers::pods_due`]); successful ones are resynced
//! every sync period.
//!
//! The pool is bounded, so no step waits for time to pass. A step that must wait (a grace
//! period, an image pull, a postStart hook) hands the wait to the waiters
//! ([`crate::waiters`]) and ends with [`StepEnd::Waiting`]; the pod is parked, its updates
//! coalesce, and the job's [`Resume::done`] takes it up again. A pod parked while syncing
//! (pulling, say) can still be killed: termination does not wait for the pull. A kill with
//! a shorter grace period than the one in progress starts another stop at once (a forced
//! deletion does not wait out the first grace period). A step that panics is caught,
//! logged with its pod and retried like a failed one; the worker thread lives on.
//!
//! The public face (updates, queries, starting and stopping) is here; the per-pod
//! bookkeeping and the ready queues are in `queue`, running a step and what follows it in
//! `step`.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::clock::Clock;
use crate::kuberuntime::SyncError;
use crate::types::{pod_key, uid_of, PodUid};

mod queue;
mod step;
#[cfg(test)]
mod tests;

use queue::{PodSyncStatus, Shared};

/// Why a pod is being updated (upstream `SyncPodType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateType {
    /// First time the kubelet sees the pod.
    Create,
    /// The pod spec changed.
    Update,
    /// Periodic or event-driven resync.
    Sync,
    /// Stop the pod.
    Kill,
}

/// One request to the pod workers.
#[derive(Debug, Clone)]
pub struct UpdatePodOptions {
    /// What kind of update.
    pub update_type: UpdateType,
    /// The newest pod object.
    pub pod: Arc<Pod>,
    /// For kills: a grace period overriding the pod's own.
    pub grace_period_override: Option<i64>,
    /// For kills: the pod is gone from its source, so its containers are removed once stopped.
    pub removed: bool,
}

/// Where a pod is in its life (see the module timeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodWorkerState {
    /// Running (or starting) its containers.
    Syncing,
    /// Stopping its containers.
    Terminating,
    /// Stopped; cleanup of a removed pod pending or done.
    Terminated,
}

impl PodWorkerState {
    /// Whether containers may still be started.
    pub fn can_start_containers(self) -> bool {
        self == PodWorkerState::Syncing
    }
    /// Whether the pod is on its way out or gone.
    pub fn is_terminating_or_terminated(self) -> bool {
        self != PodWorkerState::Syncing
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEnd {
    /// Done: a synced pod keeps running, a terminating one is stopped.
    Done,
    /// (Syncs only.) The pod reached a terminal phase: terminate it.
    Terminal,
    /// A job on the waiters carries the step on; it calls [`Resume::done`] when finished.
    Waiting,
}

/// What a job that took over a step's wait calls when it is done; the pod is then taken up
/// again (a stopped pod moves on to Terminated, a synced one is synced again).
#[derive(Clone)]
pub struct Resume {
    workers: Weak<PodWorkers>,
    uid: PodUid,
    state: PodWorkerState,
}

impl Resume {
    /// Whether the pod is still in the state of the step this wait carries on (a wait that
    /// outlived its step records nothing).
    pub fn is_current(&self) -> bool {
        self.workers
            .upgrade()
            .is_some_and(|w| w.is_in_state(&self.uid, self.state))
    }

    /// Reports the outcome of the wait: `Ok(true)` takes the pod up at once, `Ok(false)`
    /// when it is next due (the wait ended in a failure already recorded for the pod).
    pub fn done(self, result: Result<bool, SyncError>) {
        if let Some(workers) = self.workers.upgrade() {
            workers.resume(&self.uid, self.state, result);
        }
    }
}

/// What the workers call to do the work (implemented by the kubelet; recorded by a fake in
/// tests). No method waits for time to pass: waits go to the waiters (see the module docs).
pub trait PodSyncer: Send + Sync {
    /// Syncs a running pod: [`StepEnd::Terminal`] when it reached a terminal phase.
    fn sync_pod(
        &self,
        update_type: UpdateType,
        pod: &Arc<Pod>,
        resume: &Resume,
    ) -> Result<StepEnd, SyncError>;
    /// How soon a running pod must be synced again regardless of the resync interval (its
    /// `activeDeadlineSeconds` runs out). `None`: the interval is fine.
    fn resync_within(&self, _pod: &Pod) -> Option<Duration> {
        None
    }
    /// Stops the pod's containers and sandbox ([`StepEnd::Done`] once stopped).
    fn sync_terminating_pod(
        &self,
        pod: &Arc<Pod>,
        grace_override: Option<i64>,
        resume: &Resume,
    ) -> Result<StepEnd, SyncError>;
    /// Cleans up after a stopped pod; `removed` means no source wants it any more.
    fn sync_terminated_pod(&self, pod: &Arc<Pod>, removed: bool) -> Result<(), SyncError>;
}

/// Called whenever a pod is queued, so a pool shared by many kubelets (hollow nodes) knows
/// to come and run [`PodWorkers::run_queued`].
pub type WorkNotifier = Arc<dyn Fn() + Send + Sync>;

/// Handle to the pool; cheap to share between the sync loop and tests.
pub struct PodWorkers {
    /// Itself, for the [`Resume`] handles given to steps.
    me: Weak<PodWorkers>,
    shared: Mutex<Shared>,
    /// Wakes an idle worker when a pod is queued, and waiters when work finishes.
    wake: Condvar,
    syncer: Arc<dyn PodSyncer>,
    clock: Arc<dyn Clock>,
    resync_interval: Duration,
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// Set when the pods are run by a shared pool instead of this kubelet's own threads.
    notify: Option<WorkNotifier>,
}

impl PodWorkers {
    /// Pod workers without threads of their own: `notify` is called whenever work is
    /// queued, and whoever it wakes runs [`PodWorkers::run_queued`].
    pub fn external(
        syncer: Arc<dyn PodSyncer>,
        clock: Arc<dyn Clock>,
        resync_interval: Duration,
        notify: WorkNotifier,
    ) -> Arc<PodWorkers> {
        Arc::new_cyclic(|me| PodWorkers {
            me: me.clone(),
            shared: Mutex::new(Shared::default()),
            wake: Condvar::new(),
            syncer,
            clock,
            resync_interval,
            handles: Mutex::new(Vec::new()),
            notify: Some(notify),
        })
    }

    /// Runs up to `budget` queued pod steps on the calling thread without waiting for more;
    /// returns how many ran.
    pub fn run_queued(&self, budget: usize) -> usize {
        let mut ran = 0;
        while ran < budget {
            let Some(step) = self.next_step(false) else {
                break;
            };
            self.run_step(step);
            ran += 1;
        }
        ran
    }

    /// Whether pods wait in the queues.
    pub fn has_queued(&self) -> bool {
        let shared = self.lock();
        !shared.urgent.is_empty() || !shared.routine.is_empty()
    }

    fn signal(&self) {
        // All: `wait_idle` waits on the same condvar, and must not take a worker's wake-up.
        self.wake.notify_all();
        if let Some(notify) = &self.notify {
            notify();
        }
    }
    /// Starts `workers` threads (`pod-worker-0`...).
    pub fn start(
        workers: usize,
        syncer: Arc<dyn PodSyncer>,
        clock: Arc<dyn Clock>,
        resync_interval: Duration,
    ) -> std::io::Result<Arc<PodWorkers>> {
        let pw = Arc::new_cyclic(|me| PodWorkers {
            me: me.clone(),
            shared: Mutex::new(Shared::default()),
            wake: Condvar::new(),
            syncer,
            clock,
            resync_interval,
            handles: Mutex::new(Vec::new()),
            notify: None,
        });
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers.max(1) {
            let w = Arc::clone(&pw);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("pod-worker-{i}"))
                    .spawn(move || w.worker_loop())?,
            );
        }
        if let Ok(mut h) = pw.handles.lock() {
            *h = handles;
        }
        Ok(pw)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A worker that panicked mid-update cannot leave the map inconsistent in a way that
        // matters more than stopping all pod work, so keep going with the inner data.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues work for a pod (upstream `UpdatePod`). Never blocks on a running sync.
    pub fn update_pod(&self, options: UpdatePodOptions) {
        let uid = uid_of(&options.pod);
        let mut shared = self.lock();
        let status = shared
            .pods
            .entry(uid.clone())
            .or_insert_with(|| PodSyncStatus::new(Arc::clone(&options.pod)));
        if options.update_type == UpdateType::Create
            && (status.finished || status.state != PodWorkerState::Syncing)
        {
            status.restart_requested = true;
        }
        if status.finished && options.update_type != UpdateType::Kill {
            log::debug!(
                "pod=\"{}\" uid={uid} already terminated, ignoring update",
                pod_key(&options.pod)
            );
            return;
        }
        if options.update_type == UpdateType::Kill {
            if status.state == PodWorkerState::Syncing {
                status.state = PodWorkerState::Terminating;
            }
            status.removed |= options.removed;
            if let Some(g) = options.grace_period_override {
                status.grace_override = Some(status.grace_override.map_or(g, |old| old.min(g)));
            }
            if status.finished && status.removed {
                // A finished pod that is now removed still needs its containers removed.
                status.finished = false;
                status.state = PodWorkerState::Terminated;
            }
        }
        status.pod = options.pod;
        status.pending = Some(match (status.pending, options.update_type) {
            (Some(UpdateType::Create), UpdateType::Update | UpdateType::Sync) => UpdateType::Create,
            (_, t) => t,
        });
        if !status.blocked() {
            shared.enqueue(uid);
            drop(shared);
            self.signal();
        }
    }

    /// Whether the pod is still in `state` (a job checks before it records anything).
    pub fn is_in_state(&self, uid: &PodUid, state: PodWorkerState) -> bool {
        self.lock()
            .pods
            .get(uid)
            .is_some_and(|s| s.state == state && !s.finished)
    }

    /// Pods whose resync or retry time has come (upstream `getPodsToSync`).
    pub fn pods_due(&self) -> Vec<Arc<Pod>> {
        let now = self.clock.now();
        let mut shared = self.lock();
        let mut due = Vec::new();
        for status in shared.pods.values_mut() {
            if status.next_sync.is_some_and(|t| t <= now) && !status.finished {
                status.next_sync = None;
                due.push(Arc::clone(&status.pod));
            }
        }
        due
    }

    /// The worker state of a pod, if the workers know it.
    pub fn state(&self, uid: &PodUid) -> Option<PodWorkerState> {
        self.lock().pods.get(uid).map(|s| s.state)
    }

    /// Whether the pod's termination has fully finished.
    pub fn is_finished(&self, uid: &PodUid) -> bool {
        self.lock().pods.get(uid).is_some_and(|s| s.finished)
    }

    /// Every pod the workers know.
    pub fn known_pods(&self) -> HashSet<PodUid> {
        self.lock().pods.keys().cloned().collect()
    }

    /// Forgets finished pods no source wants any more, or added again under the same UID
    /// (upstream `SyncKnownPods`); returns them. A forgotten pod that is still wanted is
    /// then started anew by housekeeping.
    pub fn sync_known_pods(&self, desired: &HashSet<PodUid>) -> Vec<PodUid> {
        let mut shared = self.lock();
        let forget: Vec<PodUid> = shared
            .pods
            .iter()
            .filter(|(uid, s)| {
                s.finished && !s.busy() && (s.restart_requested || !desired.contains(*uid))
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in &forget {
            shared.pods.remove(uid);
        }
        forget
    }

    /// Blocks until no pod is queued or being worked on, or `timeout` passes; true if idle.
    /// For run-once mode, benchmarks and tests.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut shared = self.lock();
        loop {
            let busy = shared.pods.values().any(PodSyncStatus::busy);
            if !busy {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            shared = self
                .wake
                .wait_timeout(shared, left.min(Duration::from_millis(100)))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Stops the workers after their current step and joins them.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_all();
        let handles = match self.handles.lock() {
            Ok(mut h) => std::mem::take(&mut *h),
            Err(_) => Vec::new(),
        };
        for h in handles {
            if h.join().is_err() {
                log::error!("a pod worker thread panicked");
            }
        }
    }
}
