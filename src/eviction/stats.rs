//! What the eviction manager measures (upstream's summary provider as the eviction manager
//! reads it): the node's signals from `/proc`, `statvfs` of the root dir and of the image
//! filesystem CRI `ImageFsInfo` names, and per pod the containers' working sets and
//! writable layers (one CRI `ListContainerStats`), their log files, local volumes and
//! `etc-hosts`. Disk usage is walked only for the pods that need it in a pass, so a pass
//! over 110 pods without disk pressure stays cheap.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::decide::{Observation, Observations};
use super::threshold::Signal;
use crate::cm::CgroupManager;
use crate::cri::{api, ImageService, RuntimeService};
use crate::kuberuntime::labels::{CONTAINER_NAME_LABEL, POD_UID_LABEL};
use crate::types::{uid_of, PodUid};

/// One container's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerUsage {
    /// Name in the pod spec.
    pub name: String,
    /// Working set in bytes, when the runtime reported it.
    pub memory_working_set: Option<u64>,
    /// Writable layer bytes.
    pub rootfs_bytes: u64,
    /// Writable layer inodes.
    pub rootfs_inodes: u64,
    /// Log files' bytes (all attempts, rotated files included).
    pub logs_bytes: u64,
    /// Log files' inodes.
    pub logs_inodes: u64,
}

/// One volume's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeUsage {
    /// Name in the pod spec.
    pub name: String,
    /// Bytes allocated on disk (as `du`).
    pub bytes: u64,
    /// Inodes.
    pub inodes: u64,
    /// Counts toward the pod's ephemeral storage (upstream `IsLocalEphemeralVolume`: an
    /// emptyDir on disk, a configMap).
    pub ephemeral: bool,
}

/// One pod's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodUsage {
    /// Running containers.
    pub containers: Vec<ContainerUsage>,
    /// Local volumes (filled only when disk usage was asked for).
    pub volumes: Vec<VolumeUsage>,
    /// Bytes the pod's `etc-hosts` file takes on disk (counted in its ephemeral storage, as
    /// upstream).
    pub etc_hosts_bytes: u64,
    /// Processes in the pod's cgroup.
    pub processes: Option<u64>,
}

/// The node's signals in one pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSample {
    /// Every signal that could be measured.
    pub observations: Observations,
    /// Images live on a filesystem other than the root dir's.
    pub dedicated_image_fs: bool,
}

/// A measurement that failed.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// A CRI call failed.
    #[error("{call}: {source}")]
    Cri {
        /// Which call.
        call: &'static str,
        /// Why.
        source: crate::cri::CriError,
    },
}

/// What the eviction manager reads (the real one measures the host; tests script it).
pub trait StatsSource: Send + Sync {
    /// The node's signals.
    fn node(&self) -> NodeSample;
    /// Usage of `pods`; disk usage (logs, volumes, writable layers' files) only for those
    /// `disk_for` picks.
    fn pods(
        &self,
        pods: &[Arc<Pod>],
        disk_for: &dyn Fn(&Pod) -> bool,
    ) -> Result<HashMap<PodUid, PodUsage>, StatsError>;
}

/// Walked directory usage, reused for `volumeStatsAggPeriod` (upstream measures volumes
/// that often in the background and the eviction manager reads the cached figures). A
/// directory that does not exist yet is not remembered, so a new pod's first files are seen
/// at the next pass.
#[derive(Debug)]
pub struct UsageCache {
    ttl: Duration,
    /// Keyed by the path's bytes (hashing an `OsString` is cheaper than a `Path`, which
    /// hashes component by component).
    entries: Mutex<HashMap<std::ffi::OsString, (Instant, u64, u64)>>,
}

impl UsageCache {
    /// A cache keeping walks for `ttl`.
    pub fn new(ttl: Duration) -> UsageCache {
        UsageCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Bytes and inodes under `dir`, walked at most once per `ttl`.
    pub fn usage(&self, dir: &Path, now: Instant) -> (u64, u64) {
        if let Some(&(at, bytes, inodes)) = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(dir.as_os_str())
        {
            if now.saturating_duration_since(at) < self.ttl {
                return (bytes, inodes);
            }
        }
        let (bytes, inodes) = disk_usage(dir);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if inodes > 0 {
            entries.insert(dir.as_os_str().to_os_string(), (now, bytes, inodes));
        } else {
            entries.remove(dir.as_os_str());
        }
        (bytes, inodes)
    }

    /// Forgets directories not measured for two periods (their pods are gone).
    pub fn prune(&self, now: Instant) {
        let keep = self.ttl.saturating_mul(2);
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, (at, _, _)| now.saturating_duration_since(*at) < keep);
    }
}

