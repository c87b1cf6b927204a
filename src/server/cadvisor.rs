//! `/metrics/cadvisor` without cAdvisor: the container metrics upstream's embedded cAdvisor
//! serves, read from the cgroup files of the root cgroup and of everything under `kubepods`
//! (QoS, pod and container cgroups), from `/proc` (processes, descriptors, task states, the
//! network counters of each pod sandbox's namespace) and from CRI (which cgroup is which
//! container, image and pod; writable layer usage). Names, help texts, types and labels are
//! cAdvisor's; the rows are the cgroups cAdvisor would track for the kubelet.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::cm::CgroupVersion;
use crate::cri::{ImageService, RuntimeService};
use crate::kuberuntime::labels::{
    CONTAINER_NAME_LABEL, POD_NAMESPACE_LABEL, POD_NAME_LABEL, POD_UID_LABEL,
};
use crate::util::metrics::Exposition;

/// Where the host's files are (fixture directories in tests).
#[derive(Debug, Clone)]
pub struct HostPaths {
    /// `/proc`.
    pub proc_dir: PathBuf,
    /// `/sys`.
    pub sys_dir: PathBuf,
    /// `/etc` (`os-release`, `machine-id`).
    pub etc_dir: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            proc_dir: "/proc".into(),
            sys_dir: "/sys".into(),
            etc_dir: "/etc".into(),
        }
    }
}

/// The cgroup tree the rows come from.
#[derive(Debug, Clone)]
pub struct Tree {
    /// v1 or v2.
    pub version: CgroupVersion,
    /// `/sys/fs/cgroup`.
    pub mount: PathBuf,
    /// `kubepods` in the driver's spelling (`/kubepods`, `/kubepods.slice`): the rows' ids.
    pub kubepods_id: String,
    /// `kubepods`'s directory per controller (v1) or its one directory (v2).
    pub kubepods_dirs: Vec<(Option<&'static str>, PathBuf)>,
}

/// What the runtime says of one container or pod sandbox, found by its id in the tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeEntry {
    /// The container's name in the pod; empty for a sandbox.
    pub container: String,
    /// The image (for a sandbox, the pod infra image when known).
    pub image: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's UID.
    pub pod_uid: String,
    /// When the runtime created it, seconds since the epoch.
    pub created: f64,
    /// Whether it is a pod sandbox.
    pub sandbox: bool,
    /// Bytes of its writable layer, when the runtime reported them.
    pub writable_layer: Option<u64>,
}

/// The runtime's view, gathered once per scrape.
#[derive(Debug, Clone, Default)]
pub struct RuntimeView {
    /// Containers and sandboxes by id.
    pub by_id: HashMap<String, RuntimeEntry>,
    /// Whether every runtime call succeeded (`container_scrape_error` otherwise).
    pub complete: bool,
    /// Filesystems for the root row and the writable layers: (device, used, capacity) of
    /// the root directory's and the image filesystem's, and which one holds images.
    pub filesystems: Vec<(String, u64, u64)>,
    /// Index in `filesystems` of the image filesystem.
    pub image_fs: Option<usize>,
}

