//! `FakeRuntime`: an in-memory CRI runtime that behaves like containerd 1.6+ as
//! seen through CRI, for unit and integration tests and for hollow nodes.
//!
//! It runs on the caller's thread. All state sits behind one `Mutex`, held only
//! for the in-memory bookkeeping of one call (the optional call delay is slept
//! before taking it), so thousands of pods and many concurrent callers are fine.
//!
//! Lifecycles, as containerd reports them:
//! ```text
//! sandbox:    RunPodSandbox ──▶ READY ──StopPodSandbox──▶ NOTREADY ──RemovePodSandbox──▶ gone
//!                                 (IP 10.88.x.y)            (IP released, containers killed)
//! container:  CreateContainer ──▶ CREATED ──StartContainer──▶ RUNNING ──StopContainer /
//!             exit_container()──▶ EXITED ──RemoveContainer──▶ gone
//! ```
//! Errors follow containerd: unknown ids give `NotFound` for status/start/stop
//! calls but removing an unknown id succeeds; `RunPodSandbox` and
//! `CreateContainer` reserve the name `name_namespace_uid_attempt` (containers:
//! `container_pod_namespace_uid_attempt`) until removal; creating needs a READY
//! sandbox and a local image; starting needs a CREATED container; removing a
//! READY sandbox fails ("not fully stopped"). Pulls succeed only for images made
//! available with [`FakeRuntime::add_image`]; [`FakeRuntime::preload_image`] puts
//! an image on the node directly (like `ctr images import`).
//!
//! Test controls: a typed call log ([`Call`]), one-shot error injection per RPC
//! name (`"RunPodSandbox"`, `"PullImage"`, ...), process exits, a call delay, the
//! reported API version, runtime conditions and the `ExecSync` result.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::api::{self, ContainerState, PodSandboxState};
use super::{CriError, RpcCode};

use image::normalize_image;

mod exits;
mod image;
mod runtime;
pub mod server;

/// A call made to the fake, for tests to assert on.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `Version`.
    Version,
    /// `Status`.
    Status,
    /// `RunPodSandbox` for the pod `name` / `uid` of the config's metadata.
    RunPodSandbox {
        /// Pod name.
        name: String,
        /// Pod UID.
        uid: String,
        /// The runtime handler asked for (empty: the default).
        handler: String,
    },
    /// `StopPodSandbox(id)`.
    StopPodSandbox(String),
    /// `RemovePodSandbox(id)`.
    RemovePodSandbox(String),
    /// `PodSandboxStatus(id)`.
    PodSandboxStatus(String),
    /// `ListPodSandbox`.
    ListPodSandbox,
    /// `CreateContainer` of container `name` in sandbox `sandbox`.
    CreateContainer {
        /// Sandbox id.
        sandbox: String,
        /// Container name from the config's metadata.
        name: String,
    },
    /// `StartContainer(id)`.
    StartContainer(String),
    /// `StopContainer(id)`; see [`FakeRuntime::stop_grace_period`] for the timeout.
    StopContainer(String),
    /// `RemoveContainer(id)`.
    RemoveContainer(String),
    /// `ListContainers`.
    ListContainers,
    /// `ReopenContainerLog(id)`.
    ReopenContainerLog(String),
    /// `ContainerStatus(id)`.
    ContainerStatus(String),
    /// `ExecSync` of `cmd` in `container`.
    ExecSync {
        /// Container id.
        container: String,
        /// The command.
        cmd: Vec<String>,
    },
    /// `ListImages`.
    ListImages,
    /// `ImageStatus(image)`, the image as requested.
    ImageStatus(String),
    /// `PullImage(image)`, the image as requested.
    PullImage(String),
    /// `RemoveImage(image)`, the image as requested.
    RemoveImage(String),
    /// `ImageFsInfo`.
    ImageFsInfo,
    /// `ListContainerStats`.
    ListContainerStats,
    /// `ListPodSandboxStats`.
    ListPodSandboxStats,
    /// `RuntimeConfig`.
    RuntimeConfig,
}

