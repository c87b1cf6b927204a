//! End-to-end node-pressure eviction on containerd: local storage limits (an emptyDir over
//! its `sizeLimit`, a container over its `ephemeral-storage` limit), disk pressure on a root
//! dir that fills up and empties again (a small tmpfs), and memory pressure from a threshold
//! above what the machine has.
//!
//! The real `rkubelet` binary on the test containerd, joined to the API server test double.
//! Ignored in a plain `cargo test` (they need the containerd `tests/run.sh` starts, and root
//! for the tmpfs); they share that containerd, so they run one at a time.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, Pod, PodStatus, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use support::e2e::{api_status, pod, wait_phase, Cluster, NODE, SERIAL};
use support::wait_for;

/// Waits until the pod is `Failed` with reason `Evicted`; returns its status.
fn wait_evicted(c: &Cluster, name: &str, within: Duration) -> PodStatus {
    wait_for(within, || {
        let status = api_status(c, name)?;
        (status.phase.as_deref() == Some("Failed") && status.reason.as_deref() == Some("Evicted"))
            .then_some(status)
    })
    .unwrap_or_else(|| panic!("{name} not evicted: {:?}\n{}", api_status(c, name), c.log()))
}

fn node_condition(c: &Cluster, kind: &str) -> Option<(String, String)> {
    let node = c.server.get_node(NODE)?;
    node.status?
        .conditions?
        .into_iter()
        .find(|cond| cond.type_ == kind)
        .map(|cond| (cond.status, cond.reason.unwrap_or_default()))
}