/// The runtime's view for one scrape: its sandboxes and containers by id (labels, image,
/// creation, writable layer), and the filesystems of `paths` (the root directory) and of
/// the image filesystem. A failed listing leaves the view incomplete
/// (`container_scrape_error` 1) but the cgroup rows are still served.
pub fn runtime_view(
    runtime: &dyn RuntimeService,
    images: &dyn ImageService,
    paths: &[&Path],
    proc_dir: &Path,
    infra_image: Option<&str>,
) -> RuntimeView {
    let mut view = RuntimeView {
        complete: true,
        ..RuntimeView::default()
    };
    let entry = |labels: &HashMap<String, String>, image: &str, created: i64, sandbox: bool| {
        let label = |key: &str| labels.get(key).cloned().unwrap_or_default();
        RuntimeEntry {
            container: if sandbox {
                String::new()
            } else {
                label(CONTAINER_NAME_LABEL)
            },
            image: image.to_string(),
            pod: label(POD_NAME_LABEL),
            namespace: label(POD_NAMESPACE_LABEL),
            pod_uid: label(POD_UID_LABEL),
            created: created as f64 / 1e9,
            sandbox,
            writable_layer: None,
        }
    };
    match runtime.list_pod_sandbox(None) {
        Ok(sandboxes) => {
            for s in sandboxes {
                let image = infra_image.unwrap_or_default();
                let e = entry(s.get_labels(), image, s.get_created_at(), true);
                view.by_id.insert(s.get_id().to_string(), e);
            }
        }
        Err(e) => {
            log::warn!("/metrics/cadvisor: listing pod sandboxes: {e}");
            view.complete = false;
        }
    }
    match runtime.list_containers(None) {
        Ok(containers) => {
            for c in containers {
                let image = c.get_image().get_image();
                let e = entry(c.get_labels(), image, c.get_created_at(), false);
                view.by_id.insert(c.get_id().to_string(), e);
            }
        }
        Err(e) => {
            log::warn!("/metrics/cadvisor: listing containers: {e}");
            view.complete = false;
        }
    }
    match runtime.list_container_stats(None) {
        Ok(stats) => {
            for st in stats {
                if let Some(e) = view.by_id.get_mut(st.get_attributes().get_id()) {
                    e.writable_layer = st.get_writable_layer().used_bytes.as_ref().map(|v| v.value);
                }
            }
        }
        Err(e) => log::debug!("/metrics/cadvisor: container stats: {e}"),
    }
    let mountinfo = std::fs::read_to_string(proc_dir.join("self/mountinfo")).unwrap_or_default();
    let time = super::stats::now().to_string();
    let mut paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
    if let Ok(info) = images.image_fs_info() {
        if let Some(fs) = info.get_image_filesystems().first() {
            paths.push(PathBuf::from(fs.get_fs_id().get_mountpoint()));
        }
    }
    for (i, path) in paths.iter().enumerate() {
        let device = mount_source(&mountinfo, path).unwrap_or_else(|| path.display().to_string());
        let index = match view.filesystems.iter().position(|(d, _, _)| *d == device) {
            Some(index) => index,
            None => {
                let fs = super::stats::fs_of(path, &time);
                let figures = (
                    device,
                    fs.used_bytes.unwrap_or(0),
                    fs.capacity_bytes.unwrap_or(0),
                );
                view.filesystems.push(figures);
                view.filesystems.len() - 1
            }
        };
        // The last path is the image filesystem's (the root directory's without one).
        if i == paths.len() - 1 {
            view.image_fs = Some(index);
        }
    }
    view
}

/// One cgroup directory per controller, or the one directory on v2.
#[derive(Debug, Clone)]
enum Dirs {
    V1(BTreeMap<&'static str, PathBuf>),
    V2(PathBuf),
}

impl Dirs {
    fn read(&self, controller: &str, file: &str) -> Option<String> {
        let dir = match self {
            Dirs::V1(map) => map.get(controller)?,
            Dirs::V2(dir) => dir,
        };
        std::fs::read_to_string(dir.join(file)).ok()
    }

    fn value(&self, controller: &str, file: &str) -> Option<u64> {
        self.read(controller, file)?.trim().parse().ok()
    }

    /// The directory processes are listed from.
    fn procs_dir(&self) -> Option<&Path> {
        match self {
            Dirs::V1(map) => map
                .get("pids")
                .or_else(|| map.get("cpu"))
                .map(|p| p.as_path()),
            Dirs::V2(dir) => Some(dir),
        }
    }

