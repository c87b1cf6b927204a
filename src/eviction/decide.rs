//! The eviction manager's decisions, kept pure (upstream `eviction/helpers.go`): which
//! thresholds are met by a set of observations, which node conditions follow (held for the
//! pressure transition period), which pods go first, what the eviction message says, and
//! which pods broke their local storage limits. The manager (`manager.rs`) feeds these
//! with measurements and acts on the answers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::stats::PodUsage;
use super::threshold::{NodeCondition, Signal, Threshold};
use crate::quantity::{binary_si, decimal_si};
use crate::resources::{pod_limit_millis, pod_request_millis, quantity_millis, request_millis};

/// What was measured for one signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// What is left (bytes, inodes or process ids).
    pub available: i64,
    /// The whole (what percentages are of).
    pub capacity: i64,
}

/// Every signal measured in one pass.
pub type Observations = BTreeMap<Signal, Observation>;

/// The thresholds (indices into `thresholds`) whose signal is below the threshold; with
/// `enforce_min_reclaim`, below threshold plus minimum reclaim (a met threshold stays met
/// until that much is free, upstream `thresholdsMet`).
pub fn thresholds_met(
    thresholds: &[Threshold],
    candidates: impl IntoIterator<Item = usize>,
    observations: &Observations,
    enforce_min_reclaim: bool,
) -> BTreeSet<usize> {
    candidates
        .into_iter()
        .filter(|&i| {
            let t = &thresholds[i];
            let Some(observed) = observations.get(&t.signal) else {
                return false;
            };
            let mut quantity = t.quantity(observed.capacity);
            if enforce_min_reclaim {
                quantity = quantity.saturating_add(t.min_reclaim_quantity(observed.capacity));
            }
            quantity > observed.available
        })
        .collect()
}

/// What the manager remembers between passes.
#[derive(Debug, Default, Clone)]
pub struct PressureState {
    /// Thresholds met in the last pass (min reclaim applies to these).
    pub met: BTreeSet<usize>,
    /// When each met threshold was first seen met (for soft grace periods).
    pub first_observed: BTreeMap<usize, Instant>,
    /// When each condition was last seen (held for the transition period).
    pub condition_last_observed: BTreeMap<NodeCondition, Instant>,
}

/// The outcome of one pass over the observations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// Node conditions to report now.
    pub conditions: BTreeSet<NodeCondition>,
    /// Met thresholds whose grace period has passed, the one to reclaim first first.
    pub actionable: Vec<usize>,
}

impl PressureState {
    /// One pass (the first half of upstream `synchronize`): updates what is met and since
    /// when, and says which conditions hold and which thresholds call for action.
    pub fn assess(
        &mut self,
        thresholds: &[Threshold],
        observations: &Observations,
        transition_period: Duration,
        now: Instant,
    ) -> Assessment {
        let mut met = thresholds_met(thresholds, 0..thresholds.len(), observations, false);
        let unresolved = thresholds_met(thresholds, self.met.iter().copied(), observations, true);
        met.extend(unresolved);
        self.first_observed.retain(|i, _| met.contains(i));
        for &i in &met {
            self.first_observed.entry(i).or_insert(now);
        }
        for &i in &met {
            self.condition_last_observed
                .insert(thresholds[i].signal.condition(), now);
        }
        self.condition_last_observed.retain(|_, seen| {
            now.saturating_duration_since(*seen) < transition_period || *seen == now
        });
        let conditions = self.condition_last_observed.keys().copied().collect();
        let mut actionable: Vec<usize> = met
            .iter()
            .copied()
            .filter(|i| {
                let since = self.first_observed.get(i).copied().unwrap_or(now);
                now.saturating_duration_since(since) >= thresholds[*i].grace_period
            })
            .collect();
        actionable.sort_by_key(|&i| Signal::ALL.iter().position(|s| *s == thresholds[i].signal));
        self.met = met;
        Assessment {
            conditions,
            actionable,
        }
    }
}

/// Upstream's `SystemCriticalPriority`: pods at or above it are critical.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// A pod the kubelet must keep (upstream `IsCriticalPod`): static and mirror pods and pods
/// of system-critical priority. They are neither evicted nor turned away under pressure.
pub fn is_critical_pod(pod: &Pod) -> bool {
    let source = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::config::update::CONFIG_SOURCE_ANNOTATION));
    let static_pod = source.is_some_and(|s| s != "api");
    let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    static_pod || crate::status::sync::is_mirror_pod(pod) || priority >= SYSTEM_CRITICAL_PRIORITY
}

/// A pod with what was measured of it (`None` when stats are missing).
pub type Candidate<'a> = (&'a Arc<Pod>, Option<&'a PodUsage>);

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

fn request_bytes(pod: &Pod, resource: &str) -> i128 {
    pod_request_millis(pod, resource) / 1000
}

