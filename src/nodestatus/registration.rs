//! Registering the Node (upstream `initialNode` and `tryRegisterWithAPIServer` in
//! `kubelet_node_status.go`). Called by the `node-status` thread until it succeeds.
//!
//! The initial Node carries the default labels, the attach/detach annotation, the user's
//! `--node-labels` and `--register-with-taints`, and nothing else in its spec: the
//! `node.kubernetes.io/not-ready` taint seen on fresh nodes is added by the node lifecycle
//! controller, not the kubelet. When the Node already exists it is adopted, and its default
//! labels and the annotation are reconciled with one merge patch.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value};

use super::machine::{go_arch, go_os};
use crate::api::{ApiError, KubeClient};

/// `kubernetes.io/hostname`.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// `kubernetes.io/os`.
pub const LABEL_OS: &str = "kubernetes.io/os";
/// `kubernetes.io/arch`.
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
/// `beta.kubernetes.io/os` (deprecated, still set upstream).
pub const LABEL_BETA_OS: &str = "beta.kubernetes.io/os";
/// `beta.kubernetes.io/arch` (deprecated, still set upstream).
pub const LABEL_BETA_ARCH: &str = "beta.kubernetes.io/arch";
/// Tells the attach/detach controller to attach this node's volumes.
pub const ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH: &str =
    "volumes.kubernetes.io/controller-managed-attach-detach";
/// Taint the kubelet adds itself when registering unschedulable.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Labels reconciled on an existing Node when the initial Node has them (upstream
/// `updateDefaultLabels`; the cloud ones only come from `--node-labels` here).
const DEFAULT_LABELS: [&str; 12] = [
    LABEL_HOSTNAME,
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
    LABEL_OS,
    LABEL_ARCH,
    "node.kubernetes.io/windows-build",
    LABEL_BETA_OS,
    LABEL_BETA_ARCH,
];

/// What the initial Node is built from (kubelet settings).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRegistration {
    /// `metadata.name`.
    pub node_name: String,
    /// The `kubernetes.io/hostname` label (the hostname, or `--hostname-override`).
    pub hostname: String,
    /// `--node-labels`; they override the defaults.
    pub node_labels: BTreeMap<String, String>,
    /// `--register-with-taints`.
    pub register_with_taints: Vec<Taint>,
    /// `--register-schedulable`; `false` registers unschedulable with the unschedulable taint.
    pub register_schedulable: bool,
    /// `--enable-controller-attach-detach` (default on): sets the annotation.
    pub enable_controller_attach_detach: bool,
    /// `--provider-id`.
    pub provider_id: Option<String>,
}

impl NodeRegistration {
    /// Upstream defaults for a node name and hostname.
    pub fn new(node_name: impl Into<String>, hostname: impl Into<String>) -> Self {
        NodeRegistration {
            node_name: node_name.into(),
            hostname: hostname.into(),
            node_labels: BTreeMap::new(),
            register_with_taints: Vec::new(),
            register_schedulable: true,
            enable_controller_attach_detach: true,
            provider_id: None,
        }
    }
}

