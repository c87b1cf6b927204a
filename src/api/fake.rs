//! An in-memory [`KubeClient`] for unit tests of the subsystems that talk to the API server.
//! It stores pods, nodes, leases, events, config maps and secrets by namespace and name with a monotonic
//! resourceVersion, records every call as a typed [`Call`], applies merge patches, and can be
//! told to fail the next call of a verb. Tests hold it in an `Arc` and inspect it afterwards.
//!
//! Semantics follow the API server where tests rely on them: create of an existing name is
//! 409 AlreadyExists, get/patch/delete of a missing object 404 NotFound, a lease update with a
//! stale resourceVersion 409 Conflict, a `/status` patch changes only `status`, and a
//! `metadata.uid` in a patch or a delete precondition must match. `create_token` needs no
//! service account: it answers with a deterministic fake token (`fake-token-<ns>-<sa>-<n>`,
//! `n` counting the tokens issued) expiring `expirationSeconds` (default 3600) from now.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::authentication::v1::{
    TokenRequest, TokenRequestStatus, TokenReview, TokenReviewStatus, UserInfo,
};
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewStatus};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Secret, Service};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::selector::{matches_fields, matches_labels};
use super::store::{status_error, Objects};
use super::{ApiError, DeleteOptions, KubeClient, List, ListOptions, WatchEvent, WatchStream};

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

/// Lifetime of a token whose request names none (the API's default).
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

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

/// Whether a pod is selected by the list options' field and label selectors.
fn selects(pod: &Pod, opts: &ListOptions) -> bool {
    let fields_ok = opts
        .field_selector
        .as_deref()
        .is_none_or(|s| serde_json::to_value(pod).is_ok_and(|json| matches_fields(&json, s)));
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    fields_ok
        && opts
            .label_selector
            .as_deref()
            .is_none_or(|s| matches_labels(&labels, s))
}

impl KubeClient for FakeClient {
    fn list_pods(&self, opts: &ListOptions) -> Result<List<Pod>, ApiError> {
        let store = self.begin("list_pods", Call::ListPods(opts.clone()))?;
        let items = store
            .pods
            .iter()
            .filter(|p| selects(p, opts))
            .cloned()
            .collect();
        Ok(List {
            items,
            resource_version: store.rv.to_string(),
        })
    }

    fn watch_pods(&self, opts: &ListOptions) -> Result<WatchStream<Pod>, ApiError> {
        let mut store = self.begin("watch_pods", Call::WatchPods(opts.clone()))?;
        let events: Vec<_> = store.watch_events.drain(..).map(Ok).collect();
        Ok(Box::new(events.into_iter()))
    }

    fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, ApiError> {
        let call = Call::GetPod {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.begin("get_pod", call)?.pods.get(namespace, name)
    }

    fn create_pod(&self, pod: &Pod) -> Result<Pod, ApiError> {
        let (namespace, name) = Objects::key_of(pod);
        let store = &mut *self.begin("create_pod", Call::CreatePod { namespace, name })?;
        store.pods.create(pod, &mut store.rv)
    }

    fn delete_pod(
        &self,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(), ApiError> {
        let call = Call::DeletePod {
            namespace: namespace.into(),
            name: name.into(),
            opts: opts.clone(),
        };
        let store = &mut *self.begin("delete_pod", call)?;
        let uid = opts.precondition_uid.as_deref();
        store
            .pods
            .delete(namespace, name, uid, &mut store.rv)
            .map(drop)
    }

    fn patch_pod_status(
        &self,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Pod, ApiError> {
        let call = Call::PatchPodStatus {
            namespace: namespace.into(),
            name: name.into(),
            patch: patch.clone(),
        };
        let store = &mut *self.begin("patch_pod_status", call)?;
        store
            .pods
            .patch(namespace, name, patch, true, &mut store.rv)
    }

    fn get_node(&self, name: &str) -> Result<Node, ApiError> {
        self.begin("get_node", Call::GetNode(name.into()))?
            .nodes
            .get("", name)
    }

    fn create_node(&self, node: &Node) -> Result<Node, ApiError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let store = &mut *self.begin("create_node", Call::CreateNode(name))?;
        store.nodes.create(node, &mut store.rv)
    }

    fn patch_node(&self, name: &str, patch: &Value) -> Result<Node, ApiError> {
        let call = Call::PatchNode {
            name: name.into(),
            patch: patch.clone(),
        };
        let store = &mut *self.begin("patch_node", call)?;
        store.nodes.patch("", name, patch, false, &mut store.rv)
    }

    fn patch_node_status(&self, name: &str, patch: &Value) -> Result<Node, ApiError> {
        let call = Call::PatchNodeStatus {
            name: name.into(),
            patch: patch.clone(),
        };
        let store = &mut *self.begin("patch_node_status", call)?;
        store.nodes.patch("", name, patch, true, &mut store.rv)
    }

    fn get_lease(&self, namespace: &str, name: &str) -> Result<Lease, ApiError> {
        let call = Call::GetLease {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.begin("get_lease", call)?.leases.get(namespace, name)
    }

    fn create_lease(&self, lease: &Lease) -> Result<Lease, ApiError> {
        let (namespace, name) = Objects::key_of(lease);
        let store = &mut *self.begin("create_lease", Call::CreateLease { namespace, name })?;
        store.leases.create(lease, &mut store.rv)
    }

    fn update_lease(&self, lease: &Lease) -> Result<Lease, ApiError> {
        let (namespace, name) = Objects::key_of(lease);
        let resource_version = lease.metadata.resource_version.clone();
        let call = Call::UpdateLease {
            namespace,
            name,
            resource_version,
        };
        let store = &mut *self.begin("update_lease", call)?;
        store.leases.update(lease, &mut store.rv)
    }

    fn create_event(&self, event: &Event) -> Result<Event, ApiError> {
        let (namespace, _) = Objects::key_of(event);
        let reason = event.reason.clone().unwrap_or_default();
        let message = event.message.clone().unwrap_or_default();
        let store = &mut *self.begin(
            "create_event",
            Call::CreateEvent {
                namespace,
                reason,
                message,
            },
        )?;
        store.events.create(event, &mut store.rv)
    }

    fn patch_event(&self, namespace: &str, name: &str, patch: &Value) -> Result<Event, ApiError> {
        let call = Call::PatchEvent {
            namespace: namespace.into(),
            name: name.into(),
            patch: patch.clone(),
        };
        let store = &mut *self.begin("patch_event", call)?;
        store
            .events
            .patch(namespace, name, patch, false, &mut store.rv)
    }

    fn get_config_map(&self, namespace: &str, name: &str) -> Result<ConfigMap, ApiError> {
        let call = Call::GetConfigMap {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.begin("get_config_map", call)?
            .config_maps
            .get(namespace, name)
    }

    fn get_secret(&self, namespace: &str, name: &str) -> Result<Secret, ApiError> {
        let call = Call::GetSecret {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.begin("get_secret", call)?.secrets.get(namespace, name)
    }

    fn list_services(&self, namespace: &str) -> Result<Vec<Service>, ApiError> {
        let call = Call::ListServices {
            namespace: namespace.into(),
        };
        let store = self.begin("list_services", call)?;
        Ok(store
            .services
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .cloned()
            .collect())
    }

    fn list_all_services(&self, _opts: &ListOptions) -> Result<List<Service>, ApiError> {
        let store = self.begin("list_all_services", Call::ListAllServices)?;
        Ok(List {
            items: store.services.iter().cloned().collect(),
            resource_version: store.rv.to_string(),
        })
    }

    fn watch_services(&self, _opts: &ListOptions) -> Result<WatchStream<Service>, ApiError> {
        drop(self.begin("watch_services", Call::WatchServices)?);
        // The fake has no service watch: the informer lists again after its back-off.
        Err(status_error(
            "GET",
            503,
            "ServiceUnavailable",
            "the fake client serves no service watch".into(),
        ))
    }

    fn get_runtime_class(&self, name: &str) -> Result<RuntimeClass, ApiError> {
        let call = Call::GetRuntimeClass(name.into());
        self.begin("get_runtime_class", call)?
            .runtime_classes
            .get("", name)
    }

    fn create_token_review(&self, review: &TokenReview) -> Result<TokenReview, ApiError> {
        let store = self.begin("create_token_review", Call::CreateTokenReview)?;
        let token = review.spec.token.as_deref().unwrap_or_default();
        let user = store
            .review_tokens
            .iter()
            .find(|(t, _)| t == token)
            .map(|(_, u)| u.clone());
        let mut answer = review.clone();
        answer.status = Some(TokenReviewStatus {
            authenticated: Some(user.is_some()),
            user,
            ..TokenReviewStatus::default()
        });
        Ok(answer)
    }

    fn create_subject_access_review(
        &self,
        review: &SubjectAccessReview,
    ) -> Result<SubjectAccessReview, ApiError> {
        let store = self.begin(
            "create_subject_access_review",
            Call::CreateSubjectAccessReview,
        )?;
        let user = review.spec.user.as_deref().unwrap_or_default();
        let allowed = store.allowed_users.iter().any(|u| u == user);
        let mut answer = review.clone();
        answer.status = Some(SubjectAccessReviewStatus {
            allowed,
            ..SubjectAccessReviewStatus::default()
        });
        Ok(answer)
    }

    fn create_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: &TokenRequest,
    ) -> Result<TokenRequest, ApiError> {
        let call = Call::CreateToken {
            namespace: namespace.into(),
            service_account: service_account.into(),
            audiences: request.spec.audiences.clone(),
            expiration_seconds: request.spec.expiration_seconds,
        };
        let mut store = self.begin("create_token", call)?;
        let seconds = request
            .spec
            .expiration_seconds
            .unwrap_or(DEFAULT_TOKEN_SECONDS);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let expires = now
            .checked_add(seconds)
            .and_then(|secs| Timestamp::new(secs, 0).ok())
            .ok_or_else(|| {
                let message = format!("spec.expirationSeconds: Invalid value: {seconds}");
                status_error("POST", 422, "Invalid", message)
            })?;
        store.tokens += 1;
        store
            .token_requests
            .push((namespace.into(), service_account.into(), request.clone()));
        let mut answer = request.clone();
        answer.metadata.namespace = Some(namespace.to_string());
        answer.metadata.name = Some(service_account.to_string());
        answer.status = Some(TokenRequestStatus {
            token: format!("fake-token-{namespace}-{service_account}-{}", store.tokens),
            expiration_timestamp: Time(expires),
        });
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(namespace: &str, name: &str, node: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": namespace, "name": name, "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap()
    }

    fn lease(name: &str, rv: Option<&str>) -> Lease {
        let mut l: Lease = serde_json::from_value(json!({
            "metadata": {"namespace": "kube-node-lease", "name": name},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40},
        }))
        .unwrap();
        l.metadata.resource_version = rv.map(str::to_string);
        l
    }

    #[test]
    fn create_get_and_already_exists() {
        let fake = FakeClient::new();
        let created = fake.create_pod(&pod("ns", "a", "n1")).unwrap();
        assert_eq!(created.metadata.resource_version.as_deref(), Some("1"));
        assert_eq!(created.metadata.uid.as_deref(), Some("fake-uid-1"));
        assert_eq!(fake.get_pod("ns", "a").unwrap(), created);
        let err = fake.create_pod(&pod("ns", "a", "n1")).unwrap_err();
        assert!(err.is_already_exists(), "{err}");
        assert!(fake.get_pod("ns", "b").unwrap_err().is_not_found());
        assert_eq!(
            fake.calls(),
            vec![
                Call::CreatePod {
                    namespace: "ns".into(),
                    name: "a".into()
                },
                Call::GetPod {
                    namespace: "ns".into(),
                    name: "a".into()
                },
                Call::CreatePod {
                    namespace: "ns".into(),
                    name: "a".into()
                },
                Call::GetPod {
                    namespace: "ns".into(),
                    name: "b".into()
                },
            ]
        );
        fake.clear_calls();
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn list_filters_by_selectors_and_reports_resource_version() {
        let fake = FakeClient::new();
        for (name, node) in [("a", "n1"), ("b", "n2"), ("c", "n1")] {
            fake.insert_pod(&pod("ns", name, node)).unwrap();
        }
        let names = |opts: ListOptions| -> Vec<String> {
            let list = fake.list_pods(&opts).unwrap();
            list.items
                .into_iter()
                .map(|p| p.metadata.name.unwrap())
                .collect()
        };
        let field = |s: &str| ListOptions {
            field_selector: Some(s.into()),
            ..Default::default()
        };
        let label = |s: &str| ListOptions {
            label_selector: Some(s.into()),
            ..Default::default()
        };
        assert_eq!(names(field("spec.nodeName=n1")), ["a", "c"]);
        assert_eq!(names(field("spec.nodeName!=n1")), ["b"]);
        assert_eq!(
            names(field("spec.nodeName==n2,metadata.namespace=ns")),
            ["b"]
        );
        assert_eq!(names(label("app=c")), ["c"]);
        assert_eq!(names(label("app")), ["a", "b", "c"]);
        assert_eq!(names(label("!app")), Vec::<String>::new());
        assert_eq!(
            fake.list_pods(&ListOptions::default())
                .unwrap()
                .resource_version,
            "3"
        );
    }

    #[test]
    fn status_patch_changes_only_status_and_checks_uid() {
        let fake = FakeClient::new();
        let created = fake.insert_pod(&pod("ns", "a", "n1")).unwrap();
        let uid = created.metadata.uid.clone().unwrap();
        let patch = json!({
            "metadata": {"uid": uid, "labels": {"x": "y"}},
            "status": {"phase": "Running", "podIP": "10.0.0.5"},
        });
        let patched = fake.patch_pod_status("ns", "a", &patch).unwrap();
        let status = patched.status.clone().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(patched.metadata.labels, created.metadata.labels);
        assert_eq!(patched.metadata.resource_version.as_deref(), Some("2"));
        assert_eq!(fake.pod("ns", "a"), Some(patched));

        let stale = json!({"metadata": {"uid": "other"}, "status": {"phase": "Failed"}});
        assert!(fake
            .patch_pod_status("ns", "a", &stale)
            .unwrap_err()
            .is_conflict());
        assert!(fake
            .patch_pod_status("ns", "b", &json!({}))
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn node_patches() {
        let fake = FakeClient::new();
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
        fake.create_node(&node).unwrap();
        assert!(fake.create_node(&node).unwrap_err().is_already_exists());
        let n = fake
            .patch_node("n1", &json!({"metadata": {"labels": {"a": "b"}}}))
            .unwrap();
        assert_eq!(n.metadata.labels.unwrap()["a"], "b");
        let n = fake
            .patch_node_status("n1", &json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}, "spec": {"unschedulable": true}}))
            .unwrap();
        assert_eq!(n.status.unwrap().conditions.unwrap()[0].type_, "Ready");
        assert_eq!(n.spec, None);
        assert_eq!(
            fake.get_node("n1").unwrap().metadata.name.as_deref(),
            Some("n1")
        );
        assert!(fake
            .patch_node("n2", &json!({}))
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn lease_update_needs_current_resource_version() {
        let fake = FakeClient::new();
        assert!(fake
            .update_lease(&lease("n1", None))
            .unwrap_err()
            .is_not_found());
        let created = fake.create_lease(&lease("n1", None)).unwrap();
        let rv = created.metadata.resource_version.clone();
        let updated = fake.update_lease(&created).unwrap();
        assert_ne!(updated.metadata.resource_version, rv);
        let err = fake.update_lease(&created).unwrap_err();
        assert!(err.is_conflict(), "{err}");
        // No resourceVersion: an unconditional update.
        fake.update_lease(&lease("n1", None)).unwrap();
        assert_eq!(
            fake.get_lease("kube-node-lease", "n1")
                .unwrap()
                .metadata
                .uid,
            created.metadata.uid
        );
    }

    #[test]
    fn delete_checks_uid_precondition() {
        let fake = FakeClient::new();
        fake.insert_pod(&pod("ns", "a", "n1")).unwrap();
        let wrong = DeleteOptions {
            grace_period_seconds: Some(0),
            precondition_uid: Some("x".into()),
        };
        assert!(fake
            .delete_pod("ns", "a", &wrong)
            .unwrap_err()
            .is_conflict());
        let right = DeleteOptions {
            grace_period_seconds: Some(0),
            precondition_uid: Some("fake-uid-1".into()),
        };
        fake.delete_pod("ns", "a", &right).unwrap();
        assert!(fake.pod("ns", "a").is_none());
        assert!(fake
            .delete_pod("ns", "a", &right)
            .unwrap_err()
            .is_not_found());
    }

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

    #[test]
    fn watch_returns_queued_events_then_ends() {
        let fake = FakeClient::new();
        fake.push_watch_event(WatchEvent::Added(pod("ns", "a", "n1")));
        fake.push_watch_event(WatchEvent::Bookmark {
            resource_version: "7".into(),
        });
        let opts = ListOptions {
            resource_version: Some("5".into()),
            ..Default::default()
        };
        let events: Vec<_> = fake
            .watch_pods(&opts)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1],
            WatchEvent::Bookmark {
                resource_version: "7".into()
            }
        );
        assert_eq!(fake.watch_pods(&opts).unwrap().count(), 0);
        assert_eq!(
            fake.calls(),
            vec![Call::WatchPods(opts.clone()), Call::WatchPods(opts)]
        );
    }

    #[test]
    fn events_are_created_and_patched() {
        let fake = FakeClient::new();
        let event: Event = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "a.1"},
            "involvedObject": {"kind": "Pod", "name": "a"},
            "reason": "Started", "message": "Started container c", "count": 1,
        }))
        .unwrap();
        fake.create_event(&event).unwrap();
        assert!(fake.create_event(&event).unwrap_err().is_already_exists());
        let e = fake.patch_event("ns", "a.1", &json!({"count": 2})).unwrap();
        assert_eq!(e.count, Some(2));
        assert_eq!(fake.events().len(), 1);
        assert_eq!(
            fake.calls()[0],
            Call::CreateEvent {
                namespace: "ns".into(),
                reason: "Started".into(),
                message: "Started container c".into()
            }
        );
    }
    #[test]
    fn config_maps_and_secrets_are_read_from_the_store() {
        let fake = FakeClient::new();
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "cfg"},
            "data": {"key": "value"},
        }))
        .unwrap();
        let stored = fake.insert_config_map(&cm).unwrap();
        assert_eq!(stored.metadata.resource_version.as_deref(), Some("1"));
        assert!(fake.insert_config_map(&cm).unwrap_err().is_already_exists());
        let got = fake.get_config_map("ns", "cfg").unwrap();
        assert_eq!(got.data.unwrap()["key"], "value");
        assert!(fake.get_config_map("ns", "x").unwrap_err().is_not_found());

        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "s"},
            "data": {"password": "aHVudGVyMg=="},
        }))
        .unwrap();
        fake.insert_secret(&secret).unwrap();
        let got = fake.get_secret("ns", "s").unwrap();
        assert_eq!(got.data.unwrap()["password"].0, b"hunter2");
        assert!(fake.get_secret("other", "s").unwrap_err().is_not_found());
        assert_eq!(
            fake.calls()[0],
            Call::GetConfigMap {
                namespace: "ns".into(),
                name: "cfg".into()
            }
        );
        assert_eq!(
            fake.calls()[2],
            Call::GetSecret {
                namespace: "ns".into(),
                name: "s".into()
            }
        );

        let boom = || crate::api::store::status_error("GET", 500, "InternalError", "boom".into());
        fake.inject_error("get_secret", boom());
        fake.inject_error("get_config_map", boom());
        assert_eq!(fake.get_secret("ns", "s").unwrap_err().code(), Some(500));
        assert!(fake.get_secret("ns", "s").is_ok());
        assert_eq!(
            fake.get_config_map("ns", "cfg").unwrap_err().code(),
            Some(500)
        );
        assert!(fake.get_config_map("ns", "cfg").is_ok());
    }

    #[test]
    fn create_token_returns_a_fake_token_with_its_expiry() {
        let fake = FakeClient::new();
        let request: TokenRequest = serde_json::from_value(json!({
            "spec": {"audiences": ["api"], "expirationSeconds": 7200},
        }))
        .unwrap();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let answer = fake.create_token("ns", "default", &request).unwrap();
        let status = answer.status.unwrap();
        assert_eq!(status.token, "fake-token-ns-default-1");
        let expires = status.expiration_timestamp.0.as_second();
        assert!(
            (before + 7200..=before + 7202).contains(&expires),
            "{expires}"
        );
        assert_eq!(answer.spec.audiences, ["api"]);

        let default_life = fake
            .create_token("ns", "sa", &TokenRequest::default())
            .unwrap();
        let status = default_life.status.unwrap();
        assert_eq!(status.token, "fake-token-ns-sa-2");
        let expires = status.expiration_timestamp.0.as_second();
        assert!(
            (before + 3600..=before + 3602).contains(&expires),
            "{expires}"
        );
        assert_eq!(fake.tokens_issued(), 2);

        let boom = || crate::api::store::status_error("POST", 403, "Forbidden", "no".into());
        fake.inject_error("create_token", boom());
        let err = fake.create_token("ns", "sa", &request).unwrap_err();
        assert_eq!(err.code(), Some(403));
        assert_eq!(fake.tokens_issued(), 2);
        assert_eq!(
            fake.calls(),
            vec![
                Call::CreateToken {
                    namespace: "ns".into(),
                    service_account: "default".into(),
                    audiences: vec!["api".into()],
                    expiration_seconds: Some(7200),
                },
                Call::CreateToken {
                    namespace: "ns".into(),
                    service_account: "sa".into(),
                    audiences: vec![],
                    expiration_seconds: None,
                },
                Call::CreateToken {
                    namespace: "ns".into(),
                    service_account: "sa".into(),
                    audiences: vec!["api".into()],
                    expiration_seconds: Some(7200),
                },
            ]
        );
    }
}
