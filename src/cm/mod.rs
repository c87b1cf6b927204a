//! The kubelet's cgroups (upstream `pkg/kubelet/cm`): `kubepods` (limited to node
//! allocatable), `kubepods/burstable`, `kubepods/besteffort`, and one cgroup per pod
//! (`kubepods/pod<uid>` for Guaranteed pods, else under its QoS class) whose limits are the
//! pod's. The pod cgroup is the sandbox's `cgroup_parent`, so the runtime puts every
//! container of the pod under it.
//!
//! Two drivers, as upstream: `cgroupfs` writes the cgroup directories itself; `systemd` has
//! systemd create them as slices (`kubepods.slice`, `kubepods-burstable.slice`,
//! `kubepods-burstable-pod<uid>.slice`, ...) over D-Bus and then writes the same files, as
//! libcontainer does for the upstream kubelet. Both on cgroup v1 (one directory per
//! controller) and v2 (one unified tree). Called from the pod worker when a sandbox is
//! created and when a pod is removed, from housekeeping for leftovers, and at start-up for
//! node allocatable.

pub mod dbus;
mod fs;
mod node;
mod resources;
mod systemd;

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;

pub use node::{NodeAllocatableConfig, Reservation};
pub use resources::{pod_limits, qos_limits, PodRequests};

use crate::types::PodUid;

/// v1 controllers whose hierarchy gets the kubepods tree (others are created by the runtime
/// as it needs them).
const V1_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// One hierarchy per controller under `/sys/fs/cgroup/<controller>` (also the "hybrid"
    /// layout, with an empty v2 tree at `/sys/fs/cgroup/unified`).
    V1,
    /// The unified hierarchy at `/sys/fs/cgroup`.
    V2,
}

/// The cgroup driver (`cgroupDriver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// The kubelet writes the cgroup tree itself.
    Cgroupfs,
    /// systemd owns the tree; the kubelet's cgroups are slices.
    Systemd,
}

impl Driver {
    /// `cgroupfs` or `systemd`, the config's spelling.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "cgroupfs" => Some(Driver::Cgroupfs),
            "systemd" => Some(Driver::Systemd),
            _ => None,
        }
    }

    /// The config's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Cgroupfs => "cgroupfs",
            Driver::Systemd => "systemd",
        }
    }
}

/// A cgroup's name independent of the driver (upstream `CgroupName`): its components from
/// the root, e.g. `["kubepods", "burstable", "pod<uid>"]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CgroupName(Vec<String>);

