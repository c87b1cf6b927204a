//! Sending pod statuses to the API server (upstream `status_manager.go` `syncBatch`), on the
//! `status-manager` thread. Pod workers only record statuses in the [`StatusManager`] and
//! wake this thread; it patches `pods/status` for each pod whose status changed since it was
//! last sent, so no API call is ever made from a pod worker. Static pods' statuses go to their
//! mirror pods. Each patch is a strategic merge patch of the kubelet's own part of the status
//! (its fields and the conditions it owns, merged by condition `type`), so conditions other
//! components write are never lost. Pods that terminated while their API object carries a deletion timestamp are
//! deleted from the API (grace period 0, UID precondition) once their last status is sent.
//! A retriable failure leaves the pod pending for the next round (woken by the next change
//! or by the 10 s resync tick).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, tick, Receiver};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use serde_json::Value;

use crate::api::{strategic, ApiError, DeleteOptions, KubeClient};
use crate::config::update::{API_SOURCE, CONFIG_MIRROR_ANNOTATION, CONFIG_SOURCE_ANNOTATION};
use crate::types::{pod_key, PodUid};

use super::StatusManager;

/// How often pending work is retried even without a new change (upstream `syncPeriod`).
pub const SYNC_PERIOD: Duration = Duration::from_secs(10);

/// Pod conditions the kubelet owns (upstream `PodConditionsByKubelet`); the others on the
/// API object (readiness gates, DisruptionTarget, ...) belong to other components and are
/// never part of the kubelet's patch.
const KUBELET_CONDITIONS: &[&str] = &[
    "PodScheduled",
    "Ready",
    "Initialized",
    "ContainersReady",
    "PodResizeInProgress",
    "PodResizePending",
    "PodReadyToStartContainers",
];

/// The `status` fields the kubelet writes; others (`nominatedNodeName`,
/// `resourceClaimStatuses`, ...) are left to their owners.
const KUBELET_FIELDS: &[&str] = &[
    "phase",
    "conditions",
    "message",
    "reason",
    "hostIP",
    "hostIPs",
    "podIP",
    "podIPs",
    "startTime",
    "initContainerStatuses",
    "containerStatuses",
    "ephemeralContainerStatuses",
    "qosClass",
];

/// Whether a pod came from the API server (as opposed to a static pod).
pub fn is_api_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_SOURCE_ANNOTATION))
        .is_none_or(|s| s == API_SOURCE)
}

/// Whether a pod is a mirror pod (the API copy of a static pod).
pub fn is_mirror_pod(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(CONFIG_MIRROR_ANNOTATION))
}

/// Pod conditions the kubelet shares with others (upstream `PodConditionSharedByKubelet`):
/// written when the kubelet's status has one (an eviction's `DisruptionTarget`), left alone
/// otherwise.
const SHARED_CONDITIONS: &[&str] = &["DisruptionTarget"];

/// The part of a pod status the kubelet owns, as JSON: its fields and its conditions, with
/// the shared conditions named in `shared`.
fn kubelet_part(status: &PodStatus, shared: &[&str]) -> Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    if let Value::Object(fields) = &mut value {
        fields.retain(|k, _| KUBELET_FIELDS.contains(&k.as_str()));
        if let Some(Value::Array(conditions)) = fields.get_mut("conditions") {
            conditions.retain(|c| {
                c["type"]
                    .as_str()
                    .is_some_and(|t| KUBELET_CONDITIONS.contains(&t) || shared.contains(&t))
            });
        }
    }
    value
}

/// The strategic merge patch of `pods/{name}/status` that turns `old` (what the server
/// holds of the kubelet's part) into `new`, with the target's UID as precondition (upstream
/// `PatchPodStatus`); `None` when nothing the kubelet owns changes.
pub fn pod_status_patch(uid: &str, old: &PodStatus, new: &PodStatus) -> Option<Value> {
    let shared: Vec<&str> = SHARED_CONDITIONS
        .iter()
        .copied()
        .filter(|t| new.conditions.iter().flatten().any(|c| c.type_ == *t))
        .collect();
    let old = serde_json::json!({ "status": kubelet_part(old, &shared) });
    let new =
        serde_json::json!({ "metadata": { "uid": uid }, "status": kubelet_part(new, &shared) });
    let patch = strategic::two_way(&old, &new, strategic::pod_schema)?;
    let unchanged = patch.get("status").is_none();
    (!unchanged).then_some(patch)
}

