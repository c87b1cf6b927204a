//! The Kubernetes API client: kubeconfig loading, a blocking REST client (reqwest + rustls),
//! client-side rate limiting, and the streaming watch decoder. Callers see only the
//! [`KubeClient`] trait (the verbs the kubelet uses), so every subsystem can be tested against
//! the recording fake.

pub mod client;
pub mod fake;
pub mod kubeconfig;
pub mod limited;
pub mod rate_limit;
mod request;
pub mod selector;
pub mod services;
pub mod stats;
pub mod store;
pub mod strategic;
pub(crate) mod tls;
pub mod watch;

pub use crate::util::tls::AcceptAnyServerCert;
pub use client::{RestClient, RetryPolicy};
pub use fake::{Call, FakeClient};
pub use kubeconfig::RestConfig;
pub use stats::RequestStats;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, VolumeAttachment};

/// Options of a list or watch call (the query parameters the kubelet uses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// `fieldSelector`, e.g. `spec.nodeName=node1`.
    pub field_selector: Option<String>,
    /// `labelSelector`.
    pub label_selector: Option<String>,
    /// `resourceVersion` to list at or watch from.
    pub resource_version: Option<String>,
    /// Server-side `timeoutSeconds` of a watch.
    pub timeout_seconds: Option<u32>,
    /// `allowWatchBookmarks`.
    pub allow_watch_bookmarks: bool,
}

/// A list response: the items and the list's resourceVersion.
#[derive(Debug, Clone, PartialEq)]
pub struct List<T> {
    /// The objects.
    pub items: Vec<T>,
    /// `metadata.resourceVersion` of the list, to watch from.
    pub resource_version: String,
}

/// One decoded watch event.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<T> {
    /// `ADDED`.
    Added(T),
    /// `MODIFIED`.
    Modified(T),
    /// `DELETED`.
    Deleted(T),
    /// `BOOKMARK`: only the resourceVersion matters.
    Bookmark {
        /// The bookmark's resourceVersion.
        resource_version: String,
    },
    /// `ERROR` with the server's `Status` (410 Gone among others).
    Error(ApiStatus),
}

/// The fields of a `meta/v1 Status` the kubelet acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiStatus {
    /// HTTP code (`410`, `404`...).
    pub code: u16,
    /// `reason` (`Expired`, `NotFound`, `AlreadyExists`, `Conflict`...).
    pub reason: String,
    /// `message`.
    pub message: String,
}

/// A stream of watch events read from one blocking response. Ends (`None`) when the server
/// closes the watch (e.g. after `timeoutSeconds`).
pub type WatchStream<T> = Box<dyn Iterator<Item = Result<WatchEvent<T>, ApiError>> + Send>;

/// `DeleteOptions` the kubelet sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
}

/// Errors of API calls.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with a `Status` error (or an error code with a body).
    #[error("{verb} {path}: {} ({}): {}", .status.code, .status.reason, .status.message)]
    Status {
        /// HTTP verb.
        verb: &'static str,
        /// Request path.
        path: String,
        /// The decoded status.
        status: ApiStatus,
        /// `Retry-After` seconds, when the server sent one.
        retry_after: Option<u64>,
    },
    /// The request could not be sent or the response not read (connection refused, reset, timeout).
    #[error("{verb} {path}: {message}")]
    Transport {
        /// HTTP verb.
        verb: &'static str,
        /// Request path.
        path: String,
        /// What failed.
        message: String,
        /// Whether it was a timeout.
        timeout: bool,
    },
    /// A response body did not decode.
    #[error("{what}: decoding response: {message}")]
    Decode {
        /// What was being decoded (path, or watch event position).
        what: String,
        /// The decoder's message.
        message: String,
    },
    /// The kubeconfig or client settings are unusable.
    #[error("{0}")]
    Config(String),
}

