//! Garbage collection of dead containers, sandboxes and unused images (upstream
//! `kuberuntime_gc.go` and `images/image_gc_manager.go`). Both run on the `container-gc`
//! and `image-gc` threads the kubelet starts (`Bootstrap::start_garbage_collection`);
//! everything here is a blocking pass over CRI lists, safe beside the pod workers: removing
//! something a worker also removes is a harmless NotFound.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::clock::{from_unix_nanos, Clock};
use crate::cri::{api, CriError, ImageService, RuntimeService};
use crate::types::PodUid;

use super::labels::{self, CONTAINER_NAME_LABEL, POD_UID_LABEL};
use super::{logs, RuntimeManager};

/// How often container GC runs (upstream `ContainerGCPeriod`).
pub const CONTAINER_GC_PERIOD: Duration = Duration::from_secs(60);
/// How often image GC runs (upstream `ImageGCPeriod`).
pub const IMAGE_GC_PERIOD: Duration = Duration::from_secs(300);

/// Container GC policy (upstream `GCPolicy`, from the deprecated flags' defaults).
#[derive(Debug, Clone, Copy)]
pub struct ContainerGcPolicy {
    /// Dead containers younger than this are kept (`--minimum-container-ttl-duration`, 0).
    pub min_age: Duration,
    /// Dead containers kept per (pod, container name) (`--maximum-dead-containers-per-container`, 1).
    pub max_per_pod_container: usize,
    /// Dead containers kept in all (`--maximum-dead-containers`, unlimited).
    pub max_containers: Option<usize>,
}

impl Default for ContainerGcPolicy {
    fn default() -> Self {
        ContainerGcPolicy {
            min_age: Duration::ZERO,
            max_per_pod_container: 1,
            max_containers: None,
        }
    }
}

/// What one container GC pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContainerGcReport {
    /// Container ids removed.
    pub containers: Vec<String>,
    /// Sandbox ids removed.
    pub sandboxes: Vec<String>,
}

struct Dead {
    id: String,
    created_at: i64,
    namespace: String,
    pod_name: String,
    container: String,
    attempt: u32,
}

