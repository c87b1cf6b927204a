//! The recording fake: an in-memory [`KubeClient`](super::KubeClient) for unit tests of the
//! subsystems that talk to the API server. It stores pods, nodes, leases, events, config
//! maps, secrets, services and runtime classes by namespace and name with a monotonic
//! resourceVersion (`store.rs`), records every call as a typed [`Call`], applies strategic
//! merge patches, and can be told to fail the next call of a verb. Tests hold it in an `Arc`
//! and inspect it afterwards.
//!
//! Semantics follow the API server where tests rely on them: create of an existing name is
//! 409 AlreadyExists, get/patch/delete of a missing object 404 NotFound, a lease update with a
//! stale resourceVersion 409 Conflict, a `/status` patch changes only `status`, and a
//! `metadata.uid` in a patch or a delete precondition must match. The verbs are in
//! `verbs.rs`, the recorded calls in `call.rs`, tokens and reviews in `auth.rs`.
//!
//! Which fake to use: this one for unit tests of kubelet logic, in-process and without HTTP,
//! that inspect the calls made. The API server double (`tests/support/apiserver`, an HTTPS
//! server) for anything exercising the real HTTP client ([`RestClient`](super::RestClient)),
//! watches, patch semantics as kube-apiserver applies them, admission such as
//! NodeRestriction, or the binary end to end.

mod auth;
mod call;
mod verbs;

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::authentication::v1::{TokenRequest, UserInfo};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, VolumeAttachment};

use super::store::Objects;
use super::{ApiError, WatchEvent};
pub use call::Call;

/// What the fake holds, behind one lock.
#[derive(Default)]
struct Store {
    /// The last resourceVersion handed out, shared by all kinds.
    rv: u64,
    pods: Objects<Pod>,
    nodes: Objects<Node>,
    leases: Objects<Lease>,
    events: Objects<Event>,
    config_maps: Objects<ConfigMap>,
    secrets: Objects<Secret>,
    services: Objects<Service>,
    runtime_classes: Objects<RuntimeClass>,
    claims: Objects<PersistentVolumeClaim>,
    volumes: Objects<PersistentVolume>,
    csi_drivers: Objects<CSIDriver>,
    csi_nodes: Objects<CSINode>,
    volume_attachments: Objects<VolumeAttachment>,
    /// Token requests received, in order.
    token_requests: Vec<(String, String, TokenRequest)>,
    /// Tokens issued so far.
    tokens: u64,
    /// Events the next `watch_pods` returns.
    watch_events: VecDeque<WatchEvent<Pod>>,
    /// One-shot errors by verb name, oldest first.
    errors: Vec<(&'static str, ApiError)>,
    /// Bearer tokens TokenReview accepts, with their user.
    review_tokens: Vec<(String, UserInfo)>,
    /// Users every SubjectAccessReview allows.
    allowed_users: Vec<String>,
}

/// The in-memory fake API client.
#[derive(Default)]
pub struct FakeClient {
    store: Mutex<Store>,
    calls: Mutex<Vec<Call>>,
}

impl std::fmt::Debug for FakeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeClient").finish_non_exhaustive()
    }
}

