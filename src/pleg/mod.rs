//! PLEG, the pod lifecycle event generator (upstream `GenericPLEG`): the `pleg` thread lists
//! sandboxes and containers every second, compares with the previous listing and sends
//! [`PodLifecycleEvent`]s to the sync loop. A slow or hung runtime call delays one relist (the
//! CRI client's deadlines bound it), never the sync loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TrySendError};

use crate::clock::Clock;
use crate::cri::CriError;
use crate::kuberuntime::{ContainerState, RunningPod, RuntimeManager};
use crate::types::PodUid;
use crate::util::capped::CappedSender;
use crate::util::metrics::{Counter, Histogram, DURATION_BUCKETS};

/// Upstream relist period.
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);
/// PLEG is unhealthy when no relist finished for this long (upstream 3 min).
pub const RELIST_THRESHOLD: Duration = Duration::from_secs(180);
/// Capacity of the event channel (upstream uses 1000). When the sync loop falls that far
/// behind, new events are dropped and counted; the periodic resync repairs what they missed.
pub const EVENT_CHANNEL_CAPACITY: usize = 1000;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodLifecycleEventType {
    /// A container (or sandbox) started running.
    ContainerStarted,
    /// A container (or sandbox) stopped.
    ContainerDied,
    /// A container (or sandbox) was removed.
    ContainerRemoved,
    /// A container changed state in another way.
    ContainerChanged,
}

/// One change in one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLifecycleEvent {
    /// The pod.
    pub id: PodUid,
    /// What happened.
    pub kind: PodLifecycleEventType,
    /// The container or sandbox id.
    pub data: String,
}

/// Lists the runtime's pods; the runtime manager in production, a fake in tests.
pub trait PodLister: Send + Sync {
    /// Every kubelet-made pod; the same `Arc` as the last call's when nothing changed.
    fn get_pods(&self) -> Result<Arc<Vec<RunningPod>>, CriError>;
}

impl PodLister for RuntimeManager {
    fn get_pods(&self) -> Result<Arc<Vec<RunningPod>>, CriError> {
        RuntimeManager::list_running_pods(self)
    }
}

/// Metrics PLEG records (upstream `kubelet_pleg_relist_duration_seconds` and
/// `kubelet_pleg_relist_interval_seconds`).
#[derive(Debug)]
pub struct PlegMetrics {
    /// Duration of each relist.
    pub relist_duration: Histogram,
    /// Time between the starts of consecutive relists.
    pub relist_interval: Histogram,
    /// Events dropped because the channel was full.
    pub dropped_events: Counter,
}

type Snapshot = HashMap<PodUid, HashMap<String, ContainerState>>;

/// One successful relist's pods and when its runtime calls began and ended: what the runtime
/// showed at some instant between the two.
#[derive(Debug, Clone)]
pub struct Listing {
    /// When the list calls began.
    pub began: Instant,
    /// When they had returned.
    pub ended: Instant,
    /// The kubelet-made pods listed.
    pub pods: Arc<Vec<RunningPod>>,
}

/// The generic PLEG.
pub struct GenericPleg {
    lister: Arc<dyn PodLister>,
    clock: Arc<dyn Clock>,
    events: CappedSender<PodLifecycleEvent>,
    /// The previous listing: per pod, per container/sandbox id, its state.
    previous: Mutex<Snapshot>,
    /// The latest successful listing, published before its events are sent.
    latest: Mutex<Option<Listing>>,
    last_relist_start: Mutex<Option<Instant>>,
    /// Nanoseconds after `origin` of the last successful relist (0 = never).
    last_relist_ok: AtomicU64,
    origin: Instant,
    /// Relist metrics.
    pub metrics: PlegMetrics,
}

impl GenericPleg {
    /// A PLEG sending to `events`.
    pub fn new(
        lister: Arc<dyn PodLister>,
        clock: Arc<dyn Clock>,
        events: CappedSender<PodLifecycleEvent>,
    ) -> Self {
        let origin = clock.now();
        GenericPleg {
            lister,
            clock,
            events,
            previous: Mutex::new(HashMap::new()),
            latest: Mutex::new(None),
            last_relist_start: Mutex::new(None),
            last_relist_ok: AtomicU64::new(0),
            origin,
            metrics: PlegMetrics {
                relist_duration: Histogram::new(DURATION_BUCKETS),
                relist_interval: Histogram::new(DURATION_BUCKETS),
                dropped_events: Counter::default(),
            },
        }
    }