impl ApiError {
    /// The HTTP code of a `Status` error.
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(status.code),
            _ => None,
        }
    }
    /// 404.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }
    /// 409 with reason `AlreadyExists`.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, ApiError::Status { status, .. } if status.code == 409 && status.reason == "AlreadyExists")
    }
    /// 409 with reason `Conflict` (resourceVersion or precondition mismatch).
    pub fn is_conflict(&self) -> bool {
        matches!(self, ApiError::Status { status, .. } if status.code == 409 && status.reason != "AlreadyExists")
    }
    /// 410 Gone (a watch or list resourceVersion too old).
    pub fn is_gone(&self) -> bool {
        self.code() == Some(410)
    }
    /// Whether retrying later can help: 429, 5xx, transport errors.
    pub fn is_retriable(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => status.code == 429 || status.code >= 500,
            ApiError::Transport { .. } => true,
            ApiError::Decode { .. } | ApiError::Config(_) => false,
        }
    }
}

/// The API verbs the kubelet uses, one method per resource and verb. Implemented by the
/// REST client and by the recording fake.
pub trait KubeClient: Send + Sync {
    /// `GET /api/v1/pods` (all namespaces) with options.
    fn list_pods(&self, opts: &ListOptions) -> Result<List<Pod>, ApiError>;
    /// `GET /api/v1/pods?watch=1` with options.
    fn watch_pods(&self, opts: &ListOptions) -> Result<WatchStream<Pod>, ApiError>;
    /// `GET /api/v1/namespaces/{ns}/pods/{name}`.
    fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, ApiError>;
    /// `POST /api/v1/namespaces/{ns}/pods`.
    fn create_pod(&self, pod: &Pod) -> Result<Pod, ApiError>;
    /// `DELETE /api/v1/namespaces/{ns}/pods/{name}` with DeleteOptions.
    fn delete_pod(&self, namespace: &str, name: &str, opts: &DeleteOptions)
        -> Result<(), ApiError>;
    /// `PATCH .../pods/{name}/status` (strategic merge patch).
    fn patch_pod_status(
        &self,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<Pod, ApiError>;
    /// `GET /api/v1/nodes/{name}`.
    fn get_node(&self, name: &str) -> Result<Node, ApiError>;
    /// `POST /api/v1/nodes`.
    fn create_node(&self, node: &Node) -> Result<Node, ApiError>;
    /// `PATCH /api/v1/nodes/{name}` (strategic merge patch).
    fn patch_node(&self, name: &str, patch: &serde_json::Value) -> Result<Node, ApiError>;
    /// `PATCH /api/v1/nodes/{name}/status` (strategic merge patch).
    fn patch_node_status(&self, name: &str, patch: &serde_json::Value) -> Result<Node, ApiError>;
    /// `GET /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}`.
    fn get_lease(&self, namespace: &str, name: &str) -> Result<Lease, ApiError>;
    /// `POST .../leases`.
    fn create_lease(&self, lease: &Lease) -> Result<Lease, ApiError>;
    /// `PUT .../leases/{name}` (with the resourceVersion of the object given).
    fn update_lease(&self, lease: &Lease) -> Result<Lease, ApiError>;
    /// `POST /api/v1/namespaces/{ns}/events`.
    fn create_event(&self, event: &Event) -> Result<Event, ApiError>;
    /// `PATCH /api/v1/namespaces/{ns}/events/{name}` (strategic merge patch, for aggregated counts).
    fn patch_event(
        &self,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<Event, ApiError>;
    /// `GET /api/v1/namespaces/{ns}/configmaps/{name}`.
    fn get_config_map(&self, namespace: &str, name: &str) -> Result<ConfigMap, ApiError>;
    /// `GET /api/v1/namespaces/{ns}/secrets/{name}`.
    fn get_secret(&self, namespace: &str, name: &str) -> Result<Secret, ApiError>;
    /// `GET /api/v1/namespaces/{ns}/services`: the services of one namespace (their
    /// environment variables go into containers).
    fn list_services(&self, namespace: &str) -> Result<Vec<Service>, ApiError>;
    /// `GET /api/v1/services` (all namespaces) with options: the list the service informer
    /// starts from.
    fn list_all_services(&self, opts: &ListOptions) -> Result<List<Service>, ApiError>;
    /// `GET /api/v1/services?watch=1` with options.
    fn watch_services(&self, opts: &ListOptions) -> Result<WatchStream<Service>, ApiError>;
    /// `GET /apis/node.k8s.io/v1/runtimeclasses/{name}`: the runtime handler a pod's
    /// `runtimeClassName` stands for.
    fn get_runtime_class(&self, name: &str) -> Result<RuntimeClass, ApiError>;
    /// `GET /api/v1/namespaces/{ns}/persistentvolumeclaims/{name}`: the claim a pod's
    /// volume names (the node authorizer allows claims of pods bound to the node).
    fn get_persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PersistentVolumeClaim, ApiError>;
    /// `GET /api/v1/persistentvolumes/{name}`: the volume a claim is bound to.
    fn get_persistent_volume(&self, name: &str) -> Result<PersistentVolume, ApiError>;
    /// `GET /apis/storage.k8s.io/v1/csidrivers/{name}`: how a CSI driver wants to be used
    /// (`attachRequired`, `podInfoOnMount`, lifecycle modes).
    fn get_csi_driver(&self, name: &str) -> Result<CSIDriver, ApiError>;
    /// `GET /apis/storage.k8s.io/v1/csinodes/{name}`: the CSI drivers registered on a node.
    fn get_csi_node(&self, name: &str) -> Result<CSINode, ApiError>;
    /// `POST /apis/storage.k8s.io/v1/csinodes`.
    fn create_csi_node(&self, csi_node: &CSINode) -> Result<CSINode, ApiError>;
    /// `PUT /apis/storage.k8s.io/v1/csinodes/{name}` (409 on a stale resourceVersion).
    fn update_csi_node(&self, csi_node: &CSINode) -> Result<CSINode, ApiError>;
    /// `GET /apis/storage.k8s.io/v1/volumeattachments/{name}`: whether the external attacher
    /// attached a volume to this node (the node authorizer allows attachments to the node).
    fn get_volume_attachment(&self, name: &str) -> Result<VolumeAttachment, ApiError>;
    /// `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`: asks for a bound
    /// service account token; the answer is the request with `status.token` and
    /// `status.expirationTimestamp` filled in.
    fn create_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: &TokenRequest,
    ) -> Result<TokenRequest, ApiError>;
    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`: who a bearer token belongs to
    /// (the kubelet API's webhook authentication).
    fn create_token_review(&self, review: &TokenReview) -> Result<TokenReview, ApiError>;
    /// `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`: whether a user may do
    /// something (the kubelet API's webhook authorization).
    fn create_subject_access_review(
        &self,
        review: &SubjectAccessReview,
    ) -> Result<SubjectAccessReview, ApiError>;
}

/// The `certificates.k8s.io/v1` verbs of certificate bootstrap and rotation. Only the REST
/// client implements them: a certificate is always asked for from a real API server.
pub trait CsrClient: Send + Sync {
    /// `POST /apis/certificates.k8s.io/v1/certificatesigningrequests`.
    fn create_csr(
        &self,
        csr: &CertificateSigningRequest,
    ) -> Result<CertificateSigningRequest, ApiError>;
    /// `GET .../certificatesigningrequests/{name}`.
    fn get_csr(&self, name: &str) -> Result<CertificateSigningRequest, ApiError>;
    /// `GET .../certificatesigningrequests?watch=true&fieldSelector=metadata.name=<name>`
    /// from `resource_version`, ending after `timeout_seconds`.
    fn watch_csr(
        &self,
        name: &str,
        resource_version: &str,
        timeout_seconds: u32,
    ) -> Result<WatchStream<CertificateSigningRequest>, ApiError>;
}
