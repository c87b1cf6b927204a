//! Events about pods and the node (`Pulled`, `Created`, `Started`, `Failed`, `BackOff`...), with
//! upstream reasons and message texts. A [`Recorder`] decides where they go: the log when running
//! standalone, the API server once one is configured, a list in tests.

use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;

use crate::types::pod_key;

pub mod api;

pub use api::{ApiRecorder, EventQueue};

/// `Normal` or `Warning`, as in the Event API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Routine.
    Normal,
    /// Something went wrong.
    Warning,
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `namespace/name` of the pod, or the node name.
    pub object: String,
    /// Normal or Warning.
    pub kind: EventType,
    /// Upstream reason (`Started`, `Failed`, `BackOff`...).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

/// Where events go.
pub trait Recorder: Send + Sync {
    /// Records an event about a pod.
    fn pod_event(&self, pod: &Pod, kind: EventType, reason: &str, message: String);
    /// Records an event about a pod with annotations on the Event (upstream
    /// `AnnotatedEventf`); recorders that keep no annotations record a plain event.
    fn pod_event_annotated(
        &self,
        pod: &Pod,
        kind: EventType,
        reason: &str,
        message: String,
        annotations: &std::collections::BTreeMap<String, String>,
    ) {
        let _ = annotations;
        self.pod_event(pod, kind, reason, message);
    }
    /// Records an event about the node.
    fn node_event(&self, node_name: &str, kind: EventType, reason: &str, message: String) {
        log_event(&format!("node=\"{node_name}\""), kind, reason, &message);
    }
}

fn log_event(object: &str, kind: EventType, reason: &str, message: &str) {
    match kind {
        EventType::Normal => log::info!("event {object} reason={reason}: {message}"),
        EventType::Warning => log::warn!("event {object} reason={reason}: {message}"),
    }
}

/// Writes events to the log (`info` for Normal, `warn` for Warning).
#[derive(Debug, Default)]
pub struct LogRecorder;

impl Recorder for LogRecorder {
    fn pod_event(&self, pod: &Pod, kind: EventType, reason: &str, message: String) {
        log_event(&format!("pod=\"{}\"", pod_key(pod)), kind, reason, &message);
    }
}

/// Keeps events in memory, for tests.
#[derive(Debug, Default)]
pub struct FakeRecorder {
    events: Mutex<Vec<Event>>,
}

impl FakeRecorder {
    /// Everything recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl FakeRecorder {
    fn push(&self, object: String, kind: EventType, reason: &str, message: String) {
        if let Ok(mut events) = self.events.lock() {
            events.push(Event {
                object,
                kind,
                reason: reason.to_string(),
                message,
            });
        }
    }
}

impl Recorder for FakeRecorder {
    fn pod_event(&self, pod: &Pod, kind: EventType, reason: &str, message: String) {
        self.push(pod_key(pod), kind, reason, message);
    }
    fn node_event(&self, node_name: &str, kind: EventType, reason: &str, message: String) {
        self.push(node_name.to_string(), kind, reason, message);
    }
}
