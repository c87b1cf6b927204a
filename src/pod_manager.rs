//! The desired pods: what the sources currently want on this node, keyed by UID (upstream
//! `pod.Manager`, without mirror pods yet). Written only by the sync loop thread; read by
//! housekeeping on the same thread.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::types::{uid_of, PodUid};

/// The desired pods.
#[derive(Debug, Default)]
pub struct PodManager {
    pods: HashMap<PodUid, Arc<Pod>>,
}

impl PodManager {
    /// Adds or replaces a pod.
    pub fn add_or_update(&mut self, pod: &Arc<Pod>) {
        self.pods.insert(uid_of(pod), Arc::clone(pod));
    }

    /// Removes a pod.
    pub fn remove(&mut self, pod: &Pod) {
        self.pods.remove(&uid_of(pod));
    }

    /// A pod by UID.
    pub fn get(&self, uid: &PodUid) -> Option<&Arc<Pod>> {
        self.pods.get(uid)
    }

    /// Every desired pod.
    pub fn pods(&self) -> impl Iterator<Item = &Arc<Pod>> {
        self.pods.values()
    }

    /// UIDs of every desired pod.
    pub fn uids(&self) -> HashSet<PodUid> {
        self.pods.keys().cloned().collect()
    }

    /// How many pods are desired.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether no pod is desired.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}
