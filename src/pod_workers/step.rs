//! Running a pod's step: taking the next pod from the queues, calling the syncer for the
//! state it is in (a panic is caught as a failed step), and what the step's end, or the end
//! of a job that carried it on, leads to: the next state, a resync, or a retry after back-off.

use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;

use super::queue::{PodSyncStatus, Shared};
use super::{PodWorkerState, PodWorkers, Resume, StepEnd, UpdateType};
use crate::kuberuntime::SyncError;
use crate::types::{pod_key, PodUid};

/// One pod's step, taken from the queue.
pub(super) struct Step {
    uid: PodUid,
    pod: Arc<Pod>,
    state: PodWorkerState,
    update_type: UpdateType,
    grace: Option<i64>,
    removed: bool,
}

impl PodWorkers {
    pub(super) fn worker_loop(&self) {
        while let Some(step) = self.next_step(true) {
            self.run_step(step);
        }
    }

    /// The next pod step, marked as being worked on; with `wait`, blocks until there is one
    /// (or the workers stop).
    pub(super) fn next_step(&self, wait: bool) -> Option<Step> {
        let mut shared = self.lock();
        loop {
            let uid = loop {
                if shared.stopping {
                    return None;
                }
                if let Some(uid) = shared.dequeue() {
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

    pub(super) fn run_step(&self, step: Step) {
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
        self.complete(&uid, state, removed, result);
    }

    /// Records the outcome of one step (`removed`: whether it ran for a pod gone from its
    /// source) and queues the pod again if more work is waiting.
    fn complete(
        &self,
        uid: &PodUid,
        ran: PodWorkerState,
        removed: bool,
        result: Result<StepEnd, SyncError>,
    ) {
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
                status.retry.reset();
                status.next_sync = Some(now + resync);
                let next = match (ran, end) {
                    (PodWorkerState::Syncing, StepEnd::Terminal) => {
                        Some(PodWorkerState::Terminating)
                    }
                    (PodWorkerState::Terminating, _) => Some(PodWorkerState::Terminated),
                    _ => None,
                };
                Self::advance(status, ran, removed, next);
            }
            Err(e) => self.failed(status, uid, ran, &e, now),
        }
        self.requeue(shared, uid);
    }

    /// Moves a pod on after a step of state `ran` succeeded (`removed`: the step ran for a
    /// pod gone from its source; `next`: the state it leads to).
    fn advance(
        status: &mut PodSyncStatus,
        ran: PodWorkerState,
        removed: bool,
        next: Option<PodWorkerState>,
    ) {
        match next {
            // Only advance if nothing moved the pod further meanwhile.
            Some(next) if status.state == ran => {
                status.state = next;
                status.pending.get_or_insert(UpdateType::Sync);
            }
            Some(_) => {}
            // Removed from its source while its cleanup ran for a pod still wanted: the
            // cleanup runs again, now removing its containers, before the pod is finished.
            None if ran == PodWorkerState::Terminated
                && status.state == ran
                && status.removed
                && !removed =>
            {
                status.finished = false;
                status.pending.get_or_insert(UpdateType::Kill);
            }
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
        let delay = status.retry.next_delay();
        status.next_sync = Some(now + delay);
    }

    /// Queues the pod if work is pending and nothing blocks it, and wakes the workers.
    fn requeue(&self, mut shared: MutexGuard<'_, Shared>, uid: &PodUid) {
        let queued = shared
            .pods
            .get(uid)
            .is_some_and(|s| s.pending.is_some() && !s.blocked());
        if queued {
            shared.enqueue(uid.clone());
        }
        drop(shared);
        if queued {
            self.signal();
        }
        self.wake.notify_all();
    }

    /// A job that carried on a step of state `ran` finished (see [`Resume`]).
    pub(super) fn resume(
        &self,
        uid: &PodUid,
        ran: PodWorkerState,
        result: Result<bool, SyncError>,
    ) {
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
                    status.retry.reset();
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
                        _ => Self::advance(status, ran, false, Some(PodWorkerState::Terminated)),
                    }
                }
                // Retried after the back-off (a failed stop once no other stop is in flight).
                Err(e) => self.failed(status, uid, ran, &e, now),
            }
        }
        self.requeue(shared, uid);
    }
}