/// In-memory CRI runtime; see the module docs for its behaviour.
pub struct FakeRuntime {
    /// Everything mutable; held only for the bookkeeping of one call.
    state: Mutex<State>,
    /// Whether calls are appended to the log (off for benches and hollow nodes,
    /// where the log would grow without bound).
    record_calls: bool,
    /// Delay before each call, in nanoseconds; atomic so it is read without the lock.
    delay_nanos: AtomicU64,
    /// How long a pull takes, in nanoseconds (slept before the lock is taken).
    pull_delay_nanos: AtomicU64,
    /// Whether every image can be pulled (hollow nodes, `rkubelet fake-runtime`).
    any_image: AtomicBool,
    /// Signalled whenever a container exits, for stops that wait out a grace period.
    exited: Condvar,
}

/// 10.88.0.0, containerd's default bridge network.
const DEFAULT_POD_NETWORK: u32 = 0x0a58_0000;

/// Pod annotation: how long containers run before they exit (a Go duration such as `30s`,
/// or seconds); `rkubelet.io/fake-exit-after.<container>` for one container.
pub const EXIT_AFTER_ANNOTATION: &str = "rkubelet.io/fake-exit-after";
/// Pod annotation: the exit code of those exits (default 0);
/// `rkubelet.io/fake-exit-code.<container>` for one container.
pub const EXIT_CODE_ANNOTATION: &str = "rkubelet.io/fake-exit-code";
/// Pod annotation: `"true"` makes every container of the pod ignore SIGTERM, so a stop
/// with a grace period takes the whole period and ends in SIGKILL (exit code 137).
pub const IGNORE_SIGTERM_ANNOTATION: &str = "rkubelet.io/fake-ignore-sigterm";

/// A sandbox and what the fake needs beyond its CRI status.
struct Sandbox {
    status: api::PodSandboxStatus,
    /// Reserved name (released on removal).
    name: String,
    /// Pod IP as an offset into 10.88.0.0/16; `None` for host network or once stopped.
    ip: Option<u32>,
    /// `PodSandboxConfig.log_directory`, the base of container log paths.
    log_directory: String,
}

/// A container and what the fake needs beyond its CRI status.
struct Container {
    status: api::ContainerStatus,
    sandbox_id: String,
    /// Reserved name (released on removal).
    name: String,
    /// The image as given in the config (what `ListContainers` reports).
    image_spec: api::ImageSpec,
    /// When (ns since the epoch) and with which code the process will exit by itself.
    planned_exit: Option<(i64, i32)>,
    /// Its config, for tests to inspect (kept only with the call log).
    config: Option<Box<api::ContainerConfig>>,
}

struct State {
    calls: Vec<Call>,
    /// One-shot errors per RPC name, returned in order.
    injected: HashMap<&'static str, VecDeque<CriError>>,
    api_version: String,
    /// The cgroup driver `RuntimeConfig` reports; `None`: Unimplemented, as older runtimes.
    cgroup_driver: Option<api::CgroupDriver>,
    conditions: Vec<api::RuntimeCondition>,
    exec_result: api::ExecSyncResponse,
    next_id: u64,
    next_ip: u32,
    ips_in_use: HashSet<u32>,
    /// Last timestamp handed out (ns); keeps timestamps strictly increasing.
    last_ns: i64,
    sandboxes: BTreeMap<String, Sandbox>,
    containers: BTreeMap<String, Container>,
    /// Sandbox and container ids per `io.kubernetes.pod.uid` label, so the per-pod listings a
    /// kubelet makes on every sync cost the pod's size, not the node's.
    by_pod: HashMap<String, PodIndex>,
    sandbox_names: HashMap<String, String>,
    container_names: HashMap<String, String>,
    /// Last StopContainer timeout per container id.
    stop_grace: HashMap<String, i64>,
    /// Normalized references a pull succeeds for.
    available: HashSet<String>,
    /// Registries whose pulls need these credentials: (reference prefix, user, password).
    registry_auth: Vec<(String, String, String)>,
    /// Each pull's image and the user and password it came with.
    pull_auths: Vec<(String, Option<(String, String)>)>,
    /// Images on the node, by id.
    images: BTreeMap<String, api::Image>,
    /// First address and size of the pod network (default 10.88.0.0/16).
    pod_network: (u32, u32),
    /// Planned exits of running containers: (when, ns since the epoch; container id).
    exits: BinaryHeap<Reverse<(i64, String)>>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        FakeRuntime::new()
    }
}

