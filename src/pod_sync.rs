//! The work a pod worker does for one pod (upstream `Kubelet.SyncPod`,
//! `SyncTerminatingPod`, `SyncTerminatedPod`): read the pod's runtime status, let the runtime
//! manager act, and record the resulting API status. Runs on `pod-worker-N` threads.

use std::sync::{Arc, Weak};
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;

use crate::api::KubeClient;
use crate::clock::Clock;
use crate::events::{EventType, Recorder};
use crate::kuberuntime::{Deferred, RuntimeManager, RuntimePodStatus, SyncError, SyncOutcome};
use crate::mirror::{delete_mirror_pod, ensure_mirror_pod, MirrorPods};
use crate::nodestatus::record::NodeRecord;
use crate::pod_workers::{PodSyncer, Resume, StepEnd, UpdateType};
use crate::prober::{ContainerState as ProbeContainer, ProbeManager};
use crate::status::sync::is_api_pod;
use crate::status::{generate_api_pod_status, StatusContext, StatusManager};
use crate::types::{pod_key, termination_grace_period, uid_of};
use crate::waiters::{JobKind, Waiters};

/// Implements [`PodSyncer`] over the runtime manager and status manager.
pub struct PodSync {
    /// Drives the runtime.
    pub runtime_manager: Arc<RuntimeManager>,
    /// Where statuses go.
    pub status_manager: Arc<StatusManager>,
    /// Events.
    pub recorder: Arc<dyn Recorder>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Runtime name for container ids in statuses (`containerd`).
    pub runtime_name: String,
    /// This node's Node: its host IPs (`status.hostIP(s)`) and UID (mirror pods' owner).
    pub node: Arc<NodeRecord>,
    /// The API server, when the kubelet has one (mirror pods).
    pub api: Option<ApiContext>,
    /// Probes: told about each pod's containers after every sync.
    pub probes: Arc<ProbeManager>,
    /// Where waits go (stops within grace periods, pulls, postStart hooks).
    pub waiters: Arc<Waiters>,
    /// Itself, for the jobs handed to the waiters.
    pub me: Weak<PodSync>,
    /// PLEG, whose relists tell whether a pod's runtime state changed since its status was
    /// last read (upstream's pod cache); none: every sync reads the status.
    pub pleg: Option<Arc<crate::pleg::GenericPleg>>,
    /// The last runtime status read for each pod, and when that read began.
    pub statuses: std::sync::Mutex<
        std::collections::HashMap<crate::types::PodUid, (std::time::Instant, RuntimePodStatus)>,
    >,
    /// When a pod's entry was last dropped from `statuses` (its pod removed); listings that
    /// began before it say nothing about pods never read since.
    pub last_forgotten: std::sync::Mutex<Option<std::time::Instant>>,
    /// Pods a sync acted on since their status was last read: their cached status (if any)
    /// may miss what that sync made, so the next sync reads the runtime.
    pub acted: std::sync::Mutex<std::collections::HashSet<crate::types::PodUid>>,
}

/// How recent PLEG's latest listing must be for a status read after it to stand in for a
/// new read (two relist periods: a PLEG that stopped listing makes every sync read).
const CACHE_FRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether PLEG's listing of a pod shows the same sandboxes and containers, in the same
/// states, as `status`.
fn same_runtime_state(
    running: Option<&crate::kuberuntime::RunningPod>,
    status: &RuntimePodStatus,
) -> bool {
    let mut listed: Vec<(&str, String)> = Vec::new();
    let mut read: Vec<(&str, String)> = Vec::new();
    if let Some(p) = running {
        listed.extend(
            p.sandboxes
                .iter()
                .map(|(id, ready)| (id.as_str(), ready.to_string())),
        );
        listed.extend(
            p.containers
                .iter()
                .map(|c| (c.id.0.as_str(), format!("{:?}", c.state))),
        );
    }
    read.extend(
        status
            .sandboxes
            .iter()
            .map(|s| (s.id.as_str(), s.ready.to_string())),
    );
    read.extend(
        status
            .containers
            .iter()
            .map(|c| (c.id.0.as_str(), format!("{:?}", c.state))),
    );
    listed.sort_unstable();
    read.sort_unstable();
    listed == read
}

