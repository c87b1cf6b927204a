//! The garbage collection threads (upstream `StartGarbageCollection`): `container-gc` every
//! minute and `image-gc` every `--image-gc-period` (5 min), each running once right away,
//! and the `eviction` thread, which shares the image collector. All stop when the kubelet's
//! stop channel closes.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{select, Receiver};

use crate::events::EventType;
use crate::kuberuntime::gc::{
    statvfs_stats, ContainerGcPolicy, ImageGc, ImageGcPolicy, CONTAINER_GC_PERIOD,
};
use crate::types::PodUid;

use super::{Kubelet, KubeletError};

/// Consecutive image GC failures after which a node event is emitted (upstream 5).
const IMAGE_GC_FAILURES_BEFORE_EVENT: u32 = 5;

fn spawn_periodic(
    name: &'static str,
    period: Duration,
    stop: Receiver<()>,
    mut pass: impl FnMut() + Send + 'static,
) -> Result<JoinHandle<()>, KubeletError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let tick = crossbeam_channel::tick(period);
            loop {
                pass();
                select! {
                    recv(tick) -> _ => {},
                    recv(stop) -> _ => return,
                }
            }
        })
        .map_err(|source| KubeletError::Thread { name, source })
}

impl Kubelet {
    /// Starts the container and image GC threads.
    pub(super) fn start_gc_threads(
        self: &Arc<Self>,
        stop: &Receiver<()>,
    ) -> Result<Vec<JoinHandle<()>>, KubeletError> {
        let mut threads = Vec::new();
        let kubelet = Arc::clone(self);
        let policy = ContainerGcPolicy::default();
        threads.push(spawn_periodic(
            "container-gc",
            CONTAINER_GC_PERIOD,
            stop.clone(),
            move || {
                let desired = kubelet.pods().uids();
                let ready = kubelet.sources_ready.all_ready();
                let is_deleted = |uid: &PodUid| {
                    !desired.contains(uid) && kubelet.pod_workers.state(uid).is_none()
                };
                if let Err(e) =
                    kubelet
                        .runtime_manager
                        .garbage_collect_containers(&policy, ready, &is_deleted)
                {
                    log::warn!("container GC failed: {e}");
                }
            },
        )?);

        let raw = &self.config.raw;
        let high = raw.image_gc_high_threshold_percent.unwrap_or(85);
        let policy = ImageGcPolicy {
            high_threshold_percent: u8::try_from(high.clamp(0, 100)).unwrap_or(85),
            low_threshold_percent: u8::try_from(
                raw.image_gc_low_threshold_percent
                    .unwrap_or(80)
                    .clamp(0, 100),
            )
            .unwrap_or(80),
            min_age: raw
                .image_minimum_gc_age
                .and_then(|d| d.to_std())
                .unwrap_or(Duration::from_secs(120)),
        };
        let gc = Arc::new(
            ImageGc::new(
                Arc::clone(self.runtime_manager.images()),
                Arc::clone(self.runtime_manager.runtime()),
                Arc::clone(&self.clock),
                policy,
                Box::new(statvfs_stats),
            )
            .with_pinned(
                self.config
                    .pod_infra_container_image
                    .iter()
                    .cloned()
                    .collect(),
            ),
        );
        threads.push(self.start_eviction_thread(Arc::clone(&gc), stop)?);
        if high >= 100 {
            log::info!("image GC disabled (imageGCHighThresholdPercent is 100)");
            return Ok(threads);
        }
        let recorder = Arc::clone(&self.recorder);
        let node = self.config.node_name.clone();
        let mut failures = 0u32;
        threads.push(spawn_periodic(
            "image-gc",
            self.config.image_gc_period,
            stop.clone(),
            move || match gc.garbage_collect() {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    log::warn!("image GC failed: {e}");
                    if failures >= IMAGE_GC_FAILURES_BEFORE_EVENT {
                        recorder.node_event(&node, EventType::Warning, "ImageGCFailed", e);
                        failures = 0;
                    }
                }
            },
        )?);
        Ok(threads)
    }
}
