//! Eviction manager cost and reaction time, with 110 pods on the in-memory fake runtime.
//!
//! 1. CPU per pass: the manager's real measurements (`/proc/meminfo`, `statvfs` of the root
//!    dir, CRI `ImageFsInfo`, `ListContainerStats`, `ListContainers`, and for every pod with
//!    an `ephemeral-storage` limit a walk of its logs, volumes and `etc-hosts`) and decisions,
//!    with no threshold met. Measured as the CPU time of the calling thread
//!    (`/proc/thread-self/schedstat`, nanoseconds) over many passes.
//! 2. Time from threshold crossed to pod evicted: the manager's own loop (`Manager::run`,
//!    monitoring every 10 s as upstream) runs; at a random moment the memory signal drops
//!    below the threshold; the time until the manager asks for the eviction is printed.
//!
//! Run with `cargo bench --bench eviction`. Under `cargo test` (no `--bench`) it runs a
//! short smoke pass with a 1 s monitoring period.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use rkubelet::clock::RealClock;
use rkubelet::cri::{api, FakeRuntime, RuntimeService};
use rkubelet::events::FakeRecorder;
use rkubelet::eviction::decide::Observation;
use rkubelet::eviction::stats::{NodeSample, PodUsage, StatsError};
use rkubelet::eviction::{
    EvictionConfig, EvictionHost, HostStats, Manager, NodePressure, Signal, StatsSource,
};
use rkubelet::status::Termination;
use rkubelet::types::PodUid;

const PODS: usize = 110;

/// Nanoseconds of CPU this thread has used.
fn thread_cpu_nanos() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("p{i}"), "namespace": "bench", "uid": format!("uid-{i}")},
        "spec": {
            "containers": [{"name": "app", "image": "busybox",
                "resources": {"limits": {"ephemeral-storage": "1Gi"}}}],
            "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}]
        }
    }))
    .unwrap_or_default()
}

/// The host stats, with the memory signal forced below any threshold once `crossed`.
struct Crossable {
    inner: HostStats,
    crossed: AtomicBool,
}

impl StatsSource for Crossable {
    fn node(&self) -> NodeSample {
        let mut sample = self.inner.node();
        if self.crossed.load(Ordering::SeqCst) {
            sample.observations.insert(
                Signal::MemoryAvailable,
                Observation {
                    available: 1,
                    capacity: 1 << 34,
                },
            );
        }
        sample
    }
    fn pods(
        &self,
        pods: &[Arc<Pod>],
        disk_for: &dyn Fn(&Pod) -> bool,
    ) -> Result<HashMap<PodUid, PodUsage>, StatsError> {
        self.inner.pods(pods, disk_for)
    }
}

struct BenchHost {
    pods: Vec<Arc<Pod>>,
    evicted_at: Mutex<Option<Instant>>,
}

