//! The sync loop's handlers (upstream `HandlePodAdditions` and the rest): admitting new pods,
//! handing updates, removals and resyncs to the pod workers, and the periodic clean-up of
//! pods no source wants any more.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{admission, Kubelet, SyncHandler};
use crate::events::EventType;
use crate::kuberuntime::RunningPod;
use crate::pod_manager::PodManager;
use crate::pod_workers::{UpdatePodOptions, UpdateType};
use crate::status::sync::is_mirror_pod;
use crate::types::{pod_key, uid_of};

/// Whether the API says the pod finished (`Succeeded` or `Failed`): it never runs again.
fn is_terminal_in_api(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// What is left of a deleted pod's grace period: its `deletionTimestamp` is when the grace
/// period ends, so the time until then, at most `deletionGracePeriodSeconds`. `None` for a
/// pod not being deleted.
fn deletion_grace_left(pod: &Pod, now: std::time::SystemTime) -> Option<i64> {
    let deadline = pod.metadata.deletion_timestamp.as_ref()?.0.as_second();
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let left = deadline.saturating_sub(now).max(0);
    Some(match pod.metadata.deletion_grace_period_seconds {
        Some(period) => left.min(period.max(0)),
        None => left,
    })
}

/// How long the Node's labels read for admission are reused.
const NODE_LABELS_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl Kubelet {
    /// Pods with `hostUsers: false` want their own user namespace. rkubelet does not map
    /// user namespaces yet, so such a pod is rejected with a reason that says whether the
    /// runtime could have run it; it never runs in the host's user namespace.
    pub(super) fn admit_user_namespace(&self, pod: &Pod) -> Result<(), admission::Rejection> {
        let wants_own = pod.spec.as_ref().and_then(|s| s.host_users) == Some(false);
        if !wants_own {
            return Ok(());
        }
        let runtime_supports = self
            .runtime_manager
            .runtime()
            .status(false)
            .map(|status| {
                status
                    .get_runtime_handlers()
                    .iter()
                    .any(|h| h.get_features().get_user_namespaces())
            })
            .unwrap_or(false);
        let why = if runtime_supports {
            "user namespace ID mappings are not implemented by this kubelet"
        } else {
            "the container runtime does not support user namespaces"
        };
        Err(admission::Rejection {
            reason: "UserNamespacesNotSupported".into(),
            message: format!("pod asks for its own user namespace (hostUsers: false): {why}"),
        })
    }

    /// Stops a pod its source still has (deleted with a grace period, or finished), with
    /// its deletion grace period (`deletionGracePeriodSeconds`, as upstream); `first_seen`
    /// (a restarted kubelet finds the deletion under way): with what is left of it.
    pub(super) fn kill(&self, pod: &Arc<Pod>, first_seen: bool) {
        let grace = if first_seen {
            deletion_grace_left(pod, self.clock.wall())
        } else {
            pod.metadata.deletion_grace_period_seconds
        };
        self.pod_workers.update_pod(UpdatePodOptions {
            update_type: UpdateType::Kill,
            grace_period_override: grace,
            pod: Arc::clone(pod),
            removed: false,
        });
    }

    /// Sends work for a pod to the pod workers (upstream `dispatchWork`).
    pub(super) fn dispatch_work(&self, pod: &Arc<Pod>, update_type: UpdateType) {
        self.pod_workers.update_pod(UpdatePodOptions {
            update_type,
            pod: Arc::clone(pod),
            grace_period_override: None,
            removed: false,
        });
    }

    /// Records mirror pods and syncs their static pods; returns the pods that are not mirrors.
    pub(super) fn split_mirror_pods(&self, pods: Vec<Arc<Pod>>, removed: bool) -> Vec<Arc<Pod>> {
        let (mirrors, regular): (Vec<_>, Vec<_>) = pods.into_iter().partition(|p| is_mirror_pod(p));
        for mirror in mirrors {
            if removed {
                self.mirrors.remove(&mirror);
            } else {
                self.mirrors.set(&mirror);
            }
            // The static pod's worker creates a new mirror if this one is gone or going.
            let key = pod_key(&mirror);
            let static_pod = self
                .pods()
                .pods()
                .find(|p| pod_key(p) == key && !is_mirror_pod(p))
                .cloned();
            if let Some(static_pod) = static_pod {
                self.dispatch_work(&static_pod, UpdateType::Sync);
            }
        }
        regular
    }

    /// Pods admitted earlier that still run or may still start containers.
    pub(super) fn active_pods<'a>(&self, pods: &'a PodManager) -> Vec<&'a Pod> {
        pods.pods()
            .filter(|p| {
                self.pod_workers
                    .state(&uid_of(p))
                    .is_none_or(|s| s.can_start_containers())
            })
            .map(|p| p.as_ref())
            .collect()
    }

    /// The node's labels for admission: from the API's Node when there is one (labels set by
    /// others count), else the ones rkubelet registers with.
    pub(super) fn node_labels(&self) -> std::collections::BTreeMap<String, String> {
        use crate::nodestatus::registration::initial_node;
        let now = self.clock.now();
        if let Some((read, labels)) = self.node_labels.lock().ok().and_then(|c| c.clone()) {
            if now.saturating_duration_since(read) < NODE_LABELS_TTL {
                return labels;
            }
        }
        let registered = initial_node(&super::node_status::node_registration(&self.config))
            .metadata
            .labels
            .unwrap_or_default();
        let labels = match self
            .api
            .as_ref()
            .map(|api| api.get_node(&self.config.node_name))
        {
            Some(Ok(node)) => node.metadata.labels.unwrap_or(registered),
            _ => registered,
        };
        if let Ok(mut cache) = self.node_labels.lock() {
            *cache = Some((now, labels.clone()));
        }
        labels
    }

    /// The pods that keep their devices: every pod wanted whose containers are not all
    /// stopped (a terminating pod's containers still use theirs; upstream's active pods).
    fn device_holders(&self, pods: &PodManager) -> std::collections::HashSet<String> {
        pods.pods()
            .filter(|p| {
                self.pod_workers.state(&uid_of(p))
                    != Some(crate::pod_workers::PodWorkerState::Terminated)
            })
            .map(|p| uid_of(p).0)
            .collect()
    }

    /// Gives the pod's containers the plugin devices they ask for (upstream's resource
    /// allocation admit handler), after giving back those of pods whose containers have all
    /// stopped. Called without the pod manager's lock: it waits on the plugin.
    fn allocate_devices(&self, pod: &Pod) -> Result<(), admission::Rejection> {
        let Some(devices) = self.runtime_manager.devices() else {
            return Ok(());
        };
        let finished: std::collections::HashSet<String> = self
            .pod_workers
            .known_pods()
            .into_iter()
            .filter(|uid| {
                self.pod_workers.state(uid) == Some(crate::pod_workers::PodWorkerState::Terminated)
            })
            .map(|uid| uid.0)
            .collect();
        devices
            .allocate(pod, &finished)
            .map_err(|message| admission::Rejection {
                reason: "UnexpectedAdmissionError".into(),
                message,
            })
    }

    /// A stand-in pod object for a runtime pod no source knows, so the workers can stop it.
    pub(super) fn orphan_pod(&self, running: &RunningPod) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(running.name.clone()),
                namespace: Some(running.namespace.clone()),
                uid: Some(running.uid.0.clone()),
                ..Default::default()
            },
            ..Default::default()
        })
    }
}

