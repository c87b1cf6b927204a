//! The message every pod source sends to the PodConfig mux, and the mux to the sync loop
//! (upstream `kubetypes.PodUpdate`).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

/// Name of the manifest-directory source (`kubernetes.io/config.source: file`).
pub const FILE_SOURCE: &str = "file";
/// Name of the manifest-URL source (`kubernetes.io/config.source: http`).
pub const HTTP_SOURCE: &str = "http";
/// Name of the API server source (`kubernetes.io/config.source: api`).
pub const API_SOURCE: &str = "api";

/// Annotation naming the source a pod came from.
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Annotation holding a static pod's hash (its UID).
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// Annotation recording when the kubelet first saw a pod (RFC 3339 with nanoseconds).
pub const CONFIG_SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";
/// Annotation marking a mirror pod (the API copy of a static pod).
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// What a [`PodUpdate`] asks for. Sources send `Set` (the full set they know) or the
/// incremental `Add`/`Update`/`Delete`/`Remove`; the mux sends only incremental operations
/// (plus `Reconcile`) to the sync loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodOperation {
    /// The complete set of pods of one source; pods missing from it are removed.
    Set,
    /// Pods new to the kubelet.
    Add,
    /// Pods whose spec (or other kubelet-relevant field) changed.
    Update,
    /// Pods to terminate gracefully (API: `deletionTimestamp` set).
    Delete,
    /// Pods gone from their source: stop and forget them.
    Remove,
    /// Pods whose status or non-spec fields changed; the kubelet only reconciles status.
    Reconcile,
}

/// A batch of pods from one source with one operation.
#[derive(Debug, Clone)]
pub struct PodUpdate {
    /// The pods; shared, since the mux, the kubelet and the workers all read them.
    pub pods: Vec<Arc<Pod>>,
    /// What to do with them.
    pub op: PodOperation,
    /// The source name (`file`, `http`, `api`).
    pub source: String,
}