/// What sending one status did.
enum Sent {
    Patched,
    Unchanged,
    NoMirror,
}

/// The status sync loop's state, owned by its thread.
pub struct StatusSync {
    manager: Arc<StatusManager>,
    client: Arc<dyn KubeClient>,
    /// The last status sent per pod, so unchanged statuses are not patched again.
    /// (UID of the API object it went to, the status): a mirror pod recreated under a new
    /// UID starts from nothing.
    last_sent: HashMap<PodUid, (String, PodStatus)>,
    /// Mirror pods as the API source last reported them; without it the mirror is read
    /// from the API server for each status.
    mirrors: Option<Arc<crate::mirror::MirrorPods>>,
}

impl StatusSync {
    /// A sync for `manager`'s statuses through `client`.
    pub fn new(manager: Arc<StatusManager>, client: Arc<dyn KubeClient>) -> Self {
        StatusSync {
            manager,
            client,
            last_sent: HashMap::new(),
            mirrors: None,
        }
    }

    /// Takes static pods' mirrors from the API source's view (as upstream's status manager
    /// takes them from the pod manager) instead of reading each one from the API server.
    pub fn with_mirrors(mut self, mirrors: Arc<crate::mirror::MirrorPods>) -> Self {
        self.mirrors = Some(mirrors);
        self
    }

    /// Runs until `stop` fires (the `status-manager` thread).
    pub fn run(mut self, stop: Receiver<()>) {
        let resync = tick(SYNC_PERIOD);
        let wake = self.manager.wake_rx.clone();
        loop {
            select! {
                recv(wake) -> _ => {},
                recv(resync) -> _ => {},
                recv(stop) -> _ => break,
            }
            self.sync_batch();
        }
    }

    /// Sends every pending status and deletion once; returns how many API writes succeeded.
    pub fn sync_batch(&mut self) -> usize {
        let (dirty, deletable) = self.manager.take_pending();
        let mut writes = 0;
        let mut retry_dirty = Vec::new();
        let mut retry_delete = Vec::new();
        for (uid, entry) in dirty {
            let Some(entry) = entry else {
                self.last_sent.remove(&uid);
                continue;
            };
            let delete = deletable.contains(&uid);
            match self.send(&uid, &entry.pod, &entry.status) {
                Ok(Sent::Patched) => writes += 1,
                Ok(Sent::Unchanged) => {}
                // The mirror pod is still being created: try again next round.
                Ok(Sent::NoMirror) => retry_dirty.push(uid.clone()),
                Err(e) if e.is_retriable() => {
                    log::warn!(
                        "pod=\"{}\" uid={uid} status update failed, will retry: {e}",
                        entry.key
                    );
                    retry_dirty.push(uid.clone());
                    if delete {
                        retry_delete.push(uid);
                    }
                    continue;
                }
                Err(e) => log::warn!("pod=\"{}\" uid={uid} status update failed: {e}", entry.key),
            }
            if delete && is_api_pod(&entry.pod) {
                match self.delete(&entry.pod) {
                    Ok(()) => writes += 1,
                    Err(e) if e.is_retriable() => {
                        log::warn!(
                            "pod=\"{}\" uid={uid} delete failed, will retry: {e}",
                            entry.key
                        );
                        retry_delete.push(uid);
                    }
                    Err(e) => log::warn!("pod=\"{}\" uid={uid} delete failed: {e}", entry.key),
                }
            }
        }
        if !retry_dirty.is_empty() || !retry_delete.is_empty() {
            self.manager.requeue(retry_dirty, retry_delete);
        }
        writes
    }

