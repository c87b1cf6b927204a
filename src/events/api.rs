//! Events to the API server (upstream `client-go/tools/record` with its correlator): callers
//! hand events to a bounded queue and never wait; the `event-broadcaster` thread writes them.
//! Repeats of the same event (same object, type, reason and message) within 10 minutes are
//! aggregated into one Event whose `count` and `lastTimestamp` are patched, and each object
//! is rate limited (a burst of 25, then one event per 5 minutes, as upstream's spam filter).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TrySendError};
use k8s_openapi::api::core::v1::{Event as ApiEvent, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::KubeClient;
use crate::clock::Clock;
use crate::types::api_time;
use crate::util::capped::CappedSender;

use super::{log_event, EventType, Recorder};

/// Queue capacity; when full, events are dropped and counted (upstream drops too).
const QUEUE_CAPACITY: usize = 1000;
/// Window in which identical events are aggregated.
const AGGREGATION_WINDOW: Duration = Duration::from_secs(600);
/// Spam filter burst per object.
const SPAM_BURST: f64 = 25.0;
/// Spam filter refill: one event per this long per object.
const SPAM_REFILL: Duration = Duration::from_secs(300);
/// Bound on remembered aggregation keys and spam buckets; the oldest are dropped beyond it.
const MAX_TRACKED: usize = 4096;

/// One event waiting to be written.
#[derive(Debug, Clone)]
struct Pending {
    involved: ObjectReference,
    kind: EventType,
    reason: String,
    message: String,
    /// The Event's annotations (upstream `AnnotatedEventf`; evictions name the offending
    /// containers there).
    annotations: BTreeMap<String, String>,
}

/// The queued events of a detached [`ApiRecorder`] and their writer.
pub struct EventQueue {
    rx: Receiver<Pending>,
    writer: EventWriter,
}

impl EventQueue {
    /// Whether no event waits to be written.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Writes up to `max` queued events; returns how many were written.
    pub fn drain(&mut self, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.rx.try_recv() {
                Ok(ev) => {
                    self.writer.write(ev);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }
}

/// Sends events to the API; cheap to call from any thread.
pub struct ApiRecorder {
    tx: CappedSender<Pending>,
    /// Events dropped because the queue was full.
    dropped: AtomicU64,
}

impl ApiRecorder {
    /// Starts the `event-broadcaster` thread writing through `client`; it ends when `stop`
    /// fires or every recorder handle is gone.
    pub fn start(
        client: Arc<dyn KubeClient>,
        clock: Arc<dyn Clock>,
        node_name: &str,
        stop: Receiver<()>,
    ) -> std::io::Result<(Arc<ApiRecorder>, JoinHandle<()>)> {
        let (recorder, mut queue) = ApiRecorder::detached(client, clock, node_name);
        let handle = std::thread::Builder::new()
            .name("event-broadcaster".into())
            .spawn(move || loop {
                crossbeam_channel::select! {
                    recv(queue.rx) -> ev => match ev {
                        Ok(ev) => queue.writer.write(ev),
                        Err(_) => break,
                    },
                    recv(stop) -> _ => break,
                }
            })?;
        Ok((recorder, handle))
    }

    /// A recorder whose queue is written by whoever calls [`EventQueue::drain`] (a thread
    /// shared by many kubelets) instead of a thread of its own.
    pub fn detached(
        client: Arc<dyn KubeClient>,
        clock: Arc<dyn Clock>,
        node_name: &str,
    ) -> (Arc<ApiRecorder>, EventQueue) {
        let (tx, rx) = crate::util::capped::channel(QUEUE_CAPACITY);
        let writer = EventWriter::new(client, clock, node_name);
        (
            Arc::new(ApiRecorder {
                tx,
                dropped: AtomicU64::new(0),
            }),
            EventQueue { rx, writer },
        )
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn enqueue(&self, p: Pending) {
        log_event(
            &format!(
                "{}=\"{}\"",
                p.involved
                    .kind
                    .as_deref()
                    .unwrap_or("object")
                    .to_lowercase(),
                object_key(&p.involved)
            ),
            p.kind,
            &p.reason,
            &p.message,
        );
        if let Err(TrySendError::Full(_)) = self.tx.try_send(p) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn object_key(o: &ObjectReference) -> String {
    match &o.namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", o.name.as_deref().unwrap_or_default()),
        _ => o.name.clone().unwrap_or_default(),
    }
}

impl Recorder for ApiRecorder {
    fn pod_event(&self, pod: &Pod, kind: EventType, reason: &str, message: String) {
        self.pod_event_annotated(pod, kind, reason, message, &BTreeMap::new());
    }

    fn pod_event_annotated(
        &self,
        pod: &Pod,
        kind: EventType,
        reason: &str,
        message: String,
        annotations: &BTreeMap<String, String>,
    ) {
        let involved = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        };
        self.enqueue(Pending {
            involved,
            kind,
            reason: reason.into(),
            message,
            annotations: annotations.clone(),
        });
    }

    fn node_event(&self, node_name: &str, kind: EventType, reason: &str, message: String) {
        let involved = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node_name.into()),
            // Upstream uses the node name as the reference UID for node events.
            uid: Some(node_name.into()),
            ..Default::default()
        };
        self.enqueue(Pending {
            involved,
            kind,
            reason: reason.into(),
            message,
            annotations: BTreeMap::new(),
        });
    }
}

/// An event already written, for aggregation.
struct Written {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

/// The writer's state, owned by the `event-broadcaster` thread.
struct EventWriter {
    client: Arc<dyn KubeClient>,
    clock: Arc<dyn Clock>,
    node_name: String,
    written: HashMap<String, Written>,
    /// Token buckets per object: (tokens, last refill).
    buckets: HashMap<String, (f64, Instant)>,
}

impl EventWriter {
    fn new(client: Arc<dyn KubeClient>, clock: Arc<dyn Clock>, node_name: &str) -> Self {
        EventWriter {
            client,
            clock,
            node_name: node_name.into(),
            written: HashMap::new(),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for the object; false when its bucket is empty.
    fn allow(&mut self, object: &str, now: Instant) -> bool {
        if self.buckets.len() >= MAX_TRACKED {
            self.buckets.retain(|_, (tokens, at)| {
                *tokens < SPAM_BURST && now.saturating_duration_since(*at) < SPAM_REFILL * 25
            });
            keep_newest(&mut self.buckets, |(_, at)| *at);
        }
        let (tokens, at) = self
            .buckets
            .entry(object.to_string())
            .or_insert((SPAM_BURST, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        *tokens = (*tokens + refill).min(SPAM_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn write(&mut self, p: Pending) {
        let now = self.clock.now();
        let object = format!(
            "{}/{}",
            p.involved.kind.as_deref().unwrap_or_default(),
            object_key(&p.involved)
        );
        if !self.allow(&object, now) {
            log::debug!(
                "event for {object} dropped by the rate limit: {} {}",
                p.reason,
                p.message
            );
            return;
        }
        let kind = match p.kind {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let key = format!(
            "{object}\u{0}{}\u{0}{kind}\u{0}{}\u{0}{}",
            p.involved.uid.as_deref().unwrap_or_default(),
            p.reason,
            p.message
        );
        let wall = api_time(self.clock.wall());
        if let Some(w) = self
            .written
            .get_mut(&key)
            .filter(|w| now.saturating_duration_since(w.last) < AGGREGATION_WINDOW)
        {
            let count = w.count + 1;
            let patch = serde_json::json!({ "count": count, "lastTimestamp": wall });
            match self.client.patch_event(&w.namespace, &w.name, &patch) {
                Ok(_) => {
                    w.count = count;
                    w.last = now;
                    return;
                }
                // Gone (expired on the server): write it anew below.
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    log::warn!("updating event {}/{}: {e}", w.namespace, w.name);
                    return;
                }
            }
        }
        let namespace = p
            .involved
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let nanos = crate::clock::unix_nanos(self.clock.wall());
        let name = format!(
            "{}.{:x}",
            p.involved.name.as_deref().unwrap_or("object"),
            nanos
        );
        let event = ApiEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                annotations: (!p.annotations.is_empty()).then_some(p.annotations),
                ..Default::default()
            },
            involved_object: p.involved,
            reason: Some(p.reason),
            message: Some(p.message),
            type_: Some(kind.into()),
            count: Some(1),
            first_timestamp: wall.clone(),
            last_timestamp: wall,
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(self.node_name.clone()),
            }),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.node_name.clone()),
            ..Default::default()
        };
        match self.client.create_event(&event) {
            Ok(_) => {
                if self.written.len() >= MAX_TRACKED {
                    self.written
                        .retain(|_, w| now.saturating_duration_since(w.last) < AGGREGATION_WINDOW);
                    keep_newest(&mut self.written, |w| w.last);
                }
                self.written.insert(
                    key,
                    Written {
                        namespace,
                        name,
                        count: 1,
                        last: now,
                    },
                );
            }
            Err(e) => log::warn!("writing event {namespace}/{name}: {e}"),
        }
    }
}

/// When a map of [`MAX_TRACKED`] entries is still full after its stale ones went (a node
/// churning pods writes events for new objects all the time), its older entries go too, down
/// to three quarters of the bound; like upstream's LRU caches of 4096 entries, a bucket or
/// aggregate that goes starts afresh if its object comes back.
fn keep_newest<K, V>(map: &mut HashMap<K, V>, at: impl Fn(&V) -> Instant) {
    let keep = MAX_TRACKED * 3 / 4;
    if map.len() <= keep {
        return;
    }
    let mut times: Vec<Instant> = map.values().map(&at).collect();
    let cut = times.len() - keep;
    let (_, oldest_kept, _) = times.select_nth_unstable(cut);
    let oldest_kept = *oldest_kept;
    map.retain(|_, v| at(v) >= oldest_kept);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Call, FakeClient};
    use crate::clock::FakeClock;

    fn pending(reason: &str, message: &str) -> Pending {
        Pending {
            involved: ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some("default".into()),
                name: Some("web".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            kind: EventType::Warning,
            reason: reason.into(),
            message: message.into(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn churning_objects_keep_the_trackers_bounded() {
        let fake = Arc::new(FakeClient::new());
        let clock = Arc::new(FakeClock::new());
        let mut w = EventWriter::new(fake.clone(), clock.clone(), "node1");
        for i in 0..3 * MAX_TRACKED {
            let mut p = pending("Started", "Started container app");
            p.involved.name = Some(format!("pod-{i}"));
            p.involved.uid = Some(format!("uid-{i}"));
            w.write(p);
            clock.step(Duration::from_millis(100));
            assert!(
                w.buckets.len() <= MAX_TRACKED,
                "{} buckets",
                w.buckets.len()
            );
            assert!(
                w.written.len() <= MAX_TRACKED,
                "{} written",
                w.written.len()
            );
        }
        // Every one was written (a new object's bucket is full), and the newest are kept.
        assert_eq!(fake.events().len(), 3 * MAX_TRACKED);
        let last = format!("Pod/default/pod-{}", 3 * MAX_TRACKED - 1);
        assert!(w.buckets.contains_key(&last));
    }

    #[test]
    fn repeats_are_aggregated_and_objects_rate_limited() {
        let fake = Arc::new(FakeClient::new());
        let clock = Arc::new(FakeClock::new());
        let mut w = EventWriter::new(fake.clone(), clock.clone(), "node1");
        w.write(pending("BackOff", "Back-off restarting failed container"));
        w.write(pending("BackOff", "Back-off restarting failed container"));
        let events = fake.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].count, Some(2));
        assert_eq!(
            events[0].source.as_ref().and_then(|s| s.host.as_deref()),
            Some("node1")
        );
        assert_eq!(events[0].type_.as_deref(), Some("Warning"));
        // Past the aggregation window the same event is new again.
        clock.step(AGGREGATION_WINDOW + Duration::from_secs(1));
        w.write(pending("BackOff", "Back-off restarting failed container"));
        assert_eq!(fake.events().len(), 2);

        // The burst of 25 per object: the rest are dropped until tokens refill.
        for i in 0..40 {
            w.write(pending("Failed", &format!("attempt {i}")));
        }
        let creates = fake
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::CreateEvent { .. }))
            .count();
        // Two BackOff events, then the 24 tokens left of the burst of 25 for the Failed ones.
        assert_eq!(creates, 2 + 24, "rate limited");
        clock.step(SPAM_REFILL);
        w.write(pending("Failed", "after refill"));
        assert!(fake
            .events()
            .iter()
            .any(|e| e.message.as_deref() == Some("after refill")));
    }
}