impl FakeRuntime {
    /// An empty runtime (no sandboxes, containers or images) that records calls.
    pub fn new() -> Self {
        let condition = |kind: &str| {
            let mut c = api::RuntimeCondition::new();
            c.field_type = kind.to_string();
            c.status = true;
            c
        };
        let state = State {
            calls: Vec::new(),
            injected: HashMap::new(),
            api_version: "v1".to_string(),
            cgroup_driver: None,
            conditions: vec![condition("RuntimeReady"), condition("NetworkReady")],
            exec_result: api::ExecSyncResponse::new(),
            next_id: 0,
            next_ip: 1,
            ips_in_use: HashSet::new(),
            last_ns: 0,
            sandboxes: BTreeMap::new(),
            containers: BTreeMap::new(),
            by_pod: HashMap::new(),
            sandbox_names: HashMap::new(),
            container_names: HashMap::new(),
            stop_grace: HashMap::new(),
            available: HashSet::new(),
            registry_auth: Vec::new(),
            pull_auths: Vec::new(),
            images: BTreeMap::new(),
            pod_network: (DEFAULT_POD_NETWORK, 1 << 16),
            exits: BinaryHeap::new(),
        };
        FakeRuntime {
            state: Mutex::new(state),
            record_calls: true,
            delay_nanos: AtomicU64::new(0),
            pull_delay_nanos: AtomicU64::new(0),
            any_image: AtomicBool::new(false),
            exited: Condvar::new(),
        }
    }

