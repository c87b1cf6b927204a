//! Probe cost: 110 pods with a liveness, a readiness and a startup exec probe each (period
//! 1 s) on one `prober` thread and its pool, against the in-memory fake runtime. Prints the
//! probes run per second, the CPU the process spent per wall second and its thread count,
//! which must not grow with the number of probes. Run with `cargo bench --bench probes`.
//!
//! Under `cargo test` (no `--bench` argument) it runs a short smoke pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use rkubelet::clock::RealClock;
use rkubelet::cri::{api, FakeRuntime, RuntimeService};
use rkubelet::events::FakeRecorder;
use rkubelet::prober::{ContainerState, ProbeManager, ProberDeps};

const PODS: usize = 110;

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // The clock tick is 100 Hz on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn pod(i: usize) -> Pod {
    let probe = |path: &str| {
        serde_json::json!({"exec": {"command": ["cat", path]}, "periodSeconds": 1,
            "failureThreshold": 3})
    };
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("p{i}"), "namespace": "bench", "uid": format!("uid-{i}")},
        "spec": {"containers": [{"name": "app", "image": "busybox",
            "livenessProbe": probe("/live"), "readinessProbe": probe("/ready"),
            "startupProbe": probe("/started")}]}
    }))
    .unwrap_or_default()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let seconds = if full { 20 } else { 3 };
    let rt = Arc::new(FakeRuntime::without_call_log());
    let image = rt.preload_image("docker.io/library/busybox:local");
    rt.set_exec_result(b"ok", b"", 0);
    let before_threads = threads();
    let (manager, updates, handles) = ProbeManager::start(ProberDeps {
        runtime: rt.clone(),
        clock: Arc::new(RealClock),
        recorder: Arc::new(FakeRecorder::default()),
        workers: 4,
    })
    .expect("prober threads");
    for i in 0..PODS {
        let pod = Arc::new(pod(i));
        let mut sandbox = api::PodSandboxConfig::new();
        sandbox.mut_metadata().set_name(format!("p{i}"));
        sandbox.mut_metadata().set_uid(format!("uid-{i}"));
        sandbox.mut_metadata().set_namespace("bench".into());
        let sandbox_id = rt.run_pod_sandbox(&sandbox, "").expect("sandbox");
        let mut config = api::ContainerConfig::new();
        config.mut_metadata().set_name("app".into());
        config.mut_image().set_image(image.clone());
        let id = rt
            .create_container(&sandbox_id, &config, &sandbox)
            .expect("container");
        rt.start_container(&id).expect("start");
        manager.set_pod(
            pod,
            Some("10.0.0.1".into()),
            vec![ContainerState {
                name: "app".into(),
                id: Some(id),
                running: true,
                started_at: Some(std::time::SystemTime::now()),
            }],
        );
    }
    // Let the first jittered round pass, then measure.
    std::thread::sleep(Duration::from_secs(2));
    let runs0 = manager
        .metrics()
        .runs
        .load(std::sync::atomic::Ordering::Relaxed);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut peak_threads = 0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        while updates.try_recv().is_ok() {}
        peak_threads = peak_threads.max(threads());
        std::thread::sleep(Duration::from_millis(200));
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let runs = manager
        .metrics()
        .runs
        .load(std::sync::atomic::Ordering::Relaxed)
        - runs0;
    let saturated = manager
        .metrics()
        .saturated
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "probes: {PODS} pods x 3 exec probes, period 1 s, 4 pool threads, {seconds} s measured"
    );
    println!(
        "probes: {:.0} probe runs/s (expected about {}), CPU {:.2}% of one core, threads {} (before the prober: {}), saturated {}",
        runs as f64 / wall,
        PODS * 2,
        cpu / wall * 100.0,
        peak_threads,
        before_threads,
        saturated
    );
    manager.shutdown();
    for h in handles {
        let _ = h.join();
    }
    assert!(runs > 0, "probes ran");
}
