//! The kubelet's side of node-pressure eviction: which pods are active, how an evicted pod
//! is stopped (its pod worker kills it with the eviction's grace period while the status
//! manager lays `Failed`/`Evicted` over its status), and the node-level reclaim (dead
//! containers, unused images) the manager tries first. Thread `eviction` runs the manager.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use k8s_openapi::api::core::v1::Pod;

use super::{Kubelet, KubeletError};
use crate::eviction::EvictionHost;
use crate::kuberuntime::gc::{ContainerGcPolicy, ImageGc};
use crate::pod_workers::{PodWorkerState, UpdatePodOptions, UpdateType};
use crate::status::Termination;
use crate::types::uid_of;

/// The eviction manager's view of the kubelet.
struct KubeletEvictionHost {
    kubelet: Arc<Kubelet>,
    images: Arc<ImageGc>,
}

impl EvictionHost for KubeletEvictionHost {
    fn active_pods(&self) -> Vec<Arc<Pod>> {
        let kubelet = &self.kubelet;
        let pods = kubelet.pods();
        pods.pods()
            .filter(|p| {
                let uid = uid_of(p);
                let running = kubelet
                    .pod_workers
                    .state(&uid)
                    .is_none_or(|s| s.can_start_containers());
                let finished = kubelet
                    .status_manager
                    .get(&uid)
                    .is_some_and(|s| matches!(s.phase.as_deref(), Some("Succeeded" | "Failed")));
                running && !finished
            })
            .cloned()
            .collect()
    }

    fn evict_pod(&self, pod: &Arc<Pod>, grace_seconds: i64, termination: Termination) {
        self.kubelet
            .status_manager
            .set_termination(&uid_of(pod), termination);
        self.kubelet.pod_workers.update_pod(UpdatePodOptions {
            update_type: UpdateType::Kill,
            pod: Arc::clone(pod),
            grace_period_override: Some(grace_seconds),
            removed: false,
        });
    }

    fn pod_cleaned_up(&self, pod: &Pod) -> bool {
        let uid = uid_of(pod);
        self.kubelet
            .pod_workers
            .state(&uid)
            .is_none_or(|s| s == PodWorkerState::Terminated)
    }

    fn delete_unused_containers(&self) -> Result<(), String> {
        let kubelet = &self.kubelet;
        let desired = kubelet.pods().uids();
        let ready = kubelet.sources_ready.all_ready();
        // Dead containers of pods that will not run them again: deleted pods and pods
        // stopped for good (upstream's `evictNonDeletedPods`).
        let done = |uid: &crate::types::PodUid| {
            !desired.contains(uid)
                || kubelet.pod_workers.state(uid) == Some(PodWorkerState::Terminated)
        };
        kubelet
            .runtime_manager
            .garbage_collect_containers(&ContainerGcPolicy::default(), ready, &done)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn delete_unused_images(&self) -> Result<u64, String> {
        self.images.delete_unused_images()
    }
}

impl Kubelet {
    /// Starts thread `eviction`.
    pub(super) fn start_eviction_thread(
        self: &Arc<Self>,
        images: Arc<ImageGc>,
        stop: &Receiver<()>,
    ) -> Result<JoinHandle<()>, KubeletError> {
        let host = Arc::new(KubeletEvictionHost {
            kubelet: Arc::clone(self),
            images,
        });
        let manager = Arc::clone(&self.eviction);
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("eviction".into())
            .spawn(move || manager.run(host, stop))
            .map_err(|source| KubeletError::Thread {
                name: "eviction",
                source,
            })
    }
}