    /// Like [`FakeRuntime::new`] but keeps no call log (benches, hollow nodes).
    pub fn without_call_log() -> Self {
        FakeRuntime {
            record_calls: false,
            ..FakeRuntime::new()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Common start of every call: delay, log, then an injected error if any.
    fn begin(
        &self,
        method: &'static str,
        call: impl FnOnce() -> Call,
    ) -> Result<MutexGuard<'_, State>, CriError> {
        let delay = self.delay_nanos.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_nanos(delay));
        }
        let mut st = self.lock();
        st.run_planned_exits();
        if self.record_calls {
            st.calls.push(call());
        }
        match st.injected.get_mut(method).and_then(VecDeque::pop_front) {
            Some(err) => Err(err),
            None => Ok(st),
        }
    }

    /// The calls made so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Forgets the calls made so far.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Makes the next call of `method` (a CRI RPC name such as `"PullImage"`)
    /// fail with `err`. Injections for one method queue up in order.
    pub fn inject_error(&self, method: &'static str, err: CriError) {
        self.lock()
            .injected
            .entry(method)
            .or_default()
            .push_back(err);
    }

    /// Delays every later call by `delay`, as a slow runtime would.
    pub fn set_call_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Makes every pull take `delay` (slept outside the lock, so other calls go on).
    pub fn set_pull_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.pull_delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// How long a pull takes.
    pub(crate) fn pull_delay(&self) -> Duration {
        Duration::from_nanos(self.pull_delay_nanos.load(Ordering::Relaxed))
    }

    /// Lets every image be pulled, not only those given to [`FakeRuntime::add_image`].
    pub fn allow_any_image(&self) {
        self.any_image.store(true, Ordering::Relaxed);
    }

    /// Whether every image can be pulled.
    pub(crate) fn any_image(&self) -> bool {
        self.any_image.load(Ordering::Relaxed)
    }

    /// Sets the pod network sandboxes get addresses from (`10.244.0.0/16`); at most a /8
    /// and at least a /30.
    pub fn set_pod_network(&self, cidr: &str) -> Result<(), String> {
        let (addr, bits) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr:?} is not a CIDR (address/bits)"))?;
        let addr: std::net::Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{cidr:?}: {addr:?} is not an IPv4 address"))?;
        let bits: u32 = bits
            .parse()
            .ok()
            .filter(|b| (8..=30).contains(b))
            .ok_or_else(|| format!("{cidr:?}: the prefix must be 8 to 30 bits"))?;
        let size = 1u32 << (32 - bits);
        let base = u32::from(addr) & !(size - 1);
        let mut st = self.lock();
        st.pod_network = (base, size);
        st.next_ip = 1;
        Ok(())
    }

    /// Sets the `runtime_api_version` `Version` reports (default `"v1"`).
    pub fn set_version(&self, api_version: &str) {
        self.lock().api_version = api_version.to_string();
    }

    /// Sets the cgroup driver `RuntimeConfig` reports (`None`, the default: the call is
    /// Unimplemented, as in runtimes older than it).
    pub fn set_cgroup_driver(&self, driver: Option<api::CgroupDriver>) {
        self.lock().cgroup_driver = driver;
    }

    /// Sets (or adds) a runtime condition reported by `Status`.
    pub fn set_condition(&self, kind: &str, status: bool, reason: &str, message: &str) {
        let mut st = self.lock();
        let pos = st.conditions.iter().position(|c| c.field_type == kind);
        let c = match pos {
            Some(i) => &mut st.conditions[i],
            None => {
                st.conditions.push(api::RuntimeCondition::new());
                let last = st.conditions.len() - 1;
                &mut st.conditions[last]
            }
        };
        c.field_type = kind.to_string();
        c.status = status;
        c.reason = reason.to_string();
        c.message = message.to_string();
    }

    /// Sets what every later `ExecSync` returns.
    pub fn set_exec_result(&self, stdout: &[u8], stderr: &[u8], exit_code: i32) {
        let mut r = api::ExecSyncResponse::new();
        r.stdout = stdout.to_vec();
        r.stderr = stderr.to_vec();
        r.exit_code = exit_code;
        self.lock().exec_result = r;
    }

    /// Simulates the container's process exiting: EXITED, finished now, reason
    /// `Completed` for 0 and `Error` otherwise. False unless it was RUNNING.
    pub fn exit_container(&self, id: &str, exit_code: i32) -> bool {
        let reason = if exit_code == 0 { "Completed" } else { "Error" };
        self.exit_container_with_reason(id, exit_code, reason)
    }

    /// Like [`FakeRuntime::exit_container`] with an explicit reason (e.g. `OOMKilled`).
    pub fn exit_container_with_reason(&self, id: &str, exit_code: i32, reason: &str) -> bool {
        let mut st = self.lock();
        let now = st.now();
        match st.containers.get_mut(id) {
            Some(c) if c.status.state == ContainerState::CONTAINER_RUNNING => {
                exit(&mut c.status, now, exit_code, reason);
                true
            }
            _ => false,
        }
    }

    /// Simulates a sandbox dying (its pause process exited): NOTREADY. False if unknown.
    pub fn set_sandbox_not_ready(&self, id: &str) -> bool {
        let mut st = self.lock();
        match st.sandboxes.get_mut(id) {
            Some(s) => {
                s.status.state = PodSandboxState::SANDBOX_NOTREADY;
                true
            }
            None => false,
        }
    }

    /// The timeout of the last `StopContainer` for `container_id`.
    pub fn stop_grace_period(&self, container_id: &str) -> Option<i64> {
        self.lock().stop_grace.get(container_id).copied()
    }

    /// Makes `image` pullable (present in the "registry").
    pub fn add_image(&self, image: &str) {
        self.lock().available.insert(normalize_image(image));
    }

    /// The config container `id` was created with.
    pub fn container_config(&self, id: &str) -> Option<api::ContainerConfig> {
        let state = self.lock();
        state.containers.get(id)?.config.as_deref().cloned()
    }

    /// Puts `image` on the node without a pull; returns its id.
    pub fn preload_image(&self, image: &str) -> String {
        self.lock().store_image(&normalize_image(image))
    }
}

