//! [`KubeClient`] for [`RestClient`]: each verb's path, query and body, and the decoding of
//! its answer. Lists keep their resourceVersion; watches get a longer timeout than other
//! calls (their `timeoutSeconds` plus a grace) and stream on the calling thread.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, VolumeAttachment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use serde::Deserialize;
use serde_json::Value;

use super::RestClient;
use crate::api::request::{
    self, core_path, json_body, lease_path, list_query, namespace_of, node_path,
};
use crate::api::stats::Op;
use crate::api::watch::decode_watch;
use crate::api::{ApiError, ApiStatus, DeleteOptions, KubeClient, List, ListOptions, WatchStream};

/// Extra time a watch response may take beyond its server-side `timeoutSeconds`.
pub(super) const WATCH_GRACE: Duration = Duration::from_secs(30);
/// Bound of a watch without `timeoutSeconds`: the API server ends those after at most twice
/// its `--min-request-timeout` (1800 s by default).
pub(super) const WATCH_DEFAULT_BOUND_SECS: u64 = 3600;

/// The parts of a list response the kubelet uses.
#[derive(Deserialize)]
struct ListBody<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
    #[serde(default)]
    metadata: ListMeta,
}

impl KubeClient for RestClient {
    fn list_pods(&self, opts: &ListOptions) -> Result<List<Pod>, ApiError> {
        let query = list_query(opts, false);
        let list: ListBody<Pod> = self.call(Op::ListPods, "/api/v1/pods", &query, None)?;
        let resource_version = list.metadata.resource_version.unwrap_or_default();
        Ok(List {
            items: list.items,
            resource_version,
        })
    }

    fn watch_pods(&self, opts: &ListOptions) -> Result<WatchStream<Pod>, ApiError> {
        let path = "/api/v1/pods";
        let secs = opts
            .timeout_seconds
            .map_or(WATCH_DEFAULT_BOUND_SECS, u64::from);
        let timeout = Duration::from_secs(secs) + WATCH_GRACE;
        let resp = self.send(Op::WatchPods, path, &list_query(opts, true), None, timeout)?;
        Ok(decode_watch(resp, format!("watch {path}")))
    }

    fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, ApiError> {
        self.get(Op::GetPod, &core_path(namespace, "pods", Some(name)))
    }

    fn create_pod(&self, pod: &Pod) -> Result<Pod, ApiError> {
        let path = core_path(namespace_of(&pod.metadata), "pods", None);
        self.write(Op::CreatePod, &path, pod)
    }

