//! The calls the recording fake records: one variant per [`KubeClient`](crate::api::KubeClient)
//! verb, with the arguments tests assert on.

use serde_json::Value;

use crate::api::{DeleteOptions, ListOptions};

/// One recorded call, with the arguments tests assert on.
/// Struct variants name the object by `namespace` and `name` (cluster-scoped ones by `name`
/// alone); patches are recorded as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `list_pods` with its options.
    ListPods(ListOptions),
    /// `watch_pods` with its options.
    WatchPods(ListOptions),
    /// `get_pod`.
    GetPod { namespace: String, name: String },
    /// `create_pod` (the name as sent, empty with `generateName`).
    CreatePod { namespace: String, name: String },
    /// `delete_pod` with its options.
    DeletePod {
        namespace: String,
        name: String,
        opts: DeleteOptions,
    },
    /// `patch_pod_status` with the merge patch.
    PatchPodStatus {
        namespace: String,
        name: String,
        patch: Value,
    },
    /// `get_node` of the named node.
    GetNode(String),
    /// `create_node` of the named node.
    CreateNode(String),
    /// `patch_node` with the merge patch.
    PatchNode { name: String, patch: Value },
    /// `patch_node_status` with the merge patch.
    PatchNodeStatus { name: String, patch: Value },
    /// `get_lease`.
    GetLease { namespace: String, name: String },
    /// `create_lease`.
    CreateLease { namespace: String, name: String },
    /// `update_lease`, with the resourceVersion the update was based on.
    UpdateLease {
        namespace: String,
        name: String,
        resource_version: Option<String>,
    },
    /// `create_event`, with what a reader of `kubectl get events` would check.
    CreateEvent {
        namespace: String,
        reason: String,
        message: String,
    },
    /// `patch_event` with the merge patch.
    PatchEvent {
        namespace: String,
        name: String,
        patch: Value,
    },
    /// `get_config_map`.
    GetConfigMap { namespace: String, name: String },
    /// `get_secret`.
    GetSecret { namespace: String, name: String },
    /// `list_services` of a namespace.
    ListServices { namespace: String },
    /// `get_runtime_class`.
    GetRuntimeClass(String),
    /// `get_persistent_volume_claim`.
    GetPersistentVolumeClaim { namespace: String, name: String },
    /// `get_persistent_volume`.
    GetPersistentVolume(String),
    /// `get_csi_driver`.
    GetCsiDriver(String),
    /// `get_csi_node`.
    GetCsiNode(String),
    /// `create_csi_node`, with the object sent.
    CreateCsiNode(Box<k8s_openapi::api::storage::v1::CSINode>),
    /// `update_csi_node`, with the object sent.
    UpdateCsiNode(Box<k8s_openapi::api::storage::v1::CSINode>),
    /// `get_volume_attachment`.
    GetVolumeAttachment(String),
    /// `list_all_services`.
    ListAllServices,
    /// `watch_services`.
    WatchServices,
    /// `create_token` for a service account, with the request's audiences and lifetime.
    CreateToken {
        namespace: String,
        service_account: String,
        audiences: Vec<String>,
        expiration_seconds: Option<i64>,
    },
    /// `create_token_review`.
    CreateTokenReview,
    /// `create_subject_access_review`.
    CreateSubjectAccessReview,
}
