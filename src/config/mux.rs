//! The PodConfig mux (upstream `config/config.go`): merges the pod sources into one stream of
//! incremental updates for the sync loop.
//!
//! Thread `pod-config` owns all merge state. Each source gets its own bounded input channel
//! ([`PodConfig::channel`]); the thread selects over them and the stop channel, merges each
//! [`PodUpdate`] into the per-source pods (keyed by UID), and sends the resulting
//! incremental updates in upstream's order: Remove, Add, Update, Delete, Reconcile (one update
//! per non-empty kind; plus, as upstream, an empty Add on a source's first `Set` when it
//! brings no Add, Update or Delete, so the sync loop hears from every source). Upstream runs
//! a goroutine per source around a locked storage; one thread owning the storage needs no lock
//! and keeps the same per-source ordering.
//!
//! The sync loop asks [`SourcesReady`] (a cheap shared handle) whether every source has sent
//! its first `Set`, and only then cleans up pods it does not know (restart safety).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, select, Receiver, Select, Sender};
use k8s_openapi::api::core::v1::Pod;
use log::{debug, error, info, warn};

use crate::config::update::{
    PodOperation, PodUpdate, CONFIG_MIRROR_ANNOTATION, CONFIG_SEEN_ANNOTATION,
    CONFIG_SOURCE_ANNOTATION,
};

/// Capacity of each source's input channel. When full, the source's send blocks until the
/// `pod-config` thread merges (or stop fires): sources send whole snapshots or watch events,
/// so waiting is the right back-pressure and nothing is dropped.
pub const SOURCE_CHANNEL_CAPACITY: usize = 16;

/// Annotations the kubelet itself sets; ignored when comparing and kept across updates.
const LOCAL_ANNOTATIONS: [&str; 3] = [
    CONFIG_SOURCE_ANNOTATION,
    CONFIG_MIRROR_ANNOTATION,
    CONFIG_SEEN_ANNOTATION,
];

/// Errors starting the mux.
#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// The `pod-config` thread could not be spawned.
    #[error("cannot spawn the pod-config thread: {source}")]
    Spawn {
        /// The OS error.
        source: std::io::Error,
    },
}

/// Which sources are registered and which have delivered their first `Set`. Shared between
/// the `pod-config` thread (writer) and the sync loop (reader); locks are held only to touch
/// a small set, never across I/O.
#[derive(Debug, Default)]
pub struct SourcesReady {
    /// Sources with a channel: what "all sources" means.
    registered: Mutex<BTreeSet<String>>,
    /// Sources whose first `Set` has been merged.
    seen: Mutex<BTreeSet<String>>,
}

impl SourcesReady {
    /// True once every source in `expected` has had a `Set` merged.
    pub fn seen_all(&self, expected: &[&str]) -> bool {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        expected.iter().all(|s| seen.contains(*s))
    }

    /// True once every registered source has had a `Set` merged (upstream `SeenAllSources`).
    pub fn all_ready(&self) -> bool {
        let registered = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        registered.is_subset(&seen)
    }

    fn register(&self, source: &str) {
        let mut registered = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        registered.insert(source.to_string());
    }

    /// Marks `source` seen; true when this is its first `Set`.
    fn mark_seen(&self, source: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.insert(source.to_string())
    }
}

/// One source's input channel.
struct SourceInput {
    name: String,
    /// Kept until `run`, so asking twice for a source's channel returns the same channel.
    tx: Option<Sender<PodUpdate>>,
    rx: Receiver<PodUpdate>,
}

/// The mux: source channels in, incremental updates out. Build it, take the channels, then
/// [`start`](PodConfig::start) it.
pub struct PodConfig {
    inputs: Vec<SourceInput>,
    storage: PodStorage,
    updates: Sender<PodUpdate>,
    sources_ready: Arc<SourcesReady>,
}

impl PodConfig {
    /// A mux whose output channel holds `updates_capacity` updates (upstream: 50). When it is
    /// full, merging waits for the sync loop (or stop): updates are never dropped, since each
    /// is an increment.
    pub fn new(updates_capacity: usize) -> (PodConfig, Receiver<PodUpdate>) {
        let (updates, rx) = bounded(updates_capacity);
        let sources_ready = Arc::new(SourcesReady::default());
        let config = PodConfig {
            inputs: Vec::new(),
            storage: PodStorage::new(sources_ready.clone()),
            updates,
            sources_ready,
        };
        (config, rx)
    }

