//! What the runtime says about pods: the per-pod status a sync starts from
//! ([`RuntimePodStatus`], upstream `kubecontainer.PodStatus`) and the cheap all-pods listing
//! PLEG and housekeeping use ([`RunningPod`], upstream `kubecontainer.Pod`), with the CRI
//! calls that read them ([`RuntimeManager::get_pod_status`],
//! [`RuntimeManager::list_running_pods`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::cri::{api, CriError};
use crate::types::{ContainerId, PodUid};

use super::labels::{self, CONTAINER_NAME_LABEL, POD_UID_LABEL};
use super::RuntimeManager;

/// The labels a relist reads: who the pod is ([`labels::labeled_pod`]) and which container.
const RELIST_LABELS: &[&str] = &[
    labels::POD_UID_LABEL,
    labels::POD_NAME_LABEL,
    labels::POD_NAMESPACE_LABEL,
    CONTAINER_NAME_LABEL,
];

/// A container's state, as CRI reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    /// Created but never started.
    Created,
    /// Running now.
    Running,
    /// Exited (see the exit code).
    Exited,
    /// The runtime does not know.
    Unknown,
}

impl ContainerState {
    /// Maps the CRI enum.
    pub fn from_cri(s: api::ContainerState) -> Self {
        match s {
            api::ContainerState::CONTAINER_CREATED => ContainerState::Created,
            api::ContainerState::CONTAINER_RUNNING => ContainerState::Running,
            api::ContainerState::CONTAINER_EXITED => ContainerState::Exited,
            api::ContainerState::CONTAINER_UNKNOWN => ContainerState::Unknown,
        }
    }
}

/// One sandbox of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxStatus {
    /// Runtime id.
    pub id: String,
    /// `SANDBOX_READY`.
    pub ready: bool,
    /// Sandbox attempt from its metadata (grows each time the sandbox is recreated).
    pub attempt: u32,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
    /// Pod IP, when the runtime reported one.
    pub ip: Option<String>,
    /// Whether the sandbox uses the host network namespace.
    pub host_network: bool,
}

/// One container of a pod (any attempt).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStatus {
    /// Runtime id.
    pub id: ContainerId,
    /// Container name in the pod spec.
    pub name: String,
    /// Current state.
    pub state: ContainerState,
    /// Restart count recorded when this container was created.
    pub restart_count: u32,
    /// Spec hash recorded when this container was created.
    pub hash: Option<u32>,
    /// Image as requested.
    pub image: String,
    /// Image reference the runtime resolved (digest or id).
    pub image_ref: String,
    /// Creation, start and finish times, ns since the epoch (0 = not yet).
    pub created_at: i64,
    /// When the process started.
    pub started_at: i64,
    /// When the process exited.
    pub finished_at: i64,
    /// Exit code once exited.
    pub exit_code: i32,
    /// The runtime's reason (`Completed`, `Error`, `OOMKilled`).
    pub reason: String,
    /// The runtime's message.
    pub message: String,
    /// The sandbox the container belongs to.
    pub sandbox_id: String,
}

/// Everything the runtime knows about one pod; containers and sandboxes newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimePodStatus {
    /// Pod UID.
    pub uid: PodUid,
    /// Sandboxes, newest first.
    pub sandboxes: Vec<SandboxStatus>,
    /// Containers of every attempt, newest first.
    pub containers: Vec<ContainerStatus>,
}

impl RuntimePodStatus {
    /// The newest container with this name.
    pub fn latest(&self, name: &str) -> Option<&ContainerStatus> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The newest sandbox.
    pub fn latest_sandbox(&self) -> Option<&SandboxStatus> {
        self.sandboxes.first()
    }

    /// The pod IP of the newest sandbox.
    pub fn ip(&self) -> Option<&str> {
        self.latest_sandbox().and_then(|s| s.ip.as_deref())
    }
}

/// A container as the cheap list call shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainer {
    /// Runtime id.
    pub id: ContainerId,
    /// Container name in the pod spec.
    pub name: String,
    /// Current state.
    pub state: ContainerState,
    /// Sandbox id.
    pub sandbox_id: String,
}

/// A pod as the runtime's list calls show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningPod {
    /// Pod UID.
    pub uid: PodUid,
    /// Pod name from the labels.
    pub name: String,
    /// Pod namespace from the labels.
    pub namespace: String,
    /// `(sandbox id, ready)`.
    pub sandboxes: Vec<(String, bool)>,
    /// Containers of every attempt.
    pub containers: Vec<RunningContainer>,
}

