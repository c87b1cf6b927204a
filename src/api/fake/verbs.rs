//! [`KubeClient`] for [`FakeClient`]: every verb records its [`Call`], returns the error
//! injected for it if any, then reads or writes the fake's store with the API server's
//! semantics (`store.rs`). A pod watch replays the queued events and ends; there is no
//! service watch (the informer lists again).

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, VolumeAttachment};
use serde_json::Value;

use super::{auth, Call, FakeClient};
use crate::api::selector::{matches_fields, matches_labels};
use crate::api::store::{status_error, Objects};
use crate::api::{ApiError, DeleteOptions, KubeClient, List, ListOptions, WatchStream};

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

    fn get_persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PersistentVolumeClaim, ApiError> {
        let call = Call::GetPersistentVolumeClaim {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.begin("get_persistent_volume_claim", call)?
            .claims
            .get(namespace, name)
    }

    fn get_persistent_volume(&self, name: &str) -> Result<PersistentVolume, ApiError> {
        let call = Call::GetPersistentVolume(name.into());
        self.begin("get_persistent_volume", call)?
            .volumes
            .get("", name)
    }

    fn get_csi_driver(&self, name: &str) -> Result<CSIDriver, ApiError> {
        let call = Call::GetCsiDriver(name.into());
        self.begin("get_csi_driver", call)?
            .csi_drivers
            .get("", name)
    }

    fn get_csi_node(&self, name: &str) -> Result<CSINode, ApiError> {
        let call = Call::GetCsiNode(name.into());
        self.begin("get_csi_node", call)?.csi_nodes.get("", name)
    }

    fn create_csi_node(&self, csi_node: &CSINode) -> Result<CSINode, ApiError> {
        let call = Call::CreateCsiNode(Box::new(csi_node.clone()));
        let store = &mut *self.begin("create_csi_node", call)?;
        store.csi_nodes.create(csi_node, &mut store.rv)
    }

    fn update_csi_node(&self, csi_node: &CSINode) -> Result<CSINode, ApiError> {
        let call = Call::UpdateCsiNode(Box::new(csi_node.clone()));
        let store = &mut *self.begin("update_csi_node", call)?;
        store.csi_nodes.update(csi_node, &mut store.rv)
    }

    fn get_volume_attachment(&self, name: &str) -> Result<VolumeAttachment, ApiError> {
        let call = Call::GetVolumeAttachment(name.into());
        self.begin("get_volume_attachment", call)?
            .volume_attachments
            .get("", name)
    }

    fn create_token_review(&self, review: &TokenReview) -> Result<TokenReview, ApiError> {
        let store = self.begin("create_token_review", Call::CreateTokenReview)?;
        Ok(auth::review_token(&store, review))
    }

    fn create_subject_access_review(
        &self,
        review: &SubjectAccessReview,
    ) -> Result<SubjectAccessReview, ApiError> {
        let store = self.begin(
            "create_subject_access_review",
            Call::CreateSubjectAccessReview,
        )?;
        Ok(auth::review_access(&store, review))
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
        auth::issue_token(&mut store, namespace, service_account, request)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::WatchEvent;

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
}