    /// The input channel of `source` (`file`, `http`, `api`), created on first use. The name
    /// given here, not [`PodUpdate::source`], decides which pods an update replaces.
    pub fn channel(&mut self, source: &str) -> Sender<PodUpdate> {
        if let Some(tx) = self
            .inputs
            .iter()
            .find(|i| i.name == source)
            .and_then(|i| i.tx.clone())
        {
            return tx;
        }
        self.sources_ready.register(source);
        let (tx, rx) = bounded(SOURCE_CHANNEL_CAPACITY);
        self.inputs.push(SourceInput {
            name: source.to_string(),
            tx: Some(tx.clone()),
            rx,
        });
        tx
    }

    /// The shared readiness handle for the sync loop.
    pub fn sources_ready(&self) -> Arc<SourcesReady> {
        self.sources_ready.clone()
    }

    /// True once every source in `expected` has had its first `Set` merged.
    pub fn seen_all_sources(&self, expected: &[&str]) -> bool {
        self.sources_ready.seen_all(expected)
    }

    /// One merge step without the thread: merges `update` as coming from `source` and returns
    /// the incremental updates that would be sent, in order.
    pub fn merge(&mut self, source: &str, update: PodUpdate) -> Vec<PodUpdate> {
        self.storage.merge(source, update)
    }

    /// Spawns the `pod-config` thread running [`run`](PodConfig::run).
    pub fn start(self, stop: Receiver<()>) -> Result<JoinHandle<()>, MuxError> {
        std::thread::Builder::new()
            .name("pod-config".into())
            .spawn(move || self.run(stop))
            .map_err(|source| MuxError::Spawn { source })
    }

    /// Merges until `stop` fires (a message or its senders dropped) or the sync loop drops its
    /// receiver. A source whose senders are all dropped is no longer selected.
    pub fn run(mut self, stop: Receiver<()>) {
        // Drop our copies so a source that goes away shows up as a disconnected channel.
        for input in &mut self.inputs {
            input.tx = None;
        }
        let mut open: Vec<bool> = vec![true; self.inputs.len()];
        info!("pod config mux started sources={:?}", self.source_names());
        loop {
            let mut sel = Select::new();
            let stop_index = sel.recv(&stop);
            let mut indices = Vec::new();
            for (i, input) in self.inputs.iter().enumerate() {
                if open[i] {
                    indices.push((sel.recv(&input.rx), i));
                }
            }
            let op = sel.select();
            if op.index() == stop_index {
                let _ = op.recv(&stop);
                break;
            }
            let Some(&(_, i)) = indices.iter().find(|(index, _)| *index == op.index()) else {
                continue;
            };
            let input = &self.inputs[i];
            let update = match op.recv(&input.rx) {
                Ok(update) => update,
                Err(_) => {
                    debug!("pod source closed source={}", input.name);
                    open[i] = false;
                    continue;
                }
            };
            let name = input.name.clone();
            for out in self.storage.merge(&name, update) {
                select! {
                    send(self.updates, out) -> sent => if sent.is_err() {
                        info!("sync loop gone, pod config mux exiting");
                        return;
                    },
                    recv(stop) -> _ => return,
                }
            }
        }
        info!("pod config mux stopped");
    }

    fn source_names(&self) -> Vec<&str> {
        self.inputs.iter().map(|i| i.name.as_str()).collect()
    }
}

/// Sends `update` to the mux unless `stop` fires first; false when the source should exit
/// (stopped, or the mux is gone).
pub fn send_or_stop(updates: &Sender<PodUpdate>, update: PodUpdate, stop: &Receiver<()>) -> bool {
    select! {
        send(updates, update) -> sent => sent.is_ok(),
        recv(stop) -> _ => false,
    }
}

/// What changed for one pod already known (upstream `checkAndUpdatePod`).
#[derive(Debug, PartialEq, Eq)]
enum Change {
    None,
    Update,
    Reconcile,
    Delete,
}

/// The per-source pods, keyed by UID (upstream `podStorage`). Owned by the `pod-config`
/// thread.
struct PodStorage {
    pods: HashMap<String, HashMap<String, Arc<Pod>>>,
    ready: Arc<SourcesReady>,
}