/// What pod workers need to keep static pods' mirror pods in the API.
pub struct ApiContext {
    /// The API client.
    pub client: Arc<dyn KubeClient>,
    /// Mirror pods the API source reported.
    pub mirrors: Arc<MirrorPods>,
    /// This node's name.
    pub node_name: String,
}

impl PodSync {
    /// Makes sure a static pod has its current mirror pod (upstream creates it from the pod
    /// worker too). The mirror names the Node as its controller owner, which NodeRestriction
    /// requires, so nothing is created before the Node's UID is known.
    fn sync_mirror_pod(&self, api: &ApiContext, pod: &Arc<Pod>) {
        let node_uid = match self.node.uid() {
            Some(uid) => uid,
            None => match api.client.get_node(&api.node_name) {
                Ok(node) => {
                    self.node.observe(&node);
                    match node.metadata.uid {
                        Some(uid) => uid,
                        None => return,
                    }
                }
                Err(e) => {
                    log::warn!(
                        "pod=\"{}\" mirror pod waits for the Node's UID: {e}",
                        pod_key(pod)
                    );
                    return;
                }
            },
        };
        let result = ensure_mirror_pod(
            api.client.as_ref(),
            &api.mirrors,
            pod,
            &api.node_name,
            &node_uid,
        );
        if let Err(e) = result {
            log::warn!("pod=\"{}\" mirror pod: {e}", pod_key(pod));
            // A Node recreated under a new UID: read it again before the next attempt.
            if e.code() == Some(403) {
                if let Ok(node) = api.client.get_node(&api.node_name) {
                    self.node.observe(&node);
                }
            }
        }
    }

    fn status_of(&self, pod: &Pod) -> Result<RuntimePodStatus, SyncError> {
        let uid = uid_of(pod);
        // Stamped with the time the read began: a listing that began during the read may
        // show a change the read missed, and must not count as older than the read.
        let began = self.clock.now();
        let status = self
            .runtime_manager
            .get_pod_status(&uid)
            .map_err(|source| SyncError::Cri {
                pod: pod_key(pod),
                op: "reading pod status",
                source,
            })?;
        self.keep_status(uid, began, &status);
        Ok(status)
    }

    /// Keeps `status`, read from `began` on, for the next sync of the pod (with a PLEG only:
    /// its listings tell when the status went stale).
    fn keep_status(&self, uid: crate::types::PodUid, began: Instant, status: &RuntimePodStatus) {
        if self.pleg.is_some() {
            if let Ok(mut statuses) = self.statuses.lock() {
                statuses.insert(uid, (began, status.clone()));
            }
        }
    }

    /// The status after a sync that started the pod from nothing (no sandbox or container
    /// in `before`, a new sandbox read for its IP, every start made without a failure): the
    /// new sandbox and the started containers, read once each instead of listing the pod
    /// again. Stamped with `began`, the start of the sync, so any PLEG listing after it that
    /// shows something else (a sandbox made behind the kubelet's back) has the pod read in
    /// full. `None` when the sync was any other kind.
    fn status_of_new_pod(
        &self,
        pod: &Pod,
        before: &RuntimePodStatus,
        outcome: &SyncOutcome,
        began: Instant,
    ) -> Option<Result<RuntimePodStatus, SyncError>> {
        let sandbox = outcome.new_sandbox.as_ref()?;
        let fresh = before.sandboxes.is_empty()
            && before.containers.is_empty()
            && outcome.failures.is_empty()
            && !outcome.started.is_empty();
        if !fresh {
            return None;
        }
        let uid = uid_of(pod);
        let status = self
            .runtime_manager
            .new_pod_status(&uid, sandbox, &outcome.started)
            .map_err(|source| SyncError::Cri {
                pod: pod_key(pod),
                op: "reading pod status",
                source,
            });
        if let Ok(status) = &status {
            self.keep_status(uid, began, status);
        }
        Some(status)
    }

