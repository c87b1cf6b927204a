//! The eviction manager (upstream `eviction_manager.go`): every monitoring period on
//! thread `eviction`, it measures the node ([`StatsSource`]), works out which thresholds
//! are met and which node conditions follow, evicts pods that broke their local storage
//! limits, and, for the first threshold whose grace period has passed, reclaims node-level
//! resources (dead containers, unused images) and then evicts one pod. After an eviction it
//! waits (up to 30 s) for the pod's containers to stop before looking again, so one pass
//! never evicts more than pressure needs. Admission reads its conditions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use k8s_openapi::api::core::v1::Pod;

use super::decide::{
    conditions_text, eviction_message, is_critical_pod, local_storage_violation, rank,
    thresholds_met, Candidate, PressureState,
};
use super::stats::StatsSource;
use super::threshold::{NodeCondition, Signal, Threshold};
use crate::clock::Clock;
use crate::events::{EventType, Recorder};
use crate::kubelet::admission::Rejection;
use crate::status::Termination;
use crate::types::{pod_key, uid_of};

/// Reason of evicted pods, their events and pods rejected under pressure.
pub const REASON: &str = "Evicted";

/// Grace period of pods evicted for a hard threshold or a local storage limit.
pub const IMMEDIATE_GRACE_PERIOD_SECONDS: i64 = 1;

/// How long the manager waits for an evicted pod's containers to stop (upstream
/// `podCleanupTimeout`), checking every `POD_CLEANUP_POLL`.
const POD_CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
const POD_CLEANUP_POLL: Duration = Duration::from_secs(1);

/// Eviction settings, parsed from the configuration.
#[derive(Debug, Clone)]
pub struct EvictionConfig {
    /// Hard and soft thresholds.
    pub thresholds: Vec<Threshold>,
    /// How long a condition stays after its threshold is no longer met
    /// (`evictionPressureTransitionPeriod`, 5m).
    pub pressure_transition_period: Duration,
    /// Longest grace period a pod evicted for a soft threshold gets
    /// (`evictionMaxPodGracePeriod`, 0: the pod's own).
    pub max_pod_grace_period_seconds: i64,
    /// Evict pods above their ephemeral-storage limits and emptyDirs above their size
    /// limits (`localStorageCapacityIsolation`, true).
    pub local_storage_isolation: bool,
    /// How often the manager looks (upstream's housekeeping interval, 10 s).
    pub monitoring_period: Duration,
}

/// Upstream's `evictionMonitoringPeriod`.
pub const MONITORING_PERIOD: Duration = Duration::from_secs(10);

impl EvictionConfig {
    /// From the effective configuration (defaults applied).
    pub fn from_config(
        raw: &crate::config::kubelet_config::KubeletConfiguration,
    ) -> Result<EvictionConfig, super::threshold::ThresholdError> {
        let thresholds = super::threshold::parse_thresholds(&super::ThresholdSettings {
            hard: raw.eviction_hard.as_ref(),
            soft: raw.eviction_soft.as_ref(),
            soft_grace_period: raw.eviction_soft_grace_period.as_ref(),
            minimum_reclaim: raw.eviction_minimum_reclaim.as_ref(),
            merge_defaults: raw.merge_default_eviction_settings == Some(true),
        })?;
        Ok(EvictionConfig {
            thresholds,
            pressure_transition_period: raw
                .eviction_pressure_transition_period
                .and_then(|d| d.to_std())
                .unwrap_or(Duration::from_secs(300)),
            max_pod_grace_period_seconds: i64::from(raw.eviction_max_pod_grace_period.unwrap_or(0)),
            local_storage_isolation: raw.local_storage_capacity_isolation != Some(false),
            monitoring_period: MONITORING_PERIOD,
        })
    }
}

/// What the manager needs from the kubelet.
pub trait EvictionHost: Send + Sync {
    /// Pods admitted and not terminating (upstream `activePodsFunc`).
    fn active_pods(&self) -> Vec<Arc<Pod>>;
    /// Stops `pod` with `grace_seconds`, its status becoming `termination`.
    fn evict_pod(&self, pod: &Arc<Pod>, grace_seconds: i64, termination: Termination);
    /// Whether an evicted pod's containers have all stopped.
    fn pod_cleaned_up(&self, pod: &Pod) -> bool;
    /// Removes the dead containers of pods that will not run them again.
    fn delete_unused_containers(&self) -> Result<(), String>;
    /// Removes images no container uses; returns the bytes freed.
    fn delete_unused_images(&self) -> Result<u64, String>;
}