    /// Runs relists every [`RELIST_PERIOD`] until `stop` fires (the `pleg` thread).
    pub fn run(self: Arc<Self>, stop: Receiver<()>) {
        loop {
            if let Err(e) = self.relist() {
                log::error!("PLEG relist failed: {e}");
            }
            if !matches!(
                stop.recv_timeout(RELIST_PERIOD),
                Err(crossbeam_channel::RecvTimeoutError::Timeout)
            ) {
                return;
            }
        }
    }

    /// One relist: list, diff against the previous listing, send events.
    pub fn relist(&self) -> Result<(), CriError> {
        let start = self.clock.now();
        if let Ok(mut last) = self.last_relist_start.lock() {
            if let Some(prev) = *last {
                self.metrics
                    .relist_interval
                    .observe(start.saturating_duration_since(prev));
            }
            *last = Some(start);
        }
        let pods = self.lister.get_pods();
        let ended = self.clock.now();
        self.metrics
            .relist_duration
            .observe(ended.saturating_duration_since(start));
        let listing = Listing {
            began: start,
            ended,
            pods: pods?,
        };
        if Arc::ptr_eq(&listing.pods, &self.running_pods()) {
            // The very listing of the last relist: no transitions.
            self.relisted(listing);
            return Ok(());
        }

        let mut current: Snapshot = HashMap::with_capacity(listing.pods.len());
        for p in listing.pods.iter() {
            let entry = current.entry(p.uid.clone()).or_default();
            for (id, ready) in &p.sandboxes {
                let state = if *ready {
                    ContainerState::Running
                } else {
                    ContainerState::Exited
                };
                entry.insert(id.clone(), state);
            }
            for c in &p.containers {
                entry.insert(c.id.0.clone(), c.state);
            }
        }

        let mut events = Vec::new();
        if let Ok(mut previous) = self.previous.lock() {
            for (uid, now_states) in &current {
                let before = previous.get(uid);
                for (id, state) in now_states {
                    let old = before.and_then(|b| b.get(id)).copied();
                    if let Some(kind) = event_for(old, Some(*state)) {
                        events.push(PodLifecycleEvent {
                            id: uid.clone(),
                            kind,
                            data: id.clone(),
                        });
                    }
                }
                if let Some(before) = before {
                    for (id, old) in before {
                        if !now_states.contains_key(id) {
                            if let Some(kind) = event_for(Some(*old), None) {
                                events.push(PodLifecycleEvent {
                                    id: uid.clone(),
                                    kind,
                                    data: id.clone(),
                                });
                            }
                        }
                    }
                }
            }
            for (uid, before) in previous.iter() {
                if !current.contains_key(uid) {
                    for (id, old) in before {
                        if let Some(kind) = event_for(Some(*old), None) {
                            events.push(PodLifecycleEvent {
                                id: uid.clone(),
                                kind,
                                data: id.clone(),
                            });
                        }
                    }
                }
            }
            *previous = current;
        }
        // Published before the events go out: a sync an event starts reads this listing
        // (or a later one), never the one before it, whatever the sync loop's pace.
        self.relisted(listing);
        for e in events {
            match self.events.try_send(e) {
                Ok(()) => {}
                Err(TrySendError::Full(e)) => {
                    self.metrics.dropped_events.inc();
                    log::warn!("PLEG event channel is full, dropping event {e:?}");
                }
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
        Ok(())
    }

    /// Publishes a successful relist's listing.
    fn relisted(&self, listing: Listing) {
        if let Ok(mut latest) = self.latest.lock() {
            *latest = Some(listing);
        }
        let since = self.clock.now().saturating_duration_since(self.origin);
        self.last_relist_ok.store(
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX).max(1),
            Ordering::Relaxed,
        );
    }

    /// The pods of the latest successful relist.
    pub fn running_pods(&self) -> Arc<Vec<RunningPod>> {
        self.snapshot().map(|l| l.pods).unwrap_or_default()
    }

    /// The latest successful relist, `None` before the first.
    pub fn snapshot(&self) -> Option<Listing> {
        self.latest.lock().ok().and_then(|l| l.clone())
    }

    /// Whether a relist succeeded at all and within [`RELIST_THRESHOLD`].
    pub fn healthy(&self) -> bool {
        let last = self.last_relist_ok.load(Ordering::Relaxed);
        if last == 0 {
            return false;
        }
        let at = self.origin + Duration::from_nanos(last);
        self.clock.now().saturating_duration_since(at) <= RELIST_THRESHOLD
    }
}

/// The event for a state transition of one container or sandbox (upstream
/// `generateEvents`); `None` state means it no longer exists.
fn event_for(
    old: Option<ContainerState>,
    new: Option<ContainerState>,
) -> Option<PodLifecycleEventType> {
    use ContainerState::*;
    use PodLifecycleEventType as E;
    if old == new {
        return None;
    }
    match new {
        Some(Running) => Some(E::ContainerStarted),
        Some(Exited) => Some(E::ContainerDied),
        Some(Unknown) => Some(E::ContainerChanged),
        Some(Created) => None,
        None => match old {
            Some(Running) | Some(Unknown) => Some(E::ContainerDied),
            _ => Some(E::ContainerRemoved),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::kuberuntime::runtime_pod::RunningContainer;
    use crate::types::ContainerId;

    struct Lister(Mutex<Result<Vec<RunningPod>, ()>>);

    impl PodLister for Lister {
        fn get_pods(&self) -> Result<Arc<Vec<RunningPod>>, CriError> {
            match &*self.0.lock().unwrap() {
                Ok(p) => Ok(Arc::new(p.clone())),
                Err(()) => Err(CriError::DeadlineExceeded {
                    method: "ListContainers",
                    timeout: Duration::from_secs(10),
                }),
            }
        }
    }

    fn pod(containers: &[(&str, ContainerState)]) -> RunningPod {
        RunningPod {
            uid: PodUid::from("u1"),
            name: "p".into(),
            namespace: "default".into(),
            sandboxes: vec![("sb".into(), true)],
            containers: containers
                .iter()
                .map(|(id, s)| RunningContainer {
                    id: ContainerId(id.to_string()),
                    name: id.to_string(),
                    state: *s,
                    sandbox_id: "sb".into(),
                })
                .collect(),
        }
    }

    /// Hands out one listing, the same `Arc` every time.
    struct Unchanged(Arc<Vec<RunningPod>>);

    impl PodLister for Unchanged {
        fn get_pods(&self) -> Result<Arc<Vec<RunningPod>>, CriError> {
            Ok(Arc::clone(&self.0))
        }
    }

    #[test]
    fn the_same_listing_again_is_a_relist_without_events_that_keeps_the_pleg_current() {
        let listing = Arc::new(vec![pod(&[("c1", ContainerState::Running)])]);
        let (tx, rx) = crate::util::capped::channel(10);
        let clock = Arc::new(FakeClock::new());
        let pleg = GenericPleg::new(Arc::new(Unchanged(listing.clone())), clock.clone(), tx);
        pleg.relist().unwrap();
        assert_eq!(rx.try_iter().count(), 2);
        let first = pleg.snapshot().unwrap().began;

        clock.step(RELIST_THRESHOLD);
        pleg.relist().unwrap();
        assert_eq!(rx.try_iter().count(), 0);
        let latest = pleg.snapshot().unwrap();
        assert!(
            latest.began > first,
            "the snapshot is as of the latest relist"
        );
        assert!(Arc::ptr_eq(&latest.pods, &listing));
        clock.step(Duration::from_secs(1));
        assert!(pleg.healthy(), "an unchanged relist is a successful one");
        assert_eq!(pleg.metrics.relist_duration.count(), 2);
    }

    #[test]
    fn relist_emits_transitions_and_records_duration() {
        let lister = Arc::new(Lister(Mutex::new(Ok(vec![pod(&[(
            "c1",
            ContainerState::Running,
        )])]))));
        let (tx, rx) = crate::util::capped::channel(10);
        let clock = Arc::new(FakeClock::new());
        let pleg = GenericPleg::new(lister.clone(), clock.clone(), tx);
        assert!(!pleg.healthy());
        pleg.relist().unwrap();
        let mut got: Vec<_> = rx.try_iter().map(|e| (e.data, e.kind)).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("c1".into(), PodLifecycleEventType::ContainerStarted),
                ("sb".into(), PodLifecycleEventType::ContainerStarted)
            ]
        );
        assert!(pleg.healthy());

        *lister.0.lock().unwrap() = Ok(vec![pod(&[("c1", ContainerState::Exited)])]);
        pleg.relist().unwrap();
        let got: Vec<_> = rx.try_iter().map(|e| (e.data, e.kind)).collect();
        assert_eq!(
            got,
            vec![("c1".into(), PodLifecycleEventType::ContainerDied)]
        );

        *lister.0.lock().unwrap() = Ok(vec![]);
        pleg.relist().unwrap();
        let mut got: Vec<_> = rx.try_iter().map(|e| (e.data, e.kind)).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("c1".into(), PodLifecycleEventType::ContainerRemoved),
                ("sb".into(), PodLifecycleEventType::ContainerDied)
            ]
        );
        assert_eq!(pleg.metrics.relist_duration.count(), 3);

