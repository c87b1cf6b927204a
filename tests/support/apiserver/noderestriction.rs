//! The NodeRestriction admission plugin (upstream `plugin/pkg/admission/noderestriction`),
//! for requests made as a node (`system:node:<name>`): what a kubelet may write about pods,
//! its Node and its Lease. Every rule answers 403 with upstream's message, so a kubelet that
//! passes here passes on a real cluster. Writes by other users are not restricted.

use serde_json::Value;

use super::authz::references;
use super::registry::Operation;
use super::resources::Resource;
use super::status::ApiError;

/// The namespace of node Leases.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The label namespace only an administrator may set on Nodes.
const RESTRICTED_LABEL_NAMESPACE: &str = "node-restriction.kubernetes.io";

/// The request being admitted.
pub struct Request<'a> {
    /// The requesting user.
    pub user: Option<&'a str>,
    /// What is written.
    pub resource: Resource,
    /// Whether the status subresource is written.
    pub status: bool,
    /// The object's name in the URL (for creates: the object's own).
    pub name: &'a str,
    /// The namespace in the URL.
    pub namespace: &'a str,
    /// The Node of the requesting node as the server has it now (read before the write):
    /// mirror pods must name its UID.
    pub node: Option<&'a Value>,
}

/// Ok unless the request comes from a node and the plugin forbids it.
pub fn admit(
    request: &Request<'_>,
    op: Operation,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(node) = request.user.and_then(|u| u.strip_prefix("system:node:")) else {
        return Ok(());
    };
    let forbid = |message: String| {
        Err(ApiError::forbidden(format!(
            "{} \"{}\" is forbidden: {message}",
            request.resource.plural(),
            request.name
        )))
    };
    match request.resource {
        Resource::Pods if request.status => {
            let Some(old) = old else {
                return forbid(format!("unexpected operation {:?}", op_name(op)));
            };
            if old["spec"]["nodeName"].as_str() != Some(node) {
                return forbid(format!(
                    "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                ));
            }
            if new.is_some_and(|new| new["metadata"]["labels"] != old["metadata"]["labels"]) {
                return forbid(format!(
                    "node {node:?} cannot update labels through pod status"
                ));
            }
            Ok(())
        }
        Resource::Pods => match (op, old, new) {
            (Operation::Create, _, Some(pod)) => {
                match mirror_pod_violation(node, pod, request.node) {
                    Some(message) => forbid(message),
                    None => Ok(()),
                }
            }
            (Operation::Delete, Some(pod), _) => {
                if pod["spec"]["nodeName"].as_str() == Some(node) {
                    Ok(())
                } else {
                    forbid(format!(
                        "node {node:?} can only delete pods with spec.nodeName set to itself"
                    ))
                }
            }
            _ => forbid(format!(
                "unexpected operation {:?}, node {node:?} can only create and delete mirror pods",
                op_name(op)
            )),
        },
        Resource::Nodes => {
            if request.name != node {
                return forbid(format!(
                    "node {node:?} is not allowed to modify node {:?}",
                    request.name
                ));
            }
            let Some(new) = new else {
                return Ok(());
            };
            match old {
                None => {
                    if !new["spec"]["configSource"].is_null() {
                        return forbid(format!(
                            "node {node:?} is not allowed to create pods with a non-nil configSource"
                        ));
                    }
                    let forbidden = forbidden_labels(new, None);
                    if !forbidden.is_empty() {
                        return forbid(format!(
                            "node {node:?} is not allowed to set the following labels: {}",
                            forbidden.join(", ")
                        ));
                    }
                }
                Some(old) => {
                    let config_source = &new["spec"]["configSource"];
                    if !config_source.is_null() && *config_source != old["spec"]["configSource"] {
                        return forbid(format!(
                            "node {node:?} is not allowed to update configSource to a new non-nil configSource"
                        ));
                    }
                    if taints(new) != taints(old) {
                        return forbid(format!("node {node:?} is not allowed to modify taints"));
                    }
                    let forbidden = forbidden_labels(new, Some(old));
                    if !forbidden.is_empty() {
                        return forbid(format!(
                            "is not allowed to modify labels: {}",
                            forbidden.join(", ")
                        ));
                    }
                }
            }
            Ok(())
        }
        Resource::CsiNodes => {
            if request.name != node {
                return forbid(
                    "can only access CSINode with the same name as the requesting node".into(),
                );
            }
            Ok(())
        }
        Resource::Leases => {
            if request.namespace != NODE_LEASE_NAMESPACE {
                return forbid(format!(
                    "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
                ));
            }
            if request.name != node {
                return forbid(
                    "can only access node lease with the same name as the requesting node".into(),
                );
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
    }
}

/// Why a node may not create `pod` (upstream `admitPodCreate`), checked in upstream's order.
fn mirror_pod_violation(node: &str, pod: &Value, node_object: Option<&Value>) -> Option<String> {
    let annotations = &pod["metadata"]["annotations"];
    if annotations.get("kubernetes.io/config.mirror").is_none() {
        return Some(format!(
            "pod does not have \"kubernetes.io/config.mirror\" annotation, node {node:?} can only create mirror pods"
        ));
    }
    if pod["spec"]["nodeName"].as_str() != Some(node) {
        return Some(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        ));
    }
    let owners = pod["metadata"]["ownerReferences"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    match owners {
        [] => {
            return Some(format!(
                "node {node:?} can only create pods with an owner reference set to itself"
            ))
        }
        [owner] => {
            if owner["apiVersion"] != "v1" || owner["kind"] != "Node" || owner["name"] != node {
                return Some(format!(
                    "node {node:?} can only create pods with an owner reference set to itself"
                ));
            }
            if owner["controller"] != true {
                return Some(format!(
                    "node {node:?} can only create pods with a controller owner reference set to itself"
                ));
            }
            if owner["blockOwnerDeletion"] == true {
                return Some(format!(
                    "node {node:?} must not set blockOwnerDeletion on an owner reference"
                ));
            }
            let Some(node_object) = node_object else {
                return Some(format!("nodes {node:?} not found"));
            };
            let want = node_object["metadata"]["uid"].as_str().unwrap_or_default();
            let got = owner["uid"].as_str().unwrap_or_default();
            if got != want {
                return Some(format!(
                    "node {node} UID mismatch: expected {got} got {want}"
                ));
            }
        }
        _ => {
            return Some(format!(
                "node {node:?} can only create pods with a single owner reference set to itself"
            ))
        }
    }
    let spec = &pod["spec"];
    if spec["serviceAccountName"]
        .as_str()
        .is_some_and(|s| !s.is_empty())
    {
        return Some(format!(
            "node {node:?} can not create pods that reference a service account"
        ));
    }
    if !references(pod, Resource::Secrets).is_empty() {
        return Some(format!(
            "node {node:?} can not create pods that reference secrets"
        ));
    }
    if !references(pod, Resource::ConfigMaps).is_empty() {
        return Some(format!(
            "node {node:?} can not create pods that reference configmaps"
        ));
    }
    let volumes = spec["volumes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let trust_bundles = volumes.iter().any(|v| {
        v["projected"]["sources"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| !s["clusterTrustBundle"].is_null()))
    });
    if trust_bundles {
        return Some(format!(
            "node {node:?} can not create pods that reference clustertrustbundles"
        ));
    }
    if volumes
        .iter()
        .any(|v| !v["persistentVolumeClaim"].is_null())
    {
        return Some(format!(
            "node {node:?} can not create pods that reference persistentvolumeclaims"
        ));
    }
    if spec["resourceClaims"]
        .as_array()
        .is_some_and(|c| !c.is_empty())
    {
        return Some(format!(
            "node {node:?} can not create pods that reference resourceclaims"
        ));
    }
    None
}

fn taints(node: &Value) -> &Value {
    &node["spec"]["taints"]
}

/// The label keys a node may not set or change (added, removed or changed keys that are
/// either under `node-restriction.kubernetes.io/` or Kubernetes labels a kubelet does not
/// own), sorted.
fn forbidden_labels(new: &Value, old: Option<&Value>) -> Vec<String> {
    let empty = serde_json::Map::new();
    let labels = |v: Option<&Value>| {
        v.and_then(|v| v["metadata"]["labels"].as_object())
            .unwrap_or(&empty)
            .clone()
    };
    let (new_labels, old_labels) = (labels(Some(new)), labels(old));
    let mut changed: Vec<&String> = new_labels
        .iter()
        .filter(|(k, v)| old_labels.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .chain(old_labels.keys().filter(|k| !new_labels.contains_key(*k)))
        .collect();
    changed.sort();
    changed.dedup();
    changed
        .into_iter()
        .filter(|key| is_forbidden_label(key))
        .cloned()
        .collect()
}

fn is_forbidden_label(key: &str) -> bool {
    let Some((namespace, _)) = key.split_once('/') else {
        return false;
    };
    let within = |domain: &str| namespace == domain || namespace.ends_with(&format!(".{domain}"));
    if within(RESTRICTED_LABEL_NAMESPACE) {
        return true;
    }
    let kubernetes = within("kubernetes.io") || within("k8s.io");
    kubernetes && !is_kubelet_label(key, namespace)
}

/// The labels a kubelet may set on its own Node (upstream `kubeletapis.IsKubeletLabel`).
fn is_kubelet_label(key: &str, namespace: &str) -> bool {
    const KUBELET_LABELS: &[&str] = &[
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
    ];
    let within = |domain: &str| namespace == domain || namespace.ends_with(&format!(".{domain}"));
    KUBELET_LABELS.contains(&key) || within("kubelet.kubernetes.io") || within("node.kubernetes.io")
}
