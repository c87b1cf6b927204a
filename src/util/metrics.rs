//! Lock-free counters and histograms that subsystems record into on their own threads; the
//! kubelet API serves them in Prometheus text format. Names follow the upstream kubelet.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram over fixed upper bounds (seconds), like a Prometheus histogram.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds of the buckets, ascending; observations above the last go only to `count`.
    bounds: &'static [f64],
    /// Cumulative-at-read counts per bucket (stored per bucket, summed when read).
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum of observations in microseconds, so it fits an integer atomic.
    sum_micros: AtomicU64,
}

/// Bucket bounds used by upstream kubelet duration histograms (`metrics.DefBuckets`-like).
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Histogram {
    /// An empty histogram with the given bucket bounds.
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            if let Some(bucket) = self.buckets.get(i) {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of observations in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// `(upper bound, cumulative count)` pairs, as Prometheus `le` buckets.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        self.bounds
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| {
                total += c.load(Ordering::Relaxed);
                (*b, total)
            })
            .collect()
    }
}

/// Bucket bounds of `kubelet_runtime_operations_duration_seconds` (upstream:
/// exponential from 5 ms by 2.5, 14 buckets).
pub const RUNTIME_BUCKETS: &[f64] = &[
    0.005,
    0.0125,
    0.03125,
    0.078125,
    0.1953125,
    0.48828125,
    1.220703125,
    3.0517578125,
    7.62939453125,
    19.073486328125,
    47.6837158203125,
    119.20928955078125,
    298.0232238769531,
    745.0580596923828,
];

/// Bucket bounds of `kubelet_pod_start_duration_seconds` (upstream's list).
pub const POD_START_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// Counters keyed by label values.
#[derive(Debug, Default)]
pub struct CounterVec(Mutex<BTreeMap<Vec<String>, u64>>);

impl CounterVec {
    /// Adds one to the series with `labels` (values in the family's label order).
    pub fn inc(&self, labels: &[&str]) {
        let key = labels.iter().map(|l| l.to_string()).collect();
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert(0) += 1;
    }

    /// Every series and its count.
    pub fn snapshot(&self) -> Vec<(Vec<String>, u64)> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// The count of one series.
    pub fn get(&self, labels: &[&str]) -> u64 {
        let key: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&key).copied().unwrap_or(0)
    }
}

/// Histograms keyed by label values.
#[derive(Debug)]
pub struct HistogramVec {
    bounds: &'static [f64],
    series: Mutex<BTreeMap<Vec<String>, std::sync::Arc<Histogram>>>,
}

impl HistogramVec {
    /// An empty family with the given bucket bounds.
    pub fn new(bounds: &'static [f64]) -> Self {
        HistogramVec {
            bounds,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one observation in the series with `labels`.
    pub fn observe(&self, labels: &[&str], d: std::time::Duration) {
        let key: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        let h = {
            let mut map = self.series.lock().unwrap_or_else(PoisonError::into_inner);
            std::sync::Arc::clone(
                map.entry(key)
                    .or_insert_with(|| std::sync::Arc::new(Histogram::new(self.bounds))),
            )
        };
        h.observe(d);
    }

    /// Every series.
    pub fn snapshot(&self) -> Vec<(Vec<String>, std::sync::Arc<Histogram>)> {
        let map = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .map(|(k, v)| (k.clone(), std::sync::Arc::clone(v)))
            .collect()
    }
}

/// The kubelet's own metrics, recorded wherever the work happens (upstream keeps them in
/// one global registry too).
#[derive(Debug)]
pub struct KubeletMetrics {
    /// `kubelet_runtime_operations_total{operation_type}`.
    pub runtime_operations: CounterVec,
    /// `kubelet_runtime_operations_errors_total{operation_type}`.
    pub runtime_errors: CounterVec,
    /// `kubelet_runtime_operations_duration_seconds{operation_type}`.
    pub runtime_durations: HistogramVec,
    /// `kubelet_pod_worker_duration_seconds{operation_type}`.
    pub pod_worker_duration: HistogramVec,
    /// `kubelet_pod_start_duration_seconds`.
    pub pod_start_duration: Histogram,
    /// `kubelet_started_pods_total`.
    pub started_pods: Counter,
    /// `kubelet_started_pods_errors_total`.
    pub started_pods_errors: Counter,
    /// `kubelet_started_containers_total{container_type}`.
    pub started_containers: CounterVec,
    /// `kubelet_started_containers_errors_total{container_type,code}`.
    pub started_containers_errors: CounterVec,
    /// `kubelet_evictions{eviction_signal}`.
    pub evictions: CounterVec,
}

/// The process-wide kubelet metrics.
pub fn kubelet() -> &'static KubeletMetrics {
    static METRICS: OnceLock<KubeletMetrics> = OnceLock::new();
    METRICS.get_or_init(|| KubeletMetrics {
        runtime_operations: CounterVec::default(),
        runtime_errors: CounterVec::default(),
        runtime_durations: HistogramVec::new(RUNTIME_BUCKETS),
        pod_worker_duration: HistogramVec::new(DURATION_BUCKETS),
        pod_start_duration: Histogram::new(POD_START_BUCKETS),
        started_pods: Counter::default(),
        started_pods_errors: Counter::default(),
        started_containers: CounterVec::default(),
        started_containers_errors: CounterVec::default(),
        evictions: CounterVec::default(),
    })
}

/// Prometheus text exposition (format 0.0.4).
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// Escapes a label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(names: &[&str], values: &[String]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Exposition {
    /// Starts a family.
    pub fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample.
    pub fn sample(&mut self, name: &str, names: &[&str], values: &[String], value: f64) {
        let _ = writeln!(
            self.out,
            "{name}{} {}",
            label_text(names, values),
            number(value)
        );
    }