    /// How many pods' runtime statuses are kept for the PLEG's cache.
    pub fn cached_statuses(&self) -> usize {
        self.statuses.lock().map_or(0, |s| s.len())
    }

    /// Drops what is kept of every pod not in `keep` (housekeeping's sweep): a status a late
    /// read cached for a pod already removed goes with the next sweep.
    pub fn retain_pods(&self, keep: &std::collections::HashSet<crate::types::PodUid>) {
        if let Ok(mut statuses) = self.statuses.lock() {
            statuses.retain(|uid, _| keep.contains(uid));
        }
        if let Ok(mut acted) = self.acted.lock() {
            acted.retain(|uid| keep.contains(uid));
        }
    }

    /// Drops the runtime status kept for the PLEG's cache of a pod.
    fn forget_status(&self, uid: &crate::types::PodUid) {
        if let Ok(mut statuses) = self.statuses.lock() {
            statuses.remove(uid);
        }
    }

    fn set_acted(&self, uid: &crate::types::PodUid, acted: bool) {
        if let Ok(mut set) = self.acted.lock() {
            if acted {
                set.insert(uid.clone());
            } else {
                set.remove(uid);
            }
        }
    }

    /// The pod's runtime status for the start of a sync, read from the runtime only when
    /// nothing fresher is known: the last status read stands when no sync acted on the pod
    /// since and either a PLEG listing that began after the read shows the same sandboxes
    /// and containers in the same states, or the read began after a recent listing had
    /// returned (any later change is a PLEG event and a new sync, and PLEG publishes the
    /// listing before the event); a pod never read, with nothing of it in the listing, has
    /// an empty status.
    fn status_for_sync(&self, pod: &Pod) -> Result<RuntimePodStatus, SyncError> {
        let uid = uid_of(pod);
        let acted = self.acted.lock().map_or(true, |a| a.contains(&uid));
        let cached = self.statuses.lock().ok().and_then(|s| s.get(&uid).cloned());
        let snapshot = self.pleg.as_ref().and_then(|p| p.snapshot());
        let Some(listing) = snapshot.filter(|_| !acted) else {
            return self.status_of(pod);
        };
        let listed_at = listing.began;
        let running = listing.pods.iter().find(|p| p.uid == uid);
        match cached {
            Some((read_at, status)) => {
                // Confirmed by a later listing, or newer than the latest listing (which
                // began at most a relist period ago): a change after the read shows in a
                // later listing and brings its own sync, as with upstream's pod cache. A
                // listing still under way when the read began may have seen a change after
                // the read did, and then its event's sync must not take the read.
                let confirmed = listed_at > read_at && same_runtime_state(running, &status);
                let newer = listing.ended <= read_at
                    && self.clock.now().saturating_duration_since(listed_at) < CACHE_FRESH;
                if confirmed || newer {
                    return Ok(status);
                }
            }
            // A pod this process never read: only this process makes sandboxes for it, so a
            // listing of this process (made after any earlier run) without any of its
            // sandboxes or containers is its status, as upstream's first sync of a new pod
            // takes the PLEG cache's empty entry. Unless a pod of that UID was forgotten
            // after the listing began.
            None => {
                let forgotten = self.last_forgotten.lock().ok().and_then(|f| *f);
                if running.is_none() && forgotten.is_none_or(|f| f < listed_at) {
                    let status = RuntimePodStatus {
                        uid: uid.clone(),
                        sandboxes: Vec::new(),
                        containers: Vec::new(),
                    };
                    if let Ok(mut statuses) = self.statuses.lock() {
                        statuses.insert(uid, (listed_at, status.clone()));
                    }
                    return Ok(status);
                }
            }
        }
        self.status_of(pod)
    }