impl RuntimeManager {
    /// One container GC pass (upstream `containerGC.GarbageCollect`): dead containers beyond
    /// the per-container and global limits (oldest first) and every dead container of a
    /// deleted pod are removed with their log files; not-ready sandboxes without containers
    /// are removed unless they are their pod's newest. `is_deleted` is only consulted when
    /// every pod source has reported (`all_sources_ready`).
    pub fn garbage_collect_containers(
        &self,
        policy: &ContainerGcPolicy,
        all_sources_ready: bool,
        is_deleted: &dyn Fn(&PodUid) -> bool,
    ) -> Result<ContainerGcReport, CriError> {
        let now = self.clock.wall();
        let containers = self.runtime.list_containers(None)?;
        let mut units: BTreeMap<(PodUid, String), Vec<Dead>> = BTreeMap::new();
        for c in &containers {
            if c.get_state() == api::ContainerState::CONTAINER_RUNNING {
                continue;
            }
            let Some(pod) = labels::labeled_pod(c.get_labels()) else {
                continue;
            };
            let created = from_unix_nanos(c.get_created_at());
            if now.duration_since(created).unwrap_or_default() < policy.min_age {
                continue;
            }
            let container = c
                .get_labels()
                .get(CONTAINER_NAME_LABEL)
                .cloned()
                .unwrap_or_else(|| c.get_metadata().get_name().to_string());
            units
                .entry((pod.uid.clone(), container.clone()))
                .or_default()
                .push(Dead {
                    id: c.get_id().to_string(),
                    created_at: c.get_created_at(),
                    namespace: pod.namespace,
                    pod_name: pod.name,
                    container,
                    attempt: c.get_metadata().get_attempt(),
                });
        }
        let mut report = ContainerGcReport::default();
        let mut kept: Vec<Dead> = Vec::new();
        for ((uid, _), mut dead) in units {
            dead.sort_by_key(|d| std::cmp::Reverse(d.created_at));
            let keep = if all_sources_ready && is_deleted(&uid) {
                0
            } else {
                policy.max_per_pod_container
            };
            let evict = dead.split_off(keep.min(dead.len()));
            kept.extend(dead);
            for d in evict {
                self.remove_dead_container(&d, &mut report);
            }
        }
        if let Some(max) = policy.max_containers {
            if kept.len() > max {
                kept.sort_by_key(|d| d.created_at);
                let excess = kept.len() - max;
                for d in kept.drain(..excess) {
                    self.remove_dead_container(&d, &mut report);
                }
            }
        }

        // Sandboxes: keep each pod's newest and any that still has containers.
        let sandboxes = self.runtime.list_pod_sandbox(None)?;
        let removed: HashSet<&str> = report.containers.iter().map(String::as_str).collect();
        let in_use: HashSet<&str> = containers
            .iter()
            .filter(|c| !removed.contains(c.get_id()))
            .map(|c| c.get_pod_sandbox_id())
            .collect();
        let mut newest: HashMap<String, i64> = HashMap::new();
        for s in &sandboxes {
            if let Some(uid) = s.get_labels().get(POD_UID_LABEL) {
                let e = newest.entry(uid.clone()).or_insert(i64::MIN);
                *e = (*e).max(s.get_created_at());
            }
        }
        for s in &sandboxes {
            let Some(uid) = s.get_labels().get(POD_UID_LABEL) else {
                continue;
            };
            let ready = s.get_state() == api::PodSandboxState::SANDBOX_READY;
            let deleted = all_sources_ready && is_deleted(&PodUid(uid.clone()));
            let is_newest = newest.get(uid) == Some(&s.get_created_at());
            if ready || in_use.contains(s.get_id()) || (is_newest && !deleted) {
                continue;
            }
            match self.runtime.remove_pod_sandbox(s.get_id()) {
                Ok(()) => report.sandboxes.push(s.get_id().to_string()),
                Err(e) if e.is_not_found() => {}
                Err(e) => log::warn!("container GC: removing sandbox {}: {e}", s.get_id()),
            }
        }
        if !report.containers.is_empty() || !report.sandboxes.is_empty() {
            log::info!(
                "container GC removed {} containers and {} sandboxes",
                report.containers.len(),
                report.sandboxes.len()
            );
        }
        Ok(report)
    }

    fn remove_dead_container(&self, d: &Dead, report: &mut ContainerGcReport) {
        match self.runtime.remove_container(&d.id) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                log::warn!("container GC: removing container {}: {e}", d.id);
                return;
            }
        }
        report.containers.push(d.id.clone());
        remove_container_log(
            &self.settings.pod_logs_dir,
            &self.settings.container_logs_dir,
            (&d.namespace, &d.pod_name, &d.container),
            d.attempt,
            &d.id,
        );
    }
}

/// Removes one attempt's log file, its rotated files and its legacy symlink.
pub(super) fn remove_container_log(
    pod_logs_dir: &Path,
    container_logs_dir: &Path,
    (namespace, pod_name, container): (&str, &str, &str),
    attempt: u32,
    id: &str,
) {
    // The pod UID is part of the directory name; find the directory by prefix.
    let prefix = format!("{namespace}_{pod_name}_");
    if let Ok(entries) = std::fs::read_dir(pod_logs_dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let file = e
                    .path()
                    .join(logs::container_log_relative_path(container, attempt));
                match crate::log_manager::remove_with_rotated(&file) {
                    Ok(()) => log::debug!("removed log {} and its rotated files", file.display()),
                    Err(err) => log::warn!("removing log {}: {err}", file.display()),
                }
            }
        }
    }
    logs::remove_legacy_symlinks(container_logs_dir, &[id.to_string()]);
}