    fn delete_pod(
        &self,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(), ApiError> {
        let mut body = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1"});
        if let Some(grace) = opts.grace_period_seconds {
            body["gracePeriodSeconds"] = grace.into();
        }
        if let Some(uid) = &opts.precondition_uid {
            body["preconditions"] = serde_json::json!({ "uid": uid });
        }
        // The answer (the pod being deleted, or a Status) is not needed.
        let path = core_path(namespace, "pods", Some(name));
        let body = json_body(Op::DeletePod, &path, &body)?;
        self.send(Op::DeletePod, &path, "", Some(body), self.timeout)
            .map(drop)
    }

    fn patch_pod_status(
        &self,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Pod, ApiError> {
        let path = format!("{}/status", core_path(namespace, "pods", Some(name)));
        self.write(Op::PatchPodStatus, &path, patch)
    }

    fn get_node(&self, name: &str) -> Result<Node, ApiError> {
        self.get(Op::GetNode, &node_path(name))
    }

    fn create_node(&self, node: &Node) -> Result<Node, ApiError> {
        self.write(Op::CreateNode, "/api/v1/nodes", node)
    }

    fn patch_node(&self, name: &str, patch: &Value) -> Result<Node, ApiError> {
        self.write(Op::PatchNode, &node_path(name), patch)
    }

    fn patch_node_status(&self, name: &str, patch: &Value) -> Result<Node, ApiError> {
        self.write(
            Op::PatchNodeStatus,
            &format!("{}/status", node_path(name)),
            patch,
        )
    }

    fn get_lease(&self, namespace: &str, name: &str) -> Result<Lease, ApiError> {
        self.get(Op::GetLease, &lease_path(namespace, Some(name)))
    }

    fn create_lease(&self, lease: &Lease) -> Result<Lease, ApiError> {
        let path = lease_path(namespace_of(&lease.metadata), None);
        self.write(Op::CreateLease, &path, lease)
    }

    fn update_lease(&self, lease: &Lease) -> Result<Lease, ApiError> {
        let namespace = namespace_of(&lease.metadata);
        let Some(name) = lease.metadata.name.as_deref().filter(|n| !n.is_empty()) else {
            let message = "metadata.name: Required value".to_string();
            return Err(ApiError::Status {
                verb: "PUT",
                path: lease_path(namespace, None),
                status: ApiStatus {
                    code: 422,
                    reason: "Invalid".into(),
                    message,
                },
                retry_after: None,
            });
        };
        self.write(Op::UpdateLease, &lease_path(namespace, Some(name)), lease)
    }

    fn create_event(&self, event: &Event) -> Result<Event, ApiError> {
        let path = core_path(namespace_of(&event.metadata), "events", None);
        self.write(Op::CreateEvent, &path, event)
    }

    fn patch_event(&self, namespace: &str, name: &str, patch: &Value) -> Result<Event, ApiError> {
        self.write(
            Op::PatchEvent,
            &core_path(namespace, "events", Some(name)),
            patch,
        )
    }

    fn get_config_map(&self, namespace: &str, name: &str) -> Result<ConfigMap, ApiError> {
        self.get(
            Op::GetConfigMap,
            &core_path(namespace, "configmaps", Some(name)),
        )
    }

    fn get_secret(&self, namespace: &str, name: &str) -> Result<Secret, ApiError> {
        self.get(Op::GetSecret, &core_path(namespace, "secrets", Some(name)))
    }

    fn list_services(&self, namespace: &str) -> Result<Vec<Service>, ApiError> {
        let path = core_path(namespace, "services", None);
        let list: ListBody<Service> = self.call(Op::ListServices, &path, "", None)?;
        Ok(list.items)
    }

    fn list_all_services(&self, opts: &ListOptions) -> Result<List<Service>, ApiError> {
        let query = list_query(opts, false);
        let list: ListBody<Service> =
            self.call(Op::ListAllServices, "/api/v1/services", &query, None)?;
        Ok(List {
            items: list.items,
            resource_version: list.metadata.resource_version.unwrap_or_default(),
        })
    }

    fn watch_services(&self, opts: &ListOptions) -> Result<WatchStream<Service>, ApiError> {
        let path = "/api/v1/services";
        let secs = opts
            .timeout_seconds
            .map_or(WATCH_DEFAULT_BOUND_SECS, u64::from);
        let timeout = Duration::from_secs(secs) + WATCH_GRACE;
        let query = list_query(opts, true);
        let resp = self.send(Op::WatchServices, path, &query, None, timeout)?;
        Ok(decode_watch(resp, format!("watch {path}")))
    }

    fn get_runtime_class(&self, name: &str) -> Result<RuntimeClass, ApiError> {
        let path = format!(
            "/apis/node.k8s.io/v1/runtimeclasses/{}",
            request::encode(name)
        );
        self.get(Op::GetRuntimeClass, &path)
    }

    fn get_persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PersistentVolumeClaim, ApiError> {
        self.get(
            Op::GetPersistentVolumeClaim,
            &core_path(namespace, "persistentvolumeclaims", Some(name)),
        )
    }

    fn get_persistent_volume(&self, name: &str) -> Result<PersistentVolume, ApiError> {
        let path = format!("/api/v1/persistentvolumes/{}", request::encode(name));
        self.get(Op::GetPersistentVolume, &path)
    }

    fn get_csi_driver(&self, name: &str) -> Result<CSIDriver, ApiError> {
        self.get(Op::GetCsiDriver, &storage_path("csidrivers", Some(name)))
    }

    fn get_csi_node(&self, name: &str) -> Result<CSINode, ApiError> {
        self.get(Op::GetCsiNode, &storage_path("csinodes", Some(name)))
    }

    fn create_csi_node(&self, csi_node: &CSINode) -> Result<CSINode, ApiError> {
        self.write(Op::CreateCsiNode, &storage_path("csinodes", None), csi_node)
    }

    fn update_csi_node(&self, csi_node: &CSINode) -> Result<CSINode, ApiError> {
        let name = csi_node.metadata.name.as_deref().unwrap_or_default();
        self.write(
            Op::UpdateCsiNode,
            &storage_path("csinodes", Some(name)),
            csi_node,
        )
    }

    fn get_volume_attachment(&self, name: &str) -> Result<VolumeAttachment, ApiError> {
        let path = storage_path("volumeattachments", Some(name));
        self.get(Op::GetVolumeAttachment, &path)
    }

    fn create_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: &TokenRequest,
    ) -> Result<TokenRequest, ApiError> {
        let sa_path = core_path(namespace, "serviceaccounts", Some(service_account));
        self.write(Op::CreateToken, &format!("{sa_path}/token"), request)
    }

    fn create_token_review(&self, review: &TokenReview) -> Result<TokenReview, ApiError> {
        let path = "/apis/authentication.k8s.io/v1/tokenreviews";
        self.write(Op::CreateTokenReview, path, review)
    }

    fn create_subject_access_review(
        &self,
        review: &SubjectAccessReview,
    ) -> Result<SubjectAccessReview, ApiError> {
        let path = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
        self.write(Op::CreateSubjectAccessReview, path, review)
    }
}

/// `/apis/storage.k8s.io/v1/<plural>[/<name>]` (cluster-scoped storage objects).
fn storage_path(plural: &str, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("/apis/storage.k8s.io/v1/{plural}/{}", request::encode(name)),
        None => format!("/apis/storage.k8s.io/v1/{plural}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::super::test_server::{client, serve, status_json, Reply, POD};
    use super::*;
    use crate::api::WatchEvent;

    #[test]
    fn create_conflict_is_already_exists_and_not_retried() {
        let body = status_json(409, "AlreadyExists", "pods \"a\" already exists");
        let (url, server) = serve(vec![Reply::Json(409, "", body)], None);
        let c = client(&url);
        let pod: Pod = serde_json::from_str(POD).unwrap();
        let err = c.create_pod(&pod).unwrap_err();
        assert!(err.is_already_exists(), "{err}");
        let seen = server.join().unwrap();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            ("POST", "/api/v1/namespaces/ns/pods")
        );
        assert_eq!(seen[0].header("content-type"), Some("application/json"));
        assert!(seen[0].body.contains(r#""name":"a""#), "{}", seen[0].body);
        let stats = c.stats();
        assert_eq!(
            (stats.count("POST", "pods"), stats.writes(), stats.retries),
            (1, 1, 0)
        );
    }

    #[test]
    fn list_encodes_selectors_and_returns_resource_version() {
        let body = r#"{"kind":"PodList","metadata":{"resourceVersion":"99"},"items":[{"metadata":{"name":"a"}}]}"#;
        let (url, server) = serve(vec![Reply::Json(200, "", body.into())], None);
        let c = client(&url);
        let opts = ListOptions {
            field_selector: Some("spec.nodeName=node 1,status.phase!=Failed".into()),
            label_selector: Some("app in (a,b)".into()),
            resource_version: Some("0".into()),
            ..ListOptions::default()
        };
        let list = c.list_pods(&opts).unwrap();
        assert_eq!(
            (list.items.len(), list.resource_version.as_str()),
            (1, "99")
        );
        let seen = server.join().unwrap();
        assert_eq!(
            seen[0].target,
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode%201%2Cstatus.phase%21%3DFailed\
             &labelSelector=app%20in%20%28a%2Cb%29&resourceVersion=0"
        );
        assert_eq!(c.stats().count("LIST", "pods"), 1);
    }

    #[test]
    fn watch_streams_a_chunked_response() {
        let (open, gate) = mpsc::channel();
        let chunks = vec![
            "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"8\"}}}\n",
            "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":",
            "{\"name\":\"a\"}}}\n{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"9\"}}}\n",
            "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410,\"reason\":\"Expired\",\"message\":\"too old\"}}\n",
        ];
        let (url, server) = serve(vec![Reply::Chunked(chunks, gate)], None);
        let c = client(&url);
        let opts = ListOptions {
            field_selector: Some("spec.nodeName=n1".into()),
            resource_version: Some("7".into()),
            timeout_seconds: Some(5),
            allow_watch_bookmarks: true,
            ..ListOptions::default()
        };
        let mut stream = c.watch_pods(&opts).unwrap();
        // The first event arrives while the server still holds back the rest.
        assert!(matches!(stream.next(), Some(Ok(WatchEvent::Added(_)))));
        open.send(()).unwrap();
        let rest: Vec<_> = stream.map(Result::unwrap).collect();
        assert_eq!(rest.len(), 3, "{rest:?}");
        assert!(matches!(rest[0], WatchEvent::Modified(_)));
        assert_eq!(
            rest[1],
            WatchEvent::Bookmark {
                resource_version: "9".into()
            }
        );
        assert!(matches!(&rest[2], WatchEvent::Error(s) if s.code == 410 && s.reason == "Expired"));
        let seen = server.join().unwrap();
        assert_eq!(
            seen[0].target,
            "/api/v1/pods?watch=true&fieldSelector=spec.nodeName%3Dn1&resourceVersion=7&timeoutSeconds=5&allowWatchBookmarks=true"
        );
        assert_eq!(c.stats().count("WATCH", "pods"), 1);
    }

    #[test]
    fn delete_and_lease_paths_and_bodies() {
        let replies = vec![
            Reply::Json(200, "", POD.into()),
            Reply::Json(
                200,
                "",
                r#"{"metadata":{"name":"n1","namespace":"kube-node-lease"}}"#.into(),
            ),
        ];
        let (url, server) = serve(replies, None);
        let c = client(&url);
        let opts = DeleteOptions {
            grace_period_seconds: Some(0),
            precondition_uid: Some("u1".into()),
        };
        c.delete_pod("ns", "a", &opts).unwrap();
        let lease: Lease = serde_json::from_str(
            r#"{"metadata":{"name":"n1","namespace":"kube-node-lease","resourceVersion":"3"}}"#,
        )
        .unwrap();
        c.update_lease(&lease).unwrap();
        let seen = server.join().unwrap();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            ("DELETE", "/api/v1/namespaces/ns/pods/a")
        );
        let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
        assert_eq!(body["gracePeriodSeconds"], 0);
        assert_eq!(body["preconditions"]["uid"], "u1");
        assert_eq!(
            (seen[1].method.as_str(), seen[1].target.as_str()),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
            )
        );
        assert!(seen[1].body.contains(r#""resourceVersion":"3""#));
        let stats = c.stats();
        assert_eq!(
            (
                stats.count("DELETE", "pods"),
                stats.count("PUT", "leases"),
                stats.writes()
            ),
            (1, 1, 2)
        );
    }
}