    /// Tells the prober which attempt of each container runs now.
    fn update_probes(&self, pod: &Arc<Pod>, runtime: &RuntimePodStatus) {
        let containers =
            runtime
                .containers
                .iter()
                .fold(Vec::<ProbeContainer>::new(), |mut out, c| {
                    // Statuses come newest first: the first of each name is the latest attempt.
                    if !out.iter().any(|o| o.name == c.name) {
                        // Probes wait for a postStart hook to finish, as upstream.
                        let hooked = self
                            .runtime_manager
                            .post_start_pending(&runtime.uid, &c.name);
                        out.push(ProbeContainer {
                            name: c.name.clone(),
                            id: Some(c.id.0.clone()),
                            running: c.state == crate::kuberuntime::ContainerState::Running
                                && !hooked,
                            started_at: (c.started_at > 0)
                                .then(|| crate::clock::from_unix_nanos(c.started_at)),
                        });
                    }
                    out
                });
        self.probes.set_pod(
            Arc::clone(pod),
            runtime.ip().map(str::to_string),
            containers,
        );
    }

    /// Generates and stores the API status; returns its phase. With `terminal` (the pod's
    /// containers were stopped for good), an API pod's phase becomes terminal as upstream:
    /// `Succeeded` when every container exited 0, else `Failed`.
    fn record_status(&self, pod: &Arc<Pod>, runtime: &RuntimePodStatus, terminal: bool) -> String {
        let uid = uid_of(pod);
        let lookup = |name: &str| self.runtime_manager.start_failure(&uid, name);
        let hook_pending = |name: &str| self.runtime_manager.post_start_pending(&uid, name);
        let ctx = StatusContext {
            runtime_name: &self.runtime_name,
            host_ips: self.node.host_ips(),
            start_failure: &lookup,
            post_start_pending: &hook_pending,
            now: self.clock.wall(),
            probes: Some(self.probes.results()),
        };
        let mut status = generate_api_pod_status(pod, runtime, &ctx);
        let previous = self.status_manager.get(&uid);
        if past_active_deadline(pod, previous.as_deref(), ctx.now)
            .is_some_and(|left| left.is_zero())
        {
            status.phase = Some("Failed".into());
            status.reason = Some(DEADLINE_EXCEEDED.into());
            status.message = Some(DEADLINE_MESSAGE.into());
        }
        if terminal && is_api_pod(pod) {
            make_terminal(&mut status);
        }
        if let Some(termination) = self.status_manager.termination(&uid) {
            termination.apply(&mut status, terminal);
        }
        keep_terminal_phase(pod, previous.as_deref(), &mut status);
        let phase = status.phase.clone().unwrap_or_default();
        let was_running = previous.is_some_and(|s| s.phase.as_deref() == Some("Running"));
        if phase == "Running" && !was_running {
            observe_pod_start(pod);
        }
        self.status_manager.set_pod_status(pod, status);
        phase
    }

    /// Runs deferred work on the waiters, then records the pod's status and resumes it.
    fn hand_over(&self, pod: &Arc<Pod>, work: Deferred, resume: &Resume) {
        let Some(me) = self.me.upgrade() else {
            resume.clone().done(Ok(true));
            return;
        };
        let kind = if work.is_pull() {
            JobKind::Pull
        } else {
            JobKind::Wait
        };
        let pod = Arc::clone(pod);
        let resume = resume.clone();
        self.waiters.submit(
            kind,
            Box::new(move || {
                let result = guarded(&pod, || me.runtime_manager.run_deferred(&pod, work));
                // A pod killed meanwhile has left this step: its probes and status are the
                // stop's business now (and its next sync reads the runtime).
                if resume.is_current() {
                    if let Ok(after) = me.status_of(&pod) {
                        me.set_acted(&uid_of(&pod), false);
                        me.update_probes(&pod, &after);
                        me.record_status(&pod, &after, false);
                    }
                }
                resume.done(result);
            }),
        );
    }

