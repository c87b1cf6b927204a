//! Pod and QoS cgroups with the cgroupfs driver (upstream `pkg/kubelet/cm`): `kubepods`
//! (limited to node allocatable), `kubepods/burstable`, `kubepods/besteffort`, and one cgroup
//! per pod (`kubepods/pod<uid>` for Guaranteed pods, else under its QoS class) whose limits
//! are the sum of its containers'. The pod cgroup is the sandbox's `cgroup_parent`, so the
//! runtime puts every container of the pod under it. cgroup v1 (one directory per
//! controller) and v2 (one unified tree) are both handled. Called from the pod worker when a
//! sandbox is created and when a pod is removed, and from housekeeping for leftovers.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use crate::resources::{
    milli_cpu_to_quota, milli_cpu_to_shares, overhead_millis, quantity_millis, request_millis,
    shares_to_weight, CPU_PERIOD_US,
};
use crate::types::{is_sidecar, PodUid};

/// v1 controllers whose hierarchy gets the kubepods tree (others are created by the runtime
/// as it needs them).
const V1_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// One hierarchy per controller under `/sys/fs/cgroup/<controller>`.
    V1,
    /// The unified hierarchy at `/sys/fs/cgroup`.
    V2,
}

/// Limits of one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// `cpu.shares` (v2: converted to `cpu.weight`).
    pub cpu_shares: Option<i64>,
    /// CFS quota in µs per [`CPU_PERIOD_US`]; `None` = unlimited.
    pub cpu_quota: Option<i64>,
    /// Memory limit in bytes; `None` = unlimited.
    pub memory_bytes: Option<i64>,
    /// `pids.max`; `None` = not set (unlimited).
    pub pids: Option<i64>,
}

/// Creates, limits and removes the kubelet's cgroups.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    /// `/sys/fs/cgroup` (a scratch directory in tests).
    mount: PathBuf,
    version: CgroupVersion,
    /// `--cgroup-root` joined with `kubepods`, e.g. `/kubepods`.
    kubepods: String,
    /// `podPidsLimit`: `pids.max` of every pod cgroup (`None`: unlimited).
    pod_pids_limit: Option<i64>,
}

fn sum_millis(pod: &Pod, kind: &str, resource: &str) -> (i128, bool) {
    let Some(spec) = pod.spec.as_ref() else {
        return (0, false);
    };
    let mut all_set = true;
    let mut total = 0;
    let containers = spec.containers.iter().chain(
        spec.init_containers
            .iter()
            .flatten()
            .filter(|c| is_sidecar(c)),
    );
    for c in containers {
        let value = match kind {
            "limits" => quantity_millis(c, "limits", resource),
            _ => request_millis(c, resource),
        };
        match value {
            Some(v) => total += v,
            None => all_set = false,
        }
    }
    (total, all_set)
}

/// The pod cgroup's limits (upstream `ResourceConfigForPod`): shares from the summed cpu
/// requests; quota and memory limit only when every container sets that limit.
pub fn pod_limits(pod: &Pod, qos: &str) -> CgroupLimits {
    if qos == "BestEffort" {
        return CgroupLimits {
            cpu_shares: Some(2),
            ..Default::default()
        };
    }
    let (cpu_request, _) = sum_millis(pod, "requests", "cpu");
    let (cpu_limit, cpu_all) = sum_millis(pod, "limits", "cpu");
    let (memory_limit, memory_all) = sum_millis(pod, "limits", "memory");
    // Pod overhead (RuntimeClass) is charged to the pod cgroup as upstream does.
    let overhead = |resource: &str| overhead_millis(pod, resource);
    let cpu_request = cpu_request + overhead("cpu");
    let cpu_limit = cpu_limit + overhead("cpu");
    let memory_limit = memory_limit + overhead("memory");
    let to_i64 = |v: i128| i64::try_from(v).unwrap_or(i64::MAX);
    CgroupLimits {
        cpu_shares: Some(milli_cpu_to_shares(to_i64(cpu_request))),
        cpu_quota: cpu_all.then(|| milli_cpu_to_quota(to_i64(cpu_limit), CPU_PERIOD_US)),
        memory_bytes: memory_all.then(|| to_i64(memory_limit / 1000)),
        pids: None,
    }
}

