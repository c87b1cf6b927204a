//! The prober's published results (read by the status and the pod sync) and its
//! `prober_probe_total` counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;

use super::{ProbeKind, ProbeResult};

/// Published results by container id.
#[derive(Debug, Default)]
pub struct ProbeResults {
    map: Mutex<HashMap<(String, ProbeKind), ProbeResult>>,
}

impl ProbeResults {
    /// The published result of a container's probe, if it has one.
    pub fn get(&self, container_id: &str, kind: ProbeKind) -> Option<ProbeResult> {
        self.map
            .lock()
            .ok()?
            .get(&(container_id.to_string(), kind))
            .copied()
    }

    pub(super) fn set(&self, container_id: &str, kind: ProbeKind, result: ProbeResult) {
        if let Ok(mut map) = self.map.lock() {
            map.insert((container_id.to_string(), kind), result);
        }
    }

    /// How many results are kept.
    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn forget(&self, ids: &[String]) {
        if let Ok(mut map) = self.map.lock() {
            map.retain(|(id, _), _| !ids.contains(id));
        }
    }
}

/// The labels of one `prober_probe_total` series: probe type, result, container, pod,
/// namespace and pod UID.
pub type ProbeSeries = (&'static str, &'static str, String, String, String, String);

/// Probe counters (upstream `prober_probe_total`), by kind, result and container.
#[derive(Debug, Default)]
pub struct ProberMetrics {
    counts: Mutex<HashMap<ProbeSeries, u64>>,
    /// Due probes that found the pool full and waited a period.
    pub saturated: AtomicU64,
    /// Probes run.
    pub runs: AtomicU64,
}

impl ProberMetrics {
    pub(super) fn count(&self, kind: ProbeKind, result: ProbeResult, pod: &Pod, container: &str) {
        let label = match result {
            ProbeResult::Success => "successful",
            ProbeResult::Failure => "failed",
            ProbeResult::Unknown => "unknown",
        };
        let series = (
            kind.name(),
            label,
            container.to_string(),
            pod.metadata.name.clone().unwrap_or_default(),
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.uid.clone().unwrap_or_default(),
        );
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(series).or_default() += 1;
        }
        self.runs.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops a removed pod's series (upstream deletes them when its workers stop).
    pub(super) fn forget_pod(&self, uid: &str) {
        if let Ok(mut c) = self.counts.lock() {
            c.retain(|k, _| k.5 != uid);
        }
    }

    /// Drops the series of every pod `keep` refuses.
    pub(super) fn retain_pods(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut c) = self.counts.lock() {
            c.retain(|k, _| keep(&k.5));
        }
    }

    /// `(probe_type, result, count)` summed over containers.
    pub fn totals(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut sums: HashMap<(&'static str, &'static str), u64> = HashMap::new();
        for (k, n) in self.series() {
            *sums.entry((k.0, k.1)).or_default() += n;
        }
        let mut out: Vec<_> = sums.into_iter().map(|((k, r), n)| (k, r, n)).collect();
        out.sort();
        out
    }

    /// Every series of `prober_probe_total` with its count.
    pub fn series(&self) -> Vec<(ProbeSeries, u64)> {
        let mut out: Vec<_> = self
            .counts
            .lock()
            .map(|c| c.iter().map(|(k, n)| (k.clone(), *n)).collect())
            .unwrap_or_default();
        out.sort();
        out
    }
}