impl SyncHandler for Kubelet {
    fn handle_pod_additions(&self, pods: Vec<Arc<Pod>>) {
        let mut pods = self.split_mirror_pods(pods, false);
        pods.sort_by(|a, b| {
            let ts = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            ts(a).cmp(&ts(b))
        });
        let node_labels = self.node_labels();
        for pod in pods {
            // A pod being deleted, or already finished, when first seen (a restarted kubelet
            // lists it): never started again, only stopped and, when deleted, removed from
            // the API with what is left of its grace period.
            if pod.metadata.deletion_timestamp.is_some() || is_terminal_in_api(&pod) {
                self.pods().add_or_update(&pod);
                log::info!(
                    "pod=\"{}\" uid={} added while {}: terminating it",
                    pod_key(&pod),
                    uid_of(&pod),
                    if pod.metadata.deletion_timestamp.is_some() {
                        "being deleted"
                    } else {
                        "finished"
                    }
                );
                self.kill(&pod, true);
                continue;
            }
            // Pressure first, as upstream's admit handlers run the eviction manager's first.
            // The pod manager is locked only to read the admitted pods: the runtime and
            // device plugins are asked without it.
            let verdict = self
                .eviction
                .admit(&pod)
                .and_then(|()| self.sysctls.admit(&pod))
                .and_then(|()| self.admit_user_namespace(&pod))
                .and_then(|()| {
                    let manager = self.pods();
                    let active = self.active_pods(&manager);
                    admission::admit(
                        &pod,
                        &active,
                        &self.allocatable,
                        &node_labels,
                        &self.config.node_name,
                    )
                })
                .and_then(|()| self.allocate_devices(&pod));
            if let Err(rejection) = verdict {
                log::warn!(
                    "pod=\"{}\" uid={} rejected: {}: {}",
                    pod_key(&pod),
                    uid_of(&pod),
                    rejection.reason,
                    rejection.message
                );
                self.recorder.pod_event(
                    &pod,
                    EventType::Warning,
                    &rejection.reason,
                    rejection.message.clone(),
                );
                self.rejected
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(uid_of(&pod));
                self.status_manager.set_pod_status(
                    &pod,
                    k8s_openapi::api::core::v1::PodStatus {
                        phase: Some("Failed".into()),
                        reason: Some(rejection.reason),
                        message: Some(format!("Pod was rejected: {}", rejection.message)),
                        qos_class: Some(crate::resources::qos_class(&pod).into()),
                        ..Default::default()
                    },
                );
                continue;
            }
            self.pods().add_or_update(&pod);
            log::info!("pod=\"{}\" uid={} added", pod_key(&pod), uid_of(&pod));
            self.dispatch_work(&pod, UpdateType::Create);
        }
    }

