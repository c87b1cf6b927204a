//! Tests of the pod workers: ordering, coalescing, the life of a pod through its states,
//! parking on waits, panics, and priorities.

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
    let pw =
        PodWorkers::start(4, rec.clone(), Arc::new(RealClock), Duration::from_secs(60)).unwrap();
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
    let pw =
        PodWorkers::start(8, rec.clone(), Arc::new(RealClock), Duration::from_secs(60)).unwrap();
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
    let pw =
        PodWorkers::start(2, rec.clone(), Arc::new(RealClock), Duration::from_secs(60)).unwrap();
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
    let pw =
        PodWorkers::start(2, rec.clone(), Arc::new(RealClock), Duration::from_secs(60)).unwrap();
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
        shared.enqueue(PodUid::from(uid));
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
    shared.enqueue(PodUid::from("resync-2"));
    let order: Vec<String> = std::iter::from_fn(|| shared.dequeue())
        .map(|u| u.0)
        .collect();
    assert_eq!(order, ["new", "resync-2", "resync-1"]);
}

/// Removes the pod from its source while its first cleanup runs.
#[derive(Default)]
struct RemovedDuringCleanup {
    workers: std::sync::OnceLock<std::sync::Weak<PodWorkers>>,
    cleanups: Mutex<Vec<bool>>,
}

impl PodSyncer for RemovedDuringCleanup {
    fn sync_pod(&self, _t: UpdateType, _p: &Arc<Pod>, _r: &Resume) -> Result<StepEnd, SyncError> {
        Ok(StepEnd::Done)
    }
    fn sync_terminating_pod(
        &self,
        _pod: &Arc<Pod>,
        _g: Option<i64>,
        _resume: &Resume,
    ) -> Result<StepEnd, SyncError> {
        Ok(StepEnd::Done)
    }
    fn sync_terminated_pod(&self, pod: &Arc<Pod>, removed: bool) -> Result<(), SyncError> {
        let first = {
            let mut cleanups = self.cleanups.lock().unwrap();
            cleanups.push(removed);
            cleanups.len() == 1
        };
        if first {
            let workers = self
                .workers
                .get()
                .and_then(std::sync::Weak::upgrade)
                .unwrap();
            workers.update_pod(update(UpdateType::Kill, Arc::clone(pod)));
        }
        Ok(())
    }
}

#[test]
fn a_pod_removed_while_its_cleanup_runs_gets_its_containers_removed() {
    let syncer = Arc::new(RemovedDuringCleanup::default());
    let pw = PodWorkers::external(
        syncer.clone(),
        Arc::new(RealClock),
        Duration::from_secs(60),
        Arc::new(|| {}),
    );
    syncer.workers.set(Arc::downgrade(&pw)).unwrap();
    pw.update_pod(update(UpdateType::Create, pod("d", "1")));
    // Deleted with a grace period: stopped and cleaned up while its object still exists...
    pw.update_pod(UpdatePodOptions {
        removed: false,
        ..update(UpdateType::Kill, pod("d", "2"))
    });
    // ...and removed from its source in the middle of that cleanup.
    while pw.run_queued(10) > 0 {}
    assert_eq!(
        *syncer.cleanups.lock().unwrap(),
        vec![false, true],
        "the cleanup runs again for the removal"
    );
    assert!(pw.is_finished(&PodUid::from("d")));
}
