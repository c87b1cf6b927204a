//! In-memory API objects with the API server's write semantics, for the recording fake
//! client (the API server test double keeps JSON objects and a change log for its watches
//! in `tests/support/apiserver/store.rs`): objects keyed by namespace and name, a shared
//! monotonic resourceVersion, `generateName` and uid filled in on create, and the errors the
//! real server gives: 409 AlreadyExists, 404 NotFound, 409 Conflict on a stale
//! resourceVersion or a uid precondition that does not match, and status-only patches.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, VolumeAttachment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::strategic;
use super::{ApiError, ApiStatus};

/// An API object the store can hold.
pub trait Object: Serialize + DeserializeOwned + Clone {
    /// Resource name as the API server words its errors (`pods`, `leases.coordination.k8s.io`).
    const RESOURCE: &'static str;
    /// Whether the object lives in a namespace (cluster-scoped ones use namespace "").
    const NAMESPACED: bool;
    /// `metadata`.
    fn meta(&self) -> &ObjectMeta;
    /// `metadata`, to fill in.
    fn meta_mut(&mut self) -> &mut ObjectMeta;
}

macro_rules! object {
    ($t:ty, $resource:expr, $namespaced:expr) => {
        impl Object for $t {
            const RESOURCE: &'static str = $resource;
            const NAMESPACED: bool = $namespaced;
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
object!(Pod, "pods", true);
object!(Node, "nodes", false);
object!(Lease, "leases.coordination.k8s.io", true);
object!(Event, "events", true);
object!(ConfigMap, "configmaps", true);
object!(Secret, "secrets", true);
object!(Service, "services", true);
object!(RuntimeClass, "runtimeclasses.node.k8s.io", false);
object!(PersistentVolumeClaim, "persistentvolumeclaims", true);
object!(PersistentVolume, "persistentvolumes", false);
object!(CSIDriver, "csidrivers.storage.k8s.io", false);
object!(CSINode, "csinodes.storage.k8s.io", false);
object!(VolumeAttachment, "volumeattachments.storage.k8s.io", false);

/// A `Status` error as the API server would send it.
pub fn status_error(verb: &'static str, code: u16, reason: &str, message: String) -> ApiError {
    let reason = reason.to_string();
    ApiError::Status {
        verb,
        path: String::new(),
        status: ApiStatus {
            code,
            reason,
            message,
        },
        retry_after: None,
    }
}

fn not_found<T: Object>(verb: &'static str, name: &str) -> ApiError {
    status_error(
        verb,
        404,
        "NotFound",
        format!("{} {name:?} not found", T::RESOURCE),
    )
}

fn conflict<T: Object>(verb: &'static str, name: &str, why: &str) -> ApiError {
    let message = format!(
        "Operation cannot be fulfilled on {} {name:?}: {why}",
        T::RESOURCE
    );
    status_error(verb, 409, "Conflict", message)
}

const UID_MISMATCH: &str = "Precondition failed: UID in precondition does not match";
const STALE: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// Advances the shared resourceVersion counter and returns the new value.
fn next(rv: &mut u64) -> String {
    *rv += 1;
    rv.to_string()
}

/// The objects of one kind, keyed by (namespace, name).
#[derive(Debug, Clone)]
pub struct Objects<T> {
    items: BTreeMap<(String, String), T>,
}

impl<T> Default for Objects<T> {
    fn default() -> Self {
        Objects {
            items: BTreeMap::new(),
        }
    }
}

impl<T: Object> Objects<T> {
    /// The (namespace, name) key of `obj`: namespace `default` when unset, "" when
    /// cluster-scoped.
    pub fn key_of(obj: &T) -> (String, String) {
        let meta = obj.meta();
        let namespace = match &meta.namespace {
            _ if !T::NAMESPACED => String::new(),
            Some(ns) if !ns.is_empty() => ns.clone(),
            _ => "default".to_string(),
        };
        (namespace, meta.name.clone().unwrap_or_default())
    }

    /// All objects, ordered by namespace and name.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.values()
    }

    /// The object, or 404.
    pub fn get(&self, namespace: &str, name: &str) -> Result<T, ApiError> {
        self.find(namespace, name)
            .cloned()
            .ok_or_else(|| not_found::<T>("GET", name))
    }

    /// The object, if stored.
    pub fn find(&self, namespace: &str, name: &str) -> Option<&T> {
        self.items.get(&(namespace.to_string(), name.to_string()))
    }

    /// Stores a new object, filling in namespace, name (from `generateName`), uid and
    /// resourceVersion; 409 AlreadyExists when the name is taken.
    pub fn create(&mut self, obj: &T, rv: &mut u64) -> Result<T, ApiError> {
        let mut obj = obj.clone();
        let meta = obj.meta_mut();
        let generate = meta.generate_name.clone().filter(|p| !p.is_empty());
        if meta.name.as_deref().unwrap_or_default().is_empty() {
            let Some(prefix) = generate else {
                let message = "metadata.name: Required value".to_string();
                return Err(status_error("POST", 422, "Invalid", message));
            };
            meta.name = Some(format!("{prefix}{}", *rv + 1));
        }
        let key = Self::key_of(&obj);
        if self.items.contains_key(&key) {
            let message = format!("{} {:?} already exists", T::RESOURCE, key.1);
            return Err(status_error("POST", 409, "AlreadyExists", message));
        }
        let version = next(rv);
        let meta = obj.meta_mut();
        if meta.uid.as_deref().unwrap_or_default().is_empty() {
            meta.uid = Some(format!("fake-uid-{version}"));
        }
        meta.resource_version = Some(version);
        if T::NAMESPACED {
            meta.namespace = Some(key.0.clone());
        }
        self.items.insert(key, obj.clone());
        Ok(obj)
    }

    /// Replaces a stored object (PUT): 404 when missing, 409 Conflict when `obj` carries a
    /// resourceVersion other than the stored one (none means unconditional). The uid stays.
    pub fn update(&mut self, obj: &T, rv: &mut u64) -> Result<T, ApiError> {
        let key = Self::key_of(obj);
        let current = self
            .items
            .get(&key)
            .ok_or_else(|| not_found::<T>("PUT", &key.1))?;
        let sent = obj
            .meta()
            .resource_version
            .as_deref()
            .filter(|v| !v.is_empty());
        if sent.is_some_and(|v| current.meta().resource_version.as_deref() != Some(v)) {
            return Err(conflict::<T>("PUT", &key.1, STALE));
        }
        let mut updated = obj.clone();
        updated.meta_mut().uid = current.meta().uid.clone();
        updated.meta_mut().resource_version = Some(next(rv));
        if T::NAMESPACED {
            updated.meta_mut().namespace = Some(key.0.clone());
        }
        self.items.insert(key, updated.clone());
        Ok(updated)
    }

    /// Applies a strategic merge patch (as the kubelet sends them); with `status_only` (the `/status` subresource) only the
    /// patched `status` is kept. A `metadata.uid` in the patch must match (409 otherwise).
    pub fn patch(
        &mut self,
        namespace: &str,
        name: &str,
        patch: &Value,
        status_only: bool,
        rv: &mut u64,
    ) -> Result<T, ApiError> {
        let key = (namespace.to_string(), name.to_string());
        let current = self
            .items
            .get(&key)
            .ok_or_else(|| not_found::<T>("PATCH", name))?;
        if let Some(uid) = patch.pointer("/metadata/uid").and_then(Value::as_str) {
            if current.meta().uid.as_deref() != Some(uid) {
                return Err(conflict::<T>("PATCH", name, UID_MISMATCH));
            }
        }
        let invalid = |e: serde_json::Error| status_error("PATCH", 422, "Invalid", e.to_string());
        let original = serde_json::to_value(current).map_err(invalid)?;
        let mut patched = strategic::apply(&original, patch, strategic::schema_of(T::RESOURCE))
            .map_err(|e| status_error("PATCH", 400, "BadRequest", e.to_string()))?;
        if status_only {
            let status = patched.get("status").cloned().unwrap_or(Value::Null);
            patched = original;
            if let Some(fields) = patched.as_object_mut() {
                match status {
                    Value::Null => fields.remove("status"),
                    status => fields.insert("status".into(), status),
                };
            }
        }
        let mut obj: T = serde_json::from_value(patched).map_err(invalid)?;
        obj.meta_mut().resource_version = Some(next(rv));
        self.items.insert(key, obj.clone());
        Ok(obj)
    }

    /// Removes an object: 404 when missing, 409 when `precondition_uid` does not match.
    pub fn delete(
        &mut self,
        namespace: &str,
        name: &str,
        precondition_uid: Option<&str>,
        rv: &mut u64,
    ) -> Result<T, ApiError> {
        let key = (namespace.to_string(), name.to_string());
        let current = self
            .items
            .get(&key)
            .ok_or_else(|| not_found::<T>("DELETE", name))?;
        if precondition_uid.is_some_and(|uid| current.meta().uid.as_deref() != Some(uid)) {
            return Err(conflict::<T>("DELETE", name, UID_MISMATCH));
        }
        next(rv);
        self.items
            .remove(&key)
            .ok_or_else(|| not_found::<T>("DELETE", name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lease(name: &str, rv: Option<&str>) -> Lease {
        let mut l: Lease = serde_json::from_value(json!({
            "metadata": {"namespace": "kube-node-lease", "name": name},
            "spec": {"holderIdentity": name},
        }))
        .unwrap();
        l.metadata.resource_version = rv.map(str::to_string);
        l
    }

    #[test]
    fn create_fills_in_metadata_and_refuses_duplicates() {
        let (mut pods, mut rv) = (Objects::<Pod>::default(), 0);
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"generateName": "web-"}})).unwrap();
        let created = pods.create(&pod, &mut rv).unwrap();
        assert_eq!(created.metadata.name.as_deref(), Some("web-1"));
        assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(created.metadata.uid.as_deref(), Some("fake-uid-1"));
        assert_eq!(created.metadata.resource_version.as_deref(), Some("1"));
        assert!(pods
            .create(&created, &mut rv)
            .unwrap_err()
            .is_already_exists());
        let nameless = pods.create(&Pod::default(), &mut rv).unwrap_err();
        assert_eq!(nameless.code(), Some(422));
        assert_eq!(rv, 1);
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
        let node = Objects::<Node>::default().create(&node, &mut rv).unwrap();
        assert_eq!(node.metadata.namespace, None);
    }

    #[test]
    fn update_checks_resource_version() {
        let (mut leases, mut rv) = (Objects::<Lease>::default(), 0);
        assert!(leases
            .update(&lease("n", None), &mut rv)
            .unwrap_err()
            .is_not_found());
        let created = leases.create(&lease("n", None), &mut rv).unwrap();
        let updated = leases.update(&created, &mut rv).unwrap();
        assert_eq!(updated.metadata.resource_version.as_deref(), Some("2"));
        assert!(leases.update(&created, &mut rv).unwrap_err().is_conflict());
        let forced = leases.update(&lease("n", None), &mut rv).unwrap();
        assert_eq!(forced.metadata.uid, created.metadata.uid);
    }

    #[test]
    fn status_patch_keeps_the_rest() {
        let (mut nodes, mut rv) = (Objects::<Node>::default(), 0);
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
        nodes.create(&node, &mut rv).unwrap();
        let patch = json!({"spec": {"unschedulable": true}, "status": {"phase": "Running"}});
        let patched = nodes.patch("", "n", &patch, true, &mut rv).unwrap();
        assert_eq!(patched.spec, None);
        assert_eq!(patched.status.unwrap().phase.as_deref(), Some("Running"));
        let patched = nodes
            .patch("", "n", &json!({"status": null}), true, &mut rv)
            .unwrap();
        assert_eq!(patched.status, None);
        let wrong_uid = json!({"metadata": {"uid": "x"}});
        assert!(nodes
            .patch("", "n", &wrong_uid, false, &mut rv)
            .unwrap_err()
            .is_conflict());
        assert!(nodes
            .patch("", "m", &json!({}), false, &mut rv)
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn delete_checks_uid() {
        let (mut leases, mut rv) = (Objects::<Lease>::default(), 0);
        leases.create(&lease("n", None), &mut rv).unwrap();
        let err = leases
            .delete("kube-node-lease", "n", Some("x"), &mut rv)
            .unwrap_err();
        assert!(err.is_conflict());
        leases
            .delete("kube-node-lease", "n", Some("fake-uid-1"), &mut rv)
            .unwrap();
        assert!(leases.find("kube-node-lease", "n").is_none());
        assert!(leases
            .delete("kube-node-lease", "n", None, &mut rv)
            .unwrap_err()
            .is_not_found());
    }
}