impl RunningPod {
    /// Whether any of the pod may still be running: a ready sandbox, or a container not
    /// known to have exited.
    pub fn possibly_running(&self) -> bool {
        self.sandboxes.iter().any(|(_, ready)| *ready)
            || self
                .containers
                .iter()
                .any(|c| c.state != ContainerState::Exited)
    }
}

/// Parses a decimal annotation.
fn annotation_u32(annotations: &HashMap<String, String>, key: &str) -> u32 {
    annotations
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Builds a container status from the CRI status response.
pub fn container_status_from_cri(s: &api::ContainerStatus) -> ContainerStatus {
    let annotations = s.get_annotations();
    ContainerStatus {
        id: ContainerId(s.get_id().to_string()),
        name: s
            .get_labels()
            .get(CONTAINER_NAME_LABEL)
            .cloned()
            .unwrap_or_else(|| s.get_metadata().get_name().to_string()),
        state: ContainerState::from_cri(s.get_state()),
        restart_count: annotation_u32(annotations, labels::CONTAINER_RESTART_COUNT_ANNOTATION),
        hash: annotations
            .get(labels::CONTAINER_HASH_ANNOTATION)
            .and_then(|h| u32::from_str_radix(h, 16).ok()),
        image: s.get_image().get_image().to_string(),
        image_ref: s.get_image_ref().to_string(),
        created_at: s.get_created_at(),
        started_at: s.get_started_at(),
        finished_at: s.get_finished_at(),
        exit_code: s.get_exit_code(),
        reason: s.get_reason().to_string(),
        message: s.get_message().to_string(),
        sandbox_id: String::new(),
    }
}

/// Longest termination message read from the container's file (upstream 4 KiB).
pub const MAX_TERMINATION_MESSAGE_BYTES: u64 = 4096;
/// Lines and bytes of log taken by `FallbackToLogsOnError` (upstream 80 lines, 2 KiB).
const FALLBACK_LOG_LINES: usize = 80;
const FALLBACK_LOG_BYTES: u64 = 2048;

/// The `terminated.message` of an exited container (upstream `getTerminationMessage`): the
/// tail of the file mounted at its `terminationMessagePath`; with
/// `FallbackToLogsOnError` and a non-zero exit code, the tail of its log when the file is
/// empty.
pub fn termination_message(s: &api::ContainerStatus) -> String {
    let annotations = s.get_annotations();
    let path = annotations
        .get(labels::CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION)
        .map(String::as_str)
        .unwrap_or_default();
    let fallback = annotations
        .get(labels::CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION)
        .is_some_and(|p| p == "FallbackToLogsOnError");
    let mut message = String::new();
    if !path.is_empty() {
        if let Some(m) = s
            .get_mounts()
            .iter()
            .find(|m| m.get_container_path() == path)
        {
            match read_tail(
                std::path::Path::new(m.get_host_path()),
                MAX_TERMINATION_MESSAGE_BYTES,
            ) {
                Ok(bytes) => message = String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return format!(
                        "Error on reading termination log {}: {e}",
                        m.get_host_path()
                    )
                }
            }
        }
    }
    if message.is_empty() && fallback && s.get_exit_code() != 0 && !s.get_log_path().is_empty() {
        if let Ok(bytes) = read_tail(std::path::Path::new(s.get_log_path()), 64 * 1024) {
            message = log_tail(&bytes, FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES);
        }
    }
    message
}

/// The last `max` bytes of a file.
fn read_tail(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
    let mut out = Vec::new();
    f.take(max).read_to_end(&mut out)?;
    Ok(out)
}

/// The content of the last `lines` CRI log lines (`<time> <stream> <P|F> <content>`), at most
/// `max_bytes` from the end; partial (`P`) lines join the next one.
fn log_tail(raw: &[u8], lines: usize, max_bytes: u64) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_, _, tag, content) = (parts.next(), parts.next(), parts.next(), parts.next());
        let Some(content) = content else { continue };
        out.push_str(content);
        if tag != Some("P") {
            out.push('\n');
        }
    }
    let kept: Vec<&str> = out.lines().collect();
    let start = kept.len().saturating_sub(lines);
    let mut tail = kept[start..].join("\n");
    if out.ends_with('\n') && !tail.is_empty() {
        tail.push('\n');
    }
    let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    if tail.len() > max {
        let mut cut = tail.len() - max;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_string();
    }
    tail
}

