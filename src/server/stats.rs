//! Resource figures for `/stats/summary` (the document's types are in `summary.rs`) and
//! `/metrics/resource`: node CPU and memory from `/proc`, node and image filesystems from
//! `statvfs` and CRI `ImageFsInfo`, pod and container CPU, memory and writable layers from
//! CRI `ListContainerStats` (upstream's CRI stats provider), pod network counters from CRI
//! `ListPodSandboxStats` and pod volumes from the pods' directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::jiff::Timestamp;

use crate::cri::{api, ImageService, RuntimeService};
use crate::kuberuntime::labels::{
    CONTAINER_NAME_LABEL, POD_NAMESPACE_LABEL, POD_NAME_LABEL, POD_UID_LABEL,
};
use crate::util::metrics::Exposition;

pub use super::summary::*;

/// Gathers figures from the host and the runtime.
pub struct StatsProvider {
    runtime: Arc<dyn RuntimeService>,
    images: Arc<dyn ImageService>,
    node_name: String,
    root_dir: PathBuf,
    pod_logs_dir: PathBuf,
    /// `/proc` (a fixture directory in tests).
    proc_dir: PathBuf,
    started: String,
    /// The previous node CPU sample: (ns since the epoch, cumulative core-ns).
    last_cpu: Mutex<Option<(i128, u64)>>,
    /// Volume usage, walked at most once per `volumeStatsAggPeriod`.
    volume_usage: crate::eviction::stats::UsageCache,
}