/// The conditions the manager reports, shared with node status and admission.
#[derive(Debug, Default)]
pub struct NodePressure {
    current: RwLock<BTreeSet<NodeCondition>>,
    /// Woken when the conditions change, so node status reports them at once.
    changed: Mutex<Option<Sender<()>>>,
}

impl NodePressure {
    /// The conditions now.
    pub fn conditions(&self) -> BTreeSet<NodeCondition> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether `condition` holds now.
    pub fn has(&self, condition: NodeCondition) -> bool {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&condition)
    }

    /// Sends on `tx` (without blocking) whenever the conditions change.
    pub fn notify_changes(&self, tx: Sender<()>) {
        *self.changed.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
    }

    fn set(&self, conditions: BTreeSet<NodeCondition>) -> bool {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if *current == conditions {
            return false;
        }
        *current = conditions;
        drop(current);
        if let Some(tx) = self
            .changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            let _ = tx.try_send(());
        }
        true
    }
}

/// The manager.
pub struct Manager {
    config: EvictionConfig,
    /// For node events.
    node_name: String,
    clock: Arc<dyn Clock>,
    stats: Arc<dyn StatsSource>,
    recorder: Arc<dyn Recorder>,
    pressure: Arc<NodePressure>,
    /// Owned by the `eviction` thread; a mutex only so `synchronize` takes `&self`.
    state: Mutex<PressureState>,
}

/// What to evict a pod for.
struct Verdict {
    grace_seconds: i64,
    message: String,
    annotations: BTreeMap<String, String>,
    disruption: bool,
}

impl Manager {
    /// A manager reporting through `pressure`.
    pub fn new(
        config: EvictionConfig,
        node_name: &str,
        clock: Arc<dyn Clock>,
        stats: Arc<dyn StatsSource>,
        recorder: Arc<dyn Recorder>,
        pressure: Arc<NodePressure>,
    ) -> Manager {
        Manager {
            config,
            node_name: node_name.to_string(),
            clock,
            stats,
            recorder,
            pressure,
            state: Mutex::new(PressureState::default()),
        }
    }

    /// The shared conditions.
    pub fn pressure(&self) -> &Arc<NodePressure> {
        &self.pressure
    }

    /// One pass (upstream `synchronize`); returns the pods evicted.
    pub fn synchronize(&self, host: &dyn EvictionHost) -> Vec<Arc<Pod>> {
        let thresholds = &self.config.thresholds;
        if thresholds.is_empty() && !self.config.local_storage_isolation {
            return Vec::new();
        }
        let sample = self.stats.node();
        let now = self.clock.now();
        let assessment = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .assess(
                thresholds,
                &sample.observations,
                self.config.pressure_transition_period,
                now,
            );
        if self.pressure.set(assessment.conditions.clone()) {
            log::info!(
                "eviction manager: node conditions now {}",
                conditions_text(&assessment.conditions)
            );
        }
        let active = host.active_pods();
        if self.config.local_storage_isolation {
            let evicted = self.local_storage_eviction(host, &active, sample.dedicated_image_fs);
            if !evicted.is_empty() {
                return evicted;
            }
        }
        let Some(&first) = assessment.actionable.first() else {
            return Vec::new();
        };
        let threshold = thresholds[first];
        let signal = threshold.signal;
        log::warn!(
            "eviction manager: attempting to reclaim resource {} (threshold {} met)",
            signal.resource(),
            signal.as_str()
        );
        self.recorder.node_event(
            &self.node_name,
            EventType::Warning,
            "EvictionThresholdMet",
            format!("Attempting to reclaim {}", signal.resource()),
        );
        if self.reclaim_node_level(host, signal, sample.dedicated_image_fs) {
            log::info!(
                "eviction manager: node-level reclaim freed enough {}, no pod evicted",
                signal.resource()
            );
            return Vec::new();
        }
        let disk = !matches!(signal, Signal::MemoryAvailable | Signal::PidAvailable);
        let usage = match self.stats.pods(&active, &|_| disk) {
            Ok(usage) => usage,
            Err(e) => {
                log::error!("eviction manager: reading pod stats: {e}");
                Default::default()
            }
        };
        let mut candidates: Vec<Candidate<'_>> =
            active.iter().map(|p| (p, usage.get(&uid_of(p)))).collect();
        rank(&mut candidates, signal, sample.dedicated_image_fs);
        let observation = sample.observations.get(&signal);
        for (pod, stats) in candidates {
            let (message, annotations) = eviction_message(&threshold, observation, pod, stats);
            let grace_seconds = if threshold.is_hard() {
                IMMEDIATE_GRACE_PERIOD_SECONDS
            } else {
                self.soft_grace_period(pod)
            };
            let verdict = Verdict {
                grace_seconds,
                message,
                annotations,
                disruption: true,
            };
            if self.evict(host, pod, verdict) {
                crate::util::metrics::kubelet()
                    .evictions
                    .inc(&[signal.as_str()]);
                return vec![Arc::clone(pod)];
            }
        }
        log::error!("eviction manager: unable to evict any pods from the node");
        Vec::new()
    }