    fn handle_pod_updates(&self, pods: Vec<Arc<Pod>>) {
        for pod in self.split_mirror_pods(pods, false) {
            self.pods().add_or_update(&pod);
            if pod.metadata.deletion_timestamp.is_some() {
                self.kill(&pod, false);
            } else {
                log::info!("pod=\"{}\" uid={} updated", pod_key(&pod), uid_of(&pod));
                self.dispatch_work(&pod, UpdateType::Update);
            }
        }
    }

    fn handle_pod_removes(&self, pods: Vec<Arc<Pod>>) {
        for pod in self.split_mirror_pods(pods, true) {
            self.pods().remove(&pod);
            self.rejected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&uid_of(&pod));
            log::info!(
                "pod=\"{}\" uid={} removed from its source",
                pod_key(&pod),
                uid_of(&pod)
            );
            // A forced deletion's last form says grace 0: the containers go at once.
            self.pod_workers.update_pod(UpdatePodOptions {
                update_type: UpdateType::Kill,
                grace_period_override: pod.metadata.deletion_grace_period_seconds,
                pod,
                removed: true,
            });
        }
    }

    fn handle_pod_reconcile(&self, pods: Vec<Arc<Pod>>) {
        let pods = self.split_mirror_pods(pods, false);
        let mut manager = self.pods();
        for pod in &pods {
            manager.add_or_update(pod);
        }
        drop(manager);
        // A readiness gate's condition changed: Ready is recomputed by a sync.
        for pod in pods
            .iter()
            .filter(|p| crate::status::generate::needs_readiness_reconcile(p))
        {
            self.dispatch_work(pod, UpdateType::Sync);
        }
    }

    fn handle_pod_syncs(&self, pods: Vec<Arc<Pod>>) {
        for pod in pods {
            self.dispatch_work(&pod, UpdateType::Sync);
        }
    }

    fn handle_pod_cleanups(&self) {
        let desired = self.pods().uids();
        let forgotten = self.pod_workers.sync_known_pods(&desired);
        let now = self.clock.now();
        if !forgotten.is_empty() {
            let mut just = self
                .just_forgotten
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            just.extend(forgotten.iter().map(|uid| (uid.clone(), now)));
        }
        for uid in forgotten {
            log::debug!("uid={uid} forgotten by the pod workers");
            // Terminated and added again under the same UID (a static pod's manifest taken
            // away and put back): it starts anew, as upstream's housekeeping restarts it.
            let again = self.pods().get(&uid).cloned();
            if let Some(pod) = again {
                log::info!(
                    "pod=\"{}\" uid={uid} wanted again after it terminated: starting it",
                    pod_key(&pod)
                );
                self.dispatch_work(&pod, UpdateType::Create);
            }
        }
        // Until every source has delivered its first full set, a pod missing from the desired
        // set may simply not have been read yet: never stop anything before that.
        if !self.sources_ready.all_ready() {
            return;
        }
        let known = self.pod_workers.known_pods();
        // What pods already gone left behind goes: a step that was still ending on a waiter
        // when its pod was stopped and removed may have recorded a status, set up probes or
        // cached a runtime status after the removal (upstream's RemoveOrphanedStatuses and
        // the probe manager's CleanupPods).
        let wanted: std::collections::HashSet<crate::types::PodUid> =
            desired.iter().chain(known.iter()).cloned().collect();
        let statuses_kept: std::collections::HashSet<crate::types::PodUid> = {
            let rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
            wanted.iter().chain(rejected.iter()).cloned().collect()
        };
        for uid in self.status_manager.retain_pods(&statuses_kept) {
            log::debug!("uid={uid} status of a pod no longer known forgotten");
        }
        self.pod_sync.retain_pods(&wanted);
        self.probes.retain_pods(wanted);
        let (listed_at, running_pods) = self
            .pleg
            .snapshot()
            .map_or((now, Default::default()), |l| (l.began, l.pods));
        // A pod whose removal ended after the runtime listing began is still in it: it is
        // no orphan (killing it again would cost a worker pass and a status write for an
        // object already gone). A listing begun later shows whether anything is left.
        let just_forgotten: std::collections::HashSet<crate::types::PodUid> = {
            let mut just = self
                .just_forgotten
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            just.retain(|_, at| *at >= listed_at);
            just.keys().cloned().collect()
        };
        // A pod cgroup stays while a source or a pod worker has the pod, or while the
        // runtime shows any of it running (upstream's possibly-running pods). A pod the
        // runtime lists only as exited containers and a stopped sandbox loses its cgroup,
        // and whatever process is still in it: the runtime no longer tracks that process,
        // and its leftover task would keep the sandbox from ever being removed.
        let possibly_running: std::collections::HashSet<&crate::types::PodUid> = desired
            .iter()
            .chain(known.iter())
            .chain(
                running_pods
                    .iter()
                    .filter(|p| p.possibly_running())
                    .map(|p| &p.uid),
            )
            .collect();
        // Pod directories stay for every pod the runtime still has at all.
        let keep: std::collections::HashSet<crate::types::PodUid> = possibly_running
            .iter()
            .copied()
            .chain(running_pods.iter().map(|p| &p.uid))
            .cloned()
            .collect();
        // Devices stay with every pod that may still start containers.
        if let Some(devices) = self.runtime_manager.devices() {
            let active = self.device_holders(&self.pods());
            devices.retain_pods(&active);
        }
        for uid in self.runtime_manager.volumes().cleanup_orphans(&keep) {
            log::info!("uid={uid} removed the directory of a pod that no longer exists");
        }
        if let Some(cgroups) = self.runtime_manager.cgroups() {
            for uid in cgroups.pods_with_cgroups() {
                if possibly_running.contains(&uid) {
                    continue;
                }
                match cgroups.remove_pod_cgroup(&uid) {
                    Ok(()) => {
                        log::info!("uid={uid} removed the cgroup of a pod that no longer exists")
                    }
                    Err(e) => log::debug!("uid={uid} leftover pod cgroup stays for now: {e}"),
                }
            }
        }
        for running in running_pods.iter() {
            if desired.contains(&running.uid) || known.contains(&running.uid) {
                continue;
            }
            if just_forgotten.contains(&running.uid) {
                log::debug!(
                    "pod=\"{}/{}\" uid={} removed after the runtime was last listed; looked at again with the next listing",
                    running.namespace,
                    running.name,
                    running.uid
                );
                continue;
            }
            log::info!(
                "pod=\"{}/{}\" uid={} is not wanted by any source, stopping and removing it",
                running.namespace,
                running.name,
                running.uid
            );
            self.pod_workers.update_pod(UpdatePodOptions {
                update_type: UpdateType::Kill,
                pod: self.orphan_pod(running),
                grace_period_override: None,
                removed: true,
            });
        }
    }
}