/// The pod entry for a labeled object, created empty on first sight.
fn entry_for(pods: &mut BTreeMap<PodUid, RunningPod>, id: labels::LabeledPod) -> &mut RunningPod {
    pods.entry(id.uid.clone()).or_insert_with(|| RunningPod {
        uid: id.uid,
        name: id.name,
        namespace: id.namespace,
        sandboxes: Vec::new(),
        containers: Vec::new(),
    })
}

/// Groups listed sandboxes and containers by the pod labels on them; objects without kubelet
/// labels are not ours and are left out.
pub fn group_running_pods(
    sandboxes: &[api::PodSandbox],
    containers: &[api::Container],
) -> Vec<RunningPod> {
    let mut pods: BTreeMap<PodUid, RunningPod> = BTreeMap::new();
    for s in sandboxes {
        let Some(id) = labels::labeled_pod(s.get_labels()) else {
            continue;
        };
        let pod = entry_for(&mut pods, id);
        let ready = s.get_state() == api::PodSandboxState::SANDBOX_READY;
        pod.sandboxes.push((s.get_id().to_string(), ready));
    }
    for c in containers {
        let Some(id) = labels::labeled_pod(c.get_labels()) else {
            continue;
        };
        let pod = entry_for(&mut pods, id);
        pod.containers.push(RunningContainer {
            id: ContainerId(c.get_id().to_string()),
            name: c
                .get_labels()
                .get(CONTAINER_NAME_LABEL)
                .cloned()
                .unwrap_or_else(|| c.get_metadata().get_name().to_string()),
            state: ContainerState::from_cri(c.get_state()),
            sandbox_id: c.get_pod_sandbox_id().to_string(),
        });
    }
    pods.into_values().collect()
}

/// The pods of a relist and the listings they were grouped from.
pub(super) struct LastPods {
    sandboxes: Arc<Vec<api::PodSandbox>>,
    containers: Arc<Vec<api::Container>>,
    pods: Arc<Vec<RunningPod>>,
}

impl RuntimeManager {
    /// Every kubelet-made pod the runtime has, from two list calls decoded briefly (only
    /// the labels in [`RELIST_LABELS`]). While the runtime hands out the very listings of
    /// the last call (nothing was made, removed, started or stopped), the very pods of the
    /// last call, the same `Arc`, so a relist of an unchanged node compares nothing.
    pub fn list_running_pods(&self) -> Result<Arc<Vec<RunningPod>>, CriError> {
        let sandboxes = self.runtime.list_pod_sandbox_brief(RELIST_LABELS)?;
        let containers = self.runtime.list_containers_brief(RELIST_LABELS)?;
        let mut last = self.last_pods.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = last.as_ref() {
            if Arc::ptr_eq(&l.sandboxes, &sandboxes) && Arc::ptr_eq(&l.containers, &containers) {
                return Ok(Arc::clone(&l.pods));
            }
        }
        let pods = Arc::new(group_running_pods(&sandboxes, &containers));
        *last = Some(LastPods {
            sandboxes,
            containers,
            pods: Arc::clone(&pods),
        });
        Ok(pods)
    }