    /// A whole counter family from a [`CounterVec`].
    pub fn counter_vec(&mut self, name: &str, help: &str, names: &[&str], c: &CounterVec) {
        self.family(name, help, "counter");
        for (values, count) in c.snapshot() {
            self.sample(name, names, &values, count as f64);
        }
    }

    /// One histogram series.
    pub fn histogram(&mut self, name: &str, names: &[&str], values: &[String], h: &Histogram) {
        let mut with_le: Vec<&str> = names.to_vec();
        with_le.push("le");
        for (bound, count) in h.cumulative() {
            let mut v = values.to_vec();
            v.push(number(bound));
            self.sample(&format!("{name}_bucket"), &with_le, &v, count as f64);
        }
        let mut v = values.to_vec();
        v.push("+Inf".into());
        self.sample(&format!("{name}_bucket"), &with_le, &v, h.count() as f64);
        self.sample(&format!("{name}_sum"), names, values, h.sum_seconds());
        self.sample(&format!("{name}_count"), names, values, h.count() as f64);
    }

    /// A whole histogram family from a [`HistogramVec`].
    pub fn histogram_vec(&mut self, name: &str, help: &str, names: &[&str], h: &HistogramVec) {
        self.family(name, help, "histogram");
        for (values, series) in h.snapshot() {
            self.histogram(name, names, &values, &series);
        }
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(DURATION_BUCKETS);
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.count(), 3);
        let c = h.cumulative();
        assert_eq!(c[0], (0.005, 1));
        assert_eq!(c[3], (0.05, 2));
        assert_eq!(c.last().map(|x| x.1), Some(2));
        assert!((h.sum_seconds() - 60.033).abs() < 1e-6);
    }

    #[test]
    fn exposition_writes_families_series_and_buckets() {
        let c = CounterVec::default();
        c.inc(&["pull_image"]);
        c.inc(&["pull_image"]);
        c.inc(&["a\"b"]);
        let h = HistogramVec::new(&[0.1, 1.0]);
        h.observe(&["sync"], Duration::from_millis(50));
        let mut e = Exposition::default();
        e.counter_vec("x_total", "[ALPHA] Things.", &["operation_type"], &c);
        e.histogram_vec("d_seconds", "[ALPHA] Durations.", &["operation_type"], &h);
        let text = e.finish();
        assert!(text.contains("# TYPE x_total counter\n"));
        assert!(text.contains("x_total{operation_type=\"pull_image\"} 2\n"));
        assert!(text.contains("x_total{operation_type=\"a\\\"b\"} 1\n"));
        assert!(text.contains("d_seconds_bucket{operation_type=\"sync\",le=\"0.1\"} 1\n"));
        assert!(text.contains("d_seconds_bucket{operation_type=\"sync\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("d_seconds_count{operation_type=\"sync\"} 1\n"));
    }
}