/// Image GC policy (KubeletConfiguration `imageGCHighThresholdPercent` 85,
/// `imageGCLowThresholdPercent` 80, `imageMinimumGCAge` 2m).
#[derive(Debug, Clone, Copy)]
pub struct ImageGcPolicy {
    /// Usage at or above which GC frees space.
    pub high_threshold_percent: u8,
    /// Usage GC frees down to.
    pub low_threshold_percent: u8,
    /// Images first seen more recently than this are kept.
    pub min_age: Duration,
}

/// Capacity and available bytes of the filesystem holding `mountpoint`.
pub type FsStats = dyn Fn(&str) -> std::io::Result<(u64, u64)> + Send + Sync;

/// `statvfs` of a mount point: (capacity, available) in bytes.
pub fn statvfs_stats(mountpoint: &str) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::statvfs(mountpoint).map_err(std::io::Error::from)?;
    Ok((
        st.f_blocks.saturating_mul(st.f_frsize),
        st.f_bavail.saturating_mul(st.f_frsize),
    ))
}

#[derive(Debug, Clone, Copy)]
struct ImageRecord {
    first_detected: SystemTime,
    last_used: SystemTime,
    size: u64,
}

/// What one image GC pass saw and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImageGcReport {
    /// Usage of the image filesystem when the pass began, in percent.
    pub usage_percent: u8,
    /// Bytes the pass tried to free.
    pub bytes_to_free: u64,
    /// Image ids removed.
    pub removed: Vec<String>,
}

/// Frees image filesystem space as upstream's image GC manager: above the high threshold,
/// unused images, least recently used first, are removed until usage is back at the low
/// threshold. Images used by any container (running or not), pinned images and images
/// seen for less than `min_age` are never removed.
pub struct ImageGc {
    images: Arc<dyn ImageService>,
    runtime: Arc<dyn RuntimeService>,
    clock: Arc<dyn Clock>,
    policy: ImageGcPolicy,
    fs_stats: Box<FsStats>,
    records: Mutex<HashMap<String, ImageRecord>>,
    /// Image names never collected: `--pod-infra-container-image` when given.
    pinned_names: Vec<String>,
}

/// The sandbox image a runtime reports in its verbose `Status` info (containerd's
/// `sandboxImage`, CRI-O's `pause_image`), which must survive image GC like a pinned image.
pub fn runtime_sandbox_image(runtime: &dyn RuntimeService) -> Option<String> {
    fn find(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| match (k.as_str(), v) {
                ("sandboxImage" | "pause_image", serde_json::Value::String(s)) => Some(s.clone()),
                _ => find(v),
            }),
            _ => None,
        }
    }
    let resp = runtime.status(true).ok()?;
    resp.get_info()
        .values()
        .filter_map(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
        .find_map(|v| find(&v))
}

impl ImageGc {
    /// A collector; `fs_stats` measures the image filesystem ([`statvfs_stats`] on a node).
    pub fn new(
        images: Arc<dyn ImageService>,
        runtime: Arc<dyn RuntimeService>,
        clock: Arc<dyn Clock>,
        policy: ImageGcPolicy,
        fs_stats: Box<FsStats>,
    ) -> Self {
        ImageGc {
            images,
            runtime,
            clock,
            policy,
            fs_stats,
            records: Mutex::new(HashMap::new()),
            pinned_names: Vec::new(),
        }
    }

    /// Never collects images of these names (besides those the runtime pins itself).
    pub fn with_pinned(mut self, names: Vec<String>) -> Self {
        self.pinned_names = names;
        self
    }