/// Where the node's signals are read (the parsers take other roots in tests).
const PROC: &str = "/proc";

/// Upstream's default `volumeStatsAggPeriod`.
pub const DEFAULT_VOLUME_STATS_AGG_PERIOD: Duration = Duration::from_secs(60);

/// Measures the host and the runtime.
pub struct HostStats {
    runtime: Arc<dyn RuntimeService>,
    images: Arc<dyn ImageService>,
    root_dir: PathBuf,
    pod_logs_dir: PathBuf,
    /// Pod cgroups, for process counts (none when cgroups are not managed).
    cgroups: Option<CgroupManager>,
    /// Logs, volumes and `etc-hosts` measured within the last `volumeStatsAggPeriod`.
    usage: UsageCache,
}

impl HostStats {
    /// Measures pods under `root_dir` with logs under `pod_logs_dir`.
    pub fn new(
        runtime: Arc<dyn RuntimeService>,
        images: Arc<dyn ImageService>,
        root_dir: &Path,
        pod_logs_dir: &Path,
        cgroups: Option<CgroupManager>,
    ) -> HostStats {
        HostStats {
            runtime,
            images,
            root_dir: root_dir.into(),
            pod_logs_dir: pod_logs_dir.into(),
            cgroups,
            usage: UsageCache::new(DEFAULT_VOLUME_STATS_AGG_PERIOD),
        }
    }

    /// Reuses walked directory usage for `period` (`volumeStatsAggPeriod`; zero walks every
    /// time).
    pub fn with_volume_stats_period(mut self, period: Duration) -> HostStats {
        self.usage.ttl = period;
        self
    }

    fn image_fs_mountpoint(&self) -> Option<String> {
        let info = self.images.image_fs_info().ok()?;
        let fs = info.get_image_filesystems().first()?;
        Some(fs.get_fs_id().get_mountpoint().to_string())
    }
}

/// One `/proc/meminfo` field in bytes (`MemTotal`, `Inactive(file)`, ...).
pub fn meminfo_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// `MemTotal` and the working set (`MemTotal - MemFree - Inactive(file)`) from
/// `/proc/meminfo`, in bytes.
pub fn memory_from_meminfo(text: &str) -> Option<(u64, u64)> {
    let total = meminfo_field(text, "MemTotal")?;
    let free = meminfo_field(text, "MemFree")?;
    let inactive_file = meminfo_field(text, "Inactive(file)").unwrap_or(0);
    let working_set = total.saturating_sub(free).saturating_sub(inactive_file);
    Some((total, working_set))
}