impl CgroupName {
    /// A cgroupfs path (`/kubepods/burstable`) as a name (upstream
    /// `ParseCgroupfsToCgroupName`).
    pub fn from_cgroupfs(path: &str) -> Self {
        CgroupName(
            path.split('/')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    /// A systemd slice (`/kubepods.slice/kubepods-burstable.slice` or just its last
    /// component) as a name (upstream `ParseSystemdToCgroupName`).
    pub fn from_systemd(path: &str) -> Self {
        let base = path.rsplit('/').find(|c| !c.is_empty()).unwrap_or("");
        let stem = base.strip_suffix(".slice").unwrap_or(base);
        if stem.is_empty() || stem == "-" {
            return CgroupName::default();
        }
        CgroupName(stem.split('-').map(|p| p.replace('_', "-")).collect())
    }

    /// This name with `component` appended.
    pub fn child(&self, component: &str) -> Self {
        let mut parts = self.0.clone();
        parts.push(component.to_string());
        CgroupName(parts)
    }

    /// The cgroupfs path: `/kubepods/burstable`.
    pub fn to_cgroupfs(&self) -> String {
        format!("/{}", self.0.join("/"))
    }

    /// The systemd path (upstream `ToSystemd`): each component with `-` escaped as `_`,
    /// joined with `-` into a slice name and expanded into its parents:
    /// `/kubepods.slice/kubepods-burstable.slice`. The root is `/`.
    pub fn to_systemd(&self) -> String {
        if self.0.is_empty() {
            return "/".to_string();
        }
        let mut path = String::new();
        let mut prefix = String::new();
        for part in &self.0 {
            let escaped = part.replace('-', "_");
            path.push('/');
            path.push_str(&prefix);
            path.push_str(&escaped);
            path.push_str(".slice");
            prefix.push_str(&escaped);
            prefix.push('-');
        }
        path
    }

    /// The components.
    pub fn components(&self) -> &[String] {
        &self.0
    }
}

/// Limits of one cgroup (upstream `ResourceConfig`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// `cpu.shares` (v2: converted to `cpu.weight`).
    pub cpu_shares: Option<i64>,
    /// CFS quota in µs per [`crate::resources::CPU_PERIOD_US`]; `None` = unlimited.
    pub cpu_quota: Option<i64>,
    /// Memory limit in bytes; `None` = unlimited.
    pub memory_bytes: Option<i64>,
    /// `pids.max`; `None` = not set (unlimited).
    pub pids: Option<i64>,
    /// v2 `memory.min` (memory QoS); `None` = not set.
    pub memory_min: Option<i64>,
}

/// Why the cgroup manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum CmError {
    /// The host has no cgroup hierarchy the kubelet knows.
    #[error("no cgroup v1 or v2 hierarchy under {0}")]
    NoHierarchy(PathBuf),
    /// `cgroupRoot` names a cgroup that does not exist (as upstream, it is not created).
    #[error("invalid configuration: cgroup-root {name:?} has some missing paths: {missing}")]
    MissingRoot {
        /// The configured root.
        name: String,
        /// The paths that are missing.
        missing: String,
    },
    /// `failCgroupV1` is set and the host has cgroup v1.
    #[error(
        "kubelet is configured to not run on a host using cgroup v1. cgroup v1 support is \
         unsupported and will be removed in a future release"
    )]
    CgroupV1,
    /// systemd could not be reached for `cgroupDriver: systemd`.
    #[error("cgroupDriver is systemd, but systemd cannot be reached: {0}")]
    Systemd(#[from] dbus::DbusError),
    /// A cgroup could not be created or limited.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
}

/// The driver's state.
#[derive(Debug, Clone)]
enum Backend {
    Cgroupfs,
    Systemd(Arc<systemd::Slices>),
}

/// What the QoS cgroups are computed from: the requests of the pods with a pod cgroup.
#[derive(Debug, Default)]
struct QosState {
    pods: BTreeMap<PodUid, PodRequests>,
    /// The burstable cgroup's limits last written.
    burstable: Option<CgroupLimits>,
    /// The kubepods (Guaranteed) limits at start-up, to which memory QoS adds `memory.min`.
    kubepods: Option<CgroupLimits>,
}

/// Creates, limits and removes the kubelet's cgroups.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    /// `/sys/fs/cgroup` (a scratch directory in tests).
    mount: PathBuf,
    version: CgroupVersion,
    backend: Backend,
    /// `cgroupRoot` as a name (empty for `/`).
    root: CgroupName,
    /// `cgroupRoot` + `kubepods`.
    kubepods: CgroupName,
    /// `podPidsLimit`: `pids.max` of every pod cgroup (`None`: unlimited).
    pod_pids_limit: Option<i64>,
    /// `MemoryQoS` feature gate on a v2 host: `memory.min` from memory requests.
    memory_qos: bool,
    qos: Arc<Mutex<QosState>>,
}

/// The QoS classes, each with its cgroup name under kubepods.
const QOS: [(&str, Option<&str>); 3] = [
    ("Guaranteed", None),
    ("Burstable", Some("burstable")),
    ("BestEffort", Some("besteffort")),
];

impl CgroupManager {
    /// Detects the layout under `mount` (`/sys/fs/cgroup`) for the cgroupfs driver;
    /// `cgroup_root` is `--cgroup-root`.
    pub fn detect(mount: &Path, cgroup_root: &str) -> Result<Self, CmError> {
        let version = detect_version(mount)?;
        let root = CgroupName::from_cgroupfs(cgroup_root);
        Ok(CgroupManager {
            mount: mount.to_path_buf(),
            version,
            backend: Backend::Cgroupfs,
            kubepods: root.child("kubepods"),
            root,
            pod_pids_limit: None,
            memory_qos: false,
            qos: Arc::default(),
        })
    }

