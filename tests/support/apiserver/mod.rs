//! An in-process Kubernetes API server test double for rkubelet's integration tests and
//! benchmarks: an HTTPS server on `127.0.0.1:<random port>` with kube-apiserver's semantics.
//!
//! Which fake to use: the library's recording fake (`rkubelet::api::fake::FakeClient`) for
//! unit tests of kubelet logic that run in-process and inspect the calls made. This double
//! for anything exercising the real HTTP client (`rkubelet::api::RestClient`), watches,
//! patch semantics, admission such as NodeRestriction, or the binary end to end.
//!
//! It serves core/v1 pods (with `status`, `binding`, and `log`, `exec`, `attach` and
//! `portforward` forwarded to the node's kubelet; see `kubelet.rs`), nodes (with `status`),
//! events, namespaces, configmaps, secrets, services, the `serviceaccounts/{name}/token`
//! subresource (TokenRequest; see `token.rs`), coordination.k8s.io/v1 leases,
//! node.k8s.io/v1 runtimeclasses, and the TokenReview and SubjectAccessReview the kubelet's
//! own API asks for. It has the semantics a kubelet depends on: one global resourceVersion,
//! 409 `AlreadyExists` and `Conflict`, the status subresource split, JSON merge patch and
//! strategic merge patch (the crate's `rkubelet::api::strategic`, with the pod and node
//! patch merge keys, directives and checks of kube-apiserver), pods stored with
//! kube-apiserver's v1 defaults and initial status (`defaults.rs`), graceful pod deletion,
//! finalizers, field and label selectors (the crate's `rkubelet::api::selector`), watches
//! with bookmarks and 410 `Expired`, the node authorizer (`authz.rs`) and the
//! NodeRestriction admission plugin (`noderestriction.rs`) for `system:node:<name>` users,
//! plus enough discovery and `Table` output for kubectl. Tests reach the store directly
//! (`create_pod`, `get_pod`, ...) and inject faults (`fail_next`, `set_stall`, `go_down`,
//! `close_watches`, ...).
//!
//! Threads: one acceptor (`apiserver-accept`) and one thread per connection
//! (`apiserver-conn-N`, at most [`ApiServerConfig::max_connections`]); all end and are joined
//! on [`ApiServer::stop`] or drop.
//!
//! Simplifications (each also noted where it is implemented):
//! - JSON patch and server-side apply get 415; no `deletecollection`, no `limit`/`continue`
//!   paging (every list is complete);
//! - NodeRestriction is the only admission plugin: no service account, priority, toleration
//!   or limit range admission, so a pod gets its v1 defaults and nothing more;
//! - lists ignore `resourceVersion` and answer with the current state; a watch from a
//!   resourceVersion newer than the store starts at once instead of waiting for it;
//! - `.../status` writes change only `.status` (upstream also keeps metadata changes made
//!   there); `dryRun` is refused with 400; watches never answer as `Table`
//!   (`kubectl get -w` is not supported);
//! - authorization is only the node authorizer's rule for ConfigMaps, Secrets and tokens
//!   (see `authz.rs`); every other authenticated request is allowed;
//! - service accounts are not stored: a TokenRequest for any name in an existing namespace
//!   gets a JWT-shaped but unverifiable token (see `token.rs`);
//! - services are stored as given: no cluster IP is allocated.
//!
//! ```ignore
//! let server = ApiServer::start();
//! server.write_kubeconfig(&path, "system:node:node1").unwrap();
//! server.create_pod(pod).unwrap();
//! ```

mod authz;
pub mod client;
mod csr;
mod defaults;
mod deletion;
mod discovery;
mod ephemeral;
mod faults;
mod http;
mod kubeconfig;
mod kubelet;
mod meta;
mod noderestriction;
mod registry;
mod resources;
mod router;
mod selectors;
mod server;
mod status;
mod store;
mod table;
mod tls;
mod token;
mod watch;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use deletion::DeleteOptions;
use registry::{admit_all, Part, PatchType};
use resources::Resource;
use server::Shared;