impl State {
    /// The index entry for a selector naming a pod UID; `None` when the selector names none
    /// (list everything) or the pod has nothing.
    fn pod_candidates(&self, selector: Option<&HashMap<String, String>>) -> Option<&PodIndex> {
        self.by_pod.get(selector?.get(POD_UID_LABEL)?)
    }

    /// Drops an id from the pod index.
    fn unindex(&mut self, labels: &HashMap<String, String>, id: &str, sandbox: bool) {
        let Some(uid) = labels.get(POD_UID_LABEL) else {
            return;
        };
        if let Some(index) = self.by_pod.get_mut(uid) {
            if sandbox {
                index.sandboxes.remove(id);
            } else {
                index.containers.remove(id);
            }
            if index.sandboxes.is_empty() && index.containers.is_empty() {
                self.by_pod.remove(uid);
            }
        }
    }

    /// Current time in ns since the epoch, strictly increasing across calls.
    fn now(&mut self) -> i64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.last_ns = wall.max(self.last_ns + 1);
        self.last_ns
    }

    /// A fresh 64-hex-digit id, like containerd's.
    fn new_id(&mut self) -> String {
        self.next_id += 1;
        hex64(self.next_id)
    }

    /// Next free pod IP offset in the pod network (skipping .0 and .255 hosts and the
    /// network's first and last address).
    fn alloc_ip(&mut self) -> Option<u32> {
        let size = self.pod_network.1;
        for _ in 0..size {
            let ip = self.next_ip;
            self.next_ip = if ip + 2 >= size { 1 } else { ip + 1 };
            let host = (self.pod_network.0 + ip) & 0xff;
            if ip > 0 && ip + 1 < size && host != 0 && host != 0xff && self.ips_in_use.insert(ip) {
                return Some(ip);
            }
        }
        None
    }

    /// The address at `offset` in the pod network.
    fn ip_string(&self, offset: u32) -> String {
        std::net::Ipv4Addr::from(self.pod_network.0 + offset).to_string()
    }

    fn stop_sandbox_containers(&mut self, sandbox_id: &str) {
        let now = self.now();
        for c in self.containers.values_mut() {
            if c.sandbox_id == sandbox_id && c.status.state == ContainerState::CONTAINER_RUNNING {
                exit(&mut c.status, now, 137, "Error");
            }
        }
    }
}

/// Moves a container status to EXITED.
fn exit(status: &mut api::ContainerStatus, now: i64, exit_code: i32, reason: &str) {
    status.state = ContainerState::CONTAINER_EXITED;
    status.finished_at = now;
    status.exit_code = exit_code;
    status.reason = reason.to_string();
}

/// The gRPC-style error containerd returns for a missing sandbox or container.
fn not_found(method: &'static str, kind: &str, id: &str) -> CriError {
    CriError::NotFound {
        method,
        message: format!("an error occurred when try to find {kind} {id:?}: not found"),
    }
}

fn unknown(method: &'static str, message: String) -> CriError {
    CriError::Rpc {
        method,
        code: RpcCode::Unknown,
        message,
    }
}

/// The ids of one pod's sandboxes and containers.
#[derive(Debug, Default)]
pub(crate) struct PodIndex {
    pub(crate) sandboxes: BTreeSet<String>,
    pub(crate) containers: BTreeSet<String>,
}

/// The label the index is keyed by.
pub(crate) const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

