//! Pod start throughput and latency through the real sync loop, pod workers and runtime
//! manager against the in-memory fake runtime, plus the process footprint with 110 running
//! pods. Prints its figures; run with `cargo bench --bench pod_start`.
//!
//! Under `cargo test` (no `--bench` argument) it runs a tiny smoke pass so the harness stays
//! fast while the code path is still exercised.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use rkubelet::clock::RealClock;
use rkubelet::config::mux::SourcesReady;
use rkubelet::config::settings::KubeletConfig;
use rkubelet::config::update::{PodOperation, PodUpdate};
use rkubelet::cri::{api, CriError, FakeRuntime, RuntimeService};
use rkubelet::events::FakeRecorder;
use rkubelet::kubelet::{Deps, Kubelet};

const IMAGE: &str = "docker.io/library/busybox:local";
const CONTAINERS_PER_POD: usize = 2;

/// Wraps the fake runtime to timestamp the moment each pod's last container started.
struct Timed {
    inner: Arc<FakeRuntime>,
    /// container id → pod uid, from CreateContainer labels.
    owners: Mutex<HashMap<String, String>>,
    /// pod uid → (started containers, instant the last one started).
    started: Mutex<HashMap<String, (usize, Option<Instant>)>>,
}

impl RuntimeService for Timed {
    fn version(&self, v: &str) -> Result<api::VersionResponse, CriError> {
        self.inner.version(v)
    }
    fn status(&self, v: bool) -> Result<api::StatusResponse, CriError> {
        self.inner.status(v)
    }
    fn run_pod_sandbox(&self, c: &api::PodSandboxConfig, h: &str) -> Result<String, CriError> {
        self.inner.run_pod_sandbox(c, h)
    }
    fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        self.inner.stop_pod_sandbox(id)
    }
    fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        self.inner.remove_pod_sandbox(id)
    }
    fn pod_sandbox_status(
        &self,
        id: &str,
        v: bool,
    ) -> Result<api::PodSandboxStatusResponse, CriError> {
        self.inner.pod_sandbox_status(id, v)
    }
    fn list_pod_sandbox(
        &self,
        f: Option<&api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>, CriError> {
        self.inner.list_pod_sandbox(f)
    }
    fn create_container(
        &self,
        sb: &str,
        c: &api::ContainerConfig,
        s: &api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let id = self.inner.create_container(sb, c, s)?;
        let uid = c
            .get_labels()
            .get("io.kubernetes.pod.uid")
            .cloned()
            .unwrap_or_default();
        self.owners.lock().unwrap().insert(id.clone(), uid);
        Ok(id)
    }
    fn start_container(&self, id: &str) -> Result<(), CriError> {
        self.inner.start_container(id)?;
        let uid = self
            .owners
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_default();
        let mut started = self.started.lock().unwrap();
        let entry = started.entry(uid).or_insert((0, None));
        entry.0 += 1;
        if entry.0 == CONTAINERS_PER_POD {
            entry.1 = Some(Instant::now());
        }
        Ok(())
    }
    fn stop_container(&self, id: &str, t: i64) -> Result<(), CriError> {
        self.inner.stop_container(id, t)
    }
    fn remove_container(&self, id: &str) -> Result<(), CriError> {
        self.inner.remove_container(id)
    }
    fn list_containers(
        &self,
        f: Option<&api::ContainerFilter>,
    ) -> Result<Vec<api::Container>, CriError> {
        self.inner.list_containers(f)
    }
    fn container_status(
        &self,
        id: &str,
        v: bool,
    ) -> Result<api::ContainerStatusResponse, CriError> {
        self.inner.container_status(id, v)
    }
    fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        t: Duration,
    ) -> Result<api::ExecSyncResponse, CriError> {
        self.inner.exec_sync(id, cmd, t)
    }
}

fn pod(i: usize) -> Arc<Pod> {
    let containers = (0..CONTAINERS_PER_POD)
        .map(|c| Container {
            name: format!("c{c}"),
            image: Some(IMAGE.into()),
            image_pull_policy: Some("IfNotPresent".into()),
            ..Default::default()
        })
        .collect();
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(format!("bench-{i}")),
            namespace: Some("default".into()),
            uid: Some(format!("00000000-0000-0000-0000-{i:012}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            ..Default::default()
        }),
        ..Default::default()
    })
}

struct Harness {
    timed: Arc<Timed>,
    updates: Sender<PodUpdate>,
    stop: Option<Sender<()>>,
    sync_loop: Option<std::thread::JoinHandle<()>>,
}

