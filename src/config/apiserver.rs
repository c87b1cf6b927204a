//! The API server pod source (upstream `config/apiserver.go` with its reflector), run on
//! thread `source-apiserver`: list the pods bound to this node
//! (`fieldSelector=spec.nodeName=<node>`), send them as one `Set`, then watch from the list's
//! resourceVersion and send each change as it comes (`Add` for ADDED, `Update` for MODIFIED,
//! `Remove` for DELETED).
//!
//! Recovery, as the upstream reflector does it:
//! - the server ends the watch (its `timeoutSeconds`, a dropped connection): watch again from
//!   the last resourceVersion seen (bookmarks included);
//! - `410 Gone` (as an HTTP status or an `ERROR` event): list again and send a `Set`; the mux
//!   diffs it against what it has, so nothing is added twice or lost;
//! - a malformed event: logged with its position, then watch again from the last good
//!   resourceVersion;
//! - any other failure: wait with exponential back-off (0.8 s doubling to 30 s) and retry.
//!
//! A watch read blocks until the server sends something or closes the watch (at most its
//! `timeoutSeconds`); stop is checked between events, so at shutdown an idle watch may still be
//! open when the process exits.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::api::{ApiError, KubeClient, ListOptions, WatchEvent};
use crate::config::mux::send_or_stop;
use crate::config::update::{PodOperation, PodUpdate, API_SOURCE};
use crate::util::backoff::Exponential;

/// First retry delay after a failed list or watch (upstream reflector: 800 ms).
const BACKOFF_INITIAL: Duration = Duration::from_millis(800);
/// Retry delay cap (upstream reflector: 30 s).
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Server-side watch timeout range in seconds; a random value in it spreads reconnects of many
/// nodes (upstream: 5 to 10 minutes).
const WATCH_TIMEOUT_SECS: (u32, u32) = (300, 600);

/// Why one watch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// The server closed it; watch again from the last resourceVersion.
    Closed,
    /// The resourceVersion is too old: list again.
    Gone,
    /// A malformed event or a server error event; watch again after a back-off.
    Failed,
    /// Stop fired or the mux is gone.
    Stopped,
}

/// Where a source's updates go.
pub trait PodUpdateSink: Send + Sync {
    /// Delivers `update`; false when the source should exit (stopped, or nobody listens).
    fn deliver(&self, update: PodUpdate, stop: &Receiver<()>) -> bool;
}

impl PodUpdateSink for Sender<PodUpdate> {
    fn deliver(&self, update: PodUpdate, stop: &Receiver<()>) -> bool {
        send_or_stop(self, update, stop)
    }
}

/// The API server source for one node.
pub struct ApiserverSource {
    client: Arc<dyn KubeClient>,
    node_name: String,
    /// Server-side watch timeout; tests shorten it.
    watch_timeout_secs: u32,
}

impl ApiserverSource {
    /// A source for the pods bound to `node_name`.
    pub fn new(client: Arc<dyn KubeClient>, node_name: &str) -> Self {
        let (lo, hi) = WATCH_TIMEOUT_SECS;
        // No randomness crate: the low bits of the clock are random enough to spread reconnects.
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        ApiserverSource {
            client,
            node_name: node_name.to_string(),
            watch_timeout_secs: lo + jitter % (hi - lo),
        }
    }

    /// Sets the server-side watch timeout (tests).
    pub fn with_watch_timeout(mut self, secs: u32) -> Self {
        self.watch_timeout_secs = secs;
        self
    }

    /// A source for the pods of every node (hollow nodes demultiplex it by
    /// `spec.nodeName`).
    pub fn all_nodes(client: Arc<dyn KubeClient>) -> Self {
        ApiserverSource::new(client, "")
    }

    fn selector(&self) -> Option<String> {
        (!self.node_name.is_empty()).then(|| format!("spec.nodeName={}", self.node_name))
    }