    /// Like [`CgroupManager::detect`] for the systemd driver: connects to systemd and finds
    /// where its tree starts in each hierarchy (from `proc/1/cgroup` under `proc`).
    pub fn detect_systemd(
        mount: &Path,
        proc: &Path,
        cgroup_root: &str,
        address: dbus::Address,
    ) -> Result<Self, CmError> {
        let mut manager = Self::detect(mount, cgroup_root)?;
        let bus = dbus::Systemd::connect_to(address)?;
        let roots = systemd::SystemdRoots::read(&proc.join("1/cgroup"), manager.version).map_err(
            |source| CmError::Io {
                what: format!("reading {}", proc.join("1/cgroup").display()),
                source,
            },
        )?;
        manager.backend = Backend::Systemd(Arc::new(systemd::Slices::new(bus, roots)));
        Ok(manager)
    }

    /// Limits every pod cgroup to `limit` processes (`podPidsLimit`; -1 and 0 mean
    /// unlimited, as upstream).
    pub fn with_pod_pids_limit(mut self, limit: Option<i64>) -> Self {
        self.pod_pids_limit = limit.filter(|l| *l > 0);
        self
    }

    /// Sets `memory.min` from memory requests (the `MemoryQoS` feature gate); upstream
    /// applies it on cgroup v2 only, and so does this.
    pub fn with_memory_qos(mut self, enabled: bool) -> Self {
        self.memory_qos = enabled && self.version == CgroupVersion::V2;
        self
    }

