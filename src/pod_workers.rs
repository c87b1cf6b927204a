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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::clock::Clock;
use crate::kuberuntime::SyncError;
use crate::types::{pod_key, uid_of, PodUid};

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

/// Which ready queue a pod waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Priority {
    Urgent,
    Routine,
}

#[derive(Debug)]
struct PodSyncStatus {
    state: PodWorkerState,
    /// The newest pod object.
    pod: Arc<Pod>,
    /// Update type of the newest pending request (`None` when nothing is pending).
    pending: Option<UpdateType>,
    /// A worker holds this pod now.
    working: bool,
    /// Which ready queue holds the pod's live entry, if any.
    queued: Option<Priority>,
    grace_override: Option<i64>,
    removed: bool,
    /// Terminated work done: nothing more will run for this pod.
    finished: bool,
    /// When the sync tick should sync it again (resync or retry after an error).
    next_sync: Option<Instant>,
    /// Consecutive failures, for the retry back-off.
    failures: u32,
    /// Jobs on the waiters carrying on a sync step (pulls, hooks, container stops). Signed:
    /// a job may finish (and count down) before its step has ended (and counted up).
    waiting_sync: i32,
    /// Jobs on the waiters stopping the pod (signed, as `waiting_sync`).
    waiting_kill: i32,
    /// The shortest grace period a stop of this pod started with. A kill asking for less
    /// (a forced deletion) starts another stop beside the one waiting.
    stopping_grace: Option<i64>,
    /// A wait just finished: the next sync is urgent (a pulled image, a finished hook).
    resumed: bool,
}

impl PodSyncStatus {
    /// A pod new to the workers: syncing, nothing pending yet.
    fn new(pod: Arc<Pod>) -> Self {
        PodSyncStatus {
            state: PodWorkerState::Syncing,
            pod,
            pending: None,
            working: false,
            queued: None,
            grace_override: None,
            removed: false,
            finished: false,
            next_sync: None,
            failures: 0,
            waiting_sync: 0,
            waiting_kill: 0,
            stopping_grace: None,
            resumed: false,
        }
    }

    /// Whether the pod's next step must wait: a worker holds it, or a job carries on the
    /// step of the state it is in.
    fn blocked(&self) -> bool {
        self.working
            || match self.state {
                PodWorkerState::Syncing => self.waiting_sync > 0,
                PodWorkerState::Terminating => self.waiting_kill > 0 && !self.shorter_grace(),
                PodWorkerState::Terminated => false,
            }
    }

    /// Whether a kill asks for a shorter grace period than the stops in progress use.
    fn shorter_grace(&self) -> bool {
        match (self.grace_override, self.stopping_grace) {
            (Some(asked), Some(stopping)) => asked < stopping,
            _ => false,
        }
    }

    /// The grace period a stop starting now uses: the kill's, else the pod's own.
    fn effective_grace(&self) -> i64 {
        self.grace_override
            .unwrap_or_else(|| crate::types::termination_grace_period(&self.pod))
    }

    /// Whether anything of the pod is in progress or queued.
    fn busy(&self) -> bool {
        self.working || self.queued.is_some() || self.waiting_sync != 0 || self.waiting_kill != 0
    }
}