    /// Stops the pod's containers and sandboxes (on a waiter thread), records its final
    /// status and reports to `resume`.
    fn stop_pod(
        &self,
        pod: &Arc<Pod>,
        grace: i64,
        status: RuntimePodStatus,
    ) -> Result<(), SyncError> {
        let key = pod_key(pod);
        self.runtime_manager
            .kill_pod(Some(pod), &key, &status, grace)
            .map_err(|source| SyncError::Cri {
                pod: key.clone(),
                op: "stopping pod",
                source,
            })?;
        let after = self.status_of(pod)?;
        self.record_status(pod, &after, true);
        Ok(())
    }
}

/// Runs a job's work, turning a panic into a failure of the pod's step (the pod is resumed
/// either way, never left parked).
fn guarded(pod: &Pod, work: impl FnOnce() -> Result<bool, SyncError>) -> Result<bool, SyncError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|_| {
        Err(SyncError::Panic {
            pod: pod_key(pod),
            message: "a job on the waiters panicked".into(),
        })
    })
}

/// A pod's status once its containers were stopped for good (upstream `getPhase` with
/// `podIsTerminal` and `TerminatePod`): containers without a terminated state show
/// `ContainerStatusUnknown`, the phase is `Succeeded` when every container exited 0, else
/// `Failed`, and the pod is no longer ready.
fn make_terminal(status: &mut k8s_openapi::api::core::v1::PodStatus) {
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated};
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return;
    }
    let mut all_succeeded = true;
    for c in status.container_statuses.iter_mut().flatten() {
        let terminated = c.state.as_ref().and_then(|s| s.terminated.as_ref());
        match terminated {
            Some(t) => all_succeeded &= t.exit_code == 0,
            None => {
                all_succeeded = false;
                c.state = Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 137,
                        reason: Some("ContainerStatusUnknown".into()),
                        message: Some(
                            "The container could not be located when the pod was terminated".into(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                c.ready = false;
                c.started = Some(false);
            }
        }
    }
    let phase = if all_succeeded && status.container_statuses.is_some() {
        "Succeeded"
    } else {
        "Failed"
    };
    status.phase = Some(phase.into());
    let reason = if phase == "Succeeded" {
        "PodCompleted"
    } else {
        "PodFailed"
    };
    for c in status.conditions.iter_mut().flatten() {
        if c.type_ == "Ready" || c.type_ == "ContainersReady" {
            if c.status == "True" {
                c.last_transition_time = None;
            }
            c.status = "False".into();
            c.reason = Some(reason.into());
            c.message = None;
        }
    }
}

/// Pods never leave a terminal phase (upstream forces it back): once `Succeeded` or `Failed`
/// here or in the API, the phase and its reason and message stay, and so do the final
/// container states (a restarted kubelet may find the containers garbage collected).
fn keep_terminal_phase(
    pod: &Pod,
    previous: Option<&k8s_openapi::api::core::v1::PodStatus>,
    status: &mut k8s_openapi::api::core::v1::PodStatus,
) {
    let terminal = |s: &&k8s_openapi::api::core::v1::PodStatus| {
        matches!(s.phase.as_deref(), Some("Succeeded" | "Failed"))
    };
    let Some(before) = previous
        .filter(terminal)
        .or(pod.status.as_ref().filter(terminal))
    else {
        return;
    };
    if status.phase != before.phase {
        status.phase.clone_from(&before.phase);
        status.reason.clone_from(&before.reason);
        status.message.clone_from(&before.message);
        status
            .container_statuses
            .clone_from(&before.container_statuses);
        status
            .init_container_statuses
            .clone_from(&before.init_container_statuses);
    }
}

/// Records `kubelet_pod_start_duration_seconds`: from when the kubelet first saw the pod
/// (its `kubernetes.io/config.seen` annotation) to its first Running status.
fn observe_pod_start(pod: &Pod) {
    let seen = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::config::update::CONFIG_SEEN_ANNOTATION))
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    let Some(seen) = seen else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let elapsed = i128::try_from(now).unwrap_or(0) - seen.as_nanosecond();
    if let Ok(nanos) = u64::try_from(elapsed) {
        crate::util::metrics::kubelet()
            .pod_start_duration
            .observe(std::time::Duration::from_nanos(nanos));
    }
}

