//! The status manager: the kubelet's record of each pod's latest API status. Pod workers
//! write it after every sync; readers (run-once, the kubelet API) take `Arc` snapshots; with
//! an API server, the `status-manager` thread (`sync.rs`) patches changed statuses to it.
//! Every change of a pod's phase or of a container's state is logged at info level, so a
//! person watching the log sees pods move.

pub mod generate;
pub mod sync;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};

use crate::types::{pod_key, uid_of, PodUid};

pub use generate::{generate_api_pod_status, StatusContext};

/// One pod's stored status.
#[derive(Debug, Clone)]
pub struct PodStatusEntry {
    /// `namespace/name`.
    pub key: String,
    /// The pod the status belongs to (for its API identity).
    pub pod: Arc<Pod>,
    /// The status.
    pub status: Arc<PodStatus>,
}

/// How a pod the kubelet stops on its own account ends (upstream's `PodStatusFunc` of a
/// kill): an eviction makes it `Failed` with reason `Evicted`, its message, and (for
/// node-pressure evictions) a `DisruptionTarget` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// `status.reason`.
    pub reason: String,
    /// `status.message`, also the condition's message.
    pub message: String,
    /// Add `DisruptionTarget=True` with reason `TerminationByKubelet`.
    pub disruption_target: bool,
}

impl Termination {
    /// Lays the termination over a generated status: the condition at once; phase `Failed`,
    /// reason and message only once the containers have stopped (`stopped`), as upstream
    /// never reports a terminal phase for a pod that may still run containers.
    pub fn apply(&self, status: &mut PodStatus, stopped: bool) {
        if stopped {
            status.phase = Some("Failed".into());
            status.reason = Some(self.reason.clone());
            status.message = Some(self.message.clone());
        }
        if self.disruption_target {
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            conditions.retain(|c| c.type_ != "DisruptionTarget");
            conditions.push(k8s_openapi::api::core::v1::PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some("TerminationByKubelet".into()),
                message: Some(self.message.clone()),
                last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    crate::server::stats::now(),
                )),
                ..Default::default()
            });
        }
    }
}

/// Latest status per pod, and what the API sync still has to do.
#[derive(Debug)]
pub struct StatusManager {
    statuses: Mutex<HashMap<PodUid, PodStatusEntry>>,
    /// Pods the kubelet is stopping on its own account (evictions) and how they end; kept
    /// until the pod is forgotten.
    terminations: Mutex<HashMap<PodUid, Arc<Termination>>>,
    /// Pods whose status changed since the API sync last looked, and pods whose API object may
    /// be deleted (terminated with a deletion timestamp).
    pending: Mutex<Pending>,
    /// Wakes the sync thread. Capacity 1: one wake-up covers every change made before it runs;
    /// when full, the sender skips sending (a wake-up is already due).
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
}

#[derive(Debug, Default)]
struct Pending {
    dirty: HashSet<PodUid>,
    deletable: HashSet<PodUid>,
}

impl Default for StatusManager {
    fn default() -> Self {
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        StatusManager {
            statuses: Mutex::new(HashMap::new()),
            terminations: Mutex::new(HashMap::new()),
            pending: Mutex::new(Pending::default()),
            wake_tx,
            wake_rx,
        }
    }
}

/// One container's state in a word or two: `running`, `waiting(CrashLoopBackOff)`,
/// `terminated(Completed, exit 0)`.
fn container_summary(c: &ContainerStatus) -> String {
    let state = c.state.as_ref();
    if state.and_then(|s| s.running.as_ref()).is_some() {
        format!("{}=running", c.name)
    } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        format!(
            "{}=terminated({}, exit {})",
            c.name,
            t.reason.as_deref().unwrap_or_default(),
            t.exit_code
        )
    } else if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
        format!(
            "{}=waiting({})",
            c.name,
            w.reason.as_deref().unwrap_or_default()
        )
    } else {
        format!("{}=unknown", c.name)
    }
}

/// A one-line summary of a status: phase, IP and each container's state and restarts.
pub fn summary(status: &PodStatus) -> String {
    let mut parts = vec![format!(
        "phase={}",
        status.phase.as_deref().unwrap_or("Unknown")
    )];
    if let Some(ip) = &status.pod_ip {
        parts.push(format!("ip={ip}"));
    }
    for c in status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
    {
        let mut s = container_summary(c);
        if c.restart_count > 0 {
            s.push_str(&format!(" restarts={}", c.restart_count));
        }
        parts.push(s);
    }
    parts.join(" ")
}