/// The current time.
pub fn now() -> Timestamp {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Timestamp::from_nanosecond(i128::try_from(nanos).unwrap_or(0)).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn rfc3339(nanos: i128) -> String {
    Timestamp::from_nanosecond(nanos)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn value(v: &protobuf::SingularPtrField<api::UInt64Value>) -> Option<u64> {
    v.as_ref().map(|v| v.value)
}

impl StatsProvider {
    /// A provider for the node `node_name`.
    pub fn new(
        runtime: Arc<dyn RuntimeService>,
        images: Arc<dyn ImageService>,
        node_name: &str,
        root_dir: &Path,
        pod_logs_dir: &Path,
    ) -> StatsProvider {
        StatsProvider {
            runtime,
            images,
            node_name: node_name.into(),
            root_dir: root_dir.into(),
            pod_logs_dir: pod_logs_dir.into(),
            proc_dir: PathBuf::from("/proc"),
            started: now().to_string(),
            last_cpu: Mutex::new(None),
            volume_usage: crate::eviction::stats::UsageCache::new(
                crate::eviction::stats::DEFAULT_VOLUME_STATS_AGG_PERIOD,
            ),
        }
    }

    /// The summary; `only_cpu_and_memory` leaves filesystems out (what the metrics need).
    pub fn summary(&self, only_cpu_and_memory: bool) -> Result<Summary, String> {
        let now = now();
        let time = now.to_string();
        let mut node = NodeStats {
            node_name: self.node_name.clone(),
            start_time: self.started.clone(),
            cpu: self.node_cpu(now.as_nanosecond()),
            memory: self.node_memory(&time),
            ..NodeStats::default()
        };
        if !only_cpu_and_memory {
            node.fs = fs_of(&self.root_dir, &time);
            node.runtime.image_fs = self.image_fs(&time);
        }
        let stats = self
            .runtime
            .list_container_stats(None)
            .map_err(|e| format!("listing container stats: {e}"))?;
        let containers = self
            .runtime
            .list_containers(None)
            .map_err(|e| format!("listing containers: {e}"))?;
        let created: BTreeMap<&str, (i64, api::ContainerState)> = containers
            .iter()
            .map(|c| (c.id.as_str(), (c.created_at, c.state)))
            .collect();
        let mut pods: BTreeMap<PodReference, PodStats> = BTreeMap::new();
        for s in &stats {
            let Some(attrs) = s.attributes.as_ref() else {
                continue;
            };
            let Some(&(created_at, state)) = created.get(attrs.id.as_str()) else {
                continue;
            };
            if state != api::ContainerState::CONTAINER_RUNNING {
                continue;
            }
            let label = |k: &str| attrs.labels.get(k).cloned().unwrap_or_default();
            let pod_ref = PodReference {
                name: label(POD_NAME_LABEL),
                namespace: label(POD_NAMESPACE_LABEL),
                uid: label(POD_UID_LABEL),
            };
            if pod_ref.uid.is_empty() {
                continue;
            }
            let name = label(CONTAINER_NAME_LABEL);
            let container =
                self.container(s, &name, &pod_ref, created_at, only_cpu_and_memory, &time);
            let pod = pods.entry(pod_ref.clone()).or_insert_with(|| PodStats {
                pod_ref,
                start_time: container.start_time.clone(),
                ..PodStats::default()
            });
            if container.start_time < pod.start_time {
                pod.start_time = container.start_time.clone();
            }
            pod.containers.push(container);
        }
        let networks = if only_cpu_and_memory {
            BTreeMap::new()
        } else {
            self.pod_networks(&time)
        };
        let walked = std::time::Instant::now();
        self.volume_usage.prune(walked);
        let pods = pods
            .into_values()
            .map(|mut p| {
                p.containers.sort_by(|a, b| a.name.cmp(&b.name));
                sum_pod(&mut p, &time, only_cpu_and_memory);
                if !only_cpu_and_memory {
                    p.network = networks.get(&p.pod_ref.uid).cloned();
                    p.volume = self.pod_volumes(&p.pod_ref.uid, &time, walked);
                }
                p
            })
            .collect();
        Ok(Summary { node, pods })
    }

    fn container(
        &self,
        s: &api::ContainerStats,
        name: &str,
        pod: &PodReference,
        created_at: i64,
        only_cpu_and_memory: bool,
        time: &str,
    ) -> ContainerStats {
        let cpu = s.cpu.as_ref().map_or_else(CpuStats::default, |c| CpuStats {
            time: rfc3339(i128::from(c.timestamp)),
            usage_nano_cores: value(&c.usage_nano_cores),
            usage_core_nano_seconds: value(&c.usage_core_nano_seconds),
        });
        let memory = s
            .memory
            .as_ref()
            .map_or_else(MemoryStats::default, |m| MemoryStats {
                time: rfc3339(i128::from(m.timestamp)),
                available_bytes: value(&m.available_bytes),
                usage_bytes: value(&m.usage_bytes),
                working_set_bytes: value(&m.working_set_bytes),
                rss_bytes: value(&m.rss_bytes),
                page_faults: value(&m.page_faults),
                major_page_faults: value(&m.major_page_faults),
            });
        let mut out = ContainerStats {
            name: name.into(),
            start_time: rfc3339(i128::from(created_at)),
            cpu,
            memory,
            ..ContainerStats::default()
        };
        if !only_cpu_and_memory {
            let mut rootfs = fs_of(&self.root_dir, time);
            rootfs.used_bytes = s.writable_layer.as_ref().and_then(|w| value(&w.used_bytes));
            rootfs.inodes_used = s
                .writable_layer
                .as_ref()
                .and_then(|w| value(&w.inodes_used));
            out.rootfs = rootfs;
            let mut logs = fs_of(&self.pod_logs_dir, time);
            let dir = crate::kuberuntime::logs::pod_log_dir(
                &self.pod_logs_dir,
                &pod.namespace,
                &pod.name,
                &pod.uid,
            )
            .join(name);
            logs.used_bytes = Some(dir_size(&dir));
            out.logs = logs;
        }
        out
    }

    /// Network counters per pod UID from CRI `ListPodSandboxStats`; none (logged at debug)
    /// when the runtime does not offer it.
    fn pod_networks(&self, time: &str) -> BTreeMap<String, NetworkStats> {
        let stats = match self.runtime.list_pod_sandbox_stats(None) {
            Ok(stats) => stats,
            Err(e) if e.code() == Some(crate::cri::RpcCode::Unimplemented) => {
                log::debug!("pod network stats: {e}");
                return BTreeMap::new();
            }
            Err(e) => {
                log::debug!("pod network stats of all sandboxes: {e}; asking per sandbox");
                self.sandbox_stats_one_by_one()
            }
        };
        let interface = |i: &api::NetworkInterfaceUsage| InterfaceStats {
            name: i.name.clone(),
            rx_bytes: value(&i.rx_bytes),
            rx_errors: value(&i.rx_errors),
            tx_bytes: value(&i.tx_bytes),
            tx_errors: value(&i.tx_errors),
        };
        stats
            .iter()
            .filter_map(|s| {
                let uid = s.attributes.as_ref()?.metadata.as_ref()?.uid.clone();
                let network = s.linux.as_ref()?.network.as_ref()?;
                let default = network.default_interface.as_ref()?;
                let default_interface = interface(default);
                let interfaces = network.interfaces.iter().map(interface).collect();
                Some((
                    uid,
                    NetworkStats {
                        // containerd leaves the timestamp unset: the sample is from now.
                        time: if network.timestamp > 0 {
                            rfc3339(i128::from(network.timestamp))
                        } else {
                            time.to_string()
                        },
                        default_interface,
                        interfaces,
                    },
                ))
            })
            .collect()
    }

    /// `ListPodSandboxStats` for each ready sandbox on its own. One sandbox whose container
    /// is exiting at that moment fails the whole list in some runtimes (containerd 1.6:
    /// "ttrpc: closed"); asked one at a time, only that sandbox goes without.
    fn sandbox_stats_one_by_one(&self) -> Vec<api::PodSandboxStats> {
        let mut ready = api::PodSandboxFilter::new();
        let mut state = api::PodSandboxStateValue::new();
        state.set_state(api::PodSandboxState::SANDBOX_READY);
        ready.set_state(state);
        let sandboxes = match self.runtime.list_pod_sandbox(Some(&ready)) {
            Ok(sandboxes) => sandboxes,
            Err(e) => {
                log::debug!("pod network stats: listing sandboxes: {e}");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for sandbox in sandboxes {
            let mut filter = api::PodSandboxStatsFilter::new();
            filter.id = sandbox.id.clone();
            match self.runtime.list_pod_sandbox_stats(Some(&filter)) {
                Ok(stats) => out.extend(stats),
                Err(e) => log::debug!("pod network stats of sandbox {}: {e}", sandbox.id),
            }
        }
        out
    }

    /// The volumes under `<root-dir>/pods/<uid>/volumes/<plugin>/<name>`: usage walked (at
    /// most once per period), capacity from the filesystem holding each.
    fn pod_volumes(&self, uid: &str, time: &str, now: std::time::Instant) -> Vec<VolumeStats> {
        let dir = self.root_dir.join("pods").join(uid).join("volumes");
        let Ok(plugins) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for plugin in plugins.flatten() {
            let Ok(volumes) = std::fs::read_dir(plugin.path()) else {
                continue;
            };
            for volume in volumes.flatten() {
                let path = volume.path();
                let mut fs = fs_of(&path, time);
                let (bytes, inodes) = self.volume_usage.usage(&path, now);
                fs.used_bytes = Some(bytes);
                fs.inodes_used = Some(inodes);
                out.push(VolumeStats {
                    fs,
                    name: volume.file_name().to_string_lossy().into_owned(),
                    pvc_ref: None,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn node_cpu(&self, now_nanos: i128) -> CpuStats {
        let Some(total) = read_cpu_core_nanos(&self.proc_dir) else {
            return CpuStats::default();
        };
        let mut last = self.last_cpu.lock().unwrap_or_else(PoisonError::into_inner);
        let nano_cores = last.and_then(|(t, prev)| {
            let elapsed = u64::try_from(now_nanos - t).ok().filter(|e| *e > 0)?;
            let used = total.checked_sub(prev)?;
            Some((u128::from(used) * 1_000_000_000 / u128::from(elapsed)) as u64)
        });
        *last = Some((now_nanos, total));
        CpuStats {
            time: rfc3339(now_nanos),
            usage_nano_cores: nano_cores,
            usage_core_nano_seconds: Some(total),
        }
    }

    fn node_memory(&self, time: &str) -> MemoryStats {
        let Ok(text) = std::fs::read_to_string(self.proc_dir.join("meminfo")) else {
            return MemoryStats::default();
        };
        let field = |name: &str| crate::eviction::stats::meminfo_field(&text, name);
        let (Some(total), Some(free)) = (field("MemTotal"), field("MemFree")) else {
            return MemoryStats::default();
        };
        let usage = total.saturating_sub(free);
        let working_set = usage.saturating_sub(field("Inactive(file)").unwrap_or(0));
        MemoryStats {
            time: time.into(),
            available_bytes: Some(total.saturating_sub(working_set)),
            usage_bytes: Some(usage),
            working_set_bytes: Some(working_set),
            rss_bytes: field("AnonPages"),
            ..MemoryStats::default()
        }
    }

    fn image_fs(&self, time: &str) -> Option<FsStats> {
        let info = self.images.image_fs_info().ok()?;
        let usage = info.image_filesystems.first()?;
        let mut fs = usage
            .fs_id
            .as_ref()
            .map(|id| fs_of(Path::new(&id.mountpoint), time))
            .unwrap_or_default();
        fs.time = time.into();
        fs.used_bytes = value(&usage.used_bytes);
        fs.inodes_used = value(&usage.inodes_used);
        Some(fs)
    }

    /// `/metrics/cadvisor` in Prometheus text format, the rows from `tree`; the runtime
    /// names the containers and sandboxes (`infra_image` is the sandboxes' image).
    pub fn cadvisor_metrics(
        &self,
        tree: Option<&super::cadvisor::Tree>,
        infra_image: Option<&str>,
    ) -> String {
        use super::cadvisor::{render, runtime_view, HostPaths};
        let view = runtime_view(
            self.runtime.as_ref(),
            self.images.as_ref(),
            &[self.root_dir.as_path()],
            &self.proc_dir,
            infra_image,
        );
        let host = HostPaths {
            proc_dir: self.proc_dir.clone(),
            ..HostPaths::default()
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        render(tree, &view, &host, now)
    }

    /// `/metrics/resource` in Prometheus text format.
    pub fn resource_metrics(&self) -> String {
        let mut e = Exposition::default();
        let summary = self.summary(true);
        e.family(
            "scrape_error",
            "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise",
            "gauge",
        );
        e.sample(
            "scrape_error",
            &[],
            &[],
            if summary.is_ok() { 0.0 } else { 1.0 },
        );
        let Ok(summary) = summary else {
            return e.finish();
        };
        let secs = |ns: Option<u64>| ns.map(|n| n as f64 / 1e9);
        e.family(
            "node_cpu_usage_seconds_total",
            "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
            "counter",
        );
        if let Some(v) = secs(summary.node.cpu.usage_core_nano_seconds) {
            e.sample("node_cpu_usage_seconds_total", &[], &[], v);
        }
        e.family(
            "node_memory_working_set_bytes",
            "[STABLE] Current working set of the node in bytes",
            "gauge",
        );
        if let Some(v) = summary.node.memory.working_set_bytes {
            e.sample("node_memory_working_set_bytes", &[], &[], v as f64);
        }
        let c_labels = ["container", "namespace", "pod"];
        let p_labels = ["namespace", "pod"];
        let families = [
            (
                "container_cpu_usage_seconds_total",
                "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
                "counter",
            ),
            (
                "container_memory_working_set_bytes",
                "[STABLE] Current working set of the container in bytes",
                "gauge",
            ),
            (
                "container_start_time_seconds",
                "[STABLE] Start time of the container since unix epoch in seconds",
                "gauge",
            ),
        ];
        for (i, (name, help, kind)) in families.iter().enumerate() {
            e.family(name, help, kind);
            for pod in &summary.pods {
                for c in &pod.containers {
                    let labels = [
                        c.name.clone(),
                        pod.pod_ref.namespace.clone(),
                        pod.pod_ref.name.clone(),
                    ];
                    let v = match i {
                        0 => secs(c.cpu.usage_core_nano_seconds),
                        1 => c.memory.working_set_bytes.map(|v| v as f64),
                        _ => c
                            .start_time
                            .parse::<Timestamp>()
                            .ok()
                            .map(|t| t.as_millisecond() as f64 / 1000.0),
                    };
                    if let Some(v) = v {
                        e.sample(name, &c_labels, &labels, v);
                    }
                }
            }
        }
        e.family(
            "pod_cpu_usage_seconds_total",
            "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
            "counter",
        );
        for pod in &summary.pods {
            if let Some(v) = secs(pod.cpu.usage_core_nano_seconds) {
                let labels = [pod.pod_ref.namespace.clone(), pod.pod_ref.name.clone()];
                e.sample("pod_cpu_usage_seconds_total", &p_labels, &labels, v);
            }
        }
        e.family(
            "pod_memory_working_set_bytes",
            "[STABLE] Current working set of the pod in bytes",
            "gauge",
        );
        for pod in &summary.pods {
            if let Some(v) = pod.memory.working_set_bytes {
                let labels = [pod.pod_ref.namespace.clone(), pod.pod_ref.name.clone()];
                e.sample("pod_memory_working_set_bytes", &p_labels, &labels, v as f64);
            }
        }
        e.finish()
    }
}

fn sum_pod(pod: &mut PodStats, time: &str, only_cpu_and_memory: bool) {
    let sum = |f: &dyn Fn(&ContainerStats) -> Option<u64>| -> Option<u64> {
        pod.containers
            .iter()
            .map(f)
            .try_fold(0u64, |acc, v| Some(acc + v?))
    };
    let cpu = CpuStats {
        time: time.into(),
        usage_nano_cores: sum(&|c| c.cpu.usage_nano_cores),
        usage_core_nano_seconds: sum(&|c| c.cpu.usage_core_nano_seconds),
    };
    let memory = MemoryStats {
        time: time.into(),
        usage_bytes: sum(&|c| c.memory.usage_bytes),
        working_set_bytes: sum(&|c| c.memory.working_set_bytes),
        rss_bytes: sum(&|c| c.memory.rss_bytes),
        page_faults: sum(&|c| c.memory.page_faults),
        major_page_faults: sum(&|c| c.memory.major_page_faults),
        ..MemoryStats::default()
    };
    if !only_cpu_and_memory {
        let mut storage = pod
            .containers
            .first()
            .map(|c| c.rootfs.clone())
            .unwrap_or_default();
        storage.used_bytes =
            sum(&|c| Some(c.rootfs.used_bytes.unwrap_or(0) + c.logs.used_bytes.unwrap_or(0)));
        storage.inodes_used = sum(&|c| c.rootfs.inodes_used);
        pod.ephemeral_storage = storage;
    }
    pod.cpu = cpu;
    pod.memory = memory;
}

/// `statvfs` figures of the filesystem holding `path`.
pub(crate) fn fs_of(path: &Path, time: &str) -> FsStats {
    match rustix::fs::statvfs(path) {
        Ok(st) => {
            let capacity = st.f_blocks.saturating_mul(st.f_frsize);
            let free = st.f_bfree.saturating_mul(st.f_frsize);
            FsStats {
                time: time.into(),
                available_bytes: Some(st.f_bavail.saturating_mul(st.f_frsize)),
                capacity_bytes: Some(capacity),
                used_bytes: Some(capacity.saturating_sub(free)),
                inodes_free: Some(st.f_ffree),
                inodes: Some(st.f_files),
                inodes_used: Some(st.f_files.saturating_sub(st.f_ffree)),
            }
        }
        Err(_) => FsStats {
            time: time.into(),
            ..FsStats::default()
        },
    }
}

/// Bytes of the regular files under `dir` (not following links).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Cumulative busy CPU time of the machine in core-nanoseconds, from `/proc/stat`
/// (everything but idle and iowait; USER_HZ is 100 on Linux).
fn read_cpu_core_nanos(proc_dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| *v)
        .sum();
    Some(busy * 10_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::FakeRuntime;

    #[test]
    fn node_figures_come_from_proc() {
        let dir = std::env::temp_dir().join(format!("rkubelet-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("stat"),
            "cpu  100 5 50 1000 20 1 2 0 0 0\ncpu0 100 5 50 1000 20 1 2 0 0 0\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("meminfo"),
            "MemTotal:       1000 kB\nMemFree:         200 kB\nAnonPages:       300 kB\nInactive(file):  100 kB\n",
        )
        .unwrap();
        let fake = Arc::new(FakeRuntime::new());
        let mut p = StatsProvider::new(fake.clone(), fake, "n", &dir, &dir);
        p.proc_dir = dir.clone();
        let cpu = p.node_cpu(1_000_000_000);
        assert_eq!(cpu.usage_core_nano_seconds, Some(158 * 10_000_000));
        assert_eq!(cpu.usage_nano_cores, None, "one sample gives no rate yet");
        std::fs::write(dir.join("stat"), "cpu  200 5 50 1000 20 1 2 0 0 0\n").unwrap();
        let cpu = p.node_cpu(2_000_000_000);
        assert_eq!(
            cpu.usage_nano_cores,
            Some(1_000_000_000),
            "one core busy for 1 s"
        );
        let mem = p.node_memory("t");
        assert_eq!(mem.usage_bytes, Some(800 * 1024));
        assert_eq!(mem.working_set_bytes, Some(700 * 1024));
        assert_eq!(mem.available_bytes, Some(300 * 1024));
        assert_eq!(mem.rss_bytes, Some(300 * 1024));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pods_carry_their_network_counters_and_volumes() {
        let dir = std::env::temp_dir().join(format!("rkubelet-stats-pods-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = dir.join("pods/uid-1/volumes/kubernetes.io~empty-dir/cache");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join("data"), vec![1u8; 20_000]).unwrap();
        let fake = Arc::new(FakeRuntime::new());
        let image = fake.preload_image("docker.io/library/busybox:local");
        let mut sandbox = api::PodSandboxConfig::new();
        sandbox.mut_metadata().set_name("web".into());
        sandbox.mut_metadata().set_uid("uid-1".into());
        sandbox.mut_metadata().set_namespace("default".into());
        let sandbox_id = fake.run_pod_sandbox(&sandbox, "").unwrap();
        let mut config = api::ContainerConfig::new();
        config.mut_metadata().set_name("app".into());
        config.mut_image().set_image(image);
        for (k, v) in [
            (POD_UID_LABEL, "uid-1"),
            (POD_NAME_LABEL, "web"),
            (POD_NAMESPACE_LABEL, "default"),
            (CONTAINER_NAME_LABEL, "app"),
        ] {
            config.labels.insert(k.into(), v.into());
        }
        let id = fake
            .create_container(&sandbox_id, &config, &sandbox)
            .unwrap();
        fake.start_container(&id).unwrap();
        let p = StatsProvider::new(fake.clone(), fake, "n", &dir, &dir.join("logs"));
        let summary = p.summary(false).unwrap();
        let pod = &summary.pods[0];
        let network = pod.network.as_ref().expect("network counters");
        assert_eq!(network.default_interface.name, "eth0");
        assert!(network.default_interface.rx_bytes.is_some());
        assert_eq!(pod.volume.len(), 1);
        assert_eq!(pod.volume[0].name, "cache");
        assert!(pod.volume[0].fs.used_bytes.unwrap() >= 20_000);
        assert_eq!(pod.volume[0].fs.inodes_used, Some(2));
        assert!(pod.volume[0].fs.capacity_bytes.is_some());
        let json = serde_json::to_value(pod).unwrap();
        assert_eq!(json["network"]["name"], "eth0");
        assert_eq!(json["volume"][0]["name"], "cache");
        assert!(json["volume"][0]["usedBytes"].is_u64());
        // The CPU-and-memory form (for /metrics/resource) leaves them out.
        let lean = p.summary(true).unwrap();
        assert!(lean.pods[0].network.is_none() && lean.pods[0].volume.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_sandbox_list_is_asked_again_per_sandbox() {
        let dir = std::env::temp_dir().join(format!("rkubelet-stats-each-{}", std::process::id()));
        let fake = Arc::new(FakeRuntime::new());
        for (name, uid) in [("a", "uid-a"), ("b", "uid-b")] {
            let mut sandbox = api::PodSandboxConfig::new();
            sandbox.mut_metadata().set_name(name.into());
            sandbox.mut_metadata().set_uid(uid.into());
            sandbox.mut_metadata().set_namespace("default".into());
            fake.run_pod_sandbox(&sandbox, "").unwrap();
        }
        let p = StatsProvider::new(fake.clone(), fake.clone(), "n", &dir, &dir.join("logs"));
        // The whole list fails once (a sandbox's container exiting, as containerd 1.6
        // reports it); each sandbox asked on its own answers.
        fake.inject_error(
            "ListPodSandboxStats",
            crate::cri::CriError::Rpc {
                method: "ListPodSandboxStats",
                code: crate::cri::RpcCode::Unknown,
                message: "ttrpc: closed".into(),
            },
        );
        let networks = p.pod_networks("t");
        assert_eq!(
            networks.keys().cloned().collect::<Vec<_>>(),
            ["uid-a", "uid-b"]
        );
        // A runtime without the call: no counters, and no per-sandbox calls.
        fake.inject_error(
            "ListPodSandboxStats",
            crate::cri::CriError::Rpc {
                method: "ListPodSandboxStats",
                code: crate::cri::RpcCode::Unimplemented,
                message: "unknown method".into(),
            },
        );
        assert!(p.pod_networks("t").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