        // A failing runtime is reported, and health lapses after the threshold.
        *lister.0.lock().unwrap() = Err(());
        assert!(pleg.relist().is_err());
        clock.step(RELIST_THRESHOLD + Duration::from_secs(1));
        assert!(!pleg.healthy());
    }

    /// A fake clock that, whenever it is read, takes the queued events and notes whether a
    /// `ContainerDied` was among them and whether the PLEG's published listing showed the
    /// death.
    struct Watching {
        clock: FakeClock,
        events: Receiver<PodLifecycleEvent>,
        pleg: std::sync::OnceLock<std::sync::Weak<GenericPleg>>,
        seen: Mutex<Vec<(bool, bool)>>,
    }

    impl Clock for Watching {
        fn now(&self) -> Instant {
            // Every queued event is taken, not only those up to the first death.
            let deaths = self
                .events
                .try_iter()
                .filter(|e| e.kind == PodLifecycleEventType::ContainerDied)
                .count();
            let died = deaths > 0;
            let published = self
                .pleg
                .get()
                .and_then(std::sync::Weak::upgrade)
                .and_then(|p| p.snapshot())
                .is_some_and(|l| {
                    l.pods
                        .iter()
                        .flat_map(|p| &p.containers)
                        .any(|c| c.state == ContainerState::Exited)
                });
            self.seen.lock().unwrap().push((died, published));
            self.clock.now()
        }
        fn wall(&self) -> std::time::SystemTime {
            self.clock.wall()
        }
    }

    #[test]
    fn a_listing_is_published_before_its_events_go_out() {
        let lister = Arc::new(Lister(Mutex::new(Ok(vec![pod(&[(
            "c1",
            ContainerState::Running,
        )])]))));
        let (tx, rx) = crate::util::capped::channel(10);
        let clock = Arc::new(Watching {
            clock: FakeClock::new(),
            events: rx.clone(),
            pleg: std::sync::OnceLock::new(),
            seen: Mutex::new(Vec::new()),
        });
        let pleg = Arc::new(GenericPleg::new(lister.clone(), clock.clone(), tx));
        clock.pleg.set(Arc::downgrade(&pleg)).unwrap();
        pleg.relist().unwrap();
        *lister.0.lock().unwrap() = Ok(vec![pod(&[("c1", ContainerState::Exited)])]);
        pleg.relist().unwrap();
        // The relist reads the clock last when it publishes its listing; a reading after
        // the relist drains the death event.
        clock.now();
        let seen = clock.seen.lock().unwrap().clone();
        let (after, during) = seen.split_last().unwrap();
        assert!(
            during.iter().all(|(died, _)| !died),
            "the death event went out before the listing was published: {seen:?}"
        );
        assert_eq!(after, &(true, true), "{seen:?}");
    }

    #[test]
    fn full_channel_drops_and_counts() {
        let lister = Arc::new(Lister(Mutex::new(Ok(vec![pod(&[
            ("c1", ContainerState::Running),
            ("c2", ContainerState::Running),
        ])]))));
        let (tx, _rx) = crate::util::capped::channel(1);
        let pleg = GenericPleg::new(lister, Arc::new(FakeClock::new()), tx);
        pleg.relist().unwrap();
        assert_eq!(pleg.metrics.dropped_events.get(), 2);
    }
}