fn labels_match(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Expands `n` into 64 hex digits; distinct `n` give distinct strings.
fn hex64(n: u64) -> String {
    let mut x = n;
    (0..4)
        .map(|_| {
            x = splitmix64(x);
            format!("{x:016x}")
        })
        .collect()
}

/// SplitMix64 step: a bijection on u64 with good mixing.
fn splitmix64(z: u64) -> u64 {
    let mut z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Small builders shared by the fake's tests.
#[cfg(test)]
mod fixtures {
    use crate::cri::api;

    /// A pod sandbox config with the labels the kubelet sets.
    pub(super) fn sandbox_config(name: &str, uid: &str, attempt: u32) -> api::PodSandboxConfig {
        let mut meta = api::PodSandboxMetadata::new();
        meta.name = name.to_string();
        meta.namespace = "default".to_string();
        meta.uid = uid.to_string();
        meta.attempt = attempt;
        let mut config = api::PodSandboxConfig::new();
        config.set_metadata(meta);
        config.log_directory = format!("/var/log/pods/default_{name}_{uid}/");
        config
            .labels
            .insert("io.kubernetes.pod.uid".to_string(), uid.to_string());
        config
    }

    /// A container config for `image` with its log under `<name>/0.log`.
    pub(super) fn container_config(name: &str, image: &str) -> api::ContainerConfig {
        let mut meta = api::ContainerMetadata::new();
        meta.name = name.to_string();
        let mut spec = api::ImageSpec::new();
        spec.image = image.to_string();
        let mut config = api::ContainerConfig::new();
        config.set_metadata(meta);
        config.set_image(spec);
        config.log_path = format!("{name}/0.log");
        config
            .labels
            .insert("io.kubernetes.container.name".to_string(), name.to_string());
        config
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{container_config, sandbox_config};
    use super::*;
    use crate::cri::RuntimeService;
    use std::sync::Arc;

    #[test]
    fn ids_are_unique_hex_and_timestamps_increase() {
        let fake = FakeRuntime::without_call_log();
        let mut ids = HashSet::new();
        let mut last = 0;
        for i in 0..500 {
            let id = fake
                .run_pod_sandbox(&sandbox_config("p", &format!("uid-{i}"), 0), "")
                .unwrap();
            assert_eq!(id.len(), 64);
            assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
            let status = fake.pod_sandbox_status(&id, false).unwrap();
            assert!(status.get_status().created_at > last);
            last = status.get_status().created_at;
            assert!(ids.insert(id));
        }
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn pod_ips_are_distinct_and_reused_after_stop() {
        let fake = FakeRuntime::new();
        let mut ips = HashSet::new();
        let mut first = None;
        for i in 0..600 {
            let id = fake
                .run_pod_sandbox(&sandbox_config("p", &format!("u{i}"), 0), "")
                .unwrap();
            let ip = fake.pod_sandbox_status(&id, false).unwrap();
            let ip = ip.get_status().get_network().ip.clone();
            assert!(ip.starts_with("10.88."), "{ip}");
            assert!(!ip.ends_with(".0") && !ip.ends_with(".255"), "{ip}");
            assert!(ips.insert(ip));
            first.get_or_insert(id);
        }
        let first = first.unwrap();
        fake.stop_pod_sandbox(&first).unwrap();
        let status = fake.pod_sandbox_status(&first, false).unwrap();
        assert_eq!(status.get_status().get_network().ip, "");
    }

    #[test]
    fn call_log_and_clear() {
        let fake = FakeRuntime::new();
        fake.version("v1").unwrap();
        fake.status(false).unwrap();
        fake.list_containers(None).unwrap();
        assert_eq!(
            fake.calls(),
            vec![Call::Version, Call::Status, Call::ListContainers]
        );
        fake.clear_calls();
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn injected_errors_are_one_shot_and_queue_in_order() {
        let fake = FakeRuntime::new();
        fake.inject_error(
            "ListPodSandbox",
            CriError::Unavailable {
                method: "ListPodSandbox",
                message: "first".into(),
            },
        );
        fake.inject_error(
            "ListPodSandbox",
            CriError::from_status(
                "ListPodSandbox",
                RpcCode::Internal,
                "second",
                Duration::ZERO,
            ),
        );
        let e1 = fake.list_pod_sandbox(None).unwrap_err();
        assert!(e1.to_string().ends_with("first"));
        let e2 = fake.list_pod_sandbox(None).unwrap_err();
        assert!(e2.to_string().ends_with("second"));
        assert!(fake.list_pod_sandbox(None).unwrap().is_empty());
        // Other methods are not affected, and the failed calls were logged.
        assert_eq!(fake.calls().len(), 3);
    }

    #[test]
    fn conditions_and_version_are_settable() {
        let fake = FakeRuntime::new();
        fake.set_condition(
            "NetworkReady",
            false,
            "NetworkPluginNotReady",
            "cni not ready",
        );
        fake.set_condition("Custom", true, "", "");
        let status = fake.status(true).unwrap();
        let conditions = status.get_status().get_conditions();
        assert_eq!(conditions.len(), 3);
        assert!(conditions[0].status);
        assert!(!conditions[1].status);
        assert_eq!(conditions[1].reason, "NetworkPluginNotReady");
        assert_eq!(conditions[2].field_type, "Custom");
        fake.set_version("v1alpha2");
        assert_eq!(fake.version("v1").unwrap().runtime_api_version, "v1alpha2");
    }

    #[test]
    fn exit_container_sets_reason() {
        let fake = FakeRuntime::new();
        fake.preload_image("busybox");
        let sb = fake
            .run_pod_sandbox(&sandbox_config("p", "u", 0), "")
            .unwrap();
        let cfg = sandbox_config("p", "u", 0);
        let ok = fake
            .create_container(&sb, &container_config("ok", "busybox"), &cfg)
            .unwrap();
        let bad = fake
            .create_container(&sb, &container_config("bad", "busybox"), &cfg)
            .unwrap();
        let oom = fake
            .create_container(&sb, &container_config("oom", "busybox"), &cfg)
            .unwrap();
        assert!(!fake.exit_container(&ok, 0), "not running yet");
        for id in [&ok, &bad, &oom] {
            fake.start_container(id).unwrap();
        }
        assert!(fake.exit_container(&ok, 0));
        assert!(fake.exit_container(&bad, 2));
        assert!(fake.exit_container_with_reason(&oom, 137, "OOMKilled"));
        assert!(!fake.exit_container(&ok, 0), "already exited");
        assert!(!fake.exit_container("nope", 0));
        for (id, code, reason) in [
            (&ok, 0, "Completed"),
            (&bad, 2, "Error"),
            (&oom, 137, "OOMKilled"),
        ] {
            let s = fake.container_status(id, false).unwrap();
            let s = s.get_status();
            assert_eq!(s.state, ContainerState::CONTAINER_EXITED);
            assert_eq!((s.exit_code, s.reason.as_str()), (code, reason));
            assert!(s.finished_at >= s.started_at && s.started_at > s.created_at);
        }
    }

    #[test]
    fn call_delay_applies() {
        let fake = FakeRuntime::new();
        fake.set_call_delay(Duration::from_millis(20));
        let start = std::time::Instant::now();
        fake.version("v1").unwrap();
        assert!(start.elapsed() >= Duration::from_millis(20));
        fake.set_call_delay(Duration::ZERO);
    }

    #[test]
    fn many_pods_from_many_threads() {
        let fake = Arc::new(FakeRuntime::without_call_log());
        fake.preload_image("registry.k8s.io/pause:3.6");
        let workers: Vec<_> = (0..8)
            .map(|t| {
                let fake = Arc::clone(&fake);
                std::thread::spawn(move || {
                    for i in 0..250 {
                        let cfg = sandbox_config("p", &format!("{t}-{i}"), 0);
                        let sb = fake.run_pod_sandbox(&cfg, "").unwrap();
                        let c = container_config("app", "registry.k8s.io/pause:3.6");
                        let id = fake.create_container(&sb, &c, &cfg).unwrap();
                        fake.start_container(&id).unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(fake.list_pod_sandbox(None).unwrap().len(), 2000);
        let containers = fake.list_containers(None).unwrap();
        assert_eq!(containers.len(), 2000);
        let ids: HashSet<_> = containers.iter().map(|c| c.id.clone()).collect();
        assert_eq!(ids.len(), 2000);
    }
}
