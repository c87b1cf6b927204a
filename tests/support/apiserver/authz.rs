//! The node authorizer and NodeRestriction, as far as a kubelet's reads of ConfigMaps,
//! Secrets, PersistentVolumeClaims, PersistentVolumes and service-account tokens go: a user
//! `system:node:<node>` may only get the ConfigMaps, Secrets and claims that a pod bound to
//! `<node>` references (a generic ephemeral volume references the claim `<pod>-<volume>`),
//! the PersistentVolumes such claims are bound to (`spec.volumeName`), and only ask for
//! tokens of service accounts such pods run as, bound to one of those pods. Anything else is
//! 403 with the API server's wording. Other users and other requests are not restricted.

use serde_json::Value;

use super::resources::Resource;
use super::status::ApiError;
use super::store::Store;

/// What a request asks for, as far as the node authorizer cares.
pub enum Ask<'a> {
    /// `get` (or list/watch) of a configmap or secret.
    Read {
        resource: Resource,
        namespace: &'a str,
        /// `None` for a collection.
        name: Option<&'a str>,
        verb: &'static str,
    },
    /// `create` of `serviceaccounts/token`.
    Token {
        namespace: &'a str,
        service_account: &'a str,
        /// The request body (its `spec.boundObjectRef`).
        body: &'a Value,
    },
}

/// Ok when `user` may do `ask`.
pub fn authorize(store: &Store, user: Option<&str>, ask: &Ask<'_>) -> Result<(), ApiError> {
    let Some(node) = user.and_then(|u| u.strip_prefix("system:node:")) else {
        return Ok(());
    };
    if let Ask::Read {
        resource: resource @ (Resource::CsiNodes | Resource::VolumeAttachments),
        name,
        verb,
        ..
    } = ask
    {
        return authorize_storage(store, node, *resource, *name, verb);
    }
    if let Ask::Read {
        resource: Resource::PersistentVolumes,
        name,
        verb,
        ..
    } = ask
    {
        let name = name.unwrap_or_default();
        if *verb == "get" && bound_to_a_claim_of(store, node, name) {
            return Ok(());
        }
        return Err(ApiError::forbidden(format!(
            "persistentvolumes \"{name}\" is forbidden: User \"system:node:{node}\" cannot {verb} resource \"persistentvolumes\" in API group \"\" at the cluster scope: no relationship found between node '{node}' and this object"
        )));
    }
    let (pods, _) = store.list(Resource::Pods, Some(namespace_of(ask)));
    let on_node: Vec<&Value> = pods
        .iter()
        .filter(|p| p["spec"]["nodeName"].as_str() == Some(node))
        .collect();
    let (plural, name, verb) = match ask {
        Ask::Read {
            resource,
            name,
            verb,
            ..
        } => {
            let related = name.is_some_and(|name| {
                on_node
                    .iter()
                    .any(|p| references(p, *resource).iter().any(|r| r == name))
                    || (*resource == Resource::Secrets
                        && volume_secret_of_node(store, node, namespace_of(ask), name))
            });
            if related && *verb == "get" {
                return Ok(());
            }
            (resource.plural(), name.unwrap_or_default(), *verb)
        }
        Ask::Token {
            service_account,
            body,
            ..
        } => {
            let bound = &body["spec"]["boundObjectRef"];
            let bound_pod = on_node.iter().find(|p| {
                bound["kind"].as_str() == Some("Pod")
                    && p["metadata"]["name"] == bound["name"]
                    && (bound["uid"].is_null() || p["metadata"]["uid"] == bound["uid"])
            });
            match bound_pod {
                Some(p) if service_account_of(p) == *service_account => return Ok(()),
                Some(_) => {}
                None => {
                    return Err(ApiError::forbidden(format!(
                        "serviceaccounts \"{service_account}\" is forbidden: node requested token bound to a pod scheduled on a different node or to a non-pod object"
                    )))
                }
            }
            ("serviceaccounts/token", *service_account, "create")
        }
    };
    let object = plural.split('/').next().unwrap_or(plural);
    Err(ApiError::forbidden(format!(
        "{object} \"{name}\" is forbidden: User \"system:node:{node}\" cannot {verb} resource \"{plural}\" in API group \"\" in the namespace \"{}\": no relationship found between node '{node}' and this object",
        namespace_of(ask)
    )))
}

