//! The workers' bookkeeping: each pod's worker state, what is pending for it and what waits
//! on its behalf, and the two ready queues (`urgent`, `routine`) pods wait in for a worker.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::{PodWorkerState, UpdateType};
use crate::types::PodUid;
use crate::util::backoff::Exponential;

/// A failed step is retried after a second, doubling up to a minute.
const RETRY_BACKOFF: Exponential =
    Exponential::new(Duration::from_secs(1), Duration::from_secs(60));

/// Which ready queue a pod waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Priority {
    Urgent,
    Routine,
}

#[derive(Debug)]
pub(super) struct PodSyncStatus {
    pub(super) state: PodWorkerState,
    /// The newest pod object.
    pub(super) pod: Arc<Pod>,
    /// Update type of the newest pending request (`None` when nothing is pending).
    pub(super) pending: Option<UpdateType>,
    /// A worker holds this pod now.
    pub(super) working: bool,
    /// Which ready queue holds the pod's live entry, if any.
    pub(super) queued: Option<Priority>,
    pub(super) grace_override: Option<i64>,
    pub(super) removed: bool,
    /// Terminated work done: nothing more will run for this pod.
    pub(super) finished: bool,
    /// When the sync tick should sync it again (resync or retry after an error).
    pub(super) next_sync: Option<Instant>,
    /// The retry back-off, doubling with consecutive failures.
    pub(super) retry: Exponential,
    /// Jobs on the waiters carrying on a sync step (pulls, hooks, container stops). Signed:
    /// a job may finish (and count down) before its step has ended (and counted up).
    pub(super) waiting_sync: i32,
    /// Jobs on the waiters stopping the pod (signed, as `waiting_sync`).
    pub(super) waiting_kill: i32,
    /// The shortest grace period a stop of this pod started with. A kill asking for less
    /// (a forced deletion) starts another stop beside the one waiting.
    pub(super) stopping_grace: Option<i64>,
    /// A wait just finished: the next sync is urgent (a pulled image, a finished hook).
    pub(super) resumed: bool,
    /// The pod was added again under the same UID while terminating or terminated
    /// (upstream `restartRequested`): housekeeping forgets it once finished, and the pod,
    /// still wanted, starts anew.
    pub(super) restart_requested: bool,
}

impl PodSyncStatus {
    /// A pod new to the workers: syncing, nothing pending yet.
    pub(super) fn new(pod: Arc<Pod>) -> Self {
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
            retry: RETRY_BACKOFF,
            waiting_sync: 0,
            waiting_kill: 0,
            stopping_grace: None,
            resumed: false,
            restart_requested: false,
        }
    }

    /// Whether the pod's next step must wait: a worker holds it, or a job carries on the
    /// step of the state it is in.
    pub(super) fn blocked(&self) -> bool {
        self.working
            || match self.state {
                PodWorkerState::Syncing => self.waiting_sync > 0,
                PodWorkerState::Terminating => self.waiting_kill > 0 && !self.shorter_grace(),
                PodWorkerState::Terminated => false,
            }
    }

    /// Whether a kill asks for a shorter grace period than the stops in progress use.
    pub(super) fn shorter_grace(&self) -> bool {
        match (self.grace_override, self.stopping_grace) {
            (Some(asked), Some(stopping)) => asked < stopping,
            _ => false,
        }
    }

    /// The grace period a stop starting now uses: the kill's, else the pod's own.
    pub(super) fn effective_grace(&self) -> i64 {
        self.grace_override
            .unwrap_or_else(|| crate::types::termination_grace_period(&self.pod))
    }

    /// Whether anything of the pod is in progress or queued.
    pub(super) fn busy(&self) -> bool {
        self.working || self.queued.is_some() || self.waiting_sync != 0 || self.waiting_kill != 0
    }
}

#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) pods: HashMap<PodUid, PodSyncStatus>,
    pub(super) urgent: VecDeque<PodUid>,
    pub(super) routine: VecDeque<PodUid>,
    pub(super) stopping: bool,
}

impl Shared {
    /// Puts a pod with pending work in the queue its work calls for (see the module docs).
    pub(super) fn enqueue(&mut self, uid: PodUid) {
        let Some(status) = self.pods.get_mut(&uid) else {
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
                self.urgent.push_back(uid);
            }
            (None, Priority::Routine) => {
                status.queued = Some(Priority::Routine);
                self.routine.push_back(uid);
            }
        }
    }

    /// The next pod to work on: urgent first; stale routine entries are skipped.
    pub(super) fn dequeue(&mut self) -> Option<PodUid> {
        loop {
            let (uid, from) = if let Some(uid) = self.urgent.pop_front() {
                (uid, Priority::Urgent)
            } else {
                (self.routine.pop_front()?, Priority::Routine)
            };
            if let Some(status) = self.pods.get_mut(&uid) {
                if status.queued == Some(from) {
                    status.queued = None;
                    return Some(uid);
                }
            }
        }
    }
}
