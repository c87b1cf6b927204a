//! The labels and annotations rkubelet puts on sandboxes and containers (same keys as upstream),
//! and reading them back. After a restart these are the kubelet's only memory of what it ran.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::types::PodUid;

/// Label: the pod's name.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Label: the pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label: the pod's UID.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// Label: the container's name in the pod spec.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
/// Annotation: hash of the container spec the container was created from.
pub const CONTAINER_HASH_ANNOTATION: &str = "io.kubernetes.container.hash";
/// Annotation: how many times this container had been restarted when it was created.
pub const CONTAINER_RESTART_COUNT_ANNOTATION: &str = "io.kubernetes.container.restartCount";
/// Annotation: where the container writes its termination message.
pub const CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePath";
/// Annotation: the container's termination message policy.
pub const CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePolicy";
/// Annotation: the pod's termination grace period, so an orphan can be stopped with it.
pub const POD_TERMINATION_GRACE_PERIOD_ANNOTATION: &str =
    "io.kubernetes.pod.terminationGracePeriod";
/// Annotation: the container ports as JSON.
pub const CONTAINER_PORTS_ANNOTATION: &str = "io.kubernetes.container.ports";
/// Annotation: the container's preStop handler as JSON.
pub const CONTAINER_PRE_STOP_ANNOTATION: &str = "io.kubernetes.container.preStopHandler";

/// What the labels of a sandbox or container say about the pod it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledPod {
    /// The pod UID.
    pub uid: PodUid,
    /// The pod name.
    pub name: String,
    /// The pod namespace.
    pub namespace: String,
}

/// Labels for a pod's sandbox: the pod's own labels plus the pod identity.
pub fn new_pod_labels(pod: &Pod) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(POD_NAME_LABEL.into(), pod_name(pod).into());
    labels.insert(POD_NAMESPACE_LABEL.into(), pod_namespace(pod).into());
    labels.insert(POD_UID_LABEL.into(), pod_uid(pod).into());
    labels
}

/// Labels for a container: the pod identity and the container name.
pub fn new_container_labels(pod: &Pod, container: &Container) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    labels.insert(POD_NAME_LABEL.into(), pod_name(pod).into());
    labels.insert(POD_NAMESPACE_LABEL.into(), pod_namespace(pod).into());
    labels.insert(POD_UID_LABEL.into(), pod_uid(pod).into());
    labels.insert(CONTAINER_NAME_LABEL.into(), container.name.clone());
    labels
}

/// Annotations for a container: spec hash, restart count and what stopping it needs.
pub fn new_container_annotations(
    pod: &Pod,
    container: &Container,
    restart_count: u32,
) -> HashMap<String, String> {
    let mut a = HashMap::new();
    a.insert(
        CONTAINER_HASH_ANNOTATION.into(),
        format!("{:x}", super::hash::hash_container(container)),
    );
    a.insert(
        CONTAINER_RESTART_COUNT_ANNOTATION.into(),
        restart_count.to_string(),
    );
    a.insert(
        CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION.into(),
        container
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into()),
    );
    a.insert(
        CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION.into(),
        container
            .termination_message_policy
            .clone()
            .unwrap_or_else(|| "File".into()),
    );
    if let Some(grace) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        a.insert(
            POD_TERMINATION_GRACE_PERIOD_ANNOTATION.into(),
            grace.to_string(),
        );
    }
    if let Some(ports) = container.ports.as_ref().filter(|p| !p.is_empty()) {
        if let Ok(json) = serde_json::to_string(ports) {
            a.insert(CONTAINER_PORTS_ANNOTATION.into(), json);
        }
    }
    if let Some(pre_stop) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
    {
        if let Ok(json) = serde_json::to_string(pre_stop) {
            a.insert(CONTAINER_PRE_STOP_ANNOTATION.into(), json);
        }
    }
    a
}

/// Reads the pod identity from runtime labels; `None` when the object was not made by a kubelet.
pub fn labeled_pod(labels: &HashMap<String, String>) -> Option<LabeledPod> {
    Some(LabeledPod {
        uid: PodUid::from(labels.get(POD_UID_LABEL)?.as_str()),
        name: labels.get(POD_NAME_LABEL)?.clone(),
        namespace: labels.get(POD_NAMESPACE_LABEL)?.clone(),
    })
}

/// The pod's name (empty if unset).
pub fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

/// The pod's namespace (`default` if unset).
pub fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// The pod's UID (empty if unset).
pub fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-node1".into()),
                namespace: Some("default".into()),
                uid: Some("1234".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn sandbox_labels_carry_pod_labels_and_identity() {
        let labels = new_pod_labels(&pod());
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            labeled_pod(&labels),
            Some(LabeledPod {
                uid: PodUid::from("1234"),
                name: "web-node1".into(),
                namespace: "default".into()
            })
        );
    }

    #[test]
    fn container_annotations_hold_hash_and_restart_count() {
        let c = Container {
            name: "app".into(),
            image: Some("busybox".into()),
            ..Default::default()
        };
        let a = new_container_annotations(&pod(), &c, 3);
        assert_eq!(
            a.get(CONTAINER_RESTART_COUNT_ANNOTATION)
                .map(String::as_str),
            Some("3")
        );
        assert_eq!(
            a.get(CONTAINER_HASH_ANNOTATION).cloned(),
            Some(format!("{:x}", super::super::hash::hash_container(&c)))
        );
        assert!(labeled_pod(&HashMap::new()).is_none());
    }
}