/// The node authorizer's rules for storage.k8s.io objects: a node may get, create, update,
/// patch and delete the CSINode of its own name (creates are named in the body, which
/// NodeRestriction checks), and get the VolumeAttachments whose `spec.nodeName` is itself.
fn authorize_storage(
    store: &Store,
    node: &str,
    resource: Resource,
    name: Option<&str>,
    verb: &str,
) -> Result<(), ApiError> {
    let name = name.unwrap_or_default();
    let why = match resource {
        Resource::CsiNodes => {
            if !matches!(verb, "get" | "create" | "update" | "patch" | "delete") {
                "can only get, create, update, patch, or delete a CSINode"
            } else if verb != "create" && name != node {
                "can only access CSINode with the same name as the requesting node"
            } else {
                return Ok(());
            }
        }
        _ => {
            let key = (resource, String::new(), name.to_string());
            let related = store
                .get(&key)
                .is_some_and(|va| va["spec"]["nodeName"].as_str() == Some(node));
            if verb == "get" && related {
                return Ok(());
            }
            if verb != "get" {
                "can only get individual resources of this type"
            } else {
                &format!("no relationship found between node '{node}' and this object")
            }
        }
    };
    Err(ApiError::forbidden(format!(
        "{} \"{name}\" is forbidden: User \"system:node:{node}\" cannot {verb} resource \"{}\" in API group \"storage.k8s.io\" at the cluster scope: {why}",
        resource.qualified(),
        resource.plural(),
    )))
}

/// Whether a claim referenced by a pod bound to `node` is bound to the volume `pv`.
fn bound_to_a_claim_of(store: &Store, node: &str, pv: &str) -> bool {
    let (pods, _) = store.list(Resource::Pods, None);
    pods.iter()
        .filter(|p| p["spec"]["nodeName"].as_str() == Some(node))
        .any(|p| {
            let namespace = p["metadata"]["namespace"].as_str().unwrap_or("default");
            references(p, Resource::PersistentVolumeClaims)
                .iter()
                .any(|claim| {
                    let key = (
                        Resource::PersistentVolumeClaims,
                        namespace.to_string(),
                        claim.clone(),
                    );
                    store
                        .get(&key)
                        .is_some_and(|c| c["spec"]["volumeName"].as_str() == Some(pv))
                })
        })
}

/// Whether secret `namespace/name` is a CSI secret (`nodeStageSecretRef`,
/// `nodePublishSecretRef`) of a PersistentVolume bound to a claim of a pod on `node`.
fn volume_secret_of_node(store: &Store, node: &str, namespace: &str, name: &str) -> bool {
    let (volumes, _) = store.list(Resource::PersistentVolumes, None);
    volumes.iter().any(|pv| {
        let pv_name = pv["metadata"]["name"].as_str().unwrap_or_default();
        ["nodeStageSecretRef", "nodePublishSecretRef"]
            .iter()
            .any(|field| {
                let secret = &pv["spec"]["csi"][*field];
                secret["name"].as_str() == Some(name)
                    && secret["namespace"].as_str() == Some(namespace)
            })
            && bound_to_a_claim_of(store, node, pv_name)
    })
}

fn namespace_of<'a>(ask: &Ask<'a>) -> &'a str {
    match ask {
        Ask::Read { namespace, .. } | Ask::Token { namespace, .. } => namespace,
    }
}

fn service_account_of(pod: &Value) -> &str {
    pod["spec"]["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// Names of the configmaps or secrets a pod references: volumes (also inside projected
/// ones), env, envFrom and, for secrets, imagePullSecrets.
pub(super) fn references(pod: &Value, resource: Resource) -> Vec<String> {
    let spec = &pod["spec"];
    let mut out = Vec::new();
    if resource == Resource::PersistentVolumeClaims {
        let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
        for vol in spec["volumes"].as_array().into_iter().flatten() {
            if let Some(claim) = vol["persistentVolumeClaim"]["claimName"].as_str() {
                out.push(claim.to_string());
            }
            if vol["ephemeral"].is_object() {
                let volume = vol["name"].as_str().unwrap_or_default();
                out.push(format!("{pod_name}-{volume}"));
            }
        }
        return out;
    }
    let mut push = |v: &Value| {
        if let Some(s) = v.as_str() {
            out.push(s.to_string());
        }
    };
    let secrets = resource == Resource::Secrets;
    for vol in spec["volumes"].as_array().into_iter().flatten() {
        if secrets {
            push(&vol["secret"]["secretName"]);
            push(&vol["csi"]["nodePublishSecretRef"]["name"]);
        } else {
            push(&vol["configMap"]["name"]);
        }
        for src in vol["projected"]["sources"].as_array().into_iter().flatten() {
            push(&src[if secrets { "secret" } else { "configMap" }]["name"]);
        }
    }
    let containers = ["containers", "initContainers", "ephemeralContainers"];
    for c in containers
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
    {
        for env in c["env"].as_array().into_iter().flatten() {
            push(
                &env["valueFrom"][if secrets {
                    "secretKeyRef"
                } else {
                    "configMapKeyRef"
                }]["name"],
            );
        }
        for from in c["envFrom"].as_array().into_iter().flatten() {
            push(&from[if secrets { "secretRef" } else { "configMapRef" }]["name"]);
        }
    }
    if secrets {
        for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
            push(&s["name"]);
        }
    }
    out
}