    /// Records which images exist and which are in use now; returns the ids in use.
    fn detect_images(&self, now: SystemTime) -> Result<HashSet<String>, CriError> {
        let images = self.images.list_images(None)?;
        let containers = self.runtime.list_containers(None)?;
        let mut in_use: HashSet<String> = HashSet::new();
        in_use.extend(self.pinned_names.iter().cloned());
        in_use.extend(runtime_sandbox_image(self.runtime.as_ref()));
        for c in &containers {
            in_use.insert(c.get_image_ref().to_string());
            in_use.insert(c.get_image().get_image().to_string());
        }
        let mut records = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let present: HashSet<&str> = images.iter().map(|i| i.get_id()).collect();
        records.retain(|id, _| present.contains(id.as_str()));
        let mut used_ids = HashSet::new();
        for img in &images {
            let used = in_use.contains(img.get_id())
                || img.get_repo_tags().iter().any(|t| in_use.contains(t))
                || img.get_repo_digests().iter().any(|d| in_use.contains(d));
            let record = records
                .entry(img.get_id().to_string())
                .or_insert(ImageRecord {
                    first_detected: now,
                    last_used: SystemTime::UNIX_EPOCH,
                    size: img.get_size(),
                });
            record.size = img.get_size();
            if used || img.get_pinned() {
                record.last_used = now;
                used_ids.insert(img.get_id().to_string());
            }
        }
        Ok(used_ids)
    }

    /// Keeps the image records current (upstream re-detects every 5 minutes as well).
    pub fn refresh(&self) -> Result<(), CriError> {
        self.detect_images(self.clock.wall()).map(|_| ())
    }

    /// One pass (upstream `GarbageCollect`).
    pub fn garbage_collect(&self) -> Result<ImageGcReport, String> {
        let now = self.clock.wall();
        let in_use = self.detect_images(now).map_err(|e| e.to_string())?;
        let fs = self.images.image_fs_info().map_err(|e| e.to_string())?;
        let Some(usage) = fs.get_image_filesystems().first() else {
            return Err("the runtime reported no image filesystem".into());
        };
        let mountpoint = usage.get_fs_id().get_mountpoint();
        let (capacity, available) = (self.fs_stats)(mountpoint)
            .map_err(|e| format!("measuring image filesystem {mountpoint}: {e}"))?;
        if capacity == 0 {
            return Err(format!(
                "image filesystem {mountpoint} reports zero capacity"
            ));
        }
        let available = available.min(capacity);
        let usage_percent = 100 - u8::try_from(available * 100 / capacity).unwrap_or(100);
        let mut report = ImageGcReport {
            usage_percent,
            ..Default::default()
        };
        if usage_percent < self.policy.high_threshold_percent {
            return Ok(report);
        }
        let target_available =
            capacity * u64::from(100 - self.policy.low_threshold_percent.min(100)) / 100;
        report.bytes_to_free = target_available.saturating_sub(available);
        log::info!(
            "image GC: disk usage {usage_percent}% is at or above the high threshold {}%, trying to free {} bytes down to the low threshold {}%",
            self.policy.high_threshold_percent,
            report.bytes_to_free,
            self.policy.low_threshold_percent
        );
        let freed = self.free_space(report.bytes_to_free, now, &in_use, &mut report.removed);
        if freed < report.bytes_to_free {
            return Err(format!(
                "Failed to garbage collect required amount of images. Attempted to free {} bytes, but only found {freed} bytes eligible to free.",
                report.bytes_to_free
            ));
        }
        Ok(report)
    }

    /// Removes every image no container uses that was seen at least `min_age` ago (upstream
    /// `DeleteUnusedImages`, which the eviction manager calls under disk pressure); returns
    /// the bytes freed.
    pub fn delete_unused_images(&self) -> Result<u64, String> {
        let now = self.clock.wall();
        let in_use = self.detect_images(now).map_err(|e| e.to_string())?;
        let mut removed = Vec::new();
        Ok(self.free_space(u64::MAX, now, &in_use, &mut removed))
    }