pub use status::ApiError;
pub use tls::Identity;

/// Settings of one double.
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// How many changes are retained for watches; a watch from an older resourceVersion gets
    /// 410 `Expired`.
    pub event_window: usize,
    /// Interval of BOOKMARK events on watches with `allowWatchBookmarks=true`.
    pub bookmark_interval: Duration,
    /// How long a watch without `timeoutSeconds` lasts (upstream: 30 to 60 minutes).
    pub default_watch_timeout: Duration,
    /// A bearer token accepted instead of a client certificate.
    pub bearer_token: Option<String>,
    /// Most connections served at once (one thread each); further ones are closed at once.
    pub max_connections: usize,
    /// The user of [`ApiServer::client_cert_pem`].
    pub default_user: String,
    /// Bootstrap tokens (`<id>.<secret>`) accepted as user `system:bootstrap:<id>`.
    pub bootstrap_tokens: Vec<String>,
    /// Whether node client CSRs of bootstrappers and of nodes renewing their own
    /// certificate are approved at once, as kubeadm's grants make kube-controller-manager do.
    pub auto_approve_node_client: bool,
    /// How long certificates signed from CSRs are valid (kube-controller-manager's
    /// `--cluster-signing-duration`, one year by default).
    pub csr_signing_duration: Duration,
}