/// The Node to create, without status (the caller runs the setters on it).
pub fn initial_node(reg: &NodeRegistration) -> Node {
    let mut labels: BTreeMap<String, String> = [
        (LABEL_HOSTNAME, reg.hostname.as_str()),
        (LABEL_OS, go_os()),
        (LABEL_ARCH, go_arch()),
        (LABEL_BETA_OS, go_os()),
        (LABEL_BETA_ARCH, go_arch()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in &reg.node_labels {
        if let Some(default) = labels.get(k) {
            log::info!("The node label will overwrite default setting labelKey={k} labelValue={v} default={default}");
        }
        labels.insert(k.clone(), v.clone());
    }
    let mut taints = reg.register_with_taints.clone();
    if !reg.register_schedulable
        && !taints
            .iter()
            .any(|t| t.key == TAINT_UNSCHEDULABLE && t.effect == "NoSchedule")
    {
        taints.push(Taint {
            key: TAINT_UNSCHEDULABLE.to_string(),
            effect: "NoSchedule".to_string(),
            ..Default::default()
        });
    }
    let annotations = reg.enable_controller_attach_detach.then(|| {
        BTreeMap::from([(
            ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH.to_string(),
            "true".to_string(),
        )])
    });
    Node {
        metadata: ObjectMeta {
            name: Some(reg.node_name.clone()),
            labels: Some(labels),
            annotations,
            ..Default::default()
        },
        spec: Some(NodeSpec {
            unschedulable: (!reg.register_schedulable).then_some(true),
            taints: (!taints.is_empty()).then_some(taints),
            provider_id: reg.provider_id.clone(),
            ..Default::default()
        }),
        status: None,
    }
}

/// Creates `node`; when it already exists, gets it and reconciles its default labels and
/// the attach/detach annotation with a merge patch of `nodes/{name}`. Returns the Node as
/// the server has it. One attempt: the caller retries with back-off.
pub fn register_node(client: &dyn KubeClient, node: &Node) -> Result<Node, ApiError> {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let err = match client.create_node(node) {
        Ok(created) => return Ok(created),
        Err(e) if e.is_already_exists() => e,
        Err(e) => return Err(e),
    };
    log::debug!("Create node {name}: {err}");
    let existing = client.get_node(name)?;
    log::info!("Node was previously registered node=\"{name}\"");
    match reconcile_patch(node, &existing) {
        Some(patch) => {
            log::info!("Reconciling labels and annotations of existing node node=\"{name}\"");
            client.patch_node(name, &patch)
        }
        None => Ok(existing),
    }
}

/// The merge patch that brings `existing`'s default labels and attach/detach annotation in
/// line with `initial`, or `None` when they already agree.
pub fn reconcile_patch(initial: &Node, existing: &Node) -> Option<Value> {
    let empty = BTreeMap::new();
    let want_labels = initial.metadata.labels.as_ref().unwrap_or(&empty);
    let have_labels = existing.metadata.labels.as_ref().unwrap_or(&empty);
    let mut labels = Map::new();
    for key in DEFAULT_LABELS {
        let Some(want) = want_labels.get(key) else {
            continue;
        };
        let have = have_labels.get(key);
        if want.is_empty() {
            if have.is_some() {
                labels.insert(key.to_string(), Value::Null);
            }
        } else if have != Some(want) {
            labels.insert(key.to_string(), Value::String(want.clone()));
        }
    }
    let annotation = |n: &Node| {
        n.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH))
            .cloned()
    };
    let mut annotations = Map::new();
    let want = annotation(initial);
    if want != annotation(existing) {
        log::info!(
            "Controller attach-detach setting changed to {}; updating existing Node",
            want.is_some()
        );
        annotations.insert(
            ANNOTATION_CONTROLLER_MANAGED_ATTACH_DETACH.to_string(),
            want.map_or(Value::Null, Value::String),
        );
    }
    let mut metadata = Map::new();
    if !labels.is_empty() {
        metadata.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    (!metadata.is_empty()).then(|| {
        Value::Object(Map::from_iter([(
            "metadata".to_string(),
            Value::Object(metadata),
        )]))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::{ApiStatus, Call, FakeClient};
    use serde_json::json;

    /// A `Status` error as the API server returns it.
    pub(crate) fn api_error(code: u16, reason: &str) -> ApiError {
        ApiError::Status {
            verb: "TEST",
            path: "/test".into(),
            status: ApiStatus {
                code,
                reason: reason.into(),
                message: format!("injected {reason}"),
            },
            retry_after: None,
        }
    }

    fn registration() -> NodeRegistration {
        NodeRegistration::new("rust-node", "rust-node")
    }

    #[test]
    fn initial_node_matches_reference_metadata() {
        let node = initial_node(&registration());
        let json = serde_json::to_value(&node).unwrap();
        assert_eq!(
            json["metadata"],
            json!({
                "name": "rust-node",
                "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
                "labels": {
                    "beta.kubernetes.io/arch": go_arch(),
                    "beta.kubernetes.io/os": "linux",
                    "kubernetes.io/arch": go_arch(),
                    "kubernetes.io/hostname": "rust-node",
                    "kubernetes.io/os": "linux",
                },
            })
        );
        // No taints of our own: not-ready comes from the node lifecycle controller.
        assert_eq!(json["spec"], json!({}));
    }

    #[test]
    fn initial_node_options() {
        let mut reg = registration();
        reg.register_schedulable = false;
        reg.enable_controller_attach_detach = false;
        reg.node_labels
            .insert(LABEL_HOSTNAME.into(), "custom".into());
        reg.node_labels.insert("role".into(), "edge".into());
        reg.register_with_taints.push(Taint {
            key: "dedicated".into(),
            value: Some("edge".into()),
            effect: "NoExecute".into(),
            ..Default::default()
        });
        let json = serde_json::to_value(initial_node(&reg)).unwrap();
        assert_eq!(
            json["metadata"]["labels"]["kubernetes.io/hostname"],
            "custom"
        );
        assert_eq!(json["metadata"]["labels"]["role"], "edge");
        assert!(json["metadata"].get("annotations").is_none());
        assert_eq!(
            json["spec"],
            json!({
                "unschedulable": true,
                "taints": [
                    {"key": "dedicated", "value": "edge", "effect": "NoExecute"},
                    {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                ],
            })
        );
    }

    #[test]
    fn register_creates_the_node() {
        let api = FakeClient::new();
        let node = register_node(&api, &initial_node(&registration())).unwrap();
        assert!(node.metadata.uid.is_some());
        assert_eq!(api.node("rust-node"), Some(node));
        assert_eq!(api.calls(), [Call::CreateNode("rust-node".into())]);
    }

    #[test]
    fn register_adopts_an_existing_node() {
        let api = FakeClient::new();
        let initial = initial_node(&registration());
        let existing = api.insert_node(&initial).unwrap();
        let node = register_node(&api, &initial).unwrap();
        assert_eq!(node, existing);
        assert_eq!(
            api.calls(),
            [
                Call::CreateNode("rust-node".into()),
                Call::GetNode("rust-node".into())
            ]
        );
    }

    #[test]
    fn register_reconciles_labels_and_annotation() {
        let api = FakeClient::new();
        let mut stale = initial_node(&registration());
        let labels = stale.metadata.labels.as_mut().unwrap();
        labels.insert(LABEL_HOSTNAME.into(), "old-name".into());
        labels.remove(LABEL_BETA_ARCH);
        labels.insert("user".into(), "kept".into());
        stale.metadata.annotations = None;
        api.insert_node(&stale).unwrap();

        let node = register_node(&api, &initial_node(&registration())).unwrap();
        let patch = api
            .calls()
            .into_iter()
            .find_map(|c| match c {
                Call::PatchNode { patch, .. } => Some(patch),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {
                "labels": {"kubernetes.io/hostname": "rust-node", "beta.kubernetes.io/arch": go_arch()},
                "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
            }})
        );
        let labels = node.metadata.labels.clone().unwrap();
        assert_eq!(labels[LABEL_HOSTNAME], "rust-node");
        assert_eq!(labels["user"], "kept");
        assert_eq!(reconcile_patch(&initial_node(&registration()), &node), None);

        // Attach/detach turned off: the annotation is removed.
        let mut reg = registration();
        reg.enable_controller_attach_detach = false;
        let patch = reconcile_patch(&initial_node(&reg), &node).unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {"annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": null}}})
        );
    }

    #[test]
    fn register_errors_are_returned() {
        let api = FakeClient::new();
        api.inject_error("create_node", api_error(500, "InternalError"));
        let err = register_node(&api, &initial_node(&registration())).unwrap_err();
        assert!(err.is_retriable());
        // Exists, but the GET fails.
        api.insert_node(&initial_node(&registration())).unwrap();
        api.inject_error("get_node", api_error(503, "ServiceUnavailable"));
        assert!(register_node(&api, &initial_node(&registration())).is_err());
        // Forbidden create: not retried here, returned.
        api.inject_error("create_node", api_error(403, "Forbidden"));
        assert!(!register_node(&api, &initial_node(&registration()))
            .unwrap_err()
            .is_retriable());
    }
}
