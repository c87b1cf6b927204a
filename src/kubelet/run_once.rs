//! Run-once mode (`--runonce`, upstream `RunOnce`): take the pods of the sources' first
//! update, start them, wait (bounded) until each runs or fails, report one line per pod.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use k8s_openapi::api::core::v1::PodStatus;

use crate::config::update::{PodOperation, PodUpdate};
use crate::types::{pod_key, uid_of};

use super::{Kubelet, KubeletError, SyncHandler};

/// How long to wait for the sources' first update.
const FIRST_UPDATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long pods get to start before they count as failed.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Waiting reasons that mean a container will not start without outside help.
const FATAL_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// One pod's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRunResult {
    /// `namespace/name`.
    pub pod: String,
    /// Whether it started (running, or completed successfully).
    pub started: bool,
    /// What happened, for the report line.
    pub detail: String,
}

/// The results of a run-once pass.
#[derive(Debug, Clone, Default)]
pub struct RunOnceOutcome {
    /// One entry per pod, in the order they were given.
    pub results: Vec<PodRunResult>,
}

impl RunOnceOutcome {
    /// True when every pod started.
    pub fn all_started(&self) -> bool {
        self.results.iter().all(|r| r.started)
    }
}

/// `Some(result)` once a pod's status decides it, `None` while it is still on its way.
fn judge(status: &PodStatus) -> Option<(bool, String)> {
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let containers = status.container_statuses.iter().flatten();
    let inits = status.init_container_statuses.iter().flatten();
    for c in inits.chain(containers.clone()) {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.as_deref().unwrap_or_default();
            if FATAL_REASONS.contains(&reason) {
                let msg = w.message.as_deref().unwrap_or_default();
                return Some((false, format!("container {} {reason}: {msg}", c.name)));
            }
        }
    }
    match phase {
        "Succeeded" => Some((true, "succeeded".into())),
        "Failed" => Some((
            false,
            format!(
                "failed: {}",
                status.reason.as_deref().unwrap_or("a container failed")
            ),
        )),
        "Running" if containers.clone().all(|c| c.ready) => Some((true, "running".into())),
        _ => None,
    }
}

pub(super) fn run_once(
    kubelet: &Arc<Kubelet>,
    updates: &Receiver<PodUpdate>,
) -> Result<RunOnceOutcome, KubeletError> {
    // Collect what the sources deliver until each has sent its first full set.
    let deadline = Instant::now() + FIRST_UPDATE_TIMEOUT;
    let mut pods = Vec::new();
    loop {
        match updates.recv_timeout(Duration::from_millis(100)) {
            Ok(u) if matches!(u.op, PodOperation::Add | PodOperation::Update) => {
                pods.extend(u.pods)
            }
            Ok(_) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if kubelet.sources_ready.all_ready() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(KubeletError::NoPods(FIRST_UPDATE_TIMEOUT));
                }
            }
        }
    }
    log::info!("run once: {} pods", pods.len());
    kubelet.handle_pod_additions(pods.clone());

    let deadline = Instant::now() + START_TIMEOUT;
    let mut results: Vec<Option<PodRunResult>> = vec![None; pods.len()];
    while results.iter().any(Option::is_none) && Instant::now() < deadline {
        kubelet.pod_workers.wait_idle(Duration::from_secs(2));
        for (pod, slot) in pods.iter().zip(results.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            if let Some((started, detail)) = kubelet
                .status_manager
                .get(&uid_of(pod))
                .as_deref()
                .and_then(judge)
            {
                *slot = Some(PodRunResult {
                    pod: pod_key(pod),
                    started,
                    detail,
                });
            }
        }
        if results.iter().any(Option::is_none) {
            std::thread::sleep(Duration::from_millis(500));
            kubelet.handle_pod_syncs(pods.clone());
        }
    }
    kubelet.pod_workers.stop();
    kubelet.waiters.stop(Duration::from_secs(2));
    let results = pods
        .iter()
        .zip(results)
        .map(|(pod, r)| {
            r.unwrap_or_else(|| PodRunResult {
                pod: pod_key(pod),
                started: false,
                detail: format!("did not start within {START_TIMEOUT:?}"),
            })
        })
        .collect();
    Ok(RunOnceOutcome { results })
}