/// Reason and message of a pod failed by its `activeDeadlineSeconds`, as upstream.
const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// Time left before the pod's `activeDeadlineSeconds` (counted from `status.startTime`) runs
/// out, zero once it has; `None` without a deadline or a start time. Saturates: a deadline
/// beyond what time can hold never runs out.
fn past_active_deadline(
    pod: &Pod,
    status: Option<&k8s_openapi::api::core::v1::PodStatus>,
    now: std::time::SystemTime,
) -> Option<std::time::Duration> {
    let seconds = pod.spec.as_ref()?.active_deadline_seconds?;
    let start = status?.start_time.as_ref()?.0.as_nanosecond();
    let start = crate::clock::from_unix_nanos(i64::try_from(start).ok()?);
    let deadline =
        start.checked_add(std::time::Duration::from_secs(u64::try_from(seconds).ok()?))?;
    Some(deadline.duration_since(now).unwrap_or_default())
}

fn is_terminal(phase: &str) -> bool {
    phase == "Succeeded" || phase == "Failed"
}

impl PodSyncer for PodSync {
    fn sync_pod(
        &self,
        update_type: UpdateType,
        pod: &Arc<Pod>,
        resume: &Resume,
    ) -> Result<StepEnd, SyncError> {
        log::debug!(
            "pod=\"{}\" uid={} sync ({update_type:?})",
            pod_key(pod),
            uid_of(pod)
        );
        if let Some(api) = self.api.as_ref().filter(|_| !is_api_pod(pod)) {
            self.sync_mirror_pod(api, pod);
        }
        let before = self.status_for_sync(pod)?;
        if is_terminal(&self.record_status(pod, &before, false)) {
            let deadline = self
                .status_manager
                .get(&uid_of(pod))
                .is_some_and(|s| s.reason.as_deref() == Some(DEADLINE_EXCEEDED));
            if deadline {
                self.recorder.pod_event(
                    pod,
                    EventType::Normal,
                    DEADLINE_EXCEEDED,
                    DEADLINE_MESSAGE.to_string(),
                );
            }
            return Ok(StepEnd::Terminal);
        }
        // Whatever this sync makes (even when it fails half-way) is not in `before`.
        self.set_acted(&uid_of(pod), true);
        let began = self.clock.now();
        let mut outcome = self.runtime_manager.sync_pod(pod, &before)?;
        if outcome.actions.init_failed {
            self.recorder.pod_event(
                pod,
                EventType::Warning,
                "Failed",
                "Init container failed and the restart policy is Never".to_string(),
            );
        }
        // Handed over first: a container already started must get its postStart hook even
        // when reading the status fails.
        if let Some(work) = outcome.deferred.take() {
            self.hand_over(pod, work, resume);
            if let Ok(after) = self.status_of(pod) {
                self.update_probes(pod, &after);
                self.record_status(pod, &after, false);
            }
            return Ok(StepEnd::Waiting);
        }
        let after = if outcome.actions.is_noop() {
            before
        } else if let Some(after) = self.status_of_new_pod(pod, &before, &outcome, began) {
            after?
        } else {
            self.status_of(pod)?
        };
        self.set_acted(&uid_of(pod), false);
        self.update_probes(pod, &after);
        if is_terminal(&self.record_status(pod, &after, false)) {
            Ok(StepEnd::Terminal)
        } else {
            Ok(StepEnd::Done)
        }
    }