    /// Removes unused images, least recently used first, until `bytes_to_free` are freed;
    /// returns the bytes freed and adds the removed ids to `removed`.
    fn free_space(
        &self,
        bytes_to_free: u64,
        now: SystemTime,
        in_use: &HashSet<String>,
        removed: &mut Vec<String>,
    ) -> u64 {
        let mut candidates: Vec<(String, ImageRecord)> = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(id, _)| !in_use.contains(*id))
            .map(|(id, r)| (id.clone(), *r))
            .collect();
        candidates.sort_by_key(|(_, r)| (r.last_used, r.first_detected));
        let mut freed = 0u64;
        for (id, record) in candidates {
            if freed >= bytes_to_free {
                break;
            }
            if now
                .duration_since(record.first_detected)
                .unwrap_or_default()
                < self.policy.min_age
            {
                continue;
            }
            let mut spec = api::ImageSpec::new();
            spec.set_image(id.clone());
            match self.images.remove_image(&spec) {
                Ok(()) => {
                    log::info!("image GC: removed image {id} ({} bytes)", record.size);
                    freed += record.size;
                    removed.push(id.clone());
                    if let Ok(mut records) = self.records.lock() {
                        records.remove(&id);
                    }
                }
                Err(e) => log::warn!("image GC: removing image {id}: {e}"),
            }
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::cri::FakeRuntime;

    fn image_id(rt: &FakeRuntime, name: &str) -> String {
        let mut spec = api::ImageSpec::new();
        spec.set_image(name.into());
        rt.image_status(&spec, false)
            .unwrap()
            .unwrap()
            .get_id()
            .to_string()
    }

    #[test]
    fn container_gc_keeps_the_newest_dead_attempt_and_removes_older_ones_with_their_logs() {
        use crate::kuberuntime::RuntimeSettings;
        use crate::volume::VolumeManager;
        use k8s_openapi::api::core::v1::{Container, Pod};
        let dir = std::env::temp_dir().join(format!("rkubelet-cgc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let settings = RuntimeSettings::for_tests(&dir);
        let rt = Arc::new(FakeRuntime::new());
        let image = rt.preload_image("docker.io/library/busybox:local");
        let manager = RuntimeManager::new(
            rt.clone(),
            rt.clone(),
            Arc::new(FakeClock::new()),
            Arc::new(crate::events::LogRecorder),
            settings.clone(),
            VolumeManager::new(&dir.join("root")),
            None,
        );
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "u1"},
            "spec": {"containers": [{"name": "app"}]}
        }))
        .unwrap();
        let container = Container {
            name: "app".into(),
            ..Default::default()
        };
        let mut sandbox_config = api::PodSandboxConfig::new();
        sandbox_config.mut_metadata().set_name("web".into());
        sandbox_config.mut_metadata().set_uid("u1".into());
        sandbox_config.mut_metadata().set_namespace("team".into());
        for (k, v) in labels::new_pod_labels(&pod) {
            sandbox_config.mut_labels().insert(k, v);
        }
        let sandbox = rt.run_pod_sandbox(&sandbox_config, "").unwrap();
        let log_dir = logs::pod_log_dir(&settings.pod_logs_dir, "team", "web", "u1").join("app");
        std::fs::create_dir_all(&log_dir).unwrap();
        let mut ids = Vec::new();
        for attempt in 0..3u32 {
            let mut config = api::ContainerConfig::new();
            config.mut_metadata().set_name("app".into());
            config.mut_metadata().set_attempt(attempt);
            config.mut_image().set_image(image.clone());
            for (k, v) in labels::new_container_labels(&pod, &container) {
                config.mut_labels().insert(k, v);
            }
            let id = rt
                .create_container(&sandbox, &config, &sandbox_config)
                .unwrap();
            rt.start_container(&id).unwrap();
            rt.exit_container(&id, 1);
            std::fs::write(log_dir.join(format!("{attempt}.log")), "x").unwrap();
            let rotated = format!("{attempt}.log.20261204-100000.gz");
            std::fs::write(log_dir.join(rotated), "x").unwrap();
            ids.push(id);
        }
        let policy = ContainerGcPolicy::default();
        let report = manager
            .garbage_collect_containers(&policy, false, &|_| true)
            .unwrap();
        let mut removed = report.containers.clone();
        removed.sort();
        let mut want = vec![ids[0].clone(), ids[1].clone()];
        want.sort();
        assert_eq!(removed, want, "sources not ready: deletion is not trusted");
        let mut left: Vec<String> = std::fs::read_dir(&log_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["2.log", "2.log.20261204-100000.gz"],
            "older attempts' logs go with their rotated files"
        );
        assert!(report.sandboxes.is_empty(), "the ready sandbox stays");