impl PodStorage {
    fn new(ready: Arc<SourcesReady>) -> Self {
        PodStorage {
            pods: HashMap::new(),
            ready,
        }
    }

    /// Upstream `Merge` in incremental mode: applies `update` and returns the updates to send.
    fn merge(&mut self, source: &str, update: PodUpdate) -> Vec<PodUpdate> {
        let previous = self.pods.remove(source).unwrap_or_default();
        let mut first_set = false;
        // For Set, `old` holds what may be removed and `pods` is rebuilt; for the incremental
        // operations both are the same map, which is `pods`.
        let (mut old, mut pods) = match update.op {
            PodOperation::Set => {
                first_set = self.ready.mark_seen(source);
                (previous, HashMap::new())
            }
            _ => (HashMap::new(), previous),
        };
        let (mut adds, mut updates, mut deletes, mut removes, mut reconciles) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        match update.op {
            PodOperation::Set | PodOperation::Add | PodOperation::Update | PodOperation::Delete => {
                for pod in filter_invalid_pods(update.pods, source) {
                    let mut pod = Arc::unwrap_or_clone(pod);
                    pod.metadata
                        .annotations
                        .get_or_insert_with(Default::default)
                        .insert(CONFIG_SOURCE_ANNOTATION.into(), source.into());
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    match pods.remove(&uid).or_else(|| old.remove(&uid)) {
                        Some(mut existing) => {
                            match check_and_update_pod(&mut existing, pod) {
                                Change::Update => updates.push(existing.clone()),
                                Change::Reconcile => reconciles.push(existing.clone()),
                                Change::Delete => deletes.push(existing.clone()),
                                Change::None => {}
                            }
                            pods.insert(uid, existing);
                        }
                        None => {
                            record_first_seen_time(&mut pod);
                            let pod = Arc::new(pod);
                            adds.push(pod.clone());
                            pods.insert(uid, pod);
                        }
                    }
                }
                removes.extend(old.into_values());
            }
            PodOperation::Remove => {
                for pod in &update.pods {
                    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                    if let Some(existing) = pods.remove(uid) {
                        removes.push(existing);
                    }
                }
            }
            PodOperation::Reconcile => {
                warn!("ignoring Reconcile sent by a pod source source={source}");
            }
        }
        self.pods.insert(source.to_string(), pods);
        removes.sort_by_key(|pod| pod_key(pod));

        let mut out = Vec::new();
        let mut emit = |pods: Vec<Arc<Pod>>, op: PodOperation, even_empty: bool| {
            if !pods.is_empty() || even_empty {
                out.push(PodUpdate {
                    pods,
                    op,
                    source: source.to_string(),
                });
            }
        };
        // An empty Add on a source's first Set tells the sync loop the source is ready.
        let ready_signal = first_set && adds.is_empty() && updates.is_empty() && deletes.is_empty();
        emit(removes, PodOperation::Remove, false);
        emit(adds, PodOperation::Add, ready_signal);
        emit(updates, PodOperation::Update, false);
        emit(deletes, PodOperation::Delete, false);
        emit(reconciles, PodOperation::Reconcile, false);
        out
    }
}

/// `namespace/name`, for logs and a stable order.
fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Drops pods whose full name (`name_namespace`) repeats within one update, keeping the
/// first, and pods without a UID (they cannot be tracked).
fn filter_invalid_pods(pods: Vec<Arc<Pod>>, source: &str) -> Vec<Arc<Pod>> {
    let mut names = HashSet::new();
    let mut filtered = Vec::with_capacity(pods.len());
    for (index, pod) in pods.into_iter().enumerate() {
        if pod.metadata.uid.as_deref().unwrap_or_default().is_empty() {
            error!(
                "pod has no UID, ignoring pod=\"{}\" source={source} index={index}",
                pod_key(&pod)
            );
        } else if !names.insert(pod_key(&pod)) {
            error!(
                "pod failed validation due to duplicate pod name, ignoring pod=\"{}\" \
                 source={source} index={index}",
                pod_key(&pod)
            );
        } else {
            filtered.push(pod);
        }
    }
    filtered
}

fn record_first_seen_time(pod: &mut Pod) {
    debug!("receiving a new pod pod=\"{}\"", pod_key(pod));
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(CONFIG_SEEN_ANNOTATION.into(), now_rfc3339_nano());
}