    fn resync_within(&self, pod: &Pod) -> Option<std::time::Duration> {
        let uid = uid_of(pod);
        let status = self.status_manager.get(&uid);
        // A second late at most, like upstream's check on every sync-loop tick.
        let deadline = past_active_deadline(pod, status.as_deref(), self.clock.wall())
            .map(|left| left.saturating_add(std::time::Duration::from_millis(200)));
        // A container that failed to start (or waits out a back-off) is retried soon, as
        // upstream requeues a pod whose sync failed after 10 s.
        let retry = self
            .runtime_manager
            .has_start_failures(&uid)
            .then_some(START_FAILURE_RETRY);
        match (deadline, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn sync_terminating_pod(
        &self,
        pod: &Arc<Pod>,
        grace_override: Option<i64>,
        resume: &Resume,
    ) -> Result<StepEnd, SyncError> {
        let key = pod_key(pod);
        self.probes.remove_pod(&uid_of(pod));
        let status = self.status_of(pod)?;
        // A pod known only from the runtime (no spec) is stopped with the grace period its
        // containers were created with.
        let grace = grace_override.unwrap_or_else(|| match pod.spec {
            Some(_) => termination_grace_period(pod),
            None => self.runtime_manager.recorded_grace_period(&status),
        });
        log::info!(
            "pod=\"{key}\" uid={} terminating (grace period {grace}s)",
            uid_of(pod)
        );
        // A pod the kubelet stops on its own account (eviction) shows how it ends at once,
        // as upstream applies the kill's status function before stopping containers.
        if self.status_manager.termination(&uid_of(pod)).is_some() {
            self.record_status(pod, &status, false);
        }
        let live = status.containers.iter().any(|c| {
            matches!(
                c.state,
                crate::kuberuntime::ContainerState::Running
                    | crate::kuberuntime::ContainerState::Created
            )
        });
        if !live {
            // Nothing waits: only sandboxes to stop.
            self.stop_pod(pod, grace, status)?;
            return Ok(StepEnd::Done);
        }
        let Some(me) = self.me.upgrade() else {
            self.stop_pod(pod, grace, status)?;
            return Ok(StepEnd::Done);
        };
        let pod = Arc::clone(pod);
        let resume = resume.clone();
        self.waiters.submit(
            JobKind::Wait,
            Box::new(move || {
                let result = guarded(&pod, || me.stop_pod(&pod, grace, status).map(|()| true));
                resume.done(result);
            }),
        );
        Ok(StepEnd::Waiting)
    }

    fn sync_terminated_pod(&self, pod: &Arc<Pod>, removed: bool) -> Result<(), SyncError> {
        let key = pod_key(pod);
        let uid = uid_of(pod);
        // Once more: a waiter job of the pod's last sync that passed its check before the
        // kill may have handed the prober the pod's containers after the terminating step
        // took them away.
        self.probes.remove_pod(&uid);
        if removed {
            self.set_acted(&uid, false);
            if let Ok(mut forgotten) = self.last_forgotten.lock() {
                *forgotten = Some(self.clock.now());
            }
        }
        if !removed {
            log::info!("pod=\"{key}\" uid={uid} terminated");
            if pod.metadata.deletion_timestamp.is_some() && is_api_pod(pod) {
                self.status_manager.mark_deletable(&uid);
            }
            return Ok(());
        }
        if let Some(api) = self.api.as_ref().filter(|_| !is_api_pod(pod)) {
            if let Some(mirror) = api.mirrors.get(pod) {
                if let Err(e) = delete_mirror_pod(api.client.as_ref(), &mirror) {
                    log::warn!("pod=\"{key}\" deleting mirror pod: {e}");
                }
            }
        }
        let status = self.status_of(pod);
        // Read for the removal only: the pod is never synced again, so nothing may keep it.
        self.forget_status(&uid);
        let status = status?;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        self.runtime_manager
            .remove_pod(namespace, name, &status)
            .map_err(|source| SyncError::Cri {
                pod: key.clone(),
                op: "removing pod",
                source,
            })?;
        self.status_manager.remove(&uid);
        log::info!("pod=\"{key}\" uid={uid} removed");
        Ok(())
    }
}

/// How soon a pod whose container failed to start is synced again (upstream's
/// `backOffPeriod` for a failed sync).
const START_FAILURE_RETRY: std::time::Duration = std::time::Duration::from_secs(10);