    /// The grace period of a pod evicted for a soft threshold, as upstream 1.33 (without
    /// `AllowOverwriteTerminationGracePeriodSeconds`): the smaller of
    /// `evictionMaxPodGracePeriod` and the pod's own; zero (the default maximum) means the
    /// pod's own; never below one second.
    fn soft_grace_period(&self, pod: &Pod) -> i64 {
        let own = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        match own.min(self.config.max_pod_grace_period_seconds) {
            0 => own.max(1),
            chosen => chosen.max(1),
        }
    }

    /// Evicts pods above their local storage limits; returns them.
    fn local_storage_eviction(
        &self,
        host: &dyn EvictionHost,
        active: &[Arc<Pod>],
        dedicated_image_fs: bool,
    ) -> Vec<Arc<Pod>> {
        let limited: Vec<Arc<Pod>> = active
            .iter()
            .filter(|p| has_local_storage_limit(p))
            .cloned()
            .collect();
        if limited.is_empty() {
            return Vec::new();
        }
        let usage = match self.stats.pods(&limited, &|_| true) {
            Ok(usage) => usage,
            Err(e) => {
                log::error!("eviction manager: reading pod stats for local storage limits: {e}");
                return Vec::new();
            }
        };
        let mut evicted = Vec::new();
        for pod in &limited {
            let Some(used) = usage.get(&uid_of(pod)) else {
                continue;
            };
            let Some(violation) = local_storage_violation(pod, used, dedicated_image_fs) else {
                continue;
            };
            let verdict = Verdict {
                grace_seconds: IMMEDIATE_GRACE_PERIOD_SECONDS,
                message: violation.message.clone(),
                annotations: BTreeMap::new(),
                disruption: false,
            };
            if self.evict(host, pod, verdict) {
                crate::util::metrics::kubelet()
                    .evictions
                    .inc(&[violation.metric_signal()]);
                evicted.push(Arc::clone(pod));
            }
        }
        evicted
    }

    /// Frees node-level resources for `signal`; true when that resolved every threshold
    /// (minimum reclaim included), so no pod needs to go.
    fn reclaim_node_level(&self, host: &dyn EvictionHost, signal: Signal, dedicated: bool) -> bool {
        let reclaimable = match signal {
            Signal::ImageFsAvailable | Signal::ImageFsInodesFree => true,
            Signal::NodeFsAvailable | Signal::NodeFsInodesFree => !dedicated,
            Signal::MemoryAvailable | Signal::PidAvailable => false,
        };
        if !reclaimable {
            return false;
        }
        if let Err(e) = host.delete_unused_containers() {
            log::warn!("eviction manager: deleting unused containers: {e}");
        }
        match host.delete_unused_images() {
            Ok(freed) => log::info!("eviction manager: image GC freed {freed} bytes"),
            Err(e) => log::warn!("eviction manager: deleting unused images: {e}"),
        }
        let sample = self.stats.node();
        let thresholds = &self.config.thresholds;
        thresholds_met(thresholds, 0..thresholds.len(), &sample.observations, true)
            .iter()
            .all(|&i| thresholds[i].signal != signal)
    }

