//! A per-kubelet view of a shared API client: every call first takes a token from this
//! kubelet's own rate limiter (`kubeAPIQPS`/`kubeAPIBurst`), then goes through the shared
//! client and its connections. Hollow nodes use one per node, so each keeps a real kubelet's
//! request budget while they share one client.

use std::sync::Arc;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, VolumeAttachment};

use super::rate_limit::RateLimiter;
use super::{ApiError, DeleteOptions, KubeClient, List, ListOptions, WatchStream};

/// A shared client behind a rate limiter of its own.
pub struct RateLimitedClient {
    inner: Arc<dyn KubeClient>,
    limiter: RateLimiter,
}

impl RateLimitedClient {
    /// `inner` limited to `qps` requests per second with bursts of `burst`.
    pub fn new(inner: Arc<dyn KubeClient>, qps: f32, burst: u32) -> Self {
        RateLimitedClient {
            inner,
            limiter: RateLimiter::new(qps, burst),
        }
    }
}

impl KubeClient for RateLimitedClient {
    fn list_pods(&self, opts: &ListOptions) -> Result<List<Pod>, ApiError> {
        self.limiter.acquire();
        self.inner.list_pods(opts)
    }

    fn watch_pods(&self, opts: &ListOptions) -> Result<WatchStream<Pod>, ApiError> {
        self.limiter.acquire();
        self.inner.watch_pods(opts)
    }

    fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, ApiError> {
        self.limiter.acquire();
        self.inner.get_pod(namespace, name)
    }

    fn create_pod(&self, pod: &Pod) -> Result<Pod, ApiError> {
        self.limiter.acquire();
        self.inner.create_pod(pod)
    }

    fn delete_pod(
        &self,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(), ApiError> {
        self.limiter.acquire();
        self.inner.delete_pod(namespace, name, opts)
    }

    fn patch_pod_status(
        &self,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<Pod, ApiError> {
        self.limiter.acquire();
        self.inner.patch_pod_status(namespace, name, patch)
    }

    fn get_node(&self, name: &str) -> Result<Node, ApiError> {
        self.limiter.acquire();
        self.inner.get_node(name)
    }

    fn create_node(&self, node: &Node) -> Result<Node, ApiError> {
        self.limiter.acquire();
        self.inner.create_node(node)
    }

    fn patch_node(&self, name: &str, patch: &serde_json::Value) -> Result<Node, ApiError> {
        self.limiter.acquire();
        self.inner.patch_node(name, patch)
    }

    fn patch_node_status(&self, name: &str, patch: &serde_json::Value) -> Result<Node, ApiError> {
        self.limiter.acquire();
        self.inner.patch_node_status(name, patch)
    }

    fn get_lease(&self, namespace: &str, name: &str) -> Result<Lease, ApiError> {
        self.limiter.acquire();
        self.inner.get_lease(namespace, name)
    }

    fn create_lease(&self, lease: &Lease) -> Result<Lease, ApiError> {
        self.limiter.acquire();
        self.inner.create_lease(lease)
    }

    fn update_lease(&self, lease: &Lease) -> Result<Lease, ApiError> {
        self.limiter.acquire();
        self.inner.update_lease(lease)
    }

    fn create_event(&self, event: &Event) -> Result<Event, ApiError> {
        self.limiter.acquire();
        self.inner.create_event(event)
    }

    fn patch_event(
        &self,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<Event, ApiError> {
        self.limiter.acquire();
        self.inner.patch_event(namespace, name, patch)
    }

    fn get_config_map(&self, namespace: &str, name: &str) -> Result<ConfigMap, ApiError> {
        self.limiter.acquire();
        self.inner.get_config_map(namespace, name)
    }

    fn get_secret(&self, namespace: &str, name: &str) -> Result<Secret, ApiError> {
        self.limiter.acquire();
        self.inner.get_secret(namespace, name)
    }

    fn list_services(&self, namespace: &str) -> Result<Vec<Service>, ApiError> {
        self.limiter.acquire();
        self.inner.list_services(namespace)
    }

    fn list_all_services(&self, opts: &ListOptions) -> Result<List<Service>, ApiError> {
        self.limiter.acquire();
        self.inner.list_all_services(opts)
    }

    fn watch_services(&self, opts: &ListOptions) -> Result<WatchStream<Service>, ApiError> {
        self.limiter.acquire();
        self.inner.watch_services(opts)
    }

    fn get_runtime_class(&self, name: &str) -> Result<RuntimeClass, ApiError> {
        self.limiter.acquire();
        self.inner.get_runtime_class(name)
    }

    fn get_persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PersistentVolumeClaim, ApiError> {
        self.limiter.acquire();
        self.inner.get_persistent_volume_claim(namespace, name)
    }

    fn get_persistent_volume(&self, name: &str) -> Result<PersistentVolume, ApiError> {
        self.limiter.acquire();
        self.inner.get_persistent_volume(name)
    }

    fn get_csi_driver(&self, name: &str) -> Result<CSIDriver, ApiError> {
        self.limiter.acquire();
        self.inner.get_csi_driver(name)
    }

    fn get_csi_node(&self, name: &str) -> Result<CSINode, ApiError> {
        self.limiter.acquire();
        self.inner.get_csi_node(name)
    }

    fn create_csi_node(&self, csi_node: &CSINode) -> Result<CSINode, ApiError> {
        self.limiter.acquire();
        self.inner.create_csi_node(csi_node)
    }

    fn update_csi_node(&self, csi_node: &CSINode) -> Result<CSINode, ApiError> {
        self.limiter.acquire();
        self.inner.update_csi_node(csi_node)
    }

    fn get_volume_attachment(&self, name: &str) -> Result<VolumeAttachment, ApiError> {
        self.limiter.acquire();
        self.inner.get_volume_attachment(name)
    }

    fn create_token(
        &self,
        namespace: &str,
        service_account: &str,
        request: &TokenRequest,
    ) -> Result<TokenRequest, ApiError> {
        self.limiter.acquire();
        self.inner.create_token(namespace, service_account, request)
    }

    fn create_token_review(&self, review: &TokenReview) -> Result<TokenReview, ApiError> {
        self.limiter.acquire();
        self.inner.create_token_review(review)
    }

    fn create_subject_access_review(
        &self,
        review: &SubjectAccessReview,
    ) -> Result<SubjectAccessReview, ApiError> {
        self.limiter.acquire();
        self.inner.create_subject_access_review(review)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FakeClient;

    #[test]
    fn each_view_spends_its_own_budget_on_the_shared_client() {
        let shared = Arc::new(FakeClient::new());
        let a = RateLimitedClient::new(shared.clone(), 1.0, 2);
        let b = RateLimitedClient::new(shared.clone(), 1.0, 2);
        let started = std::time::Instant::now();
        for view in [&a, &a, &b, &b] {
            let _ = view.get_node("n");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "two bursts of two, no waiting"
        );
        assert_eq!(
            shared.calls().len(),
            4,
            "all calls reached the shared client"
        );
        assert!(!a.limiter.try_acquire(), "a's own bucket is empty");
    }
}
