//! Slow pods must not stall the bounded pod-worker pool: 16 pods whose containers ignore
//! SIGTERM (grace period 30 s) are deleted at once, then a new pod is added; prints the time
//! until the new pod's container runs, and how long the 16 stops took. Real sync loop, pod
//! workers (the default 8), waiters and runtime manager over the in-memory fake runtime,
//! whose containers with `rkubelet.io/fake-ignore-sigterm: "true"` take their whole grace
//! period to stop. Run with `cargo bench --bench slow_pods`; under `cargo test` (no
//! `--bench`) it does a small pass (4 pods, grace 3 s).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use rkubelet::clock::RealClock;
use rkubelet::config::mux::SourcesReady;
use rkubelet::config::settings::KubeletConfig;
use rkubelet::config::update::{PodOperation, PodUpdate};
use rkubelet::cri::{api, FakeRuntime, RuntimeService};
use rkubelet::events::FakeRecorder;
use rkubelet::kubelet::{Bootstrap, Deps, Kubelet};

const IMAGE: &str = "docker.io/library/busybox:local";

fn pod(name: &str, grace: i64, ignore_sigterm: bool) -> Arc<Pod> {
    let mut annotations = BTreeMap::new();
    if ignore_sigterm {
        annotations.insert(
            "rkubelet.io/fake-ignore-sigterm".to_string(),
            "true".to_string(),
        );
    }
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(PodSpec {
            termination_grace_period_seconds: Some(grace),
            containers: vec![Container {
                name: "app".into(),
                image: Some(IMAGE.into()),
                image_pull_policy: Some("IfNotPresent".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn running(fake: &FakeRuntime, name: &str) -> bool {
    let mut filter = api::ContainerFilter::new();
    filter
        .mut_label_selector()
        .insert("io.kubernetes.pod.name".into(), name.into());
    fake.list_containers(Some(&filter))
        .unwrap_or_default()
        .iter()
        .any(|c| c.get_state() == api::ContainerState::CONTAINER_RUNNING)
}

fn wait(what: &str, timeout: Duration, f: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
    started.elapsed()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (slow, grace) = if full { (16, 30) } else { (4, 3) };
    let dir = std::env::temp_dir().join(format!("rkubelet-bench-slow-{}", std::process::id()));
    let args = [
        "rkubelet".to_string(),
        format!("--root-dir={}", dir.join("root").display()),
        format!("--pod-logs-dir={}", dir.join("logs/pods").display()),
        "--hostname-override=bench".into(),
        "--resolv-conf=".into(),
    ];
    let config = Arc::new(KubeletConfig::from_args(args.iter().map(Into::into)).expect("config"));
    let workers = config.pod_workers;
    let fake = Arc::new(FakeRuntime::without_call_log());
    fake.add_image(IMAGE);
    let deps = Deps {
        runtime: fake.clone(),
        images: fake.clone(),
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
    let (updates, rx) = crossbeam_channel::bounded(64);
    let (stop, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let sync_loop = std::thread::spawn(move || kubelet.run(rx, stop_rx).expect("run"));
    let send = |pods: Vec<Arc<Pod>>, op: PodOperation| {
        updates
            .send(PodUpdate {
                pods,
                op,
                source: "file".into(),
            })
            .expect("send");
    };

    let stubborn: Vec<Arc<Pod>> = (0..slow)
        .map(|i| pod(&format!("stubborn-{i}"), grace, true))
        .collect();
    send(stubborn.clone(), PodOperation::Add);
    wait("the stubborn pods to run", Duration::from_secs(60), || {
        stubborn
            .iter()
            .all(|p| running(&fake, p.metadata.name.as_deref().unwrap_or_default()))
    });

    // Delete them all at once (they are gone from their source), then add a new pod.
    let deleted_at = Instant::now();
    send(stubborn.clone(), PodOperation::Remove);
    std::thread::sleep(Duration::from_millis(100));
    let added_at = Instant::now();
    send(vec![pod("fresh", 30, false)], PodOperation::Add);
    let new_pod = wait("the new pod", Duration::from_secs(120), || {
        running(&fake, "fresh")
    });
    println!(
        "slow pods: {slow} pods ignoring SIGTERM (grace {grace} s) deleted at once on {workers} pod workers; a new pod ran {:.1} ms after it was added",
        new_pod.as_secs_f64() * 1000.0
    );
    let stops = wait(
        "the stubborn pods to stop",
        Duration::from_secs(u64::try_from(grace).unwrap_or(30) + 60),
        || {
            stubborn
                .iter()
                .all(|p| !running(&fake, p.metadata.name.as_deref().unwrap_or_default()))
        },
    ) + added_at.duration_since(deleted_at);
    println!(
        "slow pods: the {slow} stops took {:.1} s together (each waits out its {grace} s grace period)",
        stops.as_secs_f64()
    );
    drop(stop);
    sync_loop.join().expect("sync loop");
    let _ = std::fs::remove_dir_all(&dir);
}