/// One pod's step, taken from the queue.
struct Step {
    uid: PodUid,
    pod: Arc<Pod>,
    state: PodWorkerState,
    update_type: UpdateType,
    grace: Option<i64>,
    removed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    pods: HashMap<PodUid, PodSyncStatus>,
    urgent: VecDeque<PodUid>,
    routine: VecDeque<PodUid>,
    stopping: bool,
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
    backoff_base: Duration,
    backoff_max: Duration,
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
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
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
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
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
            Self::enqueue(&mut shared, uid);
            drop(shared);
            self.signal();
        }
    }

    /// Puts a pod with pending work in the queue its work calls for (see the module docs).
    fn enqueue(shared: &mut Shared, uid: PodUid) {
        let Some(status) = shared.pods.get_mut(&uid) else {
            return;
        };
        let priority = if status.pending == Some(UpdateType::Sync)
            && status.state == PodWorkerState::Syncing
            && !status.resumed
        {
            Priority::Routine
        } else {
            Priority::Urgent
        };
        match (status.queued, priority) {
            (Some(Priority::Urgent), _) | (Some(Priority::Routine), Priority::Routine) => {}
            (_, Priority::Urgent) => {
                status.queued = Some(Priority::Urgent);
                shared.urgent.push_back(uid);
            }
            (None, Priority::Routine) => {
                status.queued = Some(Priority::Routine);
                shared.routine.push_back(uid);
            }
        }
    }

    /// The next pod to work on: urgent first; stale routine entries are skipped.
    fn dequeue(shared: &mut Shared) -> Option<PodUid> {
        loop {
            let (uid, from) = if let Some(uid) = shared.urgent.pop_front() {
                (uid, Priority::Urgent)
            } else {
                (shared.routine.pop_front()?, Priority::Routine)
            };
            if let Some(status) = shared.pods.get_mut(&uid) {
                if status.queued == Some(from) {
                    status.queued = None;
                    return Some(uid);
                }
            }
        }
    }

    fn worker_loop(&self) {
        while let Some(step) = self.next_step(true) {
            self.run_step(step);
        }
    }

    /// The next pod step, marked as being worked on; with `wait`, blocks until there is one
    /// (or the workers stop).
    fn next_step(&self, wait: bool) -> Option<Step> {
        let mut shared = self.lock();
        loop {
            let uid = loop {
                if shared.stopping {
                    return None;
                }
                if let Some(uid) = Self::dequeue(&mut shared) {
                    break uid;
                }
                if !wait {
                    return None;
                }
                shared = self.wake.wait(shared).unwrap_or_else(|p| p.into_inner());
            };
            let Some(status) = shared.pods.get_mut(&uid) else {
                continue;
            };
            status.working = true;
            status.resumed = false;
            if status.state == PodWorkerState::Terminating {
                let grace = status.effective_grace();
                status.stopping_grace = Some(status.stopping_grace.map_or(grace, |g| g.min(grace)));
            }
            let update_type = status.pending.take().unwrap_or(UpdateType::Sync);
            return Some(Step {
                uid,
                pod: Arc::clone(&status.pod),
                state: status.state,
                update_type,
                grace: status.grace_override,
                removed: status.removed,
            });
        }
    }

    fn run_step(&self, step: Step) {
        let Step {
            uid,
            pod,
            state,
            update_type,
            grace,
            removed,
        } = step;
        let started = std::time::Instant::now();
        let resume = Resume {
            workers: self.me.clone(),
            uid: uid.clone(),
            state,
        };
        let syncer = &self.syncer;
        let step = || match state {
            PodWorkerState::Syncing => syncer.sync_pod(update_type, &pod, &resume),
            PodWorkerState::Terminating => syncer.sync_terminating_pod(&pod, grace, &resume),
            PodWorkerState::Terminated => syncer
                .sync_terminated_pod(&pod, removed)
                .map(|()| StepEnd::Done),
        };
        // A panic in one pod's step must not take the worker (and the pod's later steps)
        // with it: it counts as a failed step and is retried with back-off.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)).unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(SyncError::Panic {
                    pod: pod_key(&pod),
                    message,
                })
            });
        // Upstream's operation_type: the update type of the sync, `kill` for termination.
        let operation = match (state, update_type) {
            (PodWorkerState::Syncing, UpdateType::Create) => "create",
            (PodWorkerState::Syncing, UpdateType::Update) => "update",
            (PodWorkerState::Syncing, _) => "sync",
            _ => "kill",
        };
        crate::util::metrics::kubelet()
            .pod_worker_duration
            .observe(&[operation], started.elapsed());
        self.complete(&uid, state, result);
    }

    /// Records the outcome of one step and queues the pod again if more work is waiting.
    fn complete(&self, uid: &PodUid, ran: PodWorkerState, result: Result<StepEnd, SyncError>) {
        let now = self.clock.now();
        let pod = self.lock().pods.get(uid).map(|s| Arc::clone(&s.pod));
        let resync = pod
            .filter(|_| ran == PodWorkerState::Syncing)
            .and_then(|p| self.syncer.resync_within(&p))
            .map_or(self.resync_interval, |d| d.min(self.resync_interval));
        let mut shared = self.lock();
        let Some(status) = shared.pods.get_mut(uid) else {
            return;
        };
        status.working = false;
        match result {
            Ok(StepEnd::Waiting) => match ran {
                PodWorkerState::Syncing => status.waiting_sync += 1,
                _ => status.waiting_kill += 1,
            },
            Ok(end) => {
                status.failures = 0;
                status.next_sync = Some(now + resync);
                let next = match (ran, end) {
                    (PodWorkerState::Syncing, StepEnd::Terminal) => {
                        Some(PodWorkerState::Terminating)
                    }
                    (PodWorkerState::Terminating, _) => Some(PodWorkerState::Terminated),
                    _ => None,
                };
                Self::advance(status, ran, next);
            }
            Err(e) => self.failed(status, uid, ran, &e, now),
        }
        self.requeue(shared, uid);
    }

    /// Moves a pod on after a step of state `ran` succeeded (`next`: the state it leads to).
    fn advance(status: &mut PodSyncStatus, ran: PodWorkerState, next: Option<PodWorkerState>) {
        match next {
            // Only advance if nothing moved the pod further meanwhile.
            Some(next) if status.state == ran => {
                status.state = next;
                status.pending.get_or_insert(UpdateType::Sync);
            }
            Some(_) => {}
            None if ran == PodWorkerState::Terminated && status.state == ran => {
                status.finished = true;
                status.next_sync = None;
                status.pending = None;
            }
            None => {}
        }
    }

    /// Logs a failed step and schedules its retry after a back-off.
    fn failed(
        &self,
        status: &mut PodSyncStatus,
        uid: &PodUid,
        ran: PodWorkerState,
        e: &SyncError,
        now: Instant,
    ) {
        let level = if e.is_retriable() {
            log::Level::Warn
        } else {
            log::Level::Error
        };
        log::log!(
            level,
            "pod=\"{}\" uid={uid} sync failed ({ran:?}): {e}",
            pod_key(&status.pod)
        );
        status.failures = status.failures.saturating_add(1);
        let exp = status.failures.min(16) - 1;
        let delay = (self.backoff_base * 2u32.pow(exp)).min(self.backoff_max);
        status.next_sync = Some(now + delay);
    }

    /// Queues the pod if work is pending and nothing blocks it, and wakes the workers.
    fn requeue(&self, mut shared: MutexGuard<'_, Shared>, uid: &PodUid) {
        let queued = shared
            .pods
            .get(uid)
            .is_some_and(|s| s.pending.is_some() && !s.blocked());
        if queued {
            Self::enqueue(&mut shared, uid.clone());
        }
        drop(shared);
        if queued {
            self.signal();
        }
        self.wake.notify_all();
    }

    /// A job that carried on a step of state `ran` finished (see [`Resume`]).
    fn resume(&self, uid: &PodUid, ran: PodWorkerState, result: Result<bool, SyncError>) {
        let now = self.clock.now();
        let later = match &result {
            Ok(false) => {
                let pod = self.lock().pods.get(uid).map(|s| Arc::clone(&s.pod));
                let within = pod.and_then(|p| self.syncer.resync_within(&p));
                Some(within.map_or(self.resync_interval, |d| d.min(self.resync_interval)))
            }
            _ => None,
        };
        let mut shared = self.lock();
        let Some(status) = shared.pods.get_mut(uid) else {
            return;
        };
        match ran {
            PodWorkerState::Syncing => status.waiting_sync -= 1,
            _ => status.waiting_kill -= 1,
        }
        if ran == PodWorkerState::Terminating && status.waiting_kill <= 0 {
            status.stopping_grace = None;
        }
        // A wait of a step the pod has moved past (a pull when it is being stopped) changes
        // nothing but the count.
        if status.state == ran {
            match result {
                Ok(now_or_later) => {
                    status.failures = 0;
                    match ran {
                        PodWorkerState::Syncing if now_or_later => {
                            status.pending.get_or_insert(UpdateType::Sync);
                            status.resumed = true;
                        }
                        PodWorkerState::Syncing => {
                            if let Some(later) = later {
                                status.next_sync = Some(now + later);
                            }
                        }
                        _ => Self::advance(status, ran, Some(PodWorkerState::Terminated)),
                    }
                }
                // Retried after the back-off (a failed stop once no other stop is in flight).
                Err(e) => self.failed(status, uid, ran, &e, now),
            }
        }
        self.requeue(shared, uid);
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

    /// Forgets finished pods no source wants any more (upstream `SyncKnownPods`); returns them.
    pub fn sync_known_pods(&self, desired: &HashSet<PodUid>) -> Vec<PodUid> {
        let mut shared = self.lock();
        let forget: Vec<PodUid> = shared
            .pods
            .iter()
            .filter(|(uid, s)| s.finished && !s.busy() && !desired.contains(*uid))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{FakeClock, RealClock};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn pod(uid: &str, version: &str) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(format!("p-{uid}")),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[derive(Default)]
    struct Recorder {
        /// Pods being synced right now, to catch overlap.
        active: Mutex<HashSet<String>>,
        overlaps: AtomicUsize,
        calls: Mutex<Vec<(String, &'static str, String)>>,
        delay: Duration,
        terminal: Mutex<HashSet<String>>,
    }

    impl Recorder {
        fn enter(&self, pod: &Pod, what: &'static str) {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if !self.active.lock().unwrap().insert(uid.clone()) {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            let version = pod.metadata.resource_version.clone().unwrap_or_default();
            self.calls.lock().unwrap().push((uid, what, version));
            std::thread::sleep(self.delay);
        }
        fn leave(&self, pod: &Pod) {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            self.active.lock().unwrap().remove(&uid);
        }
        fn calls_for(&self, uid: &str) -> Vec<(&'static str, String)> {
            self.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.0 == uid)
                .map(|c| (c.1, c.2.clone()))
                .collect()
        }
    }

    impl PodSyncer for Recorder {
        fn sync_pod(
            &self,
            _t: UpdateType,
            pod: &Arc<Pod>,
            _resume: &Resume,
        ) -> Result<StepEnd, SyncError> {
            self.enter(pod, "sync");
            self.leave(pod);
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            Ok(if self.terminal.lock().unwrap().contains(&uid) {
                StepEnd::Terminal
            } else {
                StepEnd::Done
            })
        }
        fn sync_terminating_pod(
            &self,
            pod: &Arc<Pod>,
            _g: Option<i64>,
            _resume: &Resume,
        ) -> Result<StepEnd, SyncError> {
            self.enter(pod, "terminating");
            self.leave(pod);
            Ok(StepEnd::Done)
        }
        fn sync_terminated_pod(&self, pod: &Arc<Pod>, _removed: bool) -> Result<(), SyncError> {
            self.enter(pod, "terminated");
            self.leave(pod);
            Ok(())
        }
    }

    fn update(t: UpdateType, pod: Arc<Pod>) -> UpdatePodOptions {
        UpdatePodOptions {
            update_type: t,
            pod,
            grace_period_override: None,
            removed: t == UpdateType::Kill,
        }
    }

    #[test]
    fn external_workers_notify_and_run_on_the_callers_thread() {
        let rec = Arc::new(Recorder::default());
        let notified = Arc::new(AtomicUsize::new(0));
        let n = Arc::clone(&notified);
        let pw = PodWorkers::external(
            rec.clone(),
            Arc::new(RealClock),
            Duration::from_secs(60),
            Arc::new(move || {
                n.fetch_add(1, Ordering::SeqCst);
            }),
        );
        assert_eq!(pw.run_queued(10), 0, "nothing queued");
        pw.update_pod(update(UpdateType::Create, pod("a", "1")));
        pw.update_pod(update(UpdateType::Create, pod("b", "1")));
        assert!(notified.load(Ordering::SeqCst) >= 2);
        assert!(pw.has_queued());
        assert_eq!(pw.run_queued(1), 1, "the budget is kept");
        assert_eq!(pw.run_queued(10), 1);
        assert!(!pw.has_queued());
        // A kill goes through terminating and terminated, each step queued and notified.
        pw.update_pod(update(UpdateType::Kill, pod("a", "2")));
        while pw.run_queued(10) > 0 {}
        let steps: Vec<&str> = rec.calls_for("a").iter().map(|c| c.0).collect();
        assert_eq!(steps, vec!["sync", "terminating", "terminated"]);
        assert!(pw.is_finished(&PodUid::from("a")));
    }

    #[test]
    fn updates_for_one_pod_never_overlap_and_coalesce() {
        let rec = Arc::new(Recorder {
            delay: Duration::from_millis(20),
            ..Default::default()
        });
        let pw = PodWorkers::start(4, rec.clone(), Arc::new(RealClock), Duration::from_secs(60))
            .unwrap();
        pw.update_pod(update(UpdateType::Create, pod("a", "1")));
        for v in 2..=20 {
            pw.update_pod(update(UpdateType::Update, pod("a", &v.to_string())));
        }
        assert!(pw.wait_idle(Duration::from_secs(10)));
        assert_eq!(rec.overlaps.load(Ordering::SeqCst), 0);
        let calls = rec.calls_for("a");
        // The first sync ran while the rest arrived; they coalesced into one more sync of the newest.
        assert!(calls.len() <= 3, "{calls:?}");
        assert_eq!(calls.last().map(|c| c.1.as_str()), Some("20"));
        pw.stop();
    }

    #[test]
    fn a_thousand_pods_on_eight_workers_all_sync() {
        let rec = Arc::new(Recorder::default());
        let pw = PodWorkers::start(8, rec.clone(), Arc::new(RealClock), Duration::from_secs(60))
            .unwrap();
        for i in 0..1000 {
            pw.update_pod(update(UpdateType::Create, pod(&i.to_string(), "1")));
        }
        assert!(pw.wait_idle(Duration::from_secs(30)));
        let synced: HashSet<String> = rec
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0.clone())
            .collect();
        assert_eq!(synced.len(), 1000);
        assert_eq!(rec.overlaps.load(Ordering::SeqCst), 0);
        pw.stop();
    }

    #[test]
    fn kill_runs_terminating_then_terminated_and_is_final() {
        let rec = Arc::new(Recorder::default());
        let pw = PodWorkers::start(2, rec.clone(), Arc::new(RealClock), Duration::from_secs(60))
            .unwrap();
        pw.update_pod(update(UpdateType::Create, pod("k", "1")));
        assert!(pw.wait_idle(Duration::from_secs(5)));
        pw.update_pod(update(UpdateType::Kill, pod("k", "2")));
        assert!(pw.wait_idle(Duration::from_secs(5)));
        // An update after the kill does not bring the pod back.
        pw.update_pod(update(UpdateType::Update, pod("k", "3")));
        assert!(pw.wait_idle(Duration::from_secs(5)));
        let steps: Vec<&str> = rec.calls_for("k").iter().map(|c| c.0).collect();
        assert_eq!(steps, ["sync", "terminating", "terminated"]);
        let uid = PodUid::from("k");
        assert!(pw.is_finished(&uid));
        assert_eq!(pw.sync_known_pods(&HashSet::new()), vec![uid.clone()]);
        assert!(pw.state(&uid).is_none());
        pw.stop();
    }

    #[test]
    fn terminal_pod_terminates_by_itself() {
        let rec = Arc::new(Recorder::default());
        rec.terminal.lock().unwrap().insert("t".into());
        let pw = PodWorkers::start(2, rec.clone(), Arc::new(RealClock), Duration::from_secs(60))
            .unwrap();
        pw.update_pod(update(UpdateType::Create, pod("t", "1")));
        assert!(pw.wait_idle(Duration::from_secs(5)));
        let steps: Vec<&str> = rec.calls_for("t").iter().map(|c| c.0).collect();
        assert_eq!(steps, ["sync", "terminating", "terminated"]);
        pw.stop();
    }

    #[test]
    fn resync_comes_due_with_the_clock() {
        let rec = Arc::new(Recorder::default());
        let clock = Arc::new(FakeClock::new());
        let pw = PodWorkers::start(1, rec, clock.clone(), Duration::from_secs(60)).unwrap();
        pw.update_pod(update(UpdateType::Create, pod("r", "1")));
        assert!(pw.wait_idle(Duration::from_secs(5)));
        assert!(pw.pods_due().is_empty());
        clock.step(Duration::from_secs(61));
        assert_eq!(pw.pods_due().len(), 1);
        assert!(pw.pods_due().is_empty());
        pw.stop();
    }

    /// A syncer whose steps wait: each records its Resume and returns `Waiting`, unless
    /// told to finish at once.
    #[derive(Default)]
    struct Waiter {
        calls: Mutex<Vec<(&'static str, Option<i64>)>>,
        resumes: Mutex<Vec<Resume>>,
        /// Resume inside the step itself (a job that finishes before its step has ended).
        immediate: std::sync::atomic::AtomicBool,
        /// Panic in the first sync.
        panic_once: std::sync::atomic::AtomicBool,
    }

    impl Waiter {
        fn park(&self, what: &'static str, grace: Option<i64>, resume: &Resume) -> StepEnd {
            self.calls.lock().unwrap().push((what, grace));
            if self.immediate.swap(false, Ordering::SeqCst) {
                resume.clone().done(Ok(true));
            } else {
                self.resumes.lock().unwrap().push(resume.clone());
            }
            StepEnd::Waiting
        }
        fn steps(&self) -> Vec<(&'static str, Option<i64>)> {
            self.calls.lock().unwrap().clone()
        }
        fn release_all(&self) {
            let resumes: Vec<Resume> = std::mem::take(&mut *self.resumes.lock().unwrap());
            for r in resumes {
                r.done(Ok(true));
            }
        }
    }

    impl PodSyncer for Waiter {
        fn sync_pod(
            &self,
            _t: UpdateType,
            _pod: &Arc<Pod>,
            resume: &Resume,
        ) -> Result<StepEnd, SyncError> {
            if self.panic_once.swap(false, Ordering::SeqCst) {
                self.calls.lock().unwrap().push(("panic", None));
                panic!("a bug in one pod's sync");
            }
            // The first sync waits; later ones are done at once.
            let syncs = self.steps().iter().filter(|c| c.0 == "sync").count();
            if syncs >= 1 {
                self.calls.lock().unwrap().push(("sync", None));
                return Ok(StepEnd::Done);
            }
            Ok(self.park("sync", None, resume))
        }
        fn sync_terminating_pod(
            &self,
            _pod: &Arc<Pod>,
            grace: Option<i64>,
            resume: &Resume,
        ) -> Result<StepEnd, SyncError> {
            Ok(self.park("terminating", grace, resume))
        }
        fn sync_terminated_pod(&self, _pod: &Arc<Pod>, _removed: bool) -> Result<(), SyncError> {
            self.calls.lock().unwrap().push(("terminated", None));
            Ok(())
        }
    }

    fn external(syncer: Arc<Waiter>) -> Arc<PodWorkers> {
        PodWorkers::external(
            syncer,
            Arc::new(RealClock),
            Duration::from_secs(60),
            Arc::new(|| {}),
        )
    }

    fn drain(pw: &PodWorkers) {
        while pw.run_queued(10) > 0 {}
    }

    #[test]
    fn a_waiting_sync_parks_the_pod_until_it_is_resumed() {
        let w = Arc::new(Waiter::default());
        let pw = external(w.clone());
        pw.update_pod(update(UpdateType::Create, pod("a", "1")));
        drain(&pw);
        assert_eq!(w.steps(), [("sync", None)]);
        // Updates coalesce while the wait goes on; nothing runs.
        pw.update_pod(update(UpdateType::Sync, pod("a", "2")));
        drain(&pw);
        assert_eq!(w.steps().len(), 1);
        assert!(
            !pw.wait_idle(Duration::from_millis(10)),
            "a waiting pod is busy"
        );
        w.release_all();
        drain(&pw);
        assert_eq!(w.steps(), [("sync", None), ("sync", None)]);
        // The waiting sync is not resumed twice.
        drain(&pw);
        assert_eq!(w.steps().len(), 2);
        assert!(pw.wait_idle(Duration::from_millis(10)));
    }

    #[test]
    fn a_job_that_finishes_before_its_step_ends_is_not_lost() {
        let w = Arc::new(Waiter::default());
        w.immediate.store(true, Ordering::SeqCst);
        let pw = external(w.clone());
        pw.update_pod(update(UpdateType::Create, pod("a", "1")));
        drain(&pw);
        assert_eq!(w.steps(), [("sync", None), ("sync", None)]);
        assert!(pw.wait_idle(Duration::from_millis(10)));
    }

    #[test]
    fn a_kill_does_not_wait_for_a_waiting_sync_and_a_shorter_grace_stops_again() {
        let w = Arc::new(Waiter::default());
        let pw = external(w.clone());
        pw.update_pod(update(UpdateType::Create, pod("a", "1")));
        drain(&pw);
        let kill = |grace| UpdatePodOptions {
            update_type: UpdateType::Kill,
            pod: pod("a", "2"),
            grace_period_override: Some(grace),
            removed: false,
        };
        pw.update_pod(kill(30));
        drain(&pw);
        assert_eq!(w.steps(), [("sync", None), ("terminating", Some(30))]);
        // The same grace again: the stop in progress is enough.
        pw.update_pod(kill(30));
        drain(&pw);
        assert_eq!(w.steps().len(), 2);
        // A forced deletion: another stop with grace 0 at once.
        pw.update_pod(kill(0));
        drain(&pw);
        assert_eq!(w.steps()[2], ("terminating", Some(0)));
        w.release_all();
        drain(&pw);
        let steps = w.steps();
        assert_eq!(steps.last(), Some(&("terminated", None)), "{steps:?}");
        assert_eq!(steps.iter().filter(|s| s.0 == "terminated").count(), 1);
        assert!(pw.is_finished(&PodUid::from("a")));
    }

    #[test]
    fn a_panicking_step_is_caught_and_retried() {
        let w = Arc::new(Waiter::default());
        w.panic_once.store(true, Ordering::SeqCst);
        let clock = Arc::new(FakeClock::new());
        let pw = PodWorkers::start(1, w.clone(), clock.clone(), Duration::from_secs(60)).unwrap();
        pw.update_pod(update(UpdateType::Create, pod("a", "1")));
        assert!(pw.wait_idle(Duration::from_secs(5)));
        assert_eq!(w.steps(), [("panic", None)]);
        // Retried after the back-off, on the same (living) worker.
        clock.step(Duration::from_secs(2));
        for p in pw.pods_due() {
            pw.update_pod(update(UpdateType::Sync, p));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.steps().len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(w.steps()[1], ("sync", None));
        w.release_all();
        pw.stop();
    }

    #[test]
    fn new_pods_overtake_queued_resyncs() {
        let mut shared = Shared::default();
        let add = |shared: &mut Shared, uid: &str, pending| {
            let mut status = PodSyncStatus::new(pod(uid, "1"));
            status.pending = Some(pending);
            shared.pods.insert(PodUid::from(uid), status);
            PodWorkers::enqueue(shared, PodUid::from(uid));
        };
        add(&mut shared, "resync-1", UpdateType::Sync);
        add(&mut shared, "resync-2", UpdateType::Sync);
        add(&mut shared, "new", UpdateType::Create);
        // resync-2 gets a spec update while queued: promoted, its routine entry goes stale.
        shared
            .pods
            .get_mut(&PodUid::from("resync-2"))
            .unwrap()
            .pending = Some(UpdateType::Update);
        PodWorkers::enqueue(&mut shared, PodUid::from("resync-2"));
        let order: Vec<String> = std::iter::from_fn(|| PodWorkers::dequeue(&mut shared))
            .map(|u| u.0)
            .collect();
        assert_eq!(order, ["new", "resync-2", "resync-1"]);
    }
}