/// Which file systems' usage counts toward a pod's disk usage for a signal (upstream
/// `fsStatsType`): with a dedicated image filesystem, nodefs counts logs and local volumes
/// and imagefs the writable layers; without one, everything counts for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsToMeasure {
    /// Writable layers.
    pub rootfs: bool,
    /// Log files.
    pub logs: bool,
    /// emptyDir and other local volumes.
    pub volumes: bool,
}

impl FsToMeasure {
    /// What a signal measures given whether images have a filesystem of their own.
    pub fn for_signal(signal: Signal, dedicated_image_fs: bool) -> FsToMeasure {
        let image = matches!(signal, Signal::ImageFsAvailable | Signal::ImageFsInodesFree);
        match (dedicated_image_fs, image) {
            (false, _) => FsToMeasure {
                rootfs: true,
                logs: true,
                volumes: true,
            },
            (true, true) => FsToMeasure {
                rootfs: true,
                logs: false,
                volumes: false,
            },
            (true, false) => FsToMeasure {
                rootfs: false,
                logs: true,
                volumes: true,
            },
        }
    }
}

/// A pod's disk usage (bytes or inodes) over the chosen file systems.
pub fn disk_usage(usage: &PodUsage, fs: FsToMeasure, inodes: bool) -> i128 {
    let pick = |bytes: u64, count: u64| i128::from(if inodes { count } else { bytes });
    let containers: i128 = usage
        .containers
        .iter()
        .map(|c| {
            let mut sum = 0;
            if fs.rootfs {
                sum += pick(c.rootfs_bytes, c.rootfs_inodes);
            }
            if fs.logs {
                sum += pick(c.logs_bytes, c.logs_inodes);
            }
            sum
        })
        .sum();
    let volumes: i128 = if fs.volumes {
        usage
            .volumes
            .iter()
            .filter(|v| v.ephemeral)
            .map(|v| pick(v.bytes, v.inodes))
            .sum()
    } else {
        0
    };
    containers + volumes
}

fn memory_usage(usage: Option<&PodUsage>) -> Option<i128> {
    usage.map(|u| {
        u.containers
            .iter()
            .map(|c| i128::from(c.memory_working_set.unwrap_or(0)))
            .sum()
    })
}

/// Orders pods for eviction for `signal` (upstream `rankMemoryPressure`,
/// `rankDiskPressureFunc`, `rankPIDPressure`): pods without stats first; then, for memory
/// and disk, pods using more than they request before the others, lower priority before
/// higher, and more usage above the request first; for pids, lower priority first, then
/// more processes first.
pub fn rank(candidates: &mut [Candidate<'_>], signal: Signal, dedicated_image_fs: bool) {
    let usage = |c: &Candidate<'_>| -> Option<(i128, i128)> {
        let (pod, stats) = c;
        match signal {
            Signal::MemoryAvailable => Some((memory_usage(*stats)?, request_bytes(pod, "memory"))),
            Signal::PidAvailable => Some((i128::from((*stats)?.processes.unwrap_or(0)), 0)),
            _ => {
                let fs = FsToMeasure::for_signal(signal, dedicated_image_fs);
                // Upstream subtracts the ephemeral-storage request even from inodes.
                let inodes = !signal.counts_bytes();
                Some((
                    disk_usage((*stats)?, fs, inodes),
                    request_bytes(pod, "ephemeral-storage"),
                ))
            }
        }
    };
    candidates.sort_by(|a, b| {
        let ((used_a, req_a), (used_b, req_b)) = match (usage(a), usage(b)) {
            (None, None) => return priority(a.0).cmp(&priority(b.0)),
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(ua), Some(ub)) => (ua, ub),
        };
        if signal == Signal::PidAvailable {
            return priority(a.0)
                .cmp(&priority(b.0))
                .then_with(|| used_b.cmp(&used_a));
        }
        let exceeds_a = used_a > req_a;
        let exceeds_b = used_b > req_b;
        exceeds_b
            .cmp(&exceeds_a)
            .then_with(|| priority(a.0).cmp(&priority(b.0)))
            .then_with(|| (used_b - req_b).cmp(&(used_a - req_a)))
    });
}

fn print(signal_counts_bytes: bool, value: i128) -> String {
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    if signal_counts_bytes {
        binary_si(value).0
    } else {
        decimal_si(value).0
    }
}