    fn child(&self, name: &str) -> Dirs {
        match self {
            Dirs::V1(map) => Dirs::V1(map.iter().map(|(c, d)| (*c, d.join(name))).collect()),
            Dirs::V2(dir) => Dirs::V2(dir.join(name)),
        }
    }
}

/// One row: a cgroup, and what it is.
#[derive(Debug)]
struct Row {
    id: String,
    entry: Option<RuntimeEntry>,
    /// `(namespace, name)` of the pod whose pod cgroup this is.
    pod: Option<(String, String)>,
    created: Option<f64>,
    stats: Stats,
}

#[derive(Debug, Default)]
struct Stats {
    cpu_total: Option<f64>,
    cpu_user: Option<f64>,
    cpu_system: Option<f64>,
    periods: Option<u64>,
    throttled_periods: Option<u64>,
    throttled_seconds: Option<f64>,
    quota: Option<i64>,
    period: Option<u64>,
    shares: Option<u64>,
    usage: Option<u64>,
    max_usage: Option<u64>,
    failcnt: Option<u64>,
    cache: Option<u64>,
    rss: Option<u64>,
    mapped_file: Option<u64>,
    swap: Option<u64>,
    working_set: Option<u64>,
    pgfault: Option<u64>,
    pgmajfault: Option<u64>,
    memory_limit: Option<u64>,
    swap_limit: Option<u64>,
    reservation: Option<u64>,
    oom_kills: Option<u64>,
    threads: Option<u64>,
    threads_max: Option<u64>,
    /// (device, bytes read, bytes written).
    io: Vec<(String, u64, u64)>,
    processes: u64,
    fds: u64,
    sockets: u64,
    /// sleeping, running, stopped, uninterruptible, iowaiting.
    tasks: [u64; 5],
    /// (interface, the 8 receive and 8 transmit counters of `/proc/net/dev`).
    net: Vec<(String, [u64; 16])>,
}

/// The text of `/metrics/cadvisor`. `tree` is `None` without pod cgroups
/// (`--cgroups-per-qos=false`): then only the machine figures are served.
pub fn render(tree: Option<&Tree>, runtime: &RuntimeView, host: &HostPaths, now: f64) -> String {
    let rows = rows(tree, runtime, host);
    let mut e = Exposition::default();
    machine(&mut e, host);
    emit_all(&mut e, &rows, runtime, now);
    e.family(
        "container_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    let error = if runtime.complete { 0.0 } else { 1.0 };
    e.sample("container_scrape_error", &[], &[], error);
    e.finish()
}

fn rows(tree: Option<&Tree>, runtime: &RuntimeView, host: &HostPaths) -> Vec<Row> {
    let mut out = Vec::new();
    let Some(tree) = tree else {
        return out;
    };
    let root = match tree.version {
        CgroupVersion::V2 => Dirs::V2(tree.mount.clone()),
        CgroupVersion::V1 => Dirs::V1(
            ["cpu", "cpuacct", "memory", "pids", "blkio"]
                .into_iter()
                .map(|c| (c, tree.mount.join(c)))
                .collect(),
        ),
    };
    out.push(row("/".into(), root, None, None, host));
    let kubepods = match tree.version {
        CgroupVersion::V2 => match tree.kubepods_dirs.first() {
            Some((_, d)) => Dirs::V2(d.clone()),
            None => return out,
        },
        CgroupVersion::V1 => {
            let mut map: BTreeMap<&'static str, PathBuf> = tree
                .kubepods_dirs
                .iter()
                .filter_map(|(c, d)| Some(((*c)?, d.clone())))
                .collect();
            // cpuacct and blkio sit where memory does, relative to their own mounts.
            if let Some(rel) = map
                .get("memory")
                .and_then(|d| d.strip_prefix(tree.mount.join("memory")).ok())
                .map(Path::to_path_buf)
            {
                for c in ["cpuacct", "blkio"] {
                    map.insert(c, tree.mount.join(c).join(&rel));
                }
            }
            Dirs::V1(map)
        }
    };
    walk(&tree.kubepods_id, kubepods, runtime, host, 0, &mut out);
    out
}

/// Adds the row of `dirs` and of every cgroup below it (kubepods, QoS, pod, container).
fn walk(
    id: &str,
    dirs: Dirs,
    runtime: &RuntimeView,
    host: &HostPaths,
    depth: usize,
    out: &mut Vec<Row>,
) {
    let Some(list_dir) = dirs.procs_dir().map(Path::to_path_buf) else {
        return;
    };
    if !list_dir.is_dir() {
        return;
    }
    let name = id.rsplit('/').next().unwrap_or_default();
    let entry = container_id(name).and_then(|cid| runtime.by_id.get(cid).cloned());
    let pod = pod_uid(name).and_then(|uid| {
        runtime
            .by_id
            .values()
            .find(|e| e.pod_uid == uid)
            .map(|e| (e.namespace.clone(), e.pod.clone()))
    });
    let mut children: Vec<String> = std::fs::read_dir(&list_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    children.sort();
    out.push(row(id.to_string(), dirs.clone(), entry, pod, host));
    // kubepods / QoS / pod / container: nothing deeper is a row of cAdvisor's.
    if depth < 3 {
        for child in children {
            let child_dirs = dirs.child(&child);
            walk(
                &format!("{id}/{child}"),
                child_dirs,
                runtime,
                host,
                depth + 1,
                out,
            );
        }
    }
}

/// The container id in a container cgroup's name: the id itself (cgroupfs driver), or
/// `cri-containerd-<id>.scope` / `crio-<id>.scope` (systemd driver).
fn container_id(name: &str) -> Option<&str> {
    let id = name
        .strip_suffix(".scope")
        .and_then(|n| n.rsplit('-').next())
        .unwrap_or(name);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The pod UID in a pod cgroup's name: `pod<uid>` or `kubepods-<qos>-pod<uid with _>.slice`.
fn pod_uid(name: &str) -> Option<String> {
    if let Some(uid) = name.strip_prefix("pod") {
        return (!uid.is_empty() && !uid.contains('.')).then(|| uid.to_string());
    }
    let slice = name.strip_suffix(".slice")?;
    let uid = slice.rsplit_once("-pod")?.1;
    Some(uid.replace('_', "-"))
}

fn row(
    id: String,
    dirs: Dirs,
    entry: Option<RuntimeEntry>,
    pod: Option<(String, String)>,
    host: &HostPaths,
) -> Row {
    let mut stats = cgroup_stats(&dirs);
    for (dev, _, _) in &mut stats.io {
        *dev = device_name(host, dev);
    }
    let network = if id == "/" {
        Network::Host
    } else if entry.as_ref().is_some_and(|e| e.sandbox) {
        Network::FirstProcess
    } else {
        Network::None
    };
    processes(&dirs, host, &mut stats, network);
    let created = match &entry {
        Some(e) if e.created > 0.0 => Some(e.created),
        _ => dirs.procs_dir().and_then(|d| {
            let modified = std::fs::metadata(d).ok()?.modified().ok()?;
            let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
            Some(since.as_secs() as f64)
        }),
    };
    Row {
        id,
        entry,
        pod,
        created,
        stats,
    }
}

/// `key value` lines (`memory.stat`, `cpu.stat`, `memory.events`).
fn keyed(text: Option<String>) -> HashMap<String, u64> {
    text.unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A limit file's value, 0 for none (`max`, or v1's "unlimited" near 2^63), as cAdvisor.
fn limit(text: Option<String>) -> Option<u64> {
    let text = text?;
    let t = text.trim();
    if t == "max" {
        return Some(0);
    }
    let v: u64 = t.parse().ok()?;
    Some(if v > 1 << 62 { 0 } else { v })
}

fn cgroup_stats(dirs: &Dirs) -> Stats {
    let mut s = Stats::default();
    match dirs {
        Dirs::V1(_) => {
            s.cpu_total = dirs
                .value("cpuacct", "cpuacct.usage")
                .map(|ns| ns as f64 / 1e9);
            let ticks = keyed(dirs.read("cpuacct", "cpuacct.stat"));
            // USER_HZ is 100 on Linux.
            s.cpu_user = ticks.get("user").map(|t| *t as f64 / 100.0);
            s.cpu_system = ticks.get("system").map(|t| *t as f64 / 100.0);
            let cpu = keyed(dirs.read("cpu", "cpu.stat"));
            s.periods = cpu.get("nr_periods").copied();
            s.throttled_periods = cpu.get("nr_throttled").copied();
            s.throttled_seconds = cpu.get("throttled_time").map(|ns| *ns as f64 / 1e9);
            s.quota = dirs
                .read("cpu", "cpu.cfs_quota_us")
                .and_then(|q| q.trim().parse::<i64>().ok())
                .map(|q| q.max(0));
            s.period = dirs.value("cpu", "cpu.cfs_period_us");
            s.shares = dirs.value("cpu", "cpu.shares");
            s.usage = dirs.value("memory", "memory.usage_in_bytes");
            s.max_usage = dirs.value("memory", "memory.max_usage_in_bytes");
            s.failcnt = dirs.value("memory", "memory.failcnt");
            let m = keyed(dirs.read("memory", "memory.stat"));
            let total = |k: &str| m.get(&format!("total_{k}")).or_else(|| m.get(k)).copied();
            s.cache = total("cache");
            s.rss = total("rss");
            s.mapped_file = total("mapped_file");
            s.swap = total("swap").or(Some(0));
            s.pgfault = total("pgfault");
            s.pgmajfault = total("pgmajfault");
            s.working_set = s
                .usage
                .map(|u| u.saturating_sub(total("inactive_file").unwrap_or(0)));
            s.memory_limit = limit(dirs.read("memory", "memory.limit_in_bytes"));
            s.swap_limit = limit(dirs.read("memory", "memory.memsw.limit_in_bytes"));
            s.reservation = limit(dirs.read("memory", "memory.soft_limit_in_bytes"));
            s.oom_kills = keyed(dirs.read("memory", "memory.oom_control"))
                .get("oom_kill")
                .copied();
            s.io = v1_io(dirs);
        }
        Dirs::V2(_) => {
            let cpu = keyed(dirs.read("", "cpu.stat"));
            let usec = |k: &str| cpu.get(k).map(|v| *v as f64 / 1e6);
            s.cpu_total = usec("usage_usec");
            s.cpu_user = usec("user_usec");
            s.cpu_system = usec("system_usec");
            s.periods = cpu.get("nr_periods").copied();
            s.throttled_periods = cpu.get("nr_throttled").copied();
            s.throttled_seconds = usec("throttled_usec");
            if let Some(max) = dirs.read("", "cpu.max") {
                let mut parts = max.split_whitespace();
                s.quota = parts.next().map(|q| q.parse().unwrap_or(0));
                s.period = parts.next().and_then(|p| p.parse().ok());
            }
            // cpu.weight back to shares, as cAdvisor converts it.
            s.shares = dirs
                .value("", "cpu.weight")
                .map(|w| 2 + (w.saturating_sub(1) * 262_142) / 9_999);
            s.usage = dirs.value("", "memory.current");
            s.max_usage = dirs.value("", "memory.peak");
            let events = keyed(dirs.read("", "memory.events"));
            s.failcnt = events.get("max").copied();
            s.oom_kills = events.get("oom_kill").copied();
            let m = keyed(dirs.read("", "memory.stat"));
            s.cache = m.get("file").copied();
            s.rss = m.get("anon").copied();
            s.mapped_file = m.get("file_mapped").copied();
            s.swap = dirs.value("", "memory.swap.current").or(Some(0));
            s.pgfault = m.get("pgfault").copied();
            s.pgmajfault = m.get("pgmajfault").copied();
            s.working_set = s
                .usage
                .map(|u| u.saturating_sub(m.get("inactive_file").copied().unwrap_or(0)));
            s.memory_limit = limit(dirs.read("", "memory.max"));
            s.swap_limit = limit(dirs.read("", "memory.swap.max"));
            s.reservation = limit(dirs.read("", "memory.min"));
            s.io = dirs
                .read("", "io.stat")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let mut parts = l.split_whitespace();
                    let dev = parts.next()?.to_string();
                    let kv: HashMap<&str, u64> = parts
                        .filter_map(|p| {
                            let (k, v) = p.split_once('=')?;
                            Some((k, v.parse().ok()?))
                        })
                        .collect();
                    Some((dev, kv.get("rbytes").copied()?, kv.get("wbytes").copied()?))
                })
                .collect();
        }
    }
    let pids = if matches!(dirs, Dirs::V1(_)) {
        "pids"
    } else {
        ""
    };
    s.threads = dirs.value(pids, "pids.current");
    s.threads_max = limit(dirs.read(pids, "pids.max"));
    s
}

/// v1 block I/O bytes per device: the CFQ file when it has figures, else the throttling
/// layer's (which every scheduler fills), as runc reads them.
fn v1_io(dirs: &Dirs) -> Vec<(String, u64, u64)> {
    for file in [
        "blkio.io_service_bytes_recursive",
        "blkio.throttle.io_service_bytes_recursive",
        "blkio.throttle.io_service_bytes",
    ] {
        let mut per: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for line in dirs.read("blkio", file).unwrap_or_default().lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [dev, op, value] = parts[..] else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            let e = per.entry(dev.to_string()).or_default();
            match op {
                "Read" => e.0 += value,
                "Write" => e.1 += value,
                _ => {}
            }
        }
        if !per.is_empty() {
            return per.into_iter().map(|(d, (r, w))| (d, r, w)).collect();
        }
    }
    Vec::new()
}

/// Processes of the cgroup itself (not of its children, as cAdvisor counts them), their
/// descriptors, sockets and task states; and the network counters `network` names.
fn processes(dirs: &Dirs, host: &HostPaths, s: &mut Stats, network: Network) {
    let procs = dirs
        .procs_dir()
        .and_then(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .unwrap_or_default();
    let pids: Vec<&str> = procs
        .lines()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    s.processes = pids.len() as u64;
    for pid in &pids {
        let dir = host.proc_dir.join(pid);
        for fd in std::fs::read_dir(dir.join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            s.fds += 1;
            if std::fs::read_link(fd.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
            {
                s.sockets += 1;
            }
        }
        for task in std::fs::read_dir(dir.join("task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
            match state {
                Some('S') => s.tasks[0] += 1,
                Some('R') => s.tasks[1] += 1,
                Some('T' | 't') => s.tasks[2] += 1,
                Some('D') => s.tasks[3] += 1,
                _ => {}
            }
        }
    }
    let dev = match network {
        Network::None => return,
        // The root row: the kubelet's own namespace, the host's.
        Network::Host => host.proc_dir.join("self/net/dev"),
        Network::FirstProcess => match pids.first() {
            Some(pid) => host.proc_dir.join(pid).join("net/dev"),
            None => return,
        },
    };
    s.net = net_dev(&std::fs::read_to_string(dev).unwrap_or_default());
}

/// Whose network counters a row carries: cAdvisor gives them to the root and to pod
/// sandboxes (whose first process, the infra container's, holds the pod's namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Network {
    None,
    Host,
    FirstProcess,
}

/// Interfaces cAdvisor leaves out.
const IGNORED_INTERFACES: [&str; 4] = ["lo", "veth", "docker", "nerdctl"];

/// `/proc/<pid>/net/dev`: per interface, 8 receive then 8 transmit counters.
fn net_dev(text: &str) -> Vec<(String, [u64; 16])> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if IGNORED_INTERFACES.iter().any(|p| name.starts_with(p)) {
                return None;
            }
            let mut values = [0u64; 16];
            let mut n = 0;
            for (slot, v) in values.iter_mut().zip(rest.split_whitespace()) {
                *slot = v.parse().ok()?;
                n += 1;
            }
            (n == 16).then(|| (name.to_string(), values))
        })
        .collect()
}

/// `/dev/<name>` of block device `major:minor`, from sysfs; the numbers when unknown.
fn device_name(host: &HostPaths, dev: &str) -> String {
    std::fs::read_to_string(host.sys_dir.join("dev/block").join(dev).join("uevent"))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|n| format!("/dev/{n}"))
        })
        .unwrap_or_else(|| dev.to_string())
}

mod families;
use families::{emit_all, machine};

/// The mount source (the device, as cAdvisor names filesystems) of the filesystem holding
/// `path`, from `mountinfo`: the longest mount point that contains it.
pub fn mount_source(mountinfo: &str, path: &Path) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4) else {
            continue;
        };
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let Some(source) = fields.get(sep + 2) else {
            continue;
        };
        let point = point.replace("\\040", " ");
        if path.starts_with(&point) && best.as_ref().is_none_or(|(len, _)| point.len() >= *len) {
            best = Some((point.len(), (*source).to_string()));
        }
    }
    best.map(|(_, s)| s)
}

#[cfg(test)]
mod tests;