    /// The layout in use.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// `kubepods` for readers of its statistics (`/metrics/cadvisor`): its name in the
    /// driver's spelling (`/kubepods`, `/kubepods.slice`), the cgroup mount, and its
    /// directory per managed controller (one on v2).
    pub fn kubepods_tree(&self) -> (String, &Path, Vec<(Option<&'static str>, PathBuf)>) {
        (
            self.driver_name(&self.kubepods),
            &self.mount,
            self.dirs(&self.kubepods),
        )
    }

    /// The driver in use.
    pub fn driver(&self) -> Driver {
        match self.backend {
            Backend::Cgroupfs => Driver::Cgroupfs,
            Backend::Systemd(_) => Driver::Systemd,
        }
    }

    /// The name of a QoS class's cgroup.
    pub fn qos_name(&self, qos: &str) -> CgroupName {
        match QOS.iter().find(|(class, _)| *class == qos) {
            Some((_, Some(sub))) => self.kubepods.child(sub),
            _ if qos == "Guaranteed" => self.kubepods.clone(),
            _ => self.kubepods.child("besteffort"),
        }
    }

    /// The name of a pod's cgroup.
    pub fn pod_name(&self, uid: &PodUid, qos: &str) -> CgroupName {
        self.qos_name(qos).child(&format!("pod{}", uid.0))
    }

    /// A cgroup name in the driver's spelling: what the runtime gets as `cgroup_parent`
    /// (`/kubepods/burstable/pod<uid>` or
    /// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`).
    pub fn driver_name(&self, name: &CgroupName) -> String {
        match self.backend {
            Backend::Cgroupfs => name.to_cgroupfs(),
            Backend::Systemd(_) => name.to_systemd(),
        }
    }

    /// The cgroup name of a QoS class in the driver's spelling.
    pub fn qos_cgroup(&self, qos: &str) -> String {
        self.driver_name(&self.qos_name(qos))
    }

    /// The cgroup name of a pod in the driver's spelling: the sandbox's `cgroup_parent`.
    pub fn pod_cgroup(&self, uid: &PodUid, qos: &str) -> String {
        self.driver_name(&self.pod_name(uid, qos))
    }

    /// The directories of cgroup `name`, one per managed controller on v1.
    fn dirs(&self, name: &CgroupName) -> Vec<(Option<&'static str>, PathBuf)> {
        let rel = self.driver_name(name);
        let rel = rel.trim_start_matches('/');
        let base = |controller: Option<&str>| {
            let mut dir = match controller {
                Some(c) => self.mount.join(c),
                None => self.mount.clone(),
            };
            if let Backend::Systemd(slices) = &self.backend {
                let prefix = slices.roots.root(controller);
                dir.push(prefix.trim_start_matches('/'));
            }
            dir
        };
        match self.version {
            CgroupVersion::V2 => vec![(None, base(None).join(rel))],
            CgroupVersion::V1 => V1_CONTROLLERS
                .iter()
                .filter(|c| self.mount.join(c).is_dir())
                .map(|c| (Some(*c), base(Some(c)).join(rel)))
                .collect(),
        }
    }

    /// Whether every directory of `name` exists (upstream `Exists`).
    pub fn exists(&self, name: &CgroupName) -> bool {
        let dirs = self.dirs(name);
        !dirs.is_empty() && dirs.iter().all(|(_, d)| d.is_dir())
    }

    /// Creates cgroup `name` (adopting it when it exists) and applies `limits`.
    pub fn ensure(&self, name: &CgroupName, limits: &CgroupLimits) -> io::Result<()> {
        match &self.backend {
            Backend::Cgroupfs => {
                for (controller, dir) in self.dirs(name) {
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))
                    })?;
                    if self.version == CgroupVersion::V2 {
                        fs::enable_v2_controllers(&self.mount, &self.driver_name(name));
                    }
                    fs::write_limits(self.version, controller, &dir, limits)?;
                }
                Ok(())
            }
            Backend::Systemd(slices) => {
                slices
                    .create(name, limits, self.version)
                    .map_err(io::Error::other)?;
                self.write_dirs(name, limits)
            }
        }
    }

    /// Applies `limits` to the existing cgroup `name` (upstream `Update`).
    pub fn update(&self, name: &CgroupName, limits: &CgroupLimits) -> io::Result<()> {
        if let Backend::Systemd(slices) = &self.backend {
            slices
                .update(name, limits, self.version)
                .map_err(io::Error::other)?;
        }
        self.write_dirs(name, limits)
    }

    /// Writes `limits` into every directory of `name`, which must exist.
    fn write_dirs(&self, name: &CgroupName, limits: &CgroupLimits) -> io::Result<()> {
        for (controller, dir) in self.dirs(name) {
            if !dir.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("cgroup {} does not exist", dir.display()),
                ));
            }
            fs::write_limits(self.version, controller, &dir, limits)?;
        }
        Ok(())
    }

    /// Removes cgroup `name`: systemd stops its slice; then what is left of its directories
    /// (empty container cgroups a runtime left behind first) is removed. A cgroup with
    /// processes stays, and the error says so.
    fn destroy(&self, name: &CgroupName) -> io::Result<()> {
        if let Backend::Systemd(slices) = &self.backend {
            slices.stop(name).map_err(io::Error::other)?;
        }
        let mut first_err = None;
        for (_, dir) in self.dirs(name) {
            if !dir.exists() {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            if let Err(e) = std::fs::remove_dir(&dir) {
                if e.kind() != io::ErrorKind::NotFound {
                    first_err.get_or_insert(io::Error::new(
                        e.kind(),
                        format!("removing cgroup {}: {e}", dir.display()),
                    ));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Sets up the node's cgroups at start-up (upstream `setupNode` and
    /// `QOSContainerManager.Start`): checks `cgroupRoot` exists, creates `kubepods` with
    /// node allocatable's limits (capacity's when `pods` is not enforced), enforces
    /// `system-reserved` and `kube-reserved` on their cgroups when asked, and creates the
    /// burstable and besteffort cgroups.
    pub fn start(&self, node: &NodeAllocatableConfig) -> Result<(), CmError> {
        if !self.root.components().is_empty() || self.driver() == Driver::Systemd {
            let missing: Vec<String> = self
                .dirs(&self.root)
                .into_iter()
                .filter(|(_, d)| !d.is_dir())
                .map(|(_, d)| d.display().to_string())
                .collect();
            if !missing.is_empty() {
                return Err(CmError::MissingRoot {
                    name: self.root.to_cgroupfs(),
                    missing: missing.join(", "),
                });
            }
        }
        let io_err = |what: String| move |source| CmError::Io { what, source };
        let kubepods = node.kubepods_limits();
        self.ensure(&self.kubepods, &kubepods)
            .map_err(io_err(format!(
                "creating {}",
                self.driver_name(&self.kubepods)
            )))?;
        for (cgroup, reserved, key) in node.reserved_cgroups() {
            let name = match self.backend {
                Backend::Cgroupfs => CgroupName::from_cgroupfs(cgroup),
                Backend::Systemd(_) => CgroupName::from_systemd(cgroup),
            };
            if reserved == CgroupLimits::default() {
                return Err(CmError::Io {
                    what: format!("enforcing {key} on {cgroup}"),
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "nothing of cpu, memory or pid is reserved for it",
                    ),
                });
            }
            if !self.exists(&name) {
                return Err(CmError::Io {
                    what: format!("enforcing {key} on {cgroup}"),
                    source: io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{:?} cgroup does not exist", self.driver_name(&name)),
                    ),
                });
            }
            self.update(&name, &reserved)
                .map_err(io_err(format!("enforcing {key} on {cgroup}")))?;
            log::info!("enforced {key} on cgroup {cgroup}: {reserved:?}");
        }
        {
            let mut qos = self.lock_qos();
            qos.kubepods = Some(kubepods);
        }
        let burstable = self.qos_name("Burstable");
        self.ensure(&burstable, &CgroupLimits::default())
            .map_err(io_err(format!("creating {}", self.driver_name(&burstable))))?;
        let besteffort = self.qos_name("BestEffort");
        self.ensure(&besteffort, &resources::besteffort_limits())
            .map_err(io_err(format!(
                "creating {}",
                self.driver_name(&besteffort)
            )))?;
        self.update_qos_cgroups();
        log::info!(
            "pod cgroups under {} ({:?}, {} driver)",
            self.driver_name(&self.kubepods),
            self.version,
            self.driver().as_str()
        );
        Ok(())
    }

    fn lock_qos(&self) -> std::sync::MutexGuard<'_, QosState> {
        self.qos
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the QoS cgroups' limits from the pods with cgroups (upstream
    /// `UpdateCgroups`): the burstable cgroup's CPU shares from its pods' CPU requests, and
    /// with memory QoS the `memory.min` of the burstable and kubepods cgroups. Only what
    /// changed is written.
    pub fn update_qos_cgroups(&self) {
        let (burstable, kubepods) = {
            let state = self.lock_qos();
            let (burstable, guaranteed) = qos_limits(state.pods.values(), self.memory_qos);
            let kubepods = state.kubepods.map(|k| CgroupLimits {
                memory_min: guaranteed,
                ..k
            });
            let changed = state.burstable != Some(burstable);
            (
                changed.then_some(burstable),
                kubepods.filter(|_| self.memory_qos),
            )
        };
        if let Some(limits) = burstable {
            match self.update(&self.qos_name("Burstable"), &limits) {
                Ok(()) => self.lock_qos().burstable = Some(limits),
                Err(e) => log::warn!("updating the burstable QoS cgroup: {e}"),
            }
        }
        if let Some(limits) = kubepods {
            if let Err(e) = self.update(&self.kubepods, &limits) {
                log::warn!("updating the kubepods cgroup's memory.min: {e}");
            }
        }
    }

    /// Creates the pod's cgroup with its limits when it does not exist (upstream
    /// `EnsureExists`), counts the pod in its QoS cgroup, and returns its name for
    /// `cgroup_parent`.
    pub fn ensure_pod_cgroup(&self, pod: &Pod, uid: &PodUid, qos: &str) -> io::Result<String> {
        let name = self.pod_name(uid, qos);
        let requests = PodRequests::of(pod, qos);
        let known = self.lock_qos().pods.insert(uid.clone(), requests) == Some(requests);
        if !known {
            self.update_qos_cgroups();
        }
        if !self.exists(&name) {
            let limits = CgroupLimits {
                pids: self.pod_pids_limit,
                ..pod_limits(pod, qos, self.memory_qos)
            };
            self.ensure(&name, &limits)?;
        }
        Ok(self.driver_name(&name))
    }

    /// Removes the pod's cgroup wherever it is (its QoS class may be unknown by now) and
    /// stops counting it in its QoS cgroup. Processes still in it are killed first, as
    /// upstream's pod container manager does: the caller has established that none of
    /// the pod's containers runs. A cgroup whose processes have not exited yet stays, with
    /// an error; the next housekeeping pass removes it.
    pub fn remove_pod_cgroup(&self, uid: &PodUid) -> io::Result<()> {
        let mut first_err = None;
        for (qos, _) in QOS {
            let name = self.pod_name(uid, qos);
            let dirs: Vec<PathBuf> = self.dirs(&name).into_iter().map(|(_, d)| d).collect();
            if dirs.iter().any(|d| d.exists()) {
                match fs::kill_processes(&dirs) {
                    Ok(0) => {}
                    Ok(n) => log::info!(
                        "uid={uid} killed {n} leftover process(es) in the cgroup of a pod that no longer runs"
                    ),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
                if let Err(e) = self.destroy(&name) {
                    first_err.get_or_insert(e);
                }
            }
        }
        if first_err.is_none() && self.lock_qos().pods.remove(uid).is_some() {
            self.update_qos_cgroups();
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Processes (tasks) in a pod's cgroup now (`pids.current`), for ranking pods under
    /// PID pressure; `None` when the pod has no cgroup or the pids controller is missing.
    pub fn pod_processes(&self, uid: &PodUid, qos: &str) -> Option<u64> {
        let dirs = self.dirs(&self.pod_name(uid, qos));
        let dir = match self.version {
            CgroupVersion::V2 => dirs.into_iter().next()?.1,
            CgroupVersion::V1 => dirs.into_iter().find(|(c, _)| *c == Some("pids"))?.1,
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
        for (qos, _) in QOS {
            let qos_name = self.qos_name(qos);
            // The directory name a pod cgroup of this class has, around the uid.
            let (prefix, suffix) = match self.backend {
                Backend::Cgroupfs => ("pod".to_string(), ""),
                Backend::Systemd(_) => {
                    let slice = qos_name.child("pod").to_systemd();
                    let base = slice.rsplit('/').next().unwrap_or_default();
                    (base.trim_end_matches(".slice").to_string(), ".slice")
                }
            };
            for (_, dir) in self.dirs(&qos_name) {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let file = e.file_name().to_string_lossy().into_owned();
                    let Some(uid) = file
                        .strip_prefix(prefix.as_str())
                        .and_then(|rest| rest.strip_suffix(suffix))
                        .filter(|uid| !uid.is_empty() && !uid.contains('.'))
                    else {
                        continue;
                    };
                    // The entry's type from the directory read itself (cgroupfs fills
                    // it in): no stat per pod and controller on every housekeeping pass.
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        let uid = match self.backend {
                            Backend::Cgroupfs => uid.to_string(),
                            Backend::Systemd(_) => uid.replace('_', "-"),
                        };
                        out.insert(PodUid(uid));
                    }
                }
            }
        }
        out
    }
}

fn detect_version(mount: &Path) -> Result<CgroupVersion, CmError> {
    if mount.join("cgroup.controllers").exists() {
        Ok(CgroupVersion::V2)
    } else if mount.join("memory").is_dir() {
        Ok(CgroupVersion::V1)
    } else {
        Err(CmError::NoHierarchy(mount.to_path_buf()))
    }
}

#[cfg(test)]
mod tests;