fn harness(max_pods: usize) -> Harness {
    let dir = std::env::temp_dir().join(format!("rkubelet-bench-{}", std::process::id()));
    let args = [
        "rkubelet".to_string(),
        format!("--root-dir={}", dir.join("root").display()),
        format!("--pod-logs-dir={}", dir.join("logs/pods").display()),
        format!("--max-pods={max_pods}"),
        "--hostname-override=bench".into(),
        "--resolv-conf=".into(),
    ];
    let config = Arc::new(KubeletConfig::from_args(args.iter().map(Into::into)).expect("config"));
    let fake = Arc::new(FakeRuntime::without_call_log());
    fake.add_image(IMAGE);
    let timed = Arc::new(Timed {
        inner: fake.clone(),
        owners: Mutex::default(),
        started: Mutex::default(),
    });
    let deps = Deps {
        runtime: timed.clone(),
        images: fake,
        clock: Arc::new(RealClock),
        recorder: Arc::new(FakeRecorder::default()),
        runtime_name: "fake".into(),
        sources_ready: Arc::new(SourcesReady::default()),
        api: None,
        tmpfs: false,
        host_cgroups: false,
        shared_pod_work: None,
        waiters: None,
        services: None,
    };
    let kubelet = Arc::new(Kubelet::new(config, deps).expect("kubelet"));
    // Large enough to hand over a whole burst without blocking the sender.
    let (updates, rx) = crossbeam_channel::bounded(4096);
    let (stop, stop_rx) = crossbeam_channel::bounded(0);
    let sync_loop = std::thread::spawn(move || {
        use rkubelet::kubelet::Bootstrap;
        kubelet.run(rx, stop_rx).expect("run");
    });
    Harness {
        timed,
        updates,
        stop: Some(stop),
        sync_loop: Some(sync_loop),
    }
}

impl Harness {
    fn send(&self, p: Arc<Pod>) {
        let update = PodUpdate {
            pods: vec![p],
            op: PodOperation::Add,
            source: "file".into(),
        };
        self.updates.send(update).expect("send");
    }

    fn wait_started(&self, uids: &[String], timeout: Duration) -> Vec<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let started = self.timed.started.lock().unwrap();
            let done: Vec<Instant> = uids
                .iter()
                .filter_map(|u| started.get(u).and_then(|e| e.1))
                .collect();
            if done.len() == uids.len() || Instant::now() > deadline {
                return done;
            }
            drop(started);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn shutdown(mut self) {
        self.stop.take();
        if let Some(h) = self.sync_loop.take() {
            let _ = h.join();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 1000 } else { 20 };

    // 1. Footprint (first, so earlier phases leave nothing in the heap): 110 running pods, then idle.
    let idle_pods = if full { 110 } else { 5 };
    let h = harness(110);
    let pods: Vec<Arc<Pod>> = (5000..5000 + idle_pods).map(pod).collect();
    for p in &pods {
        h.send(p.clone());
    }
    let uids: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.uid.clone().unwrap_or_default())
        .collect();
    h.wait_started(&uids, Duration::from_secs(60));
    std::thread::sleep(if full {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(100)
    });
    println!(
        "footprint: {idle_pods} running pods, idle: process RSS {:.1} MiB (includes the in-memory fake runtime)",
        rss_kib() as f64 / 1024.0
    );
    h.shutdown();
    // 2. Burst: n pods handed to the sync loop at once.
    let h = harness(n * 2);
    let pods: Vec<Arc<Pod>> = (0..n).map(pod).collect();
    let uids: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.uid.clone().unwrap_or_default())
        .collect();
    let t0 = Instant::now();
    for p in &pods {
        h.send(p.clone());
    }
    let done = h.wait_started(&uids, Duration::from_secs(120));
    let elapsed = done.iter().max().map(|t| *t - t0).unwrap_or_default();
    assert_eq!(done.len(), n, "every pod started");
    let mut burst: Vec<Duration> = done.iter().map(|t| *t - t0).collect();
    burst.sort();
    println!(
        "burst: {n} pods ({CONTAINERS_PER_POD} containers each) started in {:.3}s: {:.0} pods/s; update→started p50 {:.1} ms, p99 {:.1} ms (includes queueing behind the burst)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        percentile(&burst, 0.5).as_secs_f64() * 1e3,
        percentile(&burst, 0.99).as_secs_f64() * 1e3,
    );
    h.shutdown();

    // 3. Paced: one pod every 2 ms (500 pods/s offered), latency of each.
    let h = harness(n * 2);
    let mut lat = Vec::with_capacity(n);
    let pods: Vec<Arc<Pod>> = (n..2 * n).map(pod).collect();
    let mut sent = Vec::with_capacity(n);
    let start = Instant::now();
    for (i, p) in pods.iter().enumerate() {
        let due = start + Duration::from_millis(2 * i as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sent.push(Instant::now());
        h.send(p.clone());
    }
    let uids: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.uid.clone().unwrap_or_default())
        .collect();
    h.wait_started(&uids, Duration::from_secs(120));
    {
        let started = h.timed.started.lock().unwrap();
        for (uid, t) in uids.iter().zip(&sent) {
            if let Some(done) = started.get(uid).and_then(|e| e.1) {
                lat.push(done - *t);
            }
        }
    }
    lat.sort();
    println!(
        "paced: {} pods at 500/s offered: update→all containers started p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    h.shutdown();
}