    /// Spawns thread `source-apiserver` running [`run`](ApiserverSource::run).
    pub fn start(
        self,
        updates: Sender<PodUpdate>,
        stop: Receiver<()>,
    ) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("source-apiserver".into())
            .spawn(move || self.run(updates, stop))
    }

    /// Lists the node's pods: a `Set` update and the list's resourceVersion.
    pub fn relist(&self) -> Result<(PodUpdate, String), ApiError> {
        let list = self.client.list_pods(&ListOptions {
            field_selector: self.selector(),
            ..Default::default()
        })?;
        let update = PodUpdate {
            pods: list.items.into_iter().map(Arc::new).collect(),
            op: PodOperation::Set,
            source: API_SOURCE.to_string(),
        };
        Ok((update, list.resource_version))
    }

    /// Watches from `*resource_version`, sending each change, until the watch ends; keeps
    /// `*resource_version` at the last event seen.
    pub fn watch_once(
        &self,
        resource_version: &mut String,
        updates: &dyn PodUpdateSink,
        stop: &Receiver<()>,
    ) -> Result<WatchEnd, ApiError> {
        let stream = self.client.watch_pods(&ListOptions {
            field_selector: self.selector(),
            resource_version: Some(resource_version.clone()),
            timeout_seconds: Some(self.watch_timeout_secs),
            allow_watch_bookmarks: true,
            ..Default::default()
        })?;
        for event in stream {
            if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                return Ok(WatchEnd::Stopped);
            }
            let (op, pod) = match event {
                Ok(WatchEvent::Added(p)) => (PodOperation::Add, p),
                Ok(WatchEvent::Modified(p)) => (PodOperation::Update, p),
                Ok(WatchEvent::Deleted(p)) => (PodOperation::Remove, p),
                Ok(WatchEvent::Bookmark {
                    resource_version: rv,
                }) => {
                    *resource_version = rv;
                    continue;
                }
                Ok(WatchEvent::Error(status)) if status.code == 410 => {
                    log::info!(
                        "pod watch from resourceVersion {resource_version} expired: {}",
                        status.message
                    );
                    return Ok(WatchEnd::Gone);
                }
                Ok(WatchEvent::Error(status)) => {
                    log::warn!(
                        "pod watch error event: {} ({}): {}",
                        status.code,
                        status.reason,
                        status.message
                    );
                    return Ok(WatchEnd::Failed);
                }
                Err(e) => {
                    log::error!(
                        "pod watch: {e}; watching again from resourceVersion {resource_version}"
                    );
                    return Ok(WatchEnd::Failed);
                }
            };
            if let Some(rv) = pod.metadata.resource_version.clone() {
                *resource_version = rv;
            }
            let update = PodUpdate {
                pods: vec![Arc::new(pod)],
                op,
                source: API_SOURCE.to_string(),
            };
            if !updates.deliver(update, stop) {
                return Ok(WatchEnd::Stopped);
            }
        }
        Ok(WatchEnd::Closed)
    }

    /// List, then watch, until `stop` fires; recovers as the module docs describe.
    pub fn run(self, updates: Sender<PodUpdate>, stop: Receiver<()>) {
        self.run_into(&updates, stop);
    }

    /// Like [`run`](ApiserverSource::run), delivering to any sink.
    pub fn run_into(self, updates: &dyn PodUpdateSink, stop: Receiver<()>) {
        log::info!(
            "watching pods bound to node {} on the API server",
            self.node_name
        );
        let mut backoff = Exponential::new(BACKOFF_INITIAL, BACKOFF_MAX);
        let mut resource_version: Option<String> = None;
        loop {
            let started = std::time::Instant::now();
            let result = match resource_version.as_mut() {
                None => self.relist().map(|(update, rv)| {
                    log::debug!("listed {} pods at resourceVersion {rv}", update.pods.len());
                    (Some(update), Some(rv), WatchEnd::Closed)
                }),
                Some(rv) => self
                    .watch_once(rv, updates, &stop)
                    .map(|end| (None, None, end)),
            };
            let wait = match result {
                Ok((Some(set), Some(rv), _)) => {
                    if !updates.deliver(set, &stop) {
                        break;
                    }
                    resource_version = Some(rv);
                    backoff.reset();
                    None
                }
                Ok((_, _, WatchEnd::Stopped)) => break,
                Ok((_, _, WatchEnd::Gone)) => {
                    resource_version = None;
                    None
                }
                // A watch the server closes at once (overloaded, restarting) is retried with
                // back-off rather than in a hot loop.
                Ok((_, _, WatchEnd::Closed)) if started.elapsed() < Duration::from_secs(1) => {
                    Some(backoff.next_delay())
                }
                Ok((_, _, WatchEnd::Closed)) => {
                    backoff.reset();
                    None
                }
                Ok((_, _, WatchEnd::Failed)) => Some(backoff.next_delay()),
                Err(e) if e.is_gone() => {
                    resource_version = None;
                    None
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    log::warn!("pods of node {}: {e}; retrying in {wait:?}", self.node_name);
                    Some(wait)
                }
            };
            if let Some(wait) = wait {
                match stop.recv_timeout(wait) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            } else if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                break;
            }
        }
        log::info!("stopped watching pods on the API server");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiStatus, FakeClient};
    use k8s_openapi::api::core::v1::{Pod, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, node: &str, rv: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn source(fake: &Arc<FakeClient>) -> ApiserverSource {
        ApiserverSource::new(fake.clone(), "node1").with_watch_timeout(5)
    }

    #[test]
    fn relist_sends_the_pods_of_this_node_as_a_set() {
        let fake = Arc::new(FakeClient::new());
        fake.insert_pod(&pod("mine", "node1", "")).unwrap();
        fake.insert_pod(&pod("theirs", "node2", "")).unwrap();
        let (update, rv) = source(&fake).relist().unwrap();
        assert_eq!(update.op, PodOperation::Set);
        assert_eq!(update.source, API_SOURCE);
        let names: Vec<_> = update
            .pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["mine"]);
        assert!(!rv.is_empty());
        let opts = match &fake.calls()[0] {
            crate::api::Call::ListPods(o) => o.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(opts.field_selector.as_deref(), Some("spec.nodeName=node1"));
    }

    #[test]
    fn watch_events_become_updates_and_track_the_resource_version() {
        let fake = Arc::new(FakeClient::new());
        fake.push_watch_event(WatchEvent::Added(pod("a", "node1", "11")));
        fake.push_watch_event(WatchEvent::Modified(pod("a", "node1", "12")));
        fake.push_watch_event(WatchEvent::Bookmark {
            resource_version: "15".into(),
        });
        fake.push_watch_event(WatchEvent::Deleted(pod("a", "node1", "16")));
        let (tx, rx) = crossbeam_channel::bounded(10);
        let (_stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let mut rv = "10".to_string();
        let end = source(&fake).watch_once(&mut rv, &tx, &stop).unwrap();
        assert_eq!(end, WatchEnd::Closed);
        assert_eq!(rv, "16");
        let ops: Vec<PodOperation> = rx.try_iter().map(|u| u.op).collect();
        assert_eq!(
            ops,
            [
                PodOperation::Add,
                PodOperation::Update,
                PodOperation::Remove
            ]
        );
        match &fake.calls()[0] {
            crate::api::Call::WatchPods(o) => {
                assert_eq!(o.resource_version.as_deref(), Some("10"));
                assert!(o.allow_watch_bookmarks);
                assert_eq!(o.timeout_seconds, Some(5));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gone_and_error_events_end_the_watch() {
        let fake = Arc::new(FakeClient::new());
        let (tx, _rx) = crossbeam_channel::bounded(10);
        let (_stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let mut rv = "3".to_string();
        fake.push_watch_event(WatchEvent::Error(ApiStatus {
            code: 410,
            reason: "Expired".into(),
            message: "too old".into(),
        }));
        assert_eq!(
            source(&fake).watch_once(&mut rv, &tx, &stop).unwrap(),
            WatchEnd::Gone
        );
        fake.push_watch_event(WatchEvent::Error(ApiStatus {
            code: 500,
            reason: "InternalError".into(),
            message: "x".into(),
        }));
        assert_eq!(
            source(&fake).watch_once(&mut rv, &tx, &stop).unwrap(),
            WatchEnd::Failed
        );
        assert_eq!(rv, "3");
    }

    #[test]
    fn run_relists_after_gone_without_losing_pods() {
        let fake = Arc::new(FakeClient::new());
        fake.insert_pod(&pod("a", "node1", "")).unwrap();
        fake.push_watch_event(WatchEvent::Error(ApiStatus {
            code: 410,
            reason: "Expired".into(),
            message: "too old".into(),
        }));
        let (tx, rx) = crossbeam_channel::bounded(10);
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let src = source(&fake);
        let handle = std::thread::spawn(move || src.run(tx, stop));
        let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        drop(stop_tx);
        handle.join().unwrap();
        assert_eq!((first.op, first.pods.len()), (PodOperation::Set, 1));
        assert_eq!((second.op, second.pods.len()), (PodOperation::Set, 1));
    }
}
