//! Mirror pods (upstream `pod/mirror_client.go` plus the pod manager's mirror map): the API
//! copies of static pods, so `kubectl get pods` shows them. The sync loop records the mirror
//! pods the API source delivers; a pod worker syncing a static pod creates its mirror when it
//! is missing (or being deleted, after removing it), and deletes it when the static pod goes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::api::{ApiError, DeleteOptions, KubeClient};
use crate::config::update::{CONFIG_HASH_ANNOTATION, CONFIG_MIRROR_ANNOTATION};
use crate::types::pod_key;

/// The mirror pods the API source reported, by `namespace/name`. Written by the sync loop,
/// read by pod workers; the lock is never held across an API call.
#[derive(Debug, Default)]
pub struct MirrorPods {
    pods: Mutex<HashMap<String, Arc<Pod>>>,
}

impl MirrorPods {
    /// Records (or replaces) a mirror pod.
    pub fn set(&self, pod: &Arc<Pod>) {
        if let Ok(mut m) = self.pods.lock() {
            m.insert(pod_key(pod), Arc::clone(pod));
        }
    }

    /// Forgets a mirror pod.
    pub fn remove(&self, pod: &Pod) {
        if let Ok(mut m) = self.pods.lock() {
            m.remove(&pod_key(pod));
        }
    }

    /// The mirror pod for a static pod, if the API has one.
    pub fn get(&self, static_pod: &Pod) -> Option<Arc<Pod>> {
        self.pods.lock().ok()?.get(&pod_key(static_pod)).cloned()
    }
}

/// The config hash a static pod or its mirror carries.
fn config_hash(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get(key).cloned()
}

/// Whether `mirror` is the up-to-date mirror of `static_pod` (same config hash, not being
/// deleted).
pub fn mirror_is_current(static_pod: &Pod, mirror: &Pod) -> bool {
    mirror.metadata.deletion_timestamp.is_none()
        && config_hash(mirror, CONFIG_MIRROR_ANNOTATION).is_some()
        && config_hash(mirror, CONFIG_MIRROR_ANNOTATION)
            == config_hash(static_pod, CONFIG_HASH_ANNOTATION)
}

/// The mirror pod object for a static pod: a copy with the mirror annotation and the Node as
/// its controller owner (upstream `CreateMirrorPod`; NodeRestriction admits nothing else).
pub fn mirror_pod_for(static_pod: &Pod, node_name: &str, node_uid: &str) -> Pod {
    let hash = config_hash(static_pod, CONFIG_HASH_ANNOTATION).unwrap_or_default();
    let mut annotations: BTreeMap<String, String> =
        static_pod.metadata.annotations.clone().unwrap_or_default();
    annotations.insert(CONFIG_MIRROR_ANNOTATION.to_string(), hash);
    let owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.to_string(),
        uid: node_uid.to_string(),
        controller: Some(true),
        ..Default::default()
    }]);
    Pod {
        metadata: ObjectMeta {
            name: static_pod.metadata.name.clone(),
            namespace: static_pod.metadata.namespace.clone(),
            labels: static_pod.metadata.labels.clone(),
            annotations: Some(annotations),
            owner_references,
            ..Default::default()
        },
        spec: static_pod.spec.clone(),
        status: None,
    }
}

/// Makes sure the API has a current mirror for `static_pod`: deletes a stale or terminating
/// one (grace 0, UID precondition) and creates a new one.
pub fn ensure_mirror_pod(
    client: &dyn KubeClient,
    mirrors: &MirrorPods,
    static_pod: &Pod,
    node_name: &str,
    node_uid: &str,
) -> Result<(), ApiError> {
    let existing = mirrors.get(static_pod);
    if existing
        .as_deref()
        .is_some_and(|m| mirror_is_current(static_pod, m))
    {
        return Ok(());
    }
    if let Some(old) = existing {
        delete_mirror_pod(client, &old)?;
    }
    match client.create_pod(&mirror_pod_for(static_pod, node_name, node_uid)) {
        Ok(created) => {
            log::info!("pod=\"{}\" mirror pod created", pod_key(static_pod));
            mirrors.set(&Arc::new(created));
            Ok(())
        }
        // The API already has it; the source will deliver it.
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes a mirror pod at once (grace 0, its UID as precondition).
pub fn delete_mirror_pod(client: &dyn KubeClient, mirror: &Pod) -> Result<(), ApiError> {
    let opts = DeleteOptions {
        grace_period_seconds: Some(0),
        precondition_uid: mirror.metadata.uid.clone(),
    };
    let namespace = mirror.metadata.namespace.as_deref().unwrap_or("default");
    let name = mirror.metadata.name.as_deref().unwrap_or_default();
    match client.delete_pod(namespace, name, &opts) {
        Ok(()) => {
            log::info!("pod=\"{}\" mirror pod deleted", pod_key(mirror));
            Ok(())
        }
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Call, FakeClient};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn static_pod(hash: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-node1".into()),
                namespace: Some("default".into()),
                uid: Some(hash.into()),
                annotations: Some(
                    [
                        (CONFIG_HASH_ANNOTATION.to_string(), hash.to_string()),
                        (
                            "kubernetes.io/config.source".to_string(),
                            "file".to_string(),
                        ),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn mirror_is_created_once_and_replaced_when_stale_or_terminating() {
        let fake = FakeClient::new();
        let mirrors = MirrorPods::default();
        let pod = static_pod("h1");
        ensure_mirror_pod(&fake, &mirrors, &pod, "node1", "node-uid").unwrap();
        let created = fake.pod("default", "web-node1").expect("mirror created");
        let annotations = created.metadata.annotations.clone().unwrap();
        assert_eq!(
            annotations
                .get(CONFIG_MIRROR_ANNOTATION)
                .map(String::as_str),
            Some("h1")
        );
        let owner = &created.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Node", "node1", "node-uid")
        );
        assert_eq!(
            owner.controller,
            Some(true),
            "NodeRestriction needs a controller"
        );
        assert!(mirror_is_current(&pod, &created));

        fake.clear_calls();
        ensure_mirror_pod(&fake, &mirrors, &pod, "node1", "node-uid").unwrap();
        assert!(fake.calls().is_empty(), "current mirror left alone");

        // The user deletes the mirror: it is removed and created again.
        let mut terminating = created.clone();
        terminating.metadata.deletion_timestamp =
            Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        mirrors.set(&Arc::new(terminating));
        ensure_mirror_pod(&fake, &mirrors, &pod, "node1", "node-uid").unwrap();
        let calls = fake.calls();
        assert!(matches!(calls[0], Call::DeletePod { .. }), "{calls:?}");
        assert!(matches!(calls[1], Call::CreatePod { .. }), "{calls:?}");
        assert_ne!(
            fake.pod("default", "web-node1").unwrap().metadata.uid,
            created.metadata.uid
        );

        // A changed static pod (new hash) gets a new mirror.
        let changed = static_pod("h2");
        assert!(!mirror_is_current(
            &changed,
            &mirrors.get(&changed).unwrap()
        ));
    }
}