fn limit(resource: &str, value: &str) -> ResourceRequirements {
    ResourceRequirements {
        limits: Some(BTreeMap::from([(
            resource.to_string(),
            Quantity(value.into()),
        )])),
        ..Default::default()
    }
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn pods_over_their_local_storage_limits_are_evicted() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Volume usage is walked once per volumeStatsAggPeriod (1m by default, as upstream);
    // 10 s keeps the test short.
    let dir = support::scratch_dir("e2e-eviction-local-storage-config");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         volumeStatsAggPeriod: 10s\n",
    )
    .unwrap();
    let flag = format!("--config={}", config.display());
    let c = Cluster::start_with("e2e-eviction-local-storage", &[&flag]);
    c.wait_ready_node();
    // An emptyDir of at most 1Mi that gets 4 MiB.
    let mut volume = pod(
        "volume-filler",
        "dd if=/dev/zero of=/scratch/fill bs=1M count=4; sleep 3600",
        1,
    );
    let spec = volume.spec.as_mut().unwrap();
    spec.volumes = Some(vec![Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("1Mi".into())),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    spec.containers[0].volume_mounts = Some(vec![VolumeMount {
        name: "scratch".into(),
        mount_path: "/scratch".into(),
        ..Default::default()
    }]);
    c.server.create_pod(volume).unwrap();
    // A container of at most 2Mi of ephemeral storage that writes 8 MiB into its layer.
    let mut layer = pod(
        "layer-filler",
        "dd if=/dev/zero of=/fill bs=1M count=8; sleep 3600",
        1,
    );
    layer.spec.as_mut().unwrap().containers[0].resources = Some(limit("ephemeral-storage", "2Mi"));
    c.server.create_pod(layer).unwrap();
    // A pod within its limit stays.
    let mut modest = pod("modest", "sleep 3600", 1);
    modest.spec.as_mut().unwrap().containers[0].resources =
        Some(limit("ephemeral-storage", "100Mi"));
    c.server.create_pod(modest).unwrap();

    let volume = wait_evicted(&c, "volume-filler", Duration::from_secs(90));
    assert_eq!(
        volume.message.as_deref(),
        Some("Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ")
    );
    let layer = wait_evicted(&c, "layer-filler", Duration::from_secs(90));
    let message = layer.message.unwrap_or_default();
    // The pod's total is its one container's usage, so upstream's pod check fires first.
    assert!(
        message == "Pod ephemeral local storage usage exceeds the total limit of containers 2Mi. "
            || message == "Container app exceeded its local ephemeral storage limit \"2Mi\". ",
        "{message}"
    );
    let events = c.server.events();
    for name in ["volume-filler", "layer-filler"] {
        assert!(
            events.iter().any(|e| e.reason.as_deref() == Some("Evicted")
                && e.involved_object.name.as_deref() == Some(name)
                && e.type_.as_deref() == Some("Warning")),
            "no Evicted event for {name}: {events:?}"
        );
    }
    assert_eq!(c.phase("modest").as_deref(), Some("Running"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs at {}", path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Usually gone with the cluster already; then this has nothing to do.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn disk_pressure_turns_the_condition_true_evicts_rejects_and_clears_when_space_returns() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let name = "e2e-eviction-disk";
    let root = std::env::temp_dir()
        .join(format!("rkubelet-test-{}-{name}", std::process::id()))
        .join("root");
    let _tmpfs = Tmpfs(root.clone());
    let c = Cluster::start_with_root(
        name,
        &[
            "--eviction-hard=memory.available<100Mi,nodefs.available<32Mi,imagefs.available<1%",
            "--eviction-pressure-transition-period=5s",
        ],
        |root| Tmpfs::mount(root, "64m"),
    );
    c.wait_ready_node();
    assert_eq!(
        node_condition(&c, "DiskPressure"),
        Some(("False".into(), "KubeletHasNoDiskPressure".into()))
    );
    c.server
        .create_pod(pod("victim", "sleep 3600", 30))
        .unwrap();
    wait_phase(&c, "victim", "Running", Duration::from_secs(60));

    // The root dir fills: 40 MiB of 64 leave less than the 32Mi threshold.
    let filler = root.join("filler");
    std::fs::write(&filler, vec![0u8; 40 << 20]).unwrap();
    let filled = Instant::now();
    wait_for(Duration::from_secs(20), || {
        (node_condition(&c, "DiskPressure")?
            == ("True".to_string(), "KubeletHasDiskPressure".to_string()))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no DiskPressure within 20 s:\n{}", c.log()));
    let reported = filled.elapsed();
    let victim = wait_evicted(&c, "victim", Duration::from_secs(60));
    let message = victim.message.clone().unwrap_or_default();
    assert!(
        message.starts_with(
            "The node was low on resource: ephemeral-storage. Threshold quantity: 32Mi, available: "
        ),
        "{message}"
    );
    let disruption = victim
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget")
        .unwrap_or_else(|| panic!("no DisruptionTarget: {victim:?}"));
    assert_eq!(disruption.status, "True");
    assert_eq!(disruption.reason.as_deref(), Some("TerminationByKubelet"));
    assert!(c.server.events().iter().any(|e| {
        e.reason.as_deref() == Some("Evicted")
            && e.involved_object.name.as_deref() == Some("victim")
    }));
    eprintln!("DiskPressure reported {reported:?} after the disk filled");

    // Under DiskPressure every new pod is turned away.
    c.server
        .create_pod(pod("newcomer", "sleep 3600", 1))
        .unwrap();
    let rejected = wait_for(Duration::from_secs(30), || {
        let status = api_status(&c, "newcomer")?;
        (status.phase.as_deref() == Some("Failed")).then_some(status)
    })
    .unwrap_or_else(|| panic!("newcomer not rejected:\n{}", c.log()));
    assert_eq!(rejected.reason.as_deref(), Some("Evicted"));
    assert_eq!(
        rejected.message.as_deref(),
        Some("Pod was rejected: The node had condition: [DiskPressure]. ")
    );

    // Space returns: the condition clears after the transition period.
    std::fs::remove_file(&filler).unwrap();
    wait_for(Duration::from_secs(40), || {
        (node_condition(&c, "DiskPressure")?
            == ("False".to_string(), "KubeletHasNoDiskPressure".to_string()))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("DiskPressure did not clear:\n{}", c.log()));
    c.server.create_pod(pod("after", "sleep 3600", 1)).unwrap();
    wait_phase(&c, "after", "Running", Duration::from_secs(60));
}

fn mem_total_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn memory_pressure_evicts_best_effort_pods_and_admits_only_pods_with_requests() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // A threshold at the machine's whole memory: always met.
    let hard = format!(
        "--eviction-hard=memory.available<{}Ki,nodefs.available<1%,imagefs.available<1%",
        mem_total_kib()
    );
    let c = Cluster::start_with("e2e-eviction-memory", &[&hard]);
    c.wait_ready_node();
    wait_for(Duration::from_secs(20), || {
        (node_condition(&c, "MemoryPressure")?
            == (
                "True".to_string(),
                "KubeletHasInsufficientMemory".to_string(),
            ))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no MemoryPressure within 20 s:\n{}", c.log()));

    // BestEffort: rejected at admission.
    c.server
        .create_pod(pod("best-effort", "sleep 3600", 1))
        .unwrap();
    let rejected = wait_for(Duration::from_secs(30), || {
        let status = api_status(&c, "best-effort")?;
        (status.phase.as_deref() == Some("Failed")).then_some(status)
    })
    .unwrap_or_else(|| panic!("best-effort not rejected:\n{}", c.log()));
    assert_eq!(
        rejected.message.as_deref(),
        Some("Pod was rejected: The node had condition: [MemoryPressure]. ")
    );
    // Burstable (a CPU request; a memory request would not fit the zero allocatable memory
    // this threshold leaves): admitted, then evicted for memory like any pod using more
    // than it asked.
    let mut burstable: Pod = pod("burstable", "sleep 3600", 30);
    burstable.spec.as_mut().unwrap().containers[0].resources = Some(ResourceRequirements {
        requests: Some(BTreeMap::from([(
            "cpu".to_string(),
            Quantity("10m".into()),
        )])),
        ..Default::default()
    });
    c.server.create_pod(burstable).unwrap();
    let evicted = wait_evicted(&c, "burstable", Duration::from_secs(90));
    let message = evicted.message.unwrap_or_default();
    assert!(
        message.starts_with("The node was low on resource: memory. Threshold quantity: "),
        "{message}"
    );
    // Evicted before its container ran, a pod has no usage to name.
    if message.contains("Container app was using ") {
        assert!(message.contains("request is 0,"), "{message}");
    }
}