    /// Full status of one pod: its sandboxes (with IP) and every container's CRI status.
    pub fn get_pod_status(&self, uid: &PodUid) -> Result<RuntimePodStatus, CriError> {
        let mut sandbox_filter = api::PodSandboxFilter::new();
        sandbox_filter
            .mut_label_selector()
            .insert(POD_UID_LABEL.into(), uid.0.clone());
        let mut sandboxes = self.runtime.list_pod_sandbox(Some(&sandbox_filter))?;
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.get_created_at()));
        let mut sandbox_statuses = Vec::with_capacity(sandboxes.len());
        for (i, s) in sandboxes.iter().enumerate() {
            let ready = s.get_state() == api::PodSandboxState::SANDBOX_READY;
            let mut status = SandboxStatus {
                id: s.get_id().to_string(),
                ready,
                attempt: s.get_metadata().get_attempt(),
                created_at: s.get_created_at(),
                ip: None,
                host_network: false,
            };
            // Only the newest sandbox's network matters; older ones are being replaced.
            if i == 0 {
                match self.runtime.pod_sandbox_status(s.get_id(), false) {
                    Ok(resp) => self.read_network(resp.get_status(), &mut status),
                    Err(e) if e.is_not_found() => status.ready = false,
                    Err(e) => return Err(e),
                }
            }
            sandbox_statuses.push(status);
        }

        let mut container_filter = api::ContainerFilter::new();
        container_filter
            .mut_label_selector()
            .insert(POD_UID_LABEL.into(), uid.0.clone());
        let containers = self.runtime.list_containers(Some(&container_filter))?;
        let mut statuses = Vec::with_capacity(containers.len());
        for c in &containers {
            match self.runtime.container_status(c.get_id(), false) {
                Ok(resp) => statuses.push(self.container_status(&resp, c.get_pod_sandbox_id())),
                // Removed between the list and the status call.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        statuses.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        Ok(RuntimePodStatus {
            uid: uid.clone(),
            sandboxes: sandbox_statuses,
            containers: statuses,
        })
    }

    /// The status of a pod that had nothing in the runtime before a sync that made its
    /// sandbox (`sandbox`, as read for its IP) and started `started`: what
    /// [`RuntimeManager::get_pod_status`] would read, without listing what the sync just
    /// made. Each started container is read once, as the listing would. Falls back to the
    /// full read when one of them is gone already.
    pub fn new_pod_status(
        &self,
        uid: &PodUid,
        sandbox: &api::PodSandboxStatus,
        started: &[String],
    ) -> Result<RuntimePodStatus, CriError> {
        let mut sandbox_status = SandboxStatus {
            id: sandbox.get_id().to_string(),
            ready: sandbox.get_state() == api::PodSandboxState::SANDBOX_READY,
            attempt: sandbox.get_metadata().get_attempt(),
            created_at: sandbox.get_created_at(),
            ip: None,
            host_network: false,
        };
        self.read_network(sandbox, &mut sandbox_status);
        let mut containers = Vec::with_capacity(started.len());
        for id in started {
            match self.runtime.container_status(id, false) {
                Ok(resp) => containers.push(self.container_status(&resp, sandbox.get_id())),
                Err(e) if e.is_not_found() => return self.get_pod_status(uid),
                Err(e) => return Err(e),
            }
        }
        containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        Ok(RuntimePodStatus {
            uid: uid.clone(),
            sandboxes: vec![sandbox_status],
            containers,
        })
    }

    /// The pod IP and network mode of a sandbox, from its `PodSandboxStatus`.
    fn read_network(&self, st: &api::PodSandboxStatus, status: &mut SandboxStatus) {
        let ip = st.get_network().get_ip();
        status.ip = (!ip.is_empty()).then(|| ip.to_string());
        status.host_network =
            st.get_linux().get_namespaces().get_options().get_network() == api::NamespaceMode::NODE;
        // A hostNetwork pod's IP is the node's (probes and hooks go there).
        if status.host_network && status.ip.is_none() {
            status.ip = self.settings.node.host_ips().into_iter().next();
        }
    }

    /// One container's status from its `ContainerStatus` answer.
    fn container_status(
        &self,
        resp: &api::ContainerStatusResponse,
        sandbox_id: &str,
    ) -> ContainerStatus {
        let mut st = container_status_from_cri(resp.get_status());
        st.sandbox_id = sandbox_id.to_string();
        if st.state == ContainerState::Exited && st.message.is_empty() {
            st.message = termination_message(resp.get_status());
        }
        // The runtime marks a start that was cut short (the kubelet died in StartContainer)
        // as exited with StartError. It never ran: like a created one, it is replaced under
        // the same attempt, not restarted.
        if st.state == ContainerState::Exited
            && st.reason == "StartError"
            && st.created_at < self.born_ns
        {
            st.state = ContainerState::Created;
        }
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status put together after a new pod's first sync is what a full read gives,
    /// with one `ContainerStatus` per started container and nothing listed.
    #[test]
    fn a_new_pods_status_after_its_first_sync_is_the_full_read_without_the_lists() {
        use crate::clock::FakeClock;
        use crate::cri::{Call, FakeRuntime, RuntimeService};
        use crate::kuberuntime::RuntimeSettings;
        use crate::volume::VolumeManager;
        use std::sync::Arc;
        let dir = std::env::temp_dir().join(format!("rkubelet-newpod-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rt = Arc::new(FakeRuntime::new());
        rt.set_pod_network("10.88.0.0/16").unwrap();
        let image = "docker.io/library/busybox:local";
        rt.preload_image(image);
        let manager = RuntimeManager::new(
            rt.clone(),
            rt.clone(),
            Arc::new(FakeClock::new()),
            Arc::new(crate::events::LogRecorder),
            RuntimeSettings::for_tests(&dir),
            VolumeManager::new(&dir.join("root")),
            None,
        );
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "team", "uid": "u1"},
            "spec": {"containers": [
                {"name": "app", "image": image, "imagePullPolicy": "IfNotPresent"},
                {"name": "side", "image": image, "imagePullPolicy": "IfNotPresent"}
            ]}
        }))
        .unwrap();
        let uid = PodUid::from("u1");
        let empty = RuntimePodStatus {
            uid: uid.clone(),
            sandboxes: Vec::new(),
            containers: Vec::new(),
        };
        let outcome = manager.sync_pod(&pod, &empty).unwrap();
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        assert_eq!(outcome.started.len(), 2);
        let sandbox = outcome
            .new_sandbox
            .as_ref()
            .expect("the new sandbox, read for its IP");

        rt.clear_calls();
        let mut made = manager
            .new_pod_status(&uid, sandbox, &outcome.started)
            .unwrap();
        let calls = rt.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(
            calls.iter().all(|c| matches!(c, Call::ContainerStatus(_))),
            "{calls:?}"
        );

        let mut read = manager.get_pod_status(&uid).unwrap();
        assert!(
            made.ip().is_some_and(|ip| ip.starts_with("10.88.")),
            "{made:?}"
        );
        assert!(made.sandboxes[0].ready);
        for status in [&mut made, &mut read] {
            status.containers.sort_by(|a, b| a.id.0.cmp(&b.id.0));
        }
        assert_eq!(made, read);

        // A started container gone already: the full read.
        rt.remove_container(&outcome.started[0]).unwrap();
        let after = manager
            .new_pod_status(&uid, sandbox, &outcome.started)
            .unwrap();
        assert_eq!(after.containers.len(), 1);
        assert_eq!(after, manager.get_pod_status(&uid).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pod_may_run_while_a_sandbox_is_ready_or_a_container_has_not_exited() {
        let container = |state| RunningContainer {
            id: ContainerId("c1".into()),
            name: "app".into(),
            state,
            sandbox_id: "s1".into(),
        };
        let mut pod = RunningPod {
            uid: PodUid::from("u1"),
            name: "p".into(),
            namespace: "default".into(),
            sandboxes: vec![("s1".into(), false)],
            containers: vec![container(ContainerState::Exited)],
        };
        assert!(!pod.possibly_running());
        for state in [
            ContainerState::Created,
            ContainerState::Running,
            ContainerState::Unknown,
        ] {
            pod.containers.push(container(state));
            assert!(pod.possibly_running(), "{state:?}");
            pod.containers.pop();
        }
        pod.sandboxes.push(("s2".into(), true));
        assert!(pod.possibly_running());
    }

    #[test]
    fn termination_message_from_the_file_or_the_log_tail() {
        let dir = std::env::temp_dir().join(format!("rkubelet-termmsg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("msg");
        let log = dir.join("0.log");
        std::fs::write(&file, "").unwrap();
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!(
                "2026-11-27T08:00:00.000000000Z stdout F line {i}\n"
            ));
        }
        text.push_str("2026-11-27T08:00:00.000000000Z stderr P part-\n");
        text.push_str("2026-11-27T08:00:00.000000000Z stderr F end\n");
        std::fs::write(&log, text).unwrap();
        let mut s = api::ContainerStatus::new();
        s.mut_annotations().insert(
            labels::CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION.into(),
            "/dev/termination-log".into(),
        );
        s.mut_annotations().insert(
            labels::CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION.into(),
            "FallbackToLogsOnError".into(),
        );
        let mut m = api::Mount::new();
        m.set_container_path("/dev/termination-log".into());
        m.set_host_path(file.to_string_lossy().into_owned());
        s.mut_mounts().push(m);
        s.set_log_path(log.to_string_lossy().into_owned());
        s.set_exit_code(1);
        let msg = termination_message(&s);
        assert!(msg.ends_with("line 99\npart-end\n"), "{msg:?}");
        assert_eq!(msg.lines().count(), 80);
        assert!(msg.starts_with("line 21\n"), "{msg:?}");
        s.set_exit_code(0);
        assert_eq!(termination_message(&s), "", "no fallback on success");
        std::fs::write(&file, "disk full").unwrap();
        s.set_exit_code(1);
        assert_eq!(termination_message(&s), "disk full");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