impl EvictionHost for BenchHost {
    fn active_pods(&self) -> Vec<Arc<Pod>> {
        self.pods.clone()
    }
    fn evict_pod(&self, _pod: &Arc<Pod>, _grace: i64, _termination: Termination) {
        let mut at = self.evicted_at.lock().unwrap_or_else(|p| p.into_inner());
        at.get_or_insert_with(Instant::now);
    }
    fn pod_cleaned_up(&self, _pod: &Pod) -> bool {
        true
    }
    fn delete_unused_containers(&self) -> Result<(), String> {
        Ok(())
    }
    fn delete_unused_images(&self) -> Result<u64, String> {
        Ok(0)
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let dir = std::env::temp_dir().join(format!("rkubelet-bench-eviction-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rt = Arc::new(FakeRuntime::without_call_log());
    let image = rt.preload_image("docker.io/library/busybox:local");
    let mut pods = Vec::new();
    for i in 0..PODS {
        let p = pod(i);
        let uid = format!("uid-{i}");
        let mut sandbox = api::PodSandboxConfig::new();
        sandbox.mut_metadata().set_name(format!("p{i}"));
        sandbox.mut_metadata().set_uid(uid.clone());
        sandbox.mut_metadata().set_namespace("bench".into());
        let sandbox_id = rt.run_pod_sandbox(&sandbox, "").expect("sandbox");
        let mut config = api::ContainerConfig::new();
        config.mut_metadata().set_name("app".into());
        config.mut_image().set_image(image.clone());
        config
            .labels
            .insert("io.kubernetes.pod.uid".into(), uid.clone());
        config
            .labels
            .insert("io.kubernetes.container.name".into(), "app".into());
        let id = rt
            .create_container(&sandbox_id, &config, &sandbox)
            .expect("container");
        rt.start_container(&id).expect("start");
        // What the kubelet keeps of a pod on disk: a log, an emptyDir with a file, etc-hosts.
        let logs = dir.join(format!("logs/bench_p{i}_{uid}/app"));
        std::fs::create_dir_all(&logs).expect("log dir");
        std::fs::write(logs.join("0.log"), vec![b'x'; 64 << 10]).expect("log");
        let pod_dir = dir.join(format!("root/pods/{uid}"));
        let scratch = pod_dir.join("volumes/kubernetes.io~empty-dir/scratch");
        std::fs::create_dir_all(&scratch).expect("volume dir");
        std::fs::write(scratch.join("data"), vec![0u8; 16 << 10]).expect("volume file");
        std::fs::write(pod_dir.join("etc-hosts"), "127.0.0.1 localhost\n").expect("etc-hosts");
        pods.push(Arc::new(p));
    }
    let host_stats = |period: Duration| {
        HostStats::new(
            rt.clone(),
            rt.clone(),
            &dir.join("root"),
            &dir.join("logs"),
            None,
        )
        .with_volume_stats_period(period)
    };
    // Thresholds no machine meets, so every pass does the full work and evicts nobody.
    let raw = rkubelet::config::kubelet_config::KubeletConfiguration {
        eviction_hard: Some(
            [
                ("memory.available", "1Ki"),
                ("nodefs.available", "1Ki"),
                ("imagefs.available", "1Ki"),
                ("nodefs.inodesFree", "1"),
                ("pid.available", "1"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ),
        ..Default::default()
    };
    let mut config = EvictionConfig::from_config(&raw).expect("eviction config");
    if !full {
        config.monitoring_period = Duration::from_secs(1);
    }
    let monitoring = config.monitoring_period;
    let manager_over = |stats: Arc<dyn StatsSource>| {
        Arc::new(Manager::new(
            config.clone(),
            "bench-node",
            Arc::new(RealClock),
            stats,
            Arc::new(FakeRecorder::default()),
            Arc::new(NodePressure::default()),
        ))
    };
    let host = Arc::new(BenchHost {
        pods,
        evicted_at: Mutex::new(None),
    });

    // 1. CPU per pass: walking every directory every pass (volumeStatsAggPeriod 0), and with
    //    upstream's default period of 1m (walks reused), then the average over a minute of
    //    10 s passes (one walking pass, five reusing).
    let passes: u32 = if full { 2000 } else { 50 };
    let cost = |manager: &Manager| {
        for _ in 0..10 {
            manager.synchronize(host.as_ref());
        }
        let cpu0 = thread_cpu_nanos();
        for _ in 0..passes {
            let evicted = manager.synchronize(host.as_ref());
            assert!(evicted.is_empty(), "no threshold is met in the cost pass");
        }
        thread_cpu_nanos().saturating_sub(cpu0) as f64 / f64::from(passes) / 1e6
    };
    let walking = cost(&manager_over(Arc::new(host_stats(Duration::ZERO))));
    let reusing = cost(&manager_over(Arc::new(host_stats(Duration::from_secs(60)))));
    println!(
        "eviction pass, {PODS} pods each with an ephemeral-storage limit and a sized emptyDir \
         ({passes} passes each): {walking:.3} ms CPU walking logs and volumes every pass, \
         {reusing:.3} ms reusing them (volumeStatsAggPeriod 1m), {:.3} ms on average over a \
         minute of 10 s passes",
        (walking + 5.0 * reusing) / 6.0
    );
    // The common case: the same 110 pods without local storage limits, so a pass reads
    // only the node's signals.
    let plain = Arc::new(BenchHost {
        pods: (0..PODS)
            .map(|i| {
                let mut p = pod(i);
                if let Some(spec) = p.spec.as_mut() {
                    spec.containers[0].resources = None;
                    spec.volumes = None;
                }
                Arc::new(p)
            })
            .collect(),
        evicted_at: Mutex::new(None),
    });
    let plain_manager = manager_over(Arc::new(host_stats(Duration::from_secs(60))));
    let cpu0 = thread_cpu_nanos();
    for _ in 0..passes {
        plain_manager.synchronize(plain.as_ref());
    }
    let plain_cost = thread_cpu_nanos().saturating_sub(cpu0) as f64 / f64::from(passes) / 1e6;
    println!(
        "eviction pass, {PODS} pods without local storage limits ({passes} passes): \
         {plain_cost:.3} ms CPU"
    );
    let stats = Arc::new(Crossable {
        inner: host_stats(Duration::from_secs(60)),
        crossed: AtomicBool::new(false),
    });
    let manager = manager_over(stats.clone());

    // 2. Threshold crossed → eviction, through the manager's own loop.
    let trials = if full { 3 } else { 1 };
    let mut delays = Vec::new();
    for trial in 0..trials {
        *host.evicted_at.lock().unwrap_or_else(|p| p.into_inner()) = None;
        stats.crossed.store(false, Ordering::SeqCst);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let loop_manager = Arc::clone(&manager);
        let loop_host: Arc<dyn EvictionHost> = host.clone();
        let handle = std::thread::spawn(move || loop_manager.run(loop_host, stop_rx));
        // Cross at a different point of the monitoring period each trial.
        let offset = monitoring.mul_f64((trial as f64 * 0.37 + 0.13) % 1.0);
        std::thread::sleep(offset);
        stats.crossed.store(true, Ordering::SeqCst);
        let crossed = Instant::now();
        let deadline = crossed + monitoring * 2 + Duration::from_secs(5);
        let evicted = loop {
            if let Some(at) = *host.evicted_at.lock().unwrap_or_else(|p| p.into_inner()) {
                break Some(at);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        drop(stop_tx);
        let _ = handle.join();
        match evicted {
            Some(at) => delays.push(at.saturating_duration_since(crossed)),
            None => println!("trial {trial}: no eviction within {:?}", deadline - crossed),
        }
    }
    if !delays.is_empty() {
        let ms: Vec<String> = delays
            .iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
            .collect();
        let max = delays.iter().max().copied().unwrap_or_default();
        println!(
            "threshold crossed → eviction requested: [{}] ms over {} trials (monitoring period {:?}; bound: one period plus one pass), max {:.0} ms",
            ms.join(", "),
            delays.len(),
            monitoring,
            max.as_secs_f64() * 1e3
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