impl CgroupManager {
    /// Detects the layout under `mount` (`/sys/fs/cgroup`); `cgroup_root` is `--cgroup-root`.
    pub fn detect(mount: &Path, cgroup_root: &str) -> io::Result<Self> {
        let version = if mount.join("cgroup.controllers").exists() {
            CgroupVersion::V2
        } else if mount.join("memory").is_dir() {
            CgroupVersion::V1
        } else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no cgroup v1 or v2 hierarchy under {}", mount.display()),
            ));
        };
        let root = cgroup_root.trim_end_matches('/');
        Ok(CgroupManager {
            mount: mount.to_path_buf(),
            version,
            kubepods: format!("{root}/kubepods"),
            pod_pids_limit: None,
        })
    }

    /// Limits every pod cgroup to `limit` processes (`podPidsLimit`; -1 and 0 mean
    /// unlimited, as upstream).
    pub fn with_pod_pids_limit(mut self, limit: Option<i64>) -> Self {
        self.pod_pids_limit = limit.filter(|l| *l > 0);
        self
    }

    /// The layout in use.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The cgroup name of a QoS class (`/kubepods`, `/kubepods/burstable`, ...).
    pub fn qos_cgroup(&self, qos: &str) -> String {
        match qos {
            "Guaranteed" => self.kubepods.clone(),
            "Burstable" => format!("{}/burstable", self.kubepods),
            _ => format!("{}/besteffort", self.kubepods),
        }
    }

    /// The cgroup name of a pod: what the sandbox gets as `cgroup_parent`.
    pub fn pod_cgroup(&self, uid: &PodUid, qos: &str) -> String {
        format!("{}/pod{}", self.qos_cgroup(qos), uid.0)
    }

    /// The directories of cgroup `name` (one per managed controller on v1).
    fn dirs(&self, name: &str) -> Vec<(Option<&'static str>, PathBuf)> {
        let rel = name.trim_start_matches('/');
        match self.version {
            CgroupVersion::V2 => vec![(None, self.mount.join(rel))],
            CgroupVersion::V1 => V1_CONTROLLERS
                .iter()
                .map(|c| (Some(*c), self.mount.join(c).join(rel)))
                .filter(|(_, p)| p.parent().is_some())
                .collect(),
        }
    }

    /// Creates cgroup `name` (and its parents) and applies `limits`.
    pub fn ensure(&self, name: &str, limits: &CgroupLimits) -> io::Result<()> {
        for (controller, dir) in self.dirs(name) {
            if self.version == CgroupVersion::V1
                && controller.is_some_and(|c| !self.mount.join(c).is_dir())
            {
                continue;
            }
            std::fs::create_dir_all(&dir).map_err(|e| {
                io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))
            })?;
            if self.version == CgroupVersion::V2 {
                self.enable_v2_controllers(name)?;
            }
            self.write_limits(controller, &dir, limits)?;
        }
        Ok(())
    }

    /// v2: lets children of every ancestor of `name` use the cpu, memory and pids
    /// controllers.
    fn enable_v2_controllers(&self, name: &str) -> io::Result<()> {
        let mut dir = self.mount.clone();
        for part in name.trim_start_matches('/').split('/') {
            let control = dir.join("cgroup.subtree_control");
            if control.exists() {
                for c in ["+cpu", "+memory", "+pids"] {
                    // A controller the parent lacks cannot be enabled; the limits of that
                    // controller are then simply not applied.
                    let _ = std::fs::write(&control, c);
                }
            }
            dir = dir.join(part);
        }
        Ok(())
    }

    fn write_limits(
        &self,
        controller: Option<&str>,
        dir: &Path,
        limits: &CgroupLimits,
    ) -> io::Result<()> {
        let write = |file: &str, value: String| {
            let path = dir.join(file);
            std::fs::write(&path, &value).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("writing {value} to {}: {e}", path.display()),
                )
            })
        };
        match (self.version, controller) {
            (CgroupVersion::V1, Some("cpu")) => {
                if let Some(shares) = limits.cpu_shares {
                    write("cpu.shares", shares.to_string())?;
                }
                write("cpu.cfs_period_us", CPU_PERIOD_US.to_string())?;
                write(
                    "cpu.cfs_quota_us",
                    limits.cpu_quota.map_or("-1".to_string(), |q| q.to_string()),
                )?;
            }
            (CgroupVersion::V1, Some("pids")) => {
                if let Some(pids) = limits.pids {
                    write("pids.max", pids.to_string())?;
                }
            }
            (CgroupVersion::V1, Some("memory")) => {
                write(
                    "memory.limit_in_bytes",
                    limits
                        .memory_bytes
                        .map_or("-1".to_string(), |m| m.to_string()),
                )?;
            }
            (CgroupVersion::V2, _) => {
                if let Some(shares) = limits.cpu_shares {
                    if dir.join("cpu.weight").exists() {
                        write("cpu.weight", shares_to_weight(shares).to_string())?;
                    }
                }
                if dir.join("cpu.max").exists() {
                    let quota = limits
                        .cpu_quota
                        .map_or("max".to_string(), |q| q.to_string());
                    write("cpu.max", format!("{quota} {CPU_PERIOD_US}"))?;
                }
                if let Some(pids) = limits.pids.filter(|_| dir.join("pids.max").exists()) {
                    write("pids.max", pids.to_string())?;
                }
                if dir.join("memory.max").exists() {
                    write(
                        "memory.max",
                        limits
                            .memory_bytes
                            .map_or("max".to_string(), |m| m.to_string()),
                    )?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Creates `kubepods` (limited to allocatable) and the burstable and besteffort
    /// cgroups (upstream `QOSContainerManager.Start`).
    pub fn ensure_qos_cgroups(
        &self,
        allocatable_cpu_millis: i64,
        allocatable_memory: i64,
    ) -> io::Result<()> {
        self.ensure(
            &self.kubepods,
            &CgroupLimits {
                cpu_shares: Some(milli_cpu_to_shares(allocatable_cpu_millis)),
                memory_bytes: (allocatable_memory > 0).then_some(allocatable_memory),
                ..Default::default()
            },
        )?;
        self.ensure(&self.qos_cgroup("Burstable"), &CgroupLimits::default())?;
        self.ensure(
            &self.qos_cgroup("BestEffort"),
            &CgroupLimits {
                cpu_shares: Some(2),
                ..Default::default()
            },
        )
    }

    /// Creates the pod's cgroup with its limits; returns its name for `cgroup_parent`.
    pub fn ensure_pod_cgroup(&self, pod: &Pod, uid: &PodUid, qos: &str) -> io::Result<String> {
        let name = self.pod_cgroup(uid, qos);
        let limits = CgroupLimits {
            pids: self.pod_pids_limit,
            ..pod_limits(pod, qos)
        };
        self.ensure(&name, &limits)?;
        Ok(name)
    }

    /// Removes the pod's cgroup wherever it is (its QoS class may be unknown by now). A
    /// cgroup that still has children or processes stays, and the error says so.
    pub fn remove_pod_cgroup(&self, uid: &PodUid) -> io::Result<()> {
        let mut first_err = None;
        for qos in ["Guaranteed", "Burstable", "BestEffort"] {
            for (_, dir) in self.dirs(&self.pod_cgroup(uid, qos)) {
                if !dir.exists() {
                    continue;
                }
                // Children first (a runtime may leave empty container cgroups behind).
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    for e in entries.flatten() {
                        if e.path().is_dir() {
                            let _ = std::fs::remove_dir(e.path());
                        }
                    }
                }
                if let Err(e) = std::fs::remove_dir(&dir) {
                    first_err.get_or_insert(io::Error::new(
                        e.kind(),
                        format!("removing cgroup {}: {e}", dir.display()),
                    ));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Processes (tasks) in a pod's cgroup now (`pids.current`), for ranking pods under
    /// PID pressure; `None` when the pod has no cgroup or the pids controller is missing.
    pub fn pod_processes(&self, uid: &PodUid, qos: &str) -> Option<u64> {
        let rel = self.pod_cgroup(uid, qos);
        let rel = rel.trim_start_matches('/');
        let dir = match self.version {
            CgroupVersion::V2 => self.mount.join(rel),
            CgroupVersion::V1 => self.mount.join("pids").join(rel),
        };
        std::fs::read_to_string(dir.join("pids.current"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// UIDs of pods that have a cgroup (for cleaning up after pods removed while the kubelet
    /// was down).
    pub fn pods_with_cgroups(&self) -> HashSet<PodUid> {
        let mut out = HashSet::new();
        for qos in ["Guaranteed", "Burstable", "BestEffort"] {
            for (_, dir) in self.dirs(&self.qos_cgroup(qos)) {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(uid) = name.strip_prefix("pod") {
                        if e.path().is_dir() {
                            out.insert(PodUid(uid.to_string()));
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"},
            "spec": {"containers": containers}}))
        .unwrap()
    }

    #[test]
    fn pod_limits_sum_containers_and_need_every_limit() {
        let both = pod(serde_json::json!([
            {"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}}}
        ]));
        assert_eq!(
            pod_limits(&both, "Guaranteed"),
            CgroupLimits {
                cpu_shares: Some(768),
                cpu_quota: Some(75_000),
                memory_bytes: Some(96 << 20),
                pids: None,
            }
        );
        let partial = pod(serde_json::json!([
            {"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi"}}},
            {"name": "b"}
        ]));
        assert_eq!(
            pod_limits(&partial, "Burstable"),
            CgroupLimits {
                cpu_shares: Some(102),
                cpu_quota: None,
                memory_bytes: None,
                pids: None,
            }
        );
        assert_eq!(
            pod_limits(&pod(serde_json::json!([{"name": "a"}])), "BestEffort").cpu_shares,
            Some(2)
        );
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn v1_tree_is_created_limited_and_removed() {
        let dir = std::env::temp_dir().join(format!("rkubelet-cgroups-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for c in ["cpu", "memory", "pids"] {
            std::fs::create_dir_all(dir.join(c)).unwrap();
        }
        let cm = CgroupManager::detect(&dir, "/")
            .unwrap()
            .with_pod_pids_limit(Some(100));
        assert_eq!(cm.version(), CgroupVersion::V1);
        cm.ensure_qos_cgroups(4000, 8 << 30).unwrap();
        let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
        assert_eq!(read("cpu/kubepods/cpu.shares"), "4096");
        assert_eq!(
            read("memory/kubepods/memory.limit_in_bytes"),
            (8u64 << 30).to_string()
        );
        assert_eq!(read("cpu/kubepods/besteffort/cpu.shares"), "2");
        let p = pod(serde_json::json!([{"name": "a", "resources": {
            "requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}}]));
        let uid = PodUid::from("u1");
        let name = cm.ensure_pod_cgroup(&p, &uid, "Burstable").unwrap();
        assert_eq!(name, "/kubepods/burstable/podu1");
        assert_eq!(
            read("cpu/kubepods/burstable/podu1/cpu.cfs_quota_us"),
            "50000"
        );
        assert_eq!(
            read("memory/kubepods/burstable/podu1/memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read("pids/kubepods/burstable/podu1/pids.max"), "100");
        assert!(
            !dir.join("pids/kubepods/pids.max").exists(),
            "podPidsLimit is per pod"
        );
        assert_eq!(cm.pods_with_cgroups(), [uid.clone()].into());
        // Plain directories hold the limit files, so removal here empties them first.
        for c in ["cpu", "memory", "pids"] {
            let d = dir.join(c).join("kubepods/burstable/podu1");
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        cm.remove_pod_cgroup(&uid).unwrap();
        assert!(cm.pods_with_cgroups().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