    /// Evicts one pod unless it is critical; true when it was evicted.
    fn evict(&self, host: &dyn EvictionHost, pod: &Arc<Pod>, verdict: Verdict) -> bool {
        if is_critical_pod(pod) {
            log::error!(
                "eviction manager: cannot evict a critical pod pod=\"{}\"",
                pod_key(pod)
            );
            return false;
        }
        self.recorder.pod_event_annotated(
            pod,
            EventType::Warning,
            REASON,
            verdict.message.clone(),
            &verdict.annotations,
        );
        log::info!(
            "eviction manager: evicting pod=\"{}\" uid={} grace={}s: {}",
            pod_key(pod),
            uid_of(pod),
            verdict.grace_seconds,
            verdict.message
        );
        host.evict_pod(
            pod,
            verdict.grace_seconds,
            Termination {
                reason: REASON.into(),
                message: verdict.message,
                disruption_target: verdict.disruption,
            },
        );
        true
    }

    /// Admission under pressure (upstream `Admit`): critical pods always; under memory
    /// pressure alone, pods that are not BestEffort or that tolerate the memory-pressure
    /// taint; under any other condition, none.
    pub fn admit(&self, pod: &Pod) -> Result<(), Rejection> {
        let conditions = self.pressure.conditions();
        if conditions.is_empty() || is_critical_pod(pod) {
            return Ok(());
        }
        let memory_only =
            conditions.len() == 1 && conditions.contains(&NodeCondition::MemoryPressure);
        if memory_only
            && (crate::resources::qos_class(pod) != "BestEffort" || tolerates_memory_pressure(pod))
        {
            return Ok(());
        }
        Err(Rejection {
            reason: REASON.into(),
            message: format!("The node had condition: {}. ", conditions_text(&conditions)),
        })
    }

    /// The `eviction` loop: a pass every monitoring period; after an eviction, a wait for
    /// the pod's containers to stop. Returns when `stop` receives or disconnects.
    pub fn run(self: Arc<Self>, host: Arc<dyn EvictionHost>, stop: Receiver<()>) {
        log::info!(
            "eviction manager: started, {} thresholds, monitoring every {:?}",
            self.config.thresholds.len(),
            self.config.monitoring_period
        );
        loop {
            if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                return;
            }
            let evicted = self.synchronize(host.as_ref());
            if !evicted.is_empty() {
                // Look again at once: the pressure may need another pod to go.
                if !self.wait_for_cleanup(host.as_ref(), &evicted, &stop) {
                    return;
                }
                continue;
            }
            match stop.recv_timeout(self.config.monitoring_period) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
    }

    /// Waits until the evicted pods are cleaned up or the timeout passes; false when asked
    /// to stop meanwhile.
    fn wait_for_cleanup(
        &self,
        host: &dyn EvictionHost,
        pods: &[Arc<Pod>],
        stop: &Receiver<()>,
    ) -> bool {
        let deadline = std::time::Instant::now() + POD_CLEANUP_TIMEOUT;
        loop {
            if pods.iter().all(|p| host.pod_cleaned_up(p)) {
                log::info!("eviction manager: evicted pods cleaned up");
                return true;
            }
            if std::time::Instant::now() >= deadline {
                log::warn!("eviction manager: timed out waiting for evicted pods to be cleaned up");
                return true;
            }
            match stop.recv_timeout(POD_CLEANUP_POLL) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                _ => return false,
            }
        }
    }
}

/// Whether the pod sets an emptyDir `sizeLimit` or an `ephemeral-storage` limit.
fn has_local_storage_limit(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let sized_volume = spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.empty_dir.as_ref().is_some_and(|e| e.size_limit.is_some()));
    let limited_container = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| crate::resources::quantity_millis(c, "limits", "ephemeral-storage").is_some());
    sized_volume || limited_container
}

/// Whether a toleration of the pod tolerates `node.kubernetes.io/memory-pressure:NoSchedule`.
fn tolerates_memory_pressure(pod: &Pod) -> bool {
    const KEY: &str = "node.kubernetes.io/memory-pressure";
    pod.spec
        .iter()
        .flat_map(|s| s.tolerations.iter().flatten())
        .any(|t| {
            let effect_ok = t
                .effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "NoSchedule");
            let operator = t.operator.as_deref().unwrap_or("Equal");
            let key_ok = match t.key.as_deref() {
                None | Some("") => operator == "Exists",
                Some(k) => k == KEY,
            };
            let value_ok =
                operator == "Exists" || t.value.as_deref().unwrap_or_default().is_empty();
            effect_ok && key_ok && value_ok
        })
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