/// The PID limit (the smaller of `kernel/pid_max` and `kernel/threads-max`) and the tasks
/// that exist now (the total of `loadavg`'s running/total field), as upstream reads them.
pub fn pids_from_proc(proc_dir: &Path) -> Option<(u64, u64)> {
    let read = |rel: &str| -> Option<u64> {
        std::fs::read_to_string(proc_dir.join(rel))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let pid_max = read("sys/kernel/pid_max")?;
    let max = read("sys/kernel/threads-max").map_or(pid_max, |t| t.min(pid_max));
    let loadavg = std::fs::read_to_string(proc_dir.join("loadavg")).ok()?;
    let running = loadavg
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()?;
    Some((max, running))
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Bytes and inode observations of the filesystem holding `path`, and its device.
fn fs_observations(path: &Path) -> Option<(Observation, Observation, u64)> {
    let st = rustix::fs::statvfs(path).ok()?;
    let dev = rustix::fs::stat(path).ok()?.st_dev;
    Some((
        Observation {
            available: signed(st.f_bavail.saturating_mul(st.f_frsize)),
            capacity: signed(st.f_blocks.saturating_mul(st.f_frsize)),
        },
        Observation {
            available: signed(st.f_ffree),
            capacity: signed(st.f_files),
        },
        dev,
    ))
}

/// Bytes allocated (`du`: blocks × 512) and inodes of `path` and everything under it, not
/// crossing into other filesystems or following links. Directories are read through their
/// descriptors (`openat`, `fstatat`), so no entry costs a lookup of its whole path.
pub fn disk_usage(path: &Path) -> (u64, u64) {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};
    let blocks = |st: &rustix::fs::Stat| u64::try_from(st.st_blocks).unwrap_or(0) * 512;
    let Ok(top) = rustix::fs::lstat(path) else {
        return (0, 0);
    };
    let mut bytes = blocks(&top);
    let mut inodes = 1;
    if FileType::from_raw_mode(top.st_mode) != FileType::Directory {
        return (bytes, inodes);
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let Ok(fd) = rustix::fs::openat(CWD, path, flags, Mode::empty()) else {
        return (bytes, inodes);
    };
    let mut stack = vec![fd];
    // Directory entries are read into this buffer, so a walk allocates nothing per entry.
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
    while let Some(fd) = stack.pop() {
        let mut entries = rustix::fs::RawDir::new(&fd, &mut buf);
        while let Some(Ok(entry)) = entries.next() {
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let Ok(st) = rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            if st.st_dev != top.st_dev {
                continue;
            }
            bytes += blocks(&st);
            inodes += 1;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                if let Ok(child) = rustix::fs::openat(&fd, name, flags, Mode::empty()) {
                    stack.push(child);
                }
            }
        }
    }
    (bytes, inodes)
}

fn value(v: &protobuf::SingularPtrField<api::UInt64Value>) -> Option<u64> {
    v.as_ref().map(|v| v.value)
}

impl StatsSource for HostStats {
    fn node(&self) -> NodeSample {
        let mut sample = NodeSample::default();
        if let Some((total, working_set)) = std::fs::read_to_string(Path::new(PROC).join("meminfo"))
            .ok()
            .as_deref()
            .and_then(memory_from_meminfo)
        {
            sample.observations.insert(
                Signal::MemoryAvailable,
                Observation {
                    available: signed(total) - signed(working_set),
                    capacity: signed(total),
                },
            );
        }
        let node_fs = fs_observations(&self.root_dir);
        if let Some((bytes, inodes, _)) = node_fs {
            sample.observations.insert(Signal::NodeFsAvailable, bytes);
            sample.observations.insert(Signal::NodeFsInodesFree, inodes);
        }
        if let Some((bytes, inodes, dev)) = self
            .image_fs_mountpoint()
            .and_then(|m| fs_observations(Path::new(&m)))
        {
            sample.observations.insert(Signal::ImageFsAvailable, bytes);
            sample
                .observations
                .insert(Signal::ImageFsInodesFree, inodes);
            sample.dedicated_image_fs = node_fs.is_some_and(|(_, _, node_dev)| node_dev != dev);
        }
        if let Some((max, running)) = pids_from_proc(Path::new(PROC)) {
            sample.observations.insert(
                Signal::PidAvailable,
                Observation {
                    available: signed(max) - signed(running),
                    capacity: signed(max),
                },
            );
        }
        sample
    }

    fn pods(
        &self,
        pods: &[Arc<Pod>],
        disk_for: &dyn Fn(&Pod) -> bool,
    ) -> Result<HashMap<PodUid, PodUsage>, StatsError> {
        let stats = self
            .runtime
            .list_container_stats(None)
            .map_err(|source| StatsError::Cri {
                call: "ListContainerStats",
                source,
            })?;
        let containers = self
            .runtime
            .list_containers(None)
            .map_err(|source| StatsError::Cri {
                call: "ListContainers",
                source,
            })?;
        let live: std::collections::HashSet<&str> = containers
            .iter()
            .filter(|c| c.get_state() == api::ContainerState::CONTAINER_RUNNING)
            .map(|c| c.get_id())
            .collect();
        let mut running: HashMap<&str, Vec<&api::ContainerStats>> = HashMap::new();
        for s in &stats {
            let Some(attrs) = s
                .attributes
                .as_ref()
                .filter(|a| live.contains(a.id.as_str()))
            else {
                continue;
            };
            let Some(uid) = attrs.labels.get(POD_UID_LABEL) else {
                continue;
            };
            running.entry(uid.as_str()).or_default().push(s);
        }
        let now = Instant::now();
        self.usage.prune(now);
        let mut out = HashMap::with_capacity(pods.len());
        for pod in pods {
            let uid = uid_of(pod);
            let disk = disk_for(pod);
            let mut usage = PodUsage::default();
            for s in running.get(uid.0.as_str()).into_iter().flatten() {
                let name = s
                    .attributes
                    .as_ref()
                    .and_then(|a| a.labels.get(CONTAINER_NAME_LABEL))
                    .cloned()
                    .unwrap_or_default();
                let mut c = ContainerUsage {
                    memory_working_set: s.memory.as_ref().and_then(|m| value(&m.working_set_bytes)),
                    rootfs_bytes: s
                        .writable_layer
                        .as_ref()
                        .and_then(|w| value(&w.used_bytes))
                        .unwrap_or(0),
                    rootfs_inodes: s
                        .writable_layer
                        .as_ref()
                        .and_then(|w| value(&w.inodes_used))
                        .unwrap_or(0),
                    ..ContainerUsage::default()
                };
                if disk {
                    let dir = crate::kuberuntime::logs::pod_log_dir(
                        &self.pod_logs_dir,
                        pod.metadata.namespace.as_deref().unwrap_or_default(),
                        pod.metadata.name.as_deref().unwrap_or_default(),
                        &uid.0,
                    )
                    .join(&name);
                    (c.logs_bytes, c.logs_inodes) = self.usage.usage(&dir, now);
                }
                c.name = name;
                usage.containers.push(c);
            }
            usage.containers.sort_by(|a, b| a.name.cmp(&b.name));
            if disk {
                let pod_dir = self.root_dir.join("pods").join(&uid.0);
                usage.volumes = volume_usage(pod, &pod_dir, &|d| self.usage.usage(d, now));
                usage.etc_hosts_bytes = self.usage.usage(&pod_dir.join("etc-hosts"), now).0;
            }
            usage.processes = self
                .cgroups
                .as_ref()
                .and_then(|c| c.pod_processes(&uid, crate::resources::qos_class(pod)));
            out.insert(uid, usage);
        }
        Ok(out)
    }
}

/// Usage of the pod's emptyDir and configMap volumes, each measured by `measure`.
fn volume_usage(
    pod: &Pod,
    pod_dir: &Path,
    measure: &dyn Fn(&Path) -> (u64, u64),
) -> Vec<VolumeUsage> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes
        .filter_map(|v| {
            let (plugin, ephemeral) = if let Some(e) = v.empty_dir.as_ref() {
                (
                    "empty-dir",
                    e.medium.as_deref().unwrap_or_default().is_empty(),
                )
            } else if v.config_map.is_some() {
                ("configmap", true)
            } else {
                return None;
            };
            let dir = pod_dir
                .join("volumes")
                .join(format!("kubernetes.io~{plugin}"))
                .join(&v.name);
            let (bytes, inodes) = measure(&dir);
            Some(VolumeUsage {
                name: v.name.clone(),
                bytes,
                inodes,
                ephemeral,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("rkubelet-eviction-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn memory_and_pids_are_read_as_upstream_reads_them() {
        let meminfo =
            "MemTotal:       2000000 kB\nMemFree:         500000 kB\nInactive(file):  300000 kB\n";
        assert_eq!(
            memory_from_meminfo(meminfo),
            Some((2_000_000 * 1024, 1_200_000 * 1024))
        );
        assert_eq!(memory_from_meminfo("MemFree: 1 kB\n"), None);
        let dir = scratch("proc");
        std::fs::create_dir_all(dir.join("sys/kernel")).unwrap();
        std::fs::write(dir.join("sys/kernel/pid_max"), "4194304\n").unwrap();
        std::fs::write(dir.join("sys/kernel/threads-max"), "63000\n").unwrap();
        std::fs::write(dir.join("loadavg"), "0.10 0.20 0.30 2/345 6789\n").unwrap();
        assert_eq!(pids_from_proc(&dir), Some((63_000, 345)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn disk_usage_counts_allocated_blocks_and_inodes() {
        let dir = scratch("du");
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/data"), vec![7u8; 100_000]).unwrap();
        let (bytes, inodes) = disk_usage(&dir);
        assert!(bytes >= 100_000, "{bytes}");
        assert_eq!(inodes, 3);
        assert_eq!(disk_usage(&dir.join("missing")), (0, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