impl Default for ApiServerConfig {
    fn default() -> ApiServerConfig {
        ApiServerConfig {
            event_window: 1000,
            bookmark_interval: Duration::from_secs(1),
            default_watch_timeout: Duration::from_secs(1800),
            bearer_token: None,
            max_connections: 64,
            default_user: "kubernetes-admin".to_string(),
            bootstrap_tokens: Vec::new(),
            auto_approve_node_client: true,
            csr_signing_duration: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// A running API server double. Stops on [`ApiServer::stop`] or drop.
pub struct ApiServer {
    shared: Arc<Shared>,
    default_identity: Identity,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

/// Converts a typed object to the JSON the store holds.
fn to_json<T: Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("k8s-openapi objects serialize to JSON")
}

/// The object's namespace, `default` when unset.
fn namespace_or_default(meta: &ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// Converts a stored object back to its type.
fn from_json<T: DeserializeOwned>(object: Value) -> T {
    serde_json::from_value(object).expect("stored objects deserialize to their type")
}

impl ApiServer {
    /// Starts a double with default settings. Panics if the port or certificates cannot be
    /// set up (a broken test machine, not a test failure to handle).
    pub fn start() -> ApiServer {
        ApiServer::start_with(ApiServerConfig::default())
    }

    /// Starts a double with `config`.
    pub fn start_with(config: ApiServerConfig) -> ApiServer {
        let pki = tls::Pki::generate().expect("generate test certificates");
        let tls_config = pki.server_config().expect("build the TLS server config");
        let default_identity = pki
            .issue_client(&config.default_user)
            .expect("issue the default client certificate");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("listener address");
        let shared = Arc::new(Shared::new(config, pki, tls_config, addr));
        for namespace in ["default", "kube-system", "kube-node-lease"] {
            let object = serde_json::json!({ "metadata": { "name": namespace } });
            registry::create(&shared.store, Resource::Namespaces, "", object, &admit_all)
                .expect("create the initial namespaces");
        }
        let acceptor = server::spawn_acceptor(shared.clone(), listener);
        ApiServer {
            shared,
            default_identity,
            acceptor: Mutex::new(Some(acceptor)),
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.shared.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The CA certificate (PEM) that signed the serving and client certificates.
    pub fn ca_pem(&self) -> String {
        self.shared.pki.ca_pem()
    }

    /// The default client certificate (PEM), user [`ApiServerConfig::default_user`].
    pub fn client_cert_pem(&self) -> String {
        self.default_identity.cert_pem.clone()
    }

    /// The default client certificate's private key (PKCS#8 PEM).
    pub fn client_key_pem(&self) -> String {
        self.default_identity.key_pem.clone()
    }

    /// A new client certificate for user `user_cn` (e.g. `system:node:node1`).
    pub fn issue_client_cert(&self, user_cn: &str) -> Identity {
        self.shared
            .pki
            .issue_client(user_cn)
            .expect("issue a client certificate")
    }

    /// A rustls client config (ring provider) trusting the double's CA and presenting the
    /// default client certificate: for `reqwest`'s `use_preconfigured_tls` in tests.
    pub fn tls_client_config(&self) -> rustls::ClientConfig {
        kubeconfig::client_config(&self.shared.pki, Some(&self.default_identity))
    }

    /// Like [`ApiServer::tls_client_config`] but presenting a fresh certificate of
    /// `user_cn` (`system:node:<name>` acts as that node).
    pub fn tls_client_config_for(&self, user_cn: &str) -> rustls::ClientConfig {
        let identity = self.issue_client_cert(user_cn);
        kubeconfig::client_config(&self.shared.pki, Some(&identity))
    }

    /// Like [`ApiServer::tls_client_config`] but presenting no client certificate.
    pub fn tls_client_config_anonymous(&self) -> rustls::ClientConfig {
        kubeconfig::client_config(&self.shared.pki, None)
    }

    /// Writes a kubeconfig for user `user_cn` (a fresh client certificate) with the CA,
    /// certificate and key inline (`*-data` fields).
    pub fn write_kubeconfig(&self, path: &Path, user_cn: &str) -> std::io::Result<()> {
        let identity = self.issue_client_cert(user_cn);
        let text = kubeconfig::render(&self.url(), &self.ca_pem(), &identity, user_cn);
        std::fs::write(path, text)
    }

    /// Writes a bootstrap kubeconfig (kubeadm's `bootstrap-kubelet.conf`): the CA inline and
    /// `token` as the user's bearer token.
    pub fn write_bootstrap_kubeconfig(&self, path: &Path, token: &str) -> std::io::Result<()> {
        let text = kubeconfig::render_token(&self.url(), &self.ca_pem(), token);
        std::fs::write(path, text)
    }

    /// Every CertificateSigningRequest, as stored.
    pub fn csrs(&self) -> Vec<Value> {
        self.shared
            .store
            .list(Resource::CertificateSigningRequests, None)
            .0
    }

    /// Approves a CSR as `kubectl certificate approve` does, then lets the signer run.
    pub fn approve_csr(&self, name: &str) -> Result<(), ApiError> {
        self.decide_csr(name, "Approved", "KubectlApprove")
    }

    /// Denies a CSR as `kubectl certificate deny` does.
    pub fn deny_csr(&self, name: &str) -> Result<(), ApiError> {
        self.decide_csr(name, "Denied", "KubectlDeny")
    }

    fn decide_csr(&self, name: &str, kind: &str, reason: &str) -> Result<(), ApiError> {
        let body = serde_json::json!({"status": {"conditions": [{
            "type": kind, "status": "True", "reason": reason,
            "message": format!("This CSR was {} by kubectl certificate {}.", kind.to_lowercase(), if kind == "Approved" { "approve" } else { "deny" }),
        }]}});
        csr::approve(&self.shared, name, &body)?;
        csr::reconcile(&self.shared, name);
        Ok(())
    }

    /// Creates a pod as `POST` would (defaults, `Pending` status, new uid).
    pub fn create_pod(&self, pod: Pod) -> Result<Pod, ApiError> {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        registry::create(
            &self.shared.store,
            Resource::Pods,
            &namespace,
            to_json(&pod),
            &admit_all,
        )
        .map(from_json)
    }

    /// One pod.
    pub fn get_pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.get_json(Resource::Pods, namespace, name)
            .map(from_json)
    }

    /// Every pod, ordered by namespace and name.
    pub fn list_pods(&self) -> Vec<Pod> {
        self.list_json(Resource::Pods)
            .into_iter()
            .map(from_json)
            .collect()
    }

    /// How many pods are in `phase`, counted in place: cheap enough to poll while
    /// something is being measured.
    pub fn count_pods_in_phase(&self, phase: &str) -> usize {
        self.shared
            .store
            .count(Resource::Pods, |p| p["status"]["phase"] == phase)
    }

    /// Merge-patches a pod (not its status), as `PATCH` would.
    pub fn patch_pod(&self, namespace: &str, name: &str, patch: Value) -> Result<Pod, ApiError> {
        self.patch(Resource::Pods, namespace, name, patch, Part::Main)
            .map(from_json)
    }

    /// Merge-patches a pod's status, as `PATCH .../status` would.
    pub fn patch_pod_status(
        &self,
        namespace: &str,
        name: &str,
        patch: Value,
    ) -> Result<Pod, ApiError> {
        self.patch(Resource::Pods, namespace, name, patch, Part::Status)
            .map(from_json)
    }

    /// Schedules a pod onto `node`, as the scheduler's binding does.
    pub fn bind_pod(&self, namespace: &str, name: &str, node: &str) -> Result<Pod, ApiError> {
        registry::bind(&self.shared.store, namespace, name, node).map(from_json)
    }

    /// Deletes a pod as `DELETE` would: with grace (`None` = the pod's own) a scheduled pod
    /// only gets a `deletionTimestamp` and is returned; grace 0 removes it (`Ok(None)`).
    pub fn delete_pod(
        &self,
        namespace: &str,
        name: &str,
        grace_period_seconds: Option<i64>,
    ) -> Result<Option<Pod>, ApiError> {
        let options = DeleteOptions {
            grace_period_seconds,
            ..DeleteOptions::default()
        };
        let written = deletion::delete(
            &self.shared.store,
            Resource::Pods,
            namespace,
            name,
            &options,
            &admit_all,
        )?;
        let still_there = self.get_json(Resource::Pods, namespace, name).is_some();
        Ok(still_there.then(|| from_json(written.object)))
    }

    /// Creates a node.
    pub fn create_node(&self, node: Node) -> Result<Node, ApiError> {
        registry::create(
            &self.shared.store,
            Resource::Nodes,
            "",
            to_json(&node),
            &admit_all,
        )
        .map(from_json)
    }

    /// One node.
    pub fn get_node(&self, name: &str) -> Option<Node> {
        self.get_json(Resource::Nodes, "", name).map(from_json)
    }

    /// Every node.
    pub fn list_nodes(&self) -> Vec<Node> {
        self.list_json(Resource::Nodes)
            .into_iter()
            .map(from_json)
            .collect()
    }

    /// Deletes a node.
    pub fn delete_node(&self, name: &str) -> Result<(), ApiError> {
        deletion::delete(
            &self.shared.store,
            Resource::Nodes,
            "",
            name,
            &DeleteOptions::default(),
            &admit_all,
        )
        .map(|_| ())
    }

    /// One lease (`kube-node-lease/<node>` for node heartbeats).
    pub fn get_lease(&self, namespace: &str, name: &str) -> Option<Lease> {
        self.get_json(Resource::Leases, namespace, name)
            .map(from_json)
    }

    /// Every event, ordered by namespace and name.
    pub fn events(&self) -> Vec<Event> {
        self.list_json(Resource::Events)
            .into_iter()
            .map(from_json)
            .collect()
    }

    /// Creates a config map as `POST` would (namespace `default` when unset).
    pub fn create_config_map(&self, config_map: ConfigMap) -> Result<ConfigMap, ApiError> {
        let namespace = namespace_or_default(&config_map.metadata);
        let object = to_json(&config_map);
        registry::create(
            &self.shared.store,
            Resource::ConfigMaps,
            &namespace,
            object,
            &admit_all,
        )
        .map(from_json)
    }

    /// Replaces a config map as `PUT` would (a `metadata.resourceVersion` must be current).
    pub fn update_config_map(&self, config_map: ConfigMap) -> Result<ConfigMap, ApiError> {
        let namespace = namespace_or_default(&config_map.metadata);
        let name = config_map.metadata.name.clone().unwrap_or_default();
        let object = to_json(&config_map);
        let store = &self.shared.store;
        let resource = Resource::ConfigMaps;
        registry::update(
            store,
            resource,
            &namespace,
            &name,
            object,
            Part::Main,
            &admit_all,
        )
        .map(|written| from_json(written.object))
    }

    /// One config map.
    pub fn get_config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap> {
        self.get_json(Resource::ConfigMaps, namespace, name)
            .map(from_json)
    }

    /// Creates a secret as `POST` would (`stringData` folded into `data`, type `Opaque` by
    /// default; namespace `default` when unset).
    pub fn create_secret(&self, secret: Secret) -> Result<Secret, ApiError> {
        let namespace = namespace_or_default(&secret.metadata);
        let object = to_json(&secret);
        registry::create(
            &self.shared.store,
            Resource::Secrets,
            &namespace,
            object,
            &admit_all,
        )
        .map(from_json)
    }

    /// Creates a service as `POST` would (the cluster IP is taken as given).
    pub fn create_service(&self, service: Service) -> Result<Service, ApiError> {
        let namespace = namespace_or_default(&service.metadata);
        let object = to_json(&service);
        registry::create(
            &self.shared.store,
            Resource::Services,
            &namespace,
            object,
            &admit_all,
        )
        .map(from_json)
    }

    /// Creates a PersistentVolume as `POST` would (status `Pending`, as the API server
    /// defaults it; the PV controller makes it `Available`, see [`ApiServer::bind_claim`]).
    pub fn create_persistent_volume(
        &self,
        pv: PersistentVolume,
    ) -> Result<PersistentVolume, ApiError> {
        let mut object = to_json(&pv);
        object["status"] = serde_json::json!({"phase": "Pending"});
        registry::create(
            &self.shared.store,
            Resource::PersistentVolumes,
            "",
            object,
            &admit_all,
        )
        .map(from_json)
    }

    /// Creates a PersistentVolumeClaim as `POST` would (status `Pending`; namespace
    /// `default` when unset).
    pub fn create_persistent_volume_claim(
        &self,
        pvc: PersistentVolumeClaim,
    ) -> Result<PersistentVolumeClaim, ApiError> {
        let namespace = namespace_or_default(&pvc.metadata);
        let mut object = to_json(&pvc);
        object["status"] = serde_json::json!({"phase": "Pending"});
        registry::create(
            &self.shared.store,
            Resource::PersistentVolumeClaims,
            &namespace,
            object,
            &admit_all,
        )
        .map(from_json)
    }

    /// Binds claim `namespace/claim` to volume `pv` as the PV controller does: the volume's
    /// `claimRef` and phase `Bound`, the claim's `volumeName`, phase `Bound`, capacity and
    /// access modes.
    pub fn bind_claim(&self, namespace: &str, claim: &str, pv: &str) -> Result<(), ApiError> {
        let store = &self.shared.store;
        let mut claim_obj = self
            .get_json(Resource::PersistentVolumeClaims, namespace, claim)
            .ok_or_else(|| ApiError::not_found(Resource::PersistentVolumeClaims, claim))?;
        let mut pv_obj = self
            .get_json(Resource::PersistentVolumes, "", pv)
            .ok_or_else(|| ApiError::not_found(Resource::PersistentVolumes, pv))?;
        pv_obj["spec"]["claimRef"] = serde_json::json!({
            "kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": namespace,
            "name": claim, "uid": claim_obj["metadata"]["uid"],
            "resourceVersion": claim_obj["metadata"]["resourceVersion"],
        });
        let written = registry::update(
            store,
            Resource::PersistentVolumes,
            "",
            pv,
            pv_obj,
            Part::Main,
            &admit_all,
        )?;
        let mut pv_obj = written.object;
        pv_obj["status"] = serde_json::json!({"phase": "Bound"});
        let written = registry::update(
            store,
            Resource::PersistentVolumes,
            "",
            pv,
            pv_obj,
            Part::Status,
            &admit_all,
        )?;
        let pv_obj = written.object;
        claim_obj["spec"]["volumeName"] = serde_json::json!(pv);
        let written = registry::update(
            store,
            Resource::PersistentVolumeClaims,
            namespace,
            claim,
            claim_obj,
            Part::Main,
            &admit_all,
        )?;
        let mut claim_obj = written.object;
        claim_obj["status"] = serde_json::json!({
            "phase": "Bound",
            "accessModes": pv_obj["spec"]["accessModes"],
            "capacity": pv_obj["spec"]["capacity"],
        });
        registry::update(
            store,
            Resource::PersistentVolumeClaims,
            namespace,
            claim,
            claim_obj,
            Part::Status,
            &admit_all,
        )?;
        Ok(())
    }

    /// Replaces a PersistentVolumeClaim as `PUT` would (its status stays).
    pub fn update_persistent_volume_claim(
        &self,
        pvc: PersistentVolumeClaim,
    ) -> Result<PersistentVolumeClaim, ApiError> {
        let namespace = namespace_or_default(&pvc.metadata);
        let name = pvc.metadata.name.clone().unwrap_or_default();
        registry::update(
            &self.shared.store,
            Resource::PersistentVolumeClaims,
            &namespace,
            &name,
            to_json(&pvc),
            Part::Main,
            &admit_all,
        )
        .map(|written| from_json(written.object))
    }

    /// One PersistentVolumeClaim.
    pub fn get_persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<PersistentVolumeClaim> {
        self.get_json(Resource::PersistentVolumeClaims, namespace, name)
            .map(from_json)
    }

    /// Creates a node.k8s.io/v1 RuntimeClass `name` with `handler`.
    pub fn create_runtime_class(&self, name: &str, handler: &str) -> Result<Value, ApiError> {
        let object = serde_json::json!({"metadata": {"name": name}, "handler": handler});
        registry::create(
            &self.shared.store,
            Resource::RuntimeClasses,
            "",
            object,
            &admit_all,
        )
    }

    /// Creates a storage.k8s.io/v1 CSIDriver (the registry defaults its spec).
    pub fn create_csi_driver(&self, driver: Value) -> Result<Value, ApiError> {
        registry::create(
            &self.shared.store,
            Resource::CsiDrivers,
            "",
            driver,
            &admit_all,
        )
    }

    /// The CSINode of node `name`.
    pub fn get_csi_node(&self, name: &str) -> Option<Value> {
        self.get_json(Resource::CsiNodes, "", name)
    }

    /// Attaches CSI volume `handle` of `driver` (PV `pv`) to `node` as the attach/detach
    /// controller and the external attacher do: the VolumeAttachment `name` with
    /// `status.attached` (and `metadata` as its attachment metadata), and the volume in the
    /// Node's `status.volumesAttached` as `unique_name`.
    pub fn attach_csi_volume(
        &self,
        name: &str,
        driver: &str,
        pv: &str,
        node: &str,
        unique_name: &str,
        metadata: Value,
    ) -> Result<(), ApiError> {
        let store = &self.shared.store;
        let attachment = serde_json::json!({
            "metadata": {"name": name},
            "spec": {"attacher": driver, "nodeName": node,
                     "source": {"persistentVolumeName": pv}},
        });
        let created = registry::create(
            store,
            Resource::VolumeAttachments,
            "",
            attachment,
            &admit_all,
        )?;
        let mut with_status = created;
        with_status["status"] =
            serde_json::json!({"attached": true, "attachmentMetadata": metadata});
        registry::update(
            store,
            Resource::VolumeAttachments,
            "",
            name,
            with_status,
            Part::Status,
            &admit_all,
        )?;
        let patch = serde_json::json!({"status": {"volumesAttached": [
            {"name": unique_name, "devicePath": ""}
        ]}});
        registry::patch(
            store,
            Resource::Nodes,
            "",
            node,
            PatchType::Merge,
            patch.to_string().as_bytes(),
            Part::Status,
            &admit_all,
        )
        .map(drop)
    }

    /// Makes TokenReview accept `token` as `user` in `groups`.
    pub fn accept_token(&self, token: &str, user: &str, groups: &[&str]) {
        self.shared.reviews.accept_token(token, user, groups);
    }

    /// Makes SubjectAccessReview allow `user` the `nodes` subresources named (`*`: all).
    pub fn allow_kubelet_access(&self, user: &str, subresources: &[&str]) {
        self.shared.reviews.allow(user, subresources);
    }

    /// SubjectAccessReviews asked so far: (user, verb, subresource).
    pub fn access_reviews(&self) -> Vec<(String, String, String)> {
        self.shared.reviews.asked()
    }

    /// How many TokenRequests were answered with a token.
    pub fn token_requests(&self) -> u64 {
        self.shared
            .tokens_issued
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Any stored object as JSON; `resource` is the plural (`pods`, `leases`, ...).
    pub fn get_object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = Resource::ALL.into_iter().find(|r| r.plural() == resource)?;
        self.get_json(resource, namespace, name)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.current_rv()
    }

    /// How many requests had `verb` (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`) on `resource` (`pods`, `pods/status`, `leases`, ...), faulted ones included.
    pub fn request_count(&self, verb: &str, resource: &str) -> u64 {
        self.shared.request_count(verb, resource)
    }

    /// How many watches are streaming now.
    pub fn open_watches(&self) -> usize {
        self.shared.faults.open_watches()
    }

    /// Ends every open watch now (a clean end of the chunked stream).
    pub fn close_watches(&self) {
        self.shared.faults.close_watches();
        self.shared.store.poke();
    }

    /// Holds every later response for `stall` (`Duration::ZERO` to stop).
    pub fn set_stall(&self, stall: Duration) {
        self.shared.faults.set_stall(stall);
    }

    /// The next `count` requests fail with `code` (a `Status`; 429 adds `Retry-After: 1`).
    pub fn fail_next(&self, count: u32, code: u16) {
        self.shared.faults.fail_next(count, code);
    }

    /// Stops listening and drops every connection; returns once the port refuses
    /// connections.
    pub fn go_down(&self) {
        self.shared.go_down();
    }

    /// Listens on the same port again; returns once it accepts connections.
    pub fn come_back(&self) {
        self.shared.come_back();
    }

    /// Sends `line` (a newline is added if missing) to every open watch, as is.
    pub fn inject_raw_watch_line(&self, line: &[u8]) {
        let mut line = line.to_vec();
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        self.shared.faults.inject_raw_line(&line);
        self.shared.store.poke();
    }

    /// Forgets every retained change: watches from any older resourceVersion get 410.
    pub fn compact(&self) {
        self.shared.store.compact();
    }

    /// Stops the server: no more connections, every thread ended and joined. Idempotent.
    pub fn stop(&self) {
        self.shared.begin_stop();
        let acceptor = self
            .acceptor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(acceptor) = acceptor {
            let _ = acceptor.join();
        }
        self.shared.join_connections();
    }

    fn get_json(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        let namespace = if resource.namespaced() { namespace } else { "" };
        let key = (resource, namespace.to_string(), name.to_string());
        self.shared.store.get(&key)
    }

    fn list_json(&self, resource: Resource) -> Vec<Value> {
        self.shared.store.list(resource, None).0
    }

    fn patch(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        patch: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        let body = patch.to_string().into_bytes();
        let store = &self.shared.store;
        registry::patch(
            store,
            resource,
            namespace,
            name,
            PatchType::Merge,
            &body,
            part,
            &admit_all,
        )
        .map(|written| written.object)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}
