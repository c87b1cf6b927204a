//! The `pods/{name}/ephemeralcontainers` subresource, as kube-apiserver serves it: `kubectl
//! debug` adds an ephemeral container to a running pod with a strategic merge patch of it.
//! Only `spec.ephemeralContainers` changes, and only by additions (upstream
//! `ValidatePodEphemeralContainersUpdate`); the new containers get the scheme's defaults.

use serde_json::{json, Value};

use super::defaults::default_pod_spec;
use super::meta::str_at;
use super::registry::{apply_patch, Admit, Operation, PatchType};
use super::resources::Resource;
use super::status::ApiError;
use super::store::{Store, Write, Written};

/// What a request to the subresource carries.
pub enum Change<'a> {
    /// `PUT`: a whole Pod, of which only `spec.ephemeralContainers` counts.
    Put(Value),
    /// `PATCH` of the pod.
    Patch(PatchType, &'a [u8]),
}

/// Fields an ephemeral container may not set.
const FORBIDDEN: [&str; 8] = [
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "resources",
    "resizePolicy",
    "restartPolicy",
];

/// Applies `change` to pod `namespace/name`'s ephemeral containers.
pub fn update(
    store: &Store,
    namespace: &str,
    name: &str,
    change: Change<'_>,
    admit: &Admit<'_>,
) -> Result<Written, ApiError> {
    let key = (Resource::Pods, namespace.to_string(), name.to_string());
    store.write(key, |current| {
        let current = current.ok_or_else(|| ApiError::not_found(Resource::Pods, name))?;
        let proposed = match &change {
            Change::Put(body) => {
                let sent_rv = str_at(body, "/metadata/resourceVersion");
                if !sent_rv.is_empty() && sent_rv != str_at(current, "/metadata/resourceVersion") {
                    return Err(ApiError::conflict(
                        Resource::Pods,
                        name,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ));
                }
                body.clone()
            }
            Change::Patch(kind, patch) => {
                let patch: Value = serde_json::from_slice(patch)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                apply_patch(Resource::Pods, current, *kind, &patch)?
            }
        };
        let mut defaulted = json!({"spec": {
            "ephemeralContainers": proposed.pointer("/spec/ephemeralContainers").cloned().unwrap_or(json!([])),
        }});
        default_pod_spec(&mut defaulted);
        let list = defaulted["spec"]["ephemeralContainers"].take();
        validate(current, &list).map_err(|why| ApiError::invalid(Resource::Pods, name, &why))?;
        let mut next = current.clone();
        next["spec"]["ephemeralContainers"] = list;
        if next == *current {
            return Ok(Write::Keep);
        }
        admit(Operation::Update, Some(current), Some(&next))?;
        Ok(Write::Put(next))
    })
}

/// Upstream's rules for the new list against the pod as it is.
fn validate(current: &Value, list: &Value) -> Result<(), String> {
    let Some(list) = list.as_array() else {
        return Err("spec.ephemeralContainers: Invalid value: must be a list".into());
    };
    let names_of = |field: &str| -> Vec<String> {
        current["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| str_at(c, "/name").to_string())
            .collect()
    };
    let mut taken: Vec<String> = names_of("containers");
    taken.extend(names_of("initContainers"));
    let targets = taken.clone();
    let existing: Vec<&Value> = current["spec"]["ephemeralContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for old in &existing {
        let old_name = str_at(old, "/name");
        if !list.iter().any(|c| c == *old) {
            return Err(format!(
                "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"{old_name}\" may not be removed or changed"
            ));
        }
    }
    for (i, c) in list.iter().enumerate() {
        let at = format!("spec.ephemeralContainers[{i}]");
        let name = str_at(c, "/name");
        if name.is_empty() {
            return Err(format!("{at}.name: Required value"));
        }
        if str_at(c, "/image").is_empty() {
            return Err(format!("{at}.image: Required value"));
        }
        if taken.iter().any(|t| t == name) {
            return Err(format!("{at}.name: Duplicate value: \"{name}\""));
        }
        taken.push(name.to_string());
        for field in FORBIDDEN {
            // Empty values are unset, as Go's zero values are (kubectl sends `resources: {}`).
            let set = c.get(field).is_some_and(|v| match v {
                Value::Null => false,
                Value::Object(m) => !m.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::String(s) => !s.is_empty(),
                _ => true,
            });
            if set {
                return Err(format!(
                    "{at}.{field}: Forbidden: cannot be set for an Ephemeral Container"
                ));
            }
        }
        let target = str_at(c, "/targetContainerName");
        if !target.is_empty() && !targets.iter().any(|t| t == target) {
            return Err(format!("{at}.targetContainerName: Not found: \"{target}\""));
        }
    }
    Ok(())
}