impl FakeClient {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `call`, then returns the error injected for `verb`, if any, or the store.
    fn begin(&self, verb: &'static str, call: Call) -> Result<MutexGuard<'_, Store>, ApiError> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(call);
        let mut store = self.store();
        match store.errors.iter().position(|(v, _)| *v == verb) {
            Some(i) => Err(store.errors.remove(i).1),
            None => Ok(store),
        }
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Makes the next call of `verb_name` (the trait method's name, e.g. `"patch_pod_status"`)
    /// fail with `error`. Several errors for one verb are returned in order, one per call.
    pub fn inject_error(&self, verb_name: &'static str, error: ApiError) {
        self.store().errors.push((verb_name, error));
    }

    /// Queues an event for the next `watch_pods`.
    pub fn push_watch_event(&self, event: WatchEvent<Pod>) {
        self.store().watch_events.push_back(event);
    }

    /// Stores a pod as if created (not recorded as a call); returns it as stored.
    pub fn insert_pod(&self, pod: &Pod) -> Result<Pod, ApiError> {
        let store = &mut *self.store();
        store.pods.create(pod, &mut store.rv)
    }

    /// Stores a node as if created (not recorded as a call).
    pub fn insert_node(&self, node: &Node) -> Result<Node, ApiError> {
        let store = &mut *self.store();
        store.nodes.create(node, &mut store.rv)
    }

    /// Stores a config map as if created (not recorded as a call); returns it as stored.
    pub fn insert_config_map(&self, config_map: &ConfigMap) -> Result<ConfigMap, ApiError> {
        let store = &mut *self.store();
        store.config_maps.create(config_map, &mut store.rv)
    }

    /// Stores a secret as if created (not recorded as a call); returns it as stored.
    pub fn insert_secret(&self, secret: &Secret) -> Result<Secret, ApiError> {
        let store = &mut *self.store();
        store.secrets.create(secret, &mut store.rv)
    }

    /// Stores a RuntimeClass as if created (not recorded as a call).
    pub fn insert_runtime_class(&self, class: &RuntimeClass) -> Result<RuntimeClass, ApiError> {
        let store = &mut *self.store();
        store.runtime_classes.create(class, &mut store.rv)
    }

    /// Stores a PersistentVolumeClaim as if created (not recorded as a call).
    pub fn insert_persistent_volume_claim(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> Result<PersistentVolumeClaim, ApiError> {
        let store = &mut *self.store();
        store.claims.create(claim, &mut store.rv)
    }

    /// Replaces a stored PersistentVolumeClaim (as the PV controller binding it would).
    pub fn update_persistent_volume_claim(
        &self,
        claim: &PersistentVolumeClaim,
    ) -> Result<PersistentVolumeClaim, ApiError> {
        let store = &mut *self.store();
        store.claims.update(claim, &mut store.rv)
    }

    /// Stores a PersistentVolume as if created (not recorded as a call).
    pub fn insert_persistent_volume(
        &self,
        volume: &PersistentVolume,
    ) -> Result<PersistentVolume, ApiError> {
        let store = &mut *self.store();
        store.volumes.create(volume, &mut store.rv)
    }

    /// Stores a CSIDriver as if created (not recorded as a call).
    pub fn insert_csi_driver(&self, driver: &CSIDriver) -> Result<CSIDriver, ApiError> {
        let store = &mut *self.store();
        store.csi_drivers.create(driver, &mut store.rv)
    }

    /// Stores a VolumeAttachment, creating or replacing it (as the external attacher would).
    pub fn put_volume_attachment(
        &self,
        attachment: &VolumeAttachment,
    ) -> Result<VolumeAttachment, ApiError> {
        let store = &mut *self.store();
        let name = attachment.metadata.name.as_deref().unwrap_or_default();
        if store.volume_attachments.get("", name).is_ok() {
            let mut attachment = attachment.clone();
            attachment.metadata.resource_version = None;
            store.volume_attachments.update(&attachment, &mut store.rv)
        } else {
            store.volume_attachments.create(attachment, &mut store.rv)
        }
    }

    /// The CSINode stored under `name`, if any (not recorded as a call).
    pub fn csi_node(&self, name: &str) -> Option<CSINode> {
        self.store().csi_nodes.get("", name).ok()
    }

    /// Stores a service.
    pub fn insert_service(&self, service: &Service) -> Result<Service, ApiError> {
        let store = &mut *self.store();
        store.services.create(service, &mut store.rv)
    }

    /// Creates the config map, or replaces the stored one of that name (a user's edit).
    pub fn put_config_map(&self, config_map: ConfigMap) {
        let store = &mut *self.store();
        let (namespace, name) = Objects::<ConfigMap>::key_of(&config_map);
        if store.config_maps.find(&namespace, &name).is_some() {
            let mut updated = config_map;
            updated.metadata.resource_version = None;
            let _ = store.config_maps.update(&updated, &mut store.rv);
        } else {
            let _ = store.config_maps.create(&config_map, &mut store.rv);
        }
    }

    /// Every `create_token` call so far: namespace, service account and the request.
    pub fn token_requests(&self) -> Vec<(String, String, TokenRequest)> {
        self.store().token_requests.clone()
    }

    /// How many tokens `create_token` has issued.
    pub fn tokens_issued(&self) -> u64 {
        self.store().tokens
    }

    /// Makes TokenReview accept `token` as `user` in `groups`.
    pub fn accept_token(&self, token: &str, user: &str, groups: &[&str]) {
        let info = UserInfo {
            username: Some(user.into()),
            groups: Some(groups.iter().map(|g| g.to_string()).collect()),
            ..UserInfo::default()
        };
        self.store().review_tokens.push((token.into(), info));
    }

    /// Makes every SubjectAccessReview for `user` allowed.
    pub fn allow_user(&self, user: &str) {
        self.store().allowed_users.push(user.into());
    }

    /// The stored pod, if any.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.store().pods.find(namespace, name).cloned()
    }

    /// All stored pods, by namespace and name.
    pub fn pods(&self) -> Vec<Pod> {
        self.store().pods.iter().cloned().collect()
    }

    /// The stored node, if any.
    pub fn node(&self, name: &str) -> Option<Node> {
        self.store().nodes.find("", name).cloned()
    }

    /// The stored lease, if any.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Lease> {
        self.store().leases.find(namespace, name).cloned()
    }

    /// All stored events, by namespace and name.
    pub fn events(&self) -> Vec<Event> {
        self.store().events.iter().cloned().collect()
    }

    /// The last resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.store().rv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{KubeClient, ListOptions};

    #[test]
    fn injected_errors_are_one_shot_and_per_verb() {
        let fake = FakeClient::new();
        let boom = || crate::api::store::status_error("GET", 500, "InternalError", "boom".into());
        fake.inject_error("list_pods", boom());
        fake.inject_error("list_pods", boom());
        assert!(fake.get_node("n").unwrap_err().is_not_found());
        assert_eq!(
            fake.list_pods(&ListOptions::default()).unwrap_err().code(),
            Some(500)
        );
        assert_eq!(
            fake.list_pods(&ListOptions::default()).unwrap_err().code(),
            Some(500)
        );
        assert!(fake.list_pods(&ListOptions::default()).is_ok());
        assert_eq!(fake.calls().len(), 4);
    }
}