        // The pod is gone for good: its last container and stopped sandbox go too.
        rt.stop_pod_sandbox(&sandbox).unwrap();
        let report = manager
            .garbage_collect_containers(&policy, true, &|uid| uid.0 == "u1")
            .unwrap();
        assert_eq!(report.containers, vec![ids[2].clone()]);
        assert_eq!(report.sandboxes, vec![sandbox]);
        assert!(rt.list_containers(None).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn image_gc_frees_unused_images_oldest_first_down_to_the_low_threshold() {
        let rt = Arc::new(FakeRuntime::new());
        for name in ["a:1", "b:1", "c:1", "used:1"] {
            rt.preload_image(name);
        }
        let sizes: HashMap<String, u64> = rt
            .list_images(None)
            .unwrap()
            .iter()
            .map(|i| (i.get_id().to_string(), i.get_size()))
            .collect();
        // A container keeps "used:1" in use even after it exits.
        let mut sandbox_config = api::PodSandboxConfig::new();
        sandbox_config.mut_metadata().set_name("p".into());
        sandbox_config.mut_metadata().set_uid("u".into());
        sandbox_config.mut_metadata().set_namespace("ns".into());
        let sandbox = rt.run_pod_sandbox(&sandbox_config, "").unwrap();
        let mut config = api::ContainerConfig::new();
        config.mut_metadata().set_name("c".into());
        config.mut_image().set_image(image_id(&rt, "used:1"));
        rt.create_container(&sandbox, &config, &sandbox_config)
            .unwrap();

        let clock = Arc::new(FakeClock::new());
        let total: u64 = sizes.values().sum();
        // Capacity such that usage is 90%: above 85, GC frees down to 80%.
        let capacity = total * 10 / 9;
        let fake = rt.clone();
        let gc = ImageGc::new(
            rt.clone(),
            rt.clone(),
            clock.clone(),
            ImageGcPolicy {
                high_threshold_percent: 85,
                low_threshold_percent: 80,
                min_age: Duration::from_secs(120),
            },
            Box::new(move |_| {
                let used: u64 = fake
                    .list_images(None)
                    .unwrap()
                    .iter()
                    .map(|i| i.get_size())
                    .sum();
                Ok((capacity, capacity - used))
            }),
        );
        // Images just seen are too young.
        let first = gc.garbage_collect().unwrap_err();
        assert!(first.contains("only found 0 bytes eligible"), "{first}");
        // Old enough now.
        clock.step(Duration::from_secs(180));
        let report = gc.garbage_collect().unwrap();
        assert!(report.usage_percent >= 85, "{report:?}");
        assert!(!report.removed.is_empty());
        assert!(!report.removed.contains(&image_id(&rt, "used:1")));
        let freed: u64 = report.removed.iter().map(|id| sizes[id]).sum();
        assert!(freed >= report.bytes_to_free, "{report:?}");
        // Below the high threshold now: nothing more goes.
        let again = gc.garbage_collect().unwrap();
        assert!(again.removed.is_empty(), "{again:?}");
        assert!(rt
            .list_images(None)
            .unwrap()
            .iter()
            .any(|i| i.get_id() == image_id(&rt, "used:1")));
    }
}