/// The message of a pod evicted for `threshold` (upstream `evictionMessage`), and the names
/// and usages of its containers that used more than they requested (the event's
/// annotations).
pub fn eviction_message(
    threshold: &Threshold,
    observation: Option<&Observation>,
    pod: &Pod,
    usage: Option<&PodUsage>,
) -> (String, BTreeMap<String, String>) {
    let resource = threshold.signal.resource();
    let bytes = threshold.signal.counts_bytes();
    let mut message = format!("The node was low on resource: {resource}. ");
    if let Some(observed) = observation {
        message.push_str(&format!(
            "Threshold quantity: {}, available: {}. ",
            print(true, i128::from(threshold.quantity(observed.capacity))),
            print(bytes, i128::from(observed.available)),
        ));
    }
    let mut annotations = BTreeMap::new();
    let Some(usage) = usage else {
        return (message, annotations);
    };
    let mut names = Vec::new();
    let mut usages = Vec::new();
    for c in &usage.containers {
        let Some(spec) = pod
            .spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .find(|s| s.name == c.name)
        else {
            continue;
        };
        let used = match resource {
            "memory" => c.memory_working_set.map(i128::from),
            "ephemeral-storage" => Some(i128::from(c.rootfs_bytes) + i128::from(c.logs_bytes)),
            _ => None,
        };
        let Some(used) = used else {
            continue;
        };
        let request = request_millis(spec, resource).unwrap_or(0) / 1000;
        if used > request {
            let used = print(true, used);
            let request_text = spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .map_or_else(|| "0".to_string(), |q| q.0.clone());
            message.push_str(&format!(
                "Container {} was using {used}, request is {request_text}, has larger consumption of {resource}. ",
                c.name
            ));
            names.push(c.name.clone());
            usages.push(used);
        }
    }
    annotations.insert("offending_containers".into(), names.join(","));
    annotations.insert("offending_containers_usage".into(), usages.join(","));
    annotations.insert("starved_resource".into(), resource.to_string());
    (message, annotations)
}

/// A pod over a local storage limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStorageViolation {
    /// Which limit (the `eviction_signal` label of `kubelet_evictions`).
    pub kind: LocalStorageLimit,
    /// The eviction message.
    pub message: String,
}

/// The three local storage limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalStorageLimit {
    /// An emptyDir's `sizeLimit`.
    EmptyDir,
    /// The sum of the containers' `ephemeral-storage` limits.
    Pod,
    /// A container's `ephemeral-storage` limit.
    Container,
}

impl LocalStorageViolation {
    /// The `eviction_signal` label upstream counts these evictions under.
    pub fn metric_signal(&self) -> &'static str {
        match self.kind {
            LocalStorageLimit::EmptyDir => "emptydirfs.limit",
            LocalStorageLimit::Pod => "ephemeralpodfs.limit",
            LocalStorageLimit::Container => "ephemeralcontainerfs.limit",
        }
    }
}

/// Why a pod broke its local storage limits (upstream `localStorageEviction`), checked in
/// upstream's order: an emptyDir over its `sizeLimit`, the pod over the sum of its
/// containers' `ephemeral-storage` limits, a container over its own (its logs, plus its
/// writable layer unless images have a filesystem of their own).
pub fn local_storage_violation(
    pod: &Pod,
    usage: &PodUsage,
    dedicated_image_fs: bool,
) -> Option<LocalStorageViolation> {
    let spec = pod.spec.as_ref()?;
    let violation = |kind, message| Some(LocalStorageViolation { kind, message });
    for volume in spec.volumes.iter().flatten() {
        let Some(limit) = volume
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
        else {
            continue;
        };
        let Ok(limit_bytes) = crate::quantity::parse_value(&limit.0) else {
            continue;
        };
        let used = usage.volumes.iter().find(|v| v.name == volume.name);
        if limit_bytes > 0 && used.is_some_and(|u| i128::from(u.bytes) > i128::from(limit_bytes)) {
            return violation(
                LocalStorageLimit::EmptyDir,
                format!(
                    "Usage of EmptyDir volume \"{}\" exceeds the limit \"{}\". ",
                    volume.name, limit.0
                ),
            );
        }
    }
    let pod_limit = pod_limit_millis(pod, "ephemeral-storage") / 1000;
    if pod_limit > 0 {
        let all = FsToMeasure {
            rootfs: true,
            logs: true,
            volumes: true,
        };
        let used = disk_usage(usage, all, false) + i128::from(usage.etc_hosts_bytes);
        if used > pod_limit {
            return violation(
                LocalStorageLimit::Pod,
                format!(
                    "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
                    print(true, pod_limit)
                ),
            );
        }
    }
    for c in &usage.containers {
        let Some(spec) = spec.containers.iter().find(|s| s.name == c.name) else {
            continue;
        };
        let Some(limit) = quantity_millis(spec, "limits", "ephemeral-storage")
            .map(|m| m / 1000)
            .filter(|l| *l > 0)
        else {
            continue;
        };
        let mut used = i128::from(c.logs_bytes);
        if !dedicated_image_fs {
            used += i128::from(c.rootfs_bytes);
        }
        if used > limit {
            let text = spec
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get("ephemeral-storage"))
                .map(|q| q.0.clone())
                .unwrap_or_default();
            return violation(
                LocalStorageLimit::Container,
                format!(
                    "Container {} exceeded its local ephemeral storage limit \"{text}\". ",
                    c.name
                ),
            );
        }
    }
    None
}

/// The node conditions in upstream's print form (`[DiskPressure]`, `[MemoryPressure
/// DiskPressure]`).
pub fn conditions_text(conditions: &BTreeSet<NodeCondition>) -> String {
    let names: Vec<&str> = conditions.iter().map(|c| c.as_str()).collect();
    format!("[{}]", names.join(" "))
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