/// Now in UTC, RFC 3339 with up to nine fractional digits (Go's `RFC3339Nano`).
fn now_rfc3339_nano() -> String {
    use k8s_openapi::jiff::Timestamp;
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
    let nanos = i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0);
    Timestamp::new(secs, nanos)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

/// Compares annotations ignoring the kubelet's own (upstream `isAnnotationMapEqual`).
fn annotations_equal(existing: &Pod, new: &Pod) -> bool {
    let strip = |pod: &Pod| {
        pod.metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| !LOCAL_ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    strip(existing) == strip(new)
}

/// Upstream `podsDifferSemantically`.
fn pods_differ_semantically(existing: &Pod, new: &Pod) -> bool {
    existing.spec != new.spec
        || existing.metadata.labels != new.metadata.labels
        || existing.metadata.deletion_timestamp != new.metadata.deletion_timestamp
        || existing.metadata.deletion_grace_period_seconds
            != new.metadata.deletion_grace_period_seconds
        || !annotations_equal(existing, new)
}

/// Upstream `checkAndUpdatePod`: folds `new` into `existing` and says what kind of change it
/// was. Only the kubelet-relevant fields are taken; the kubelet's own annotations keep their
/// existing values. `existing` is copied on write, so pods already handed out never change.
fn check_and_update_pod(existing: &mut Arc<Pod>, new: Pod) -> Change {
    if !pods_differ_semantically(existing, &new) {
        if existing.status == new.status {
            return Change::None;
        }
        Arc::make_mut(existing).status = new.status;
        return Change::Reconcile;
    }
    let pod = Arc::make_mut(existing);
    let mut annotations = new.metadata.annotations.unwrap_or_default();
    for key in LOCAL_ANNOTATIONS {
        if let Some(value) = pod.metadata.annotations.as_ref().and_then(|a| a.get(key)) {
            annotations.insert(key.to_string(), value.clone());
        }
    }
    pod.metadata.annotations = Some(annotations);
    pod.spec = new.spec;
    pod.metadata.labels = new.metadata.labels;
    pod.metadata.deletion_timestamp = new.metadata.deletion_timestamp;
    pod.metadata.deletion_grace_period_seconds = new.metadata.deletion_grace_period_seconds;
    pod.status = new.status;
    if pod.metadata.deletion_timestamp.is_some() {
        Change::Delete
    } else {
        Change::Update
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;
    use crate::config::update::{API_SOURCE, FILE_SOURCE, HTTP_SOURCE};

    fn pod(name: &str, uid: &str, image: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn set(pods: &[Pod]) -> PodUpdate {
        PodUpdate {
            pods: pods.iter().cloned().map(Arc::new).collect(),
            op: PodOperation::Set,
            source: FILE_SOURCE.into(),
        }
    }

    /// (op, [pod names]) of each outgoing update, to compare whole merges at a glance.
    fn summary(out: &[PodUpdate]) -> Vec<(PodOperation, Vec<String>)> {
        out.iter()
            .map(|u| {
                let names = u
                    .pods
                    .iter()
                    .map(|p| p.metadata.name.clone().unwrap())
                    .collect();
                (u.op, names)
            })
            .collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn annotation(pod: &Pod, key: &str) -> Option<String> {
        pod.metadata.annotations.as_ref()?.get(key).cloned()
    }

    #[test]
    fn set_merges_into_incremental_updates() {
        let (mut config, _rx) = PodConfig::new(50);
        let a = pod("a", "ua", "i:1");
        let b = pod("b", "ub", "i:1");

        let out = config.merge(FILE_SOURCE, set(&[a.clone(), b.clone()]));
        assert_eq!(summary(&out), [(PodOperation::Add, names(&["a", "b"]))]);
        let added = &out[0].pods[0];
        assert_eq!(
            annotation(added, CONFIG_SOURCE_ANNOTATION).as_deref(),
            Some("file")
        );
        let seen = annotation(added, CONFIG_SEEN_ANNOTATION).unwrap();

        // The same Set again: nothing to do.
        assert!(config
            .merge(FILE_SOURCE, set(&[a.clone(), b.clone()]))
            .is_empty());

        // Spec change: Update, first-seen time kept.
        let a2 = pod("a", "ua", "i:2");
        let out = config.merge(FILE_SOURCE, set(&[a2.clone(), b.clone()]));
        assert_eq!(summary(&out), [(PodOperation::Update, names(&["a"]))]);
        assert_eq!(
            annotation(&out[0].pods[0], CONFIG_SEEN_ANNOTATION),
            Some(seen.clone())
        );
        assert_eq!(
            out[0].pods[0].spec.as_ref().unwrap().containers[0]
                .image
                .as_deref(),
            Some("i:2")
        );

        // Status only: Reconcile.
        let mut b2 = b.clone();
        b2.status = Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        });
        let out = config.merge(FILE_SOURCE, set(&[a2.clone(), b2.clone()]));
        assert_eq!(summary(&out), [(PodOperation::Reconcile, names(&["b"]))]);

        // Gone from the Set: Remove.
        let out = config.merge(FILE_SOURCE, set(&[b2.clone()]));
        assert_eq!(summary(&out), [(PodOperation::Remove, names(&["a"]))]);

        // deletionTimestamp set: Delete.
        let mut b3 = b2.clone();
        b3.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        b3.metadata.deletion_grace_period_seconds = Some(30);
        let out = config.merge(FILE_SOURCE, set(&[b3]));
        assert_eq!(summary(&out), [(PodOperation::Delete, names(&["b"]))]);
        assert!(annotation(&out[0].pods[0], CONFIG_SEEN_ANNOTATION).is_some());
    }

    #[test]
    fn one_merge_emits_remove_add_update_delete_reconcile_in_order() {
        let (mut config, _rx) = PodConfig::new(50);
        let pods = ["gone", "upd", "del", "rec"].map(|n| pod(n, n, "i:1"));
        config.merge(API_SOURCE, set(&pods));
        let mut upd = pods[1].clone();
        upd.metadata.labels = Some([("l".to_string(), "v".to_string())].into());
        let mut del = pods[2].clone();
        del.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let mut rec = pods[3].clone();
        rec.status = Some(PodStatus {
            message: Some("m".into()),
            ..Default::default()
        });
        let new = pod("new", "new", "i:1");
        let out = config.merge(API_SOURCE, set(&[rec, del, upd, new]));
        assert_eq!(
            summary(&out),
            [
                (PodOperation::Remove, names(&["gone"])),
                (PodOperation::Add, names(&["new"])),
                (PodOperation::Update, names(&["upd"])),
                (PodOperation::Delete, names(&["del"])),
                (PodOperation::Reconcile, names(&["rec"])),
            ]
        );
        assert!(out.iter().all(|u| u.source == API_SOURCE));
    }

    #[test]
    fn local_annotations_do_not_count_as_changes_and_are_kept() {
        let (mut config, _rx) = PodConfig::new(50);
        let mut a = pod("a", "ua", "i:1");
        config.merge(FILE_SOURCE, set(std::slice::from_ref(&a)));
        a.metadata.annotations = Some(
            [(
                CONFIG_SEEN_ANNOTATION.to_string(),
                "2000-01-01T00:00:00Z".to_string(),
            )]
            .into(),
        );
        assert!(config
            .merge(FILE_SOURCE, set(std::slice::from_ref(&a)))
            .is_empty());
        a.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("user".into(), "x".into());
        let out = config.merge(FILE_SOURCE, set(&[a]));
        assert_eq!(summary(&out), [(PodOperation::Update, names(&["a"]))]);
        let seen = annotation(&out[0].pods[0], CONFIG_SEEN_ANNOTATION).unwrap();
        assert_ne!(seen, "2000-01-01T00:00:00Z");
        assert_eq!(annotation(&out[0].pods[0], "user").as_deref(), Some("x"));
    }

    #[test]
    fn pods_handed_out_never_change() {
        let (mut config, _rx) = PodConfig::new(50);
        let out = config.merge(FILE_SOURCE, set(&[pod("a", "ua", "i:1")]));
        let handed_out = out[0].pods[0].clone();
        config.merge(FILE_SOURCE, set(&[pod("a", "ua", "i:2")]));
        let image = handed_out.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref();
        assert_eq!(image, Some("i:1"));
    }

    #[test]
    fn duplicate_full_names_keep_the_first() {
        let (mut config, _rx) = PodConfig::new(50);
        let first = pod("a", "u1", "i:1");
        let second = pod("a", "u2", "i:2");
        let out = config.merge(HTTP_SOURCE, set(&[first, second, pod("b", "u3", "i")]));
        assert_eq!(summary(&out), [(PodOperation::Add, names(&["a", "b"]))]);
        assert_eq!(out[0].pods[0].metadata.uid.as_deref(), Some("u1"));
    }

    #[test]
    fn incremental_source_operations() {
        let (mut config, _rx) = PodConfig::new(50);
        let op = |op, pods: &[Pod]| PodUpdate {
            pods: pods.iter().cloned().map(Arc::new).collect(),
            op,
            source: API_SOURCE.into(),
        };
        let a = pod("a", "ua", "i:1");
        let out = config.merge(API_SOURCE, op(PodOperation::Add, std::slice::from_ref(&a)));
        assert_eq!(summary(&out), [(PodOperation::Add, names(&["a"]))]);
        assert!(
            !config.seen_all_sources(&[API_SOURCE]),
            "only a Set marks a source seen"
        );
        let out = config.merge(
            API_SOURCE,
            op(PodOperation::Update, &[pod("a", "ua", "i:2")]),
        );
        assert_eq!(summary(&out), [(PodOperation::Update, names(&["a"]))]);
        let out = config.merge(
            API_SOURCE,
            op(PodOperation::Remove, std::slice::from_ref(&a)),
        );
        assert_eq!(summary(&out), [(PodOperation::Remove, names(&["a"]))]);
        assert!(config
            .merge(API_SOURCE, op(PodOperation::Remove, &[a]))
            .is_empty());
    }

    #[test]
    fn first_set_marks_the_source_seen_and_signals_with_an_empty_add() {
        let (mut config, _rx) = PodConfig::new(50);
        config.channel(FILE_SOURCE);
        config.channel(API_SOURCE);
        let ready = config.sources_ready();
        assert!(!ready.all_ready());
        let out = config.merge(FILE_SOURCE, set(&[]));
        assert_eq!(summary(&out), [(PodOperation::Add, vec![])]);
        assert!(config.seen_all_sources(&[FILE_SOURCE]));
        assert!(!config.seen_all_sources(&[FILE_SOURCE, API_SOURCE]));
        assert!(!ready.all_ready());
        assert!(
            config.merge(FILE_SOURCE, set(&[])).is_empty(),
            "only the first Set signals"
        );
        config.merge(API_SOURCE, set(&[]));
        assert!(ready.all_ready());
        assert!(ready.seen_all(&[FILE_SOURCE, API_SOURCE]));
    }

    #[test]
    fn seen_annotation_is_rfc3339_utc() {
        let seen = now_rfc3339_nano();
        assert!(seen.ends_with('Z'), "{seen}");
        assert_eq!(&seen[4..5], "-");
        assert_eq!(&seen[10..11], "T");
        assert!(seen.parse::<k8s_openapi::jiff::Timestamp>().is_ok());
    }

    #[test]
    fn thread_merges_source_channels_and_stops() {
        let (mut config, updates) = PodConfig::new(4);
        let file = config.channel(FILE_SOURCE);
        let again = config.channel(FILE_SOURCE);
        let http = config.channel(HTTP_SOURCE);
        let ready = config.sources_ready();
        let (stop_tx, stop) = bounded::<()>(0);
        let handle = config.start(stop.clone()).unwrap();
        let deadline = Duration::from_secs(10);

        assert!(send_or_stop(&file, set(&[pod("a", "ua", "i")]), &stop));
        let got = updates.recv_timeout(deadline).unwrap();
        assert_eq!(
            summary(std::slice::from_ref(&got)),
            [(PodOperation::Add, names(&["a"]))]
        );
        assert_eq!(got.source, FILE_SOURCE);
        // The channel's name decides the source, whatever the update says.
        assert!(send_or_stop(&http, set(&[]), &stop));
        let got = updates.recv_timeout(deadline).unwrap();
        assert_eq!(
            (got.op, got.source.as_str()),
            (PodOperation::Add, HTTP_SOURCE)
        );
        assert!(ready.all_ready());
        // A closed source is dropped from the select, the rest keep working.
        drop(http);
        assert!(send_or_stop(&again, set(&[]), &stop));
        let got = updates.recv_timeout(deadline).unwrap();
        assert_eq!(got.op, PodOperation::Remove);

        drop(stop_tx);
        handle.join().unwrap();
        assert!(
            !send_or_stop(&file, set(&[]), &stop),
            "stop wins once fired"
        );
    }
}