    /// Patches one pod's status if it differs from what was last sent.
    fn send(&mut self, uid: &PodUid, pod: &Pod, status: &PodStatus) -> Result<Sent, ApiError> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let (target_uid, api_status) = if is_api_pod(pod) {
            (uid.0.clone(), pod.status.clone())
        } else {
            // A static pod's status goes to its mirror pod, when it exists.
            if let Some(mirrors) = &self.mirrors {
                match mirrors.get(pod) {
                    Some(mirror) if is_mirror_pod(&mirror) => {
                        let target = mirror.metadata.uid.clone().unwrap_or_default();
                        return self.patch(uid, pod, status, &target, mirror.status.as_ref());
                    }
                    _ => return Ok(Sent::NoMirror),
                }
            }
            match self.client.get_pod(namespace, name) {
                Ok(mirror) if is_mirror_pod(&mirror) => (
                    mirror.metadata.uid.clone().unwrap_or_default(),
                    mirror.status,
                ),
                Ok(_) => return Ok(Sent::NoMirror),
                Err(e) if e.is_not_found() => return Ok(Sent::NoMirror),
                Err(e) => return Err(e),
            }
        };
        self.patch(uid, pod, status, &target_uid, api_status.as_ref())
    }

    /// Sends `status` (merged with the conditions other components set) for the API object
    /// whose UID is `target_uid`.
    fn patch(
        &mut self,
        uid: &PodUid,
        pod: &Pod,
        status: &PodStatus,
        target_uid: &str,
        api_status: Option<&PodStatus>,
    ) -> Result<Sent, ApiError> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        // What the server holds of our part: what we last sent, else what the API source
        // delivered. The UID makes the patch fail with a conflict if the name now belongs to
        // another pod.
        let sent = self
            .last_sent
            .get(uid)
            .filter(|(target, _)| target == target_uid)
            .map(|(_, status)| status);
        if sent == Some(status) {
            return Ok(Sent::Unchanged);
        }
        let server = sent.or(api_status).cloned().unwrap_or_default();
        let record = (target_uid.to_string(), status.clone());
        let Some(patch) = pod_status_patch(target_uid, &server, status) else {
            self.last_sent.insert(uid.clone(), record);
            return Ok(Sent::Unchanged);
        };
        self.client.patch_pod_status(namespace, name, &patch)?;
        log::debug!("pod=\"{}\" uid={uid} status sent", pod_key(pod));
        self.last_sent.insert(uid.clone(), record);
        Ok(Sent::Patched)
    }

    fn delete(&self, pod: &Pod) -> Result<(), ApiError> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let opts = DeleteOptions {
            grace_period_seconds: Some(0),
            precondition_uid: pod.metadata.uid.clone(),
        };
        match self.client.delete_pod(namespace, name, &opts) {
            Ok(()) => {
                log::info!(
                    "pod=\"{}\" terminated, deleted from the API server",
                    pod_key(pod)
                );
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiStatus, Call, FakeClient};
    use k8s_openapi::api::core::v1::PodCondition;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn api_pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                annotations: Some(
                    [(CONFIG_SOURCE_ANNOTATION.to_string(), API_SOURCE.to_string())].into(),
                ),
                ..Default::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![condition("PodScheduled", "True")]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn condition(kind: &str, status: &str) -> PodCondition {
        PodCondition {
            type_: kind.into(),
            status: status.into(),
            ..Default::default()
        }
    }

    fn status(phase: &str) -> PodStatus {
        PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![condition("Ready", "True")]),
            ..Default::default()
        }
    }

    fn setup() -> (Arc<FakeClient>, Arc<StatusManager>, StatusSync, Arc<Pod>) {
        let fake = Arc::new(FakeClient::new());
        let created = fake.insert_pod(&api_pod("web")).unwrap();
        let manager = Arc::new(StatusManager::default());
        let sync = StatusSync::new(manager.clone(), fake.clone());
        (fake, manager, sync, Arc::new(created))
    }

    fn patches(fake: &FakeClient) -> Vec<serde_json::Value> {
        fake.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::PatchPodStatus { patch, .. } => Some(patch),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_disruption_target_is_written_when_the_kubelet_has_one_and_left_alone_otherwise() {
        let mut server = status("Running");
        server
            .conditions
            .as_mut()
            .unwrap()
            .push(condition("DisruptionTarget", "True"));
        // The API holds one (set by another component); the kubelet's status has none.
        let patch = pod_status_patch("u1", &server, &status("Running"));
        assert!(patch.is_none(), "{patch:?}");
        // The kubelet evicts: its condition goes out.
        let mut evicted = status("Failed");
        evicted
            .conditions
            .as_mut()
            .unwrap()
            .push(condition("DisruptionTarget", "True"));
        let patch = pod_status_patch("u1", &status("Running"), &evicted).unwrap();
        let text = patch.to_string();
        assert!(text.contains("DisruptionTarget"), "{text}");
        assert!(text.contains("\"phase\":\"Failed\""), "{text}");
    }

    #[test]
    fn changed_statuses_are_patched_once_with_foreign_conditions_kept() {
        let (fake, manager, mut sync, pod) = setup();
        manager.set_pod_status(&pod, status("Running"));
        assert_eq!(sync.sync_batch(), 1);
        let p = patches(&fake);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0]["metadata"]["uid"], serde_json::json!(pod.metadata.uid));
        let kinds: Vec<&str> = p[0]["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["Ready", "PodScheduled"]);
        assert_eq!(
            fake.pod("default", "web")
                .unwrap()
                .status
                .unwrap()
                .phase
                .as_deref(),
            Some("Running")
        );

        // Same status again: nothing sent; a new one: sent.
        manager.set_pod_status(&pod, status("Running"));
        assert_eq!(sync.sync_batch(), 0);
        manager.set_pod_status(&pod, status("Succeeded"));
        assert_eq!(sync.sync_batch(), 1);
        assert_eq!(patches(&fake).len(), 2);
    }

    #[test]
    fn retriable_failures_are_retried_next_round() {
        let (fake, manager, mut sync, pod) = setup();
        fake.inject_error(
            "patch_pod_status",
            ApiError::Status {
                verb: "PATCH",
                path: "/x".into(),
                status: ApiStatus {
                    code: 503,
                    reason: "ServiceUnavailable".into(),
                    message: "down".into(),
                },
                retry_after: None,
            },
        );
        manager.set_pod_status(&pod, status("Running"));
        assert_eq!(sync.sync_batch(), 0);
        assert_eq!(sync.sync_batch(), 1);
    }

    #[test]
    fn terminated_pod_with_deletion_timestamp_is_deleted_with_grace_zero() {
        let (fake, manager, mut sync, pod) = setup();
        let mut deleting = (*pod).clone();
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let deleting = Arc::new(deleting);
        manager.set_pod_status(&deleting, status("Succeeded"));
        manager.mark_deletable(&crate::types::uid_of(&deleting));
        assert_eq!(sync.sync_batch(), 2);
        let delete = fake.calls().into_iter().find_map(|c| match c {
            Call::DeletePod { opts, .. } => Some(opts),
            _ => None,
        });
        let opts = delete.expect("deleted");
        assert_eq!(opts.grace_period_seconds, Some(0));
        assert_eq!(opts.precondition_uid, pod.metadata.uid);
        assert!(fake.pod("default", "web").is_none());
    }

    #[test]
    fn a_removed_pod_leaves_nothing_behind_in_the_sync() {
        let (fake, manager, mut sync, _) = setup();
        let mut uids = Vec::new();
        for i in 0..50 {
            let pod = Arc::new(fake.insert_pod(&api_pod(&format!("churn-{i}"))).unwrap());
            manager.set_pod_status(&pod, status("Running"));
            uids.push(crate::types::uid_of(&pod));
        }
        assert_eq!(sync.sync_batch(), 50);
        assert_eq!(sync.last_sent.len(), 50);
        for uid in &uids {
            manager.remove(uid);
        }
        assert_eq!(sync.sync_batch(), 0, "nothing is written for a removed pod");
        assert!(sync.last_sent.is_empty(), "{} kept", sync.last_sent.len());
    }

    #[test]
    fn housekeepings_sweep_forgets_only_the_pods_it_is_not_told_to_keep() {
        let (fake, manager, mut sync, _) = setup();
        let mut uids = Vec::new();
        for i in 0..6 {
            let pod = Arc::new(fake.insert_pod(&api_pod(&format!("sweep-{i}"))).unwrap());
            manager.set_pod_status(&pod, status("Running"));
            uids.push(crate::types::uid_of(&pod));
        }
        assert_eq!(sync.sync_batch(), 6);
        let keep: std::collections::HashSet<_> = uids[..2].iter().cloned().collect();
        let mut gone = manager.retain_pods(&keep);
        gone.sort();
        let mut expected = uids[2..].to_vec();
        expected.sort();
        assert_eq!(gone, expected);
        assert_eq!(sync.sync_batch(), 0, "nothing is written for a pod swept");
        let left: std::collections::HashSet<_> =
            manager.all().into_iter().map(|(u, _)| u).collect();
        assert_eq!(left, keep);
        assert_eq!(sync.last_sent.len(), 2, "the sync forgot the pods swept");
        assert!(
            manager.retain_pods(&keep).is_empty(),
            "a second sweep finds nothing"
        );
    }

    #[test]
    fn static_pod_status_goes_to_its_mirror_or_waits() {
        let (fake, manager, mut sync, _) = setup();
        let mut static_pod = api_pod("kube-web-node1");
        static_pod.metadata.uid = Some("static-uid".into());
        static_pod.metadata.annotations =
            Some([(CONFIG_SOURCE_ANNOTATION.to_string(), "file".to_string())].into());
        let static_pod = Arc::new(static_pod);
        manager.set_pod_status(&static_pod, status("Running"));
        assert_eq!(sync.sync_batch(), 0, "no mirror yet");
        let mut mirror = api_pod("kube-web-node1");
        mirror.metadata.annotations = Some(
            [(
                CONFIG_MIRROR_ANNOTATION.to_string(),
                "static-uid".to_string(),
            )]
            .into(),
        );
        let mirror = fake.insert_pod(&mirror).unwrap();
        manager.set_pod_status(&static_pod, status("Succeeded"));
        assert_eq!(sync.sync_batch(), 1);
        assert_eq!(
            patches(&fake)[0]["metadata"]["uid"],
            serde_json::json!(mirror.metadata.uid)
        );
    }

    #[test]
    fn with_the_sources_mirrors_no_get_is_made() {
        let (fake, manager, sync, _) = setup();
        let mirrors = Arc::new(crate::mirror::MirrorPods::default());
        let mut sync = sync.with_mirrors(mirrors.clone());
        let mut static_pod = api_pod("kube-web-node1");
        static_pod.metadata.uid = Some("static-uid".into());
        static_pod.metadata.annotations =
            Some([(CONFIG_SOURCE_ANNOTATION.to_string(), "file".to_string())].into());
        let static_pod = Arc::new(static_pod);
        manager.set_pod_status(&static_pod, status("Running"));
        assert_eq!(sync.sync_batch(), 0, "no mirror reported yet");
        let mut mirror = api_pod("kube-web-node1");
        mirror.metadata.annotations = Some(
            [(
                CONFIG_MIRROR_ANNOTATION.to_string(),
                "static-uid".to_string(),
            )]
            .into(),
        );
        let mirror = fake.insert_pod(&mirror).unwrap();
        mirrors.set(&Arc::new(mirror.clone()));
        fake.clear_calls();
        manager.set_pod_status(&static_pod, status("Succeeded"));
        assert_eq!(sync.sync_batch(), 1);
        assert_eq!(
            patches(&fake)[0]["metadata"]["uid"],
            serde_json::json!(mirror.metadata.uid)
        );
        assert!(
            !fake
                .calls()
                .iter()
                .any(|c| matches!(c, crate::api::fake::Call::GetPod { .. })),
            "{:?}",
            fake.calls()
        );
    }
}