impl StatusManager {
    /// Stores a pod's status; logs it if the summary changed. Condition transition times are
    /// kept from the previous status when the condition did not change.
    pub fn set_pod_status(&self, pod: &Arc<Pod>, mut status: PodStatus) {
        let uid = &uid_of(pod);
        let key = &pod_key(pod);
        let Ok(mut statuses) = self.statuses.lock() else {
            return;
        };
        let old = statuses.get(uid);
        // The start time never changes once set (upstream `updateStatusInternal`): from the
        // stored status, else from the API object (a restarted kubelet), else this status's.
        let first_start = old
            .and_then(|o| o.status.start_time.clone())
            .or_else(|| pod.status.as_ref().and_then(|s| s.start_time.clone()));
        if first_start.is_some() {
            status.start_time = first_start;
        }
        // Transition times stay while a condition keeps its status: compared with the stored
        // status, else (a restarted kubelet, the scheduler's PodScheduled) the API object's.
        let previous = old.map(|o| o.status.as_ref()).or(pod.status.as_ref());
        if let (Some(previous), Some(conds)) = (previous, status.conditions.as_mut()) {
            for c in conds.iter_mut() {
                let same = previous
                    .conditions
                    .iter()
                    .flatten()
                    .find(|o| o.type_ == c.type_ && o.status == c.status);
                if let Some(o) = same {
                    c.last_transition_time = o.last_transition_time.clone();
                }
            }
        }
        let new_summary = summary(&status);
        if old.map(|o| summary(&o.status)) != Some(new_summary.clone()) {
            log::info!("pod=\"{key}\" uid={uid} status: {new_summary}");
        }
        let changed = old.is_none_or(|o| *o.status != status);
        statuses.insert(
            uid.clone(),
            PodStatusEntry {
                key: key.to_string(),
                pod: Arc::clone(pod),
                status: Arc::new(status),
            },
        );
        drop(statuses);
        if changed {
            if let Ok(mut p) = self.pending.lock() {
                p.dirty.insert(uid.clone());
            }
            let _ = self.wake_tx.try_send(());
        }
    }

    /// Marks a terminated pod whose API object carries a deletion timestamp: the sync thread
    /// deletes the object (grace 0, UID precondition) after its final status is sent.
    pub fn mark_deletable(&self, uid: &PodUid) {
        if let Ok(mut p) = self.pending.lock() {
            p.deletable.insert(uid.clone());
            p.dirty.insert(uid.clone());
        }
        let _ = self.wake_tx.try_send(());
    }

    /// Whether statuses or deletions wait to be sent (a polled status sync skips its round
    /// when none do).
    pub fn has_pending(&self) -> bool {
        self.pending
            .lock()
            .is_ok_and(|p| !p.dirty.is_empty() || !p.deletable.is_empty())
    }

    /// Takes the pending work: `(dirty entries, deletable uids)`.
    fn take_pending(&self) -> (Vec<(PodUid, Option<PodStatusEntry>)>, HashSet<PodUid>) {
        let (dirty, deletable) = match self.pending.lock() {
            Ok(mut p) => (
                std::mem::take(&mut p.dirty),
                std::mem::take(&mut p.deletable),
            ),
            Err(_) => return (Vec::new(), HashSet::new()),
        };
        let statuses = self.statuses.lock().map(|s| {
            dirty
                .into_iter()
                .map(|uid| {
                    let entry = s.get(&uid).cloned();
                    (uid, entry)
                })
                .collect()
        });
        (statuses.unwrap_or_default(), deletable)
    }

    /// Puts work back after a retriable failure.
    fn requeue(
        &self,
        dirty: impl IntoIterator<Item = PodUid>,
        deletable: impl IntoIterator<Item = PodUid>,
    ) {
        if let Ok(mut p) = self.pending.lock() {
            p.dirty.extend(dirty);
            p.deletable.extend(deletable);
        }
    }

    /// The latest status of a pod.
    pub fn get(&self, uid: &PodUid) -> Option<Arc<PodStatus>> {
        self.statuses
            .lock()
            .ok()?
            .get(uid)
            .map(|e| Arc::clone(&e.status))
    }

    /// Forgets a pod. It is marked dirty once more so that the status sync, finding no
    /// status for it, forgets what it last sent for it too.
    pub fn remove(&self, uid: &PodUid) {
        if let Ok(mut s) = self.statuses.lock() {
            s.remove(uid);
        }
        if let Ok(mut t) = self.terminations.lock() {
            t.remove(uid);
        }
        if let Ok(mut p) = self.pending.lock() {
            p.dirty.insert(uid.clone());
        }
        let _ = self.wake_tx.try_send(());
    }

    /// Forgets, as [`Self::remove`] does, every pod not in `keep` (housekeeping's sweep,
    /// upstream `RemoveOrphanedStatuses`): a status recorded late for a pod already removed
    /// goes with the next sweep. Returns the pods forgotten.
    pub fn retain_pods(&self, keep: &HashSet<PodUid>) -> Vec<PodUid> {
        let mut gone: HashSet<PodUid> = HashSet::new();
        if let Ok(s) = self.statuses.lock() {
            gone.extend(s.keys().filter(|uid| !keep.contains(*uid)).cloned());
        }
        if let Ok(t) = self.terminations.lock() {
            gone.extend(t.keys().filter(|uid| !keep.contains(*uid)).cloned());
        }
        for uid in &gone {
            self.remove(uid);
        }
        gone.into_iter().collect()
    }

    /// Records how a pod the kubelet is about to stop ends; every status generated for it
    /// from now on carries it.
    pub fn set_termination(&self, uid: &PodUid, termination: Termination) {
        if let Ok(mut t) = self.terminations.lock() {
            t.insert(uid.clone(), Arc::new(termination));
        }
    }

    /// How a pod stopped by the kubelet ends, if it was.
    pub fn termination(&self, uid: &PodUid) -> Option<Arc<Termination>> {
        self.terminations.lock().ok()?.get(uid).cloned()
    }

    /// Every stored status.
    pub fn all(&self) -> Vec<(PodUid, PodStatusEntry)> {
        self.statuses
            .lock()
            .map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}
