//! CSI volumes through the volume manager and the test driver (real CSI over a unix socket,
//! real bind mounts; needs CAP_SYS_ADMIN, which the test command has as root):
//!
//! - an attachable persistent volume waits until it is reported in `volumesInUse`, in the
//!   Node's `volumesAttached` and its VolumeAttachment is attached; then it is staged and
//!   published with the attachment metadata, the secrets of the PV's secret refs and the
//!   pod information the CSIDriver asks for, at upstream's paths;
//! - the driver's `NodeGetVolumeStats` figures are the claim's statistics;
//! - a new manager on the same root dir (a restarted kubelet) finds the volume published and
//!   does not publish it again; teardown unpublishes, then unstages;
//! - an inline ephemeral volume is published without staging, with `ephemeral: true`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::{CSIDriver, VolumeAttachment};
use rkubelet::api::fake::FakeClient;
use rkubelet::api::KubeClient;
use rkubelet::clock::RealClock;
use rkubelet::csi::{self, CsiDrivers, PluginWatcher};
use rkubelet::types::PodUid;
use rkubelet::volume::mount::{is_mount_point, mounts_under, unmount};
use rkubelet::volume::{NodeResources, PodVolumes, VolumeManager, VolumeSettings};
use support::csi_driver::{DriverOptions, TestCsiDriver, VOLUME_BYTES};
use support::{scratch_dir, wait_for};

const DRIVER: &str = "volumes.csi.test";
const NODE: &str = "csi-node";

fn object<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn has_cap_sys_admin() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap() & (1 << 21) != 0
}

/// Unmounts whatever a failed run left under the scratch dir.
struct Cleanup(std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut left = mounts_under(&self.0);
        left.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for m in left {
            let _ = unmount(&m);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sets the pod's volumes up, again until nothing is in progress; returns the last outcome
/// and every failure message seen, in order.
fn set_up(manager: &VolumeManager, pod: &Pod, uid: &PodUid) -> (PodVolumes, Vec<String>) {
    let mut seen = Vec::new();
    for _ in 0..100 {
        let volumes = manager.setup_pod(pod, uid);
        let Some(failure) = volumes.failed.first() else {
            return (volumes, seen);
        };
        let message = failure.source.to_string();
        if !matches!(
            failure.source,
            rkubelet::volume::VolumeError::InProgress { .. }
        ) {
            seen.push(message);
            return (volumes, seen);
        }
        if seen.last() != Some(&message) {
            seen.push(message);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("volumes never set up: {seen:?}");
}

fn tear_down(manager: &VolumeManager, uid: &PodUid) {
    for _ in 0..100 {
        match manager.teardown_pod(uid) {
            Ok(()) => return,
            Err(rkubelet::volume::VolumeError::InProgress { .. }) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("teardown failed: {e}"),
        }
    }
    panic!("teardown never finished");
}

fn manager(
    root: &std::path::Path,
    api: &Arc<FakeClient>,
    drivers: &Arc<CsiDrivers>,
) -> VolumeManager {
    VolumeManager::with_settings(
        root,
        VolumeSettings {
            api: Some(api.clone() as Arc<dyn KubeClient>),
            clock: Arc::new(RealClock),
            tmpfs: false,
            node: NodeResources::default(),
            services: None,
            csi: Some(Arc::clone(drivers)),
        },
    )
    .with_node_name(NODE)
}

#[test]
fn csi_volumes_wait_for_attachment_then_stage_publish_survive_restart_and_tear_down_in_order() {
    if !has_cap_sys_admin() {
        eprintln!("skipped: bind mounts need CAP_SYS_ADMIN");
        return;
    }
    let dir = scratch_dir("csi-volumes");
    let _cleanup = Cleanup(dir.clone());
    let root = dir.join("root");
    let api = Arc::new(FakeClient::new());
    api.insert_node(&object::<Node>(
        serde_json::json!({"metadata": {"name": NODE}}),
    ))
    .unwrap();
    let drivers = Arc::new(CsiDrivers::new());
    let (_stop, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let _watcher = PluginWatcher::start(
        &root.join("plugins_registry"),
        Arc::clone(&drivers),
        None,
        stop_rx,
    )
    .unwrap();
    let driver = TestCsiDriver::start(
        DriverOptions::new(DRIVER),
        &dir.join("driver"),
        &root.join("plugins_registry"),
    );
    wait_for(Duration::from_secs(15), || {
        (drivers.names() == [DRIVER]).then_some(())
    })
    .expect("driver not registered");

    api.insert_csi_driver(&object::<CSIDriver>(serde_json::json!({
        "metadata": {"name": DRIVER},
        "spec": {"attachRequired": true, "podInfoOnMount": true,
                 "volumeLifecycleModes": ["Persistent", "Ephemeral"]}
    })))
    .unwrap();
    for (name, key) in [
        ("stage-creds", "stage-key"),
        ("publish-creds", "publish-key"),
    ] {
        api.insert_secret(&object::<Secret>(serde_json::json!({
            "metadata": {"name": name, "namespace": "storage"},
            "stringData": {}, "data": {key: "c2VjcmV0"}
        })))
        .unwrap();
    }
    let claim: PersistentVolumeClaim = object(serde_json::json!({
        "metadata": {"name": "data", "namespace": "default"},
        "spec": {"volumeName": "pv-csi", "accessModes": ["ReadWriteOnce"]},
        "status": {"phase": "Bound"}
    }));
    let claim = api.insert_persistent_volume_claim(&claim).unwrap();
    let claim_uid = claim.metadata.uid.clone().unwrap();
    api.insert_persistent_volume(&object::<PersistentVolume>(serde_json::json!({
        "metadata": {"name": "pv-csi"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "claimRef": {"namespace": "default", "name": "data", "uid": claim_uid},
                 "mountOptions": ["noatime"],
                 "csi": {"driver": DRIVER, "volumeHandle": "vol-1", "fsType": "ext4",
                         "volumeAttributes": {"tier": "gold"},
                         "nodeStageSecretRef": {"name": "stage-creds", "namespace": "storage"},
                         "nodePublishSecretRef": {"name": "publish-creds", "namespace": "storage"}}}
    })))
    .unwrap();

    let pod: Pod = object(serde_json::json!({
        "metadata": {"name": "app", "namespace": "default", "uid": "pod-uid-1"},
        "spec": {"serviceAccountName": "runner", "containers": [{"name": "c", "image": "i"}],
                 "volumes": [{"name": "vol", "persistentVolumeClaim": {"claimName": "data"}}]}
    }));
    let uid = PodUid("pod-uid-1".into());
    let vm = manager(&root, &api, &drivers);
    let unique = csi::unique_volume_name(DRIVER, "vol-1");

    // Not reported in use yet: waits, and asks to be.
    let volumes = vm.setup_pod(&pod, &uid);
    let message = volumes.failed[0].source.to_string();
    assert!(
        message.starts_with("Volume has not been added to the list of VolumesInUse"),
        "{message}"
    );
    assert_eq!(vm.volumes_in_use(), vec![unique.clone()]);
    vm.mark_volumes_reported_in_use(std::slice::from_ref(&unique));
    let message = vm.setup_pod(&pod, &uid).failed[0].source.to_string();
    assert!(
        message.starts_with("Volume not attached according to node status"),
        "{message}"
    );
    api.patch_node_status(
        NODE,
        &serde_json::json!({"status": {"volumesAttached": [{"name": unique, "devicePath": ""}]}}),
    )
    .unwrap();
    let attachment = csi::attachment_name("vol-1", DRIVER, NODE);
    let message = vm.setup_pod(&pod, &uid).failed[0].source.to_string();
    assert!(
        message.contains(&attachment) && message.contains("not found"),
        "{message}"
    );
    api.put_volume_attachment(&object::<VolumeAttachment>(serde_json::json!({
        "metadata": {"name": attachment},
        "spec": {"attacher": DRIVER, "nodeName": NODE,
                 "source": {"persistentVolumeName": "pv-csi"}},
        "status": {"attached": true, "attachmentMetadata": {"devicePath": "/dev/test0"}}
    })))
    .unwrap();
    assert!(
        driver.methods_for("vol-1").is_empty(),
        "called before attached"
    );
    let (volumes, _) = set_up(&vm, &pod, &uid);
    assert!(volumes.failed.is_empty(), "{:?}", volumes.failed);

    let staging = csi::staging_path(&root, DRIVER, "vol-1");
    let target = root.join("pods/pod-uid-1/volumes/kubernetes.io~csi/pv-csi/mount");
    assert_eq!(volumes.volumes["vol"].path, target);
    assert_eq!(
        driver.methods_for("vol-1"),
        ["NodeStageVolume", "NodePublishVolume"]
    );
    let calls = driver.calls();
    let stage = calls
        .iter()
        .find(|c| c.method == "NodeStageVolume")
        .unwrap();
    let publish = calls
        .iter()
        .find(|c| c.method == "NodePublishVolume")
        .unwrap();
    assert_eq!(stage.path, staging.to_string_lossy());
    assert_eq!(stage.publish_context["devicePath"], "/dev/test0");
    assert_eq!(stage.secrets["stage-key"], "secret");
    assert_eq!(publish.path, target.to_string_lossy());
    assert_eq!(publish.staging_path, staging.to_string_lossy());
    assert_eq!(publish.secrets["publish-key"], "secret");
    assert!(!publish.readonly);
    for (key, value) in [
        ("tier", "gold"),
        ("csi.storage.k8s.io/pod.name", "app"),
        ("csi.storage.k8s.io/pod.namespace", "default"),
        ("csi.storage.k8s.io/pod.uid", "pod-uid-1"),
        ("csi.storage.k8s.io/serviceAccount.name", "runner"),
        ("csi.storage.k8s.io/ephemeral", "false"),
    ] {
        assert_eq!(
            publish.context.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    // upstream's metadata files beside both directories
    let vol_data: serde_json::Value = serde_json::from_slice(
        &std::fs::read(target.parent().unwrap().join("vol_data.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(vol_data["driverName"], DRIVER);
    assert_eq!(vol_data["volumeHandle"], "vol-1");
    assert_eq!(vol_data["specVolID"], "pv-csi");
    assert_eq!(vol_data["attachmentID"], attachment.as_str());
    assert_eq!(vol_data["volumeLifecycleMode"], "Persistent");
    assert!(staging.parent().unwrap().join("vol_data.json").exists());
    // Data goes to the driver's volume.
    std::fs::write(target.join("file"), "kept").unwrap();
    assert_eq!(
        std::fs::read_to_string(driver.volume_dir("vol-1").join("file")).unwrap(),
        "kept"
    );
    // The driver's figures are the claim's.
    let claims = vm.claim_volumes_with_usage();
    assert_eq!(claims.len(), 1);
    let usage = claims[0].usage.expect("no CSI figures");
    assert_eq!(usage.capacity_bytes, Some(VOLUME_BYTES as u64));
    assert_eq!(usage.used_bytes, Some(4));

    // A restarted kubelet finds the volume published: no second publish, no second mount.
    let restarted = manager(&root, &api, &drivers);
    restarted.mark_volumes_reported_in_use(std::slice::from_ref(&unique));
    let (volumes, _) = set_up(&restarted, &pod, &uid);
    assert!(volumes.failed.is_empty(), "{:?}", volumes.failed);
    assert_eq!(
        driver.methods_for("vol-1"),
        ["NodeStageVolume", "NodePublishVolume"]
    );
    assert_eq!(restarted.volumes_in_use(), vec![unique.clone()]);

    // Teardown: unpublish, then unstage; the data stays on the volume.
    tear_down(&restarted, &uid);
    assert_eq!(
        driver.methods_for("vol-1"),
        [
            "NodeStageVolume",
            "NodePublishVolume",
            "NodeUnpublishVolume",
            "NodeUnstageVolume"
        ]
    );
    assert!(!is_mount_point(&target) && !target.exists());
    assert!(!staging.parent().unwrap().exists());
    assert!(restarted.volumes_in_use().is_empty());
    assert!(!root.join("pods/pod-uid-1").exists());
    assert!(driver.volume_dir("vol-1").join("file").exists());

    // An inline ephemeral volume: published without staging, told it is ephemeral.
    let inline: Pod = object(serde_json::json!({
        "metadata": {"name": "scratch", "namespace": "default", "uid": "pod-uid-2"},
        "spec": {"containers": [{"name": "c", "image": "i"}],
                 "volumes": [{"name": "tmp", "csi": {"driver": DRIVER, "readOnly": true,
                              "volumeAttributes": {"size": "1Mi"}}}]}
    }));
    let uid2 = PodUid("pod-uid-2".into());
    let (volumes, _) = set_up(&restarted, &inline, &uid2);
    assert!(volumes.failed.is_empty(), "{:?}", volumes.failed);
    let publish = driver
        .calls()
        .into_iter()
        .find(|c| c.method == "NodePublishVolume" && c.volume_id != "vol-1")
        .unwrap();
    assert!(publish.volume_id.starts_with("csi-") && publish.volume_id.len() == 68);
    assert!(publish.staging_path.is_empty());
    assert!(publish.readonly);
    assert_eq!(publish.context["csi.storage.k8s.io/ephemeral"], "true");
    assert_eq!(publish.context["size"], "1Mi");
    assert!(volumes.volumes["tmp"].read_only);
    assert!(
        restarted.volumes_in_use().is_empty(),
        "inline volumes are not attached"
    );
    tear_down(&restarted, &uid2);
    assert_eq!(
        driver.methods_for(&publish.volume_id),
        ["NodePublishVolume", "NodeUnpublishVolume"]
    );
    driver.stop();
}

#[test]
fn csi_volumes_of_unknown_drivers_and_refused_modes_fail_with_upstreams_words() {
    let dir = scratch_dir("csi-volumes-refused");
    let api = Arc::new(FakeClient::new());
    api.insert_csi_driver(&object::<CSIDriver>(serde_json::json!({
        "metadata": {"name": "persistent-only.csi.test"}, "spec": {}
    })))
    .unwrap();
    let drivers = Arc::new(CsiDrivers::new());
    let vm = manager(&dir.join("root"), &api, &drivers);
    let pod: Pod = object(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "u"},
        "spec": {"containers": [{"name": "c", "image": "i"}],
                 "volumes": [
                     {"name": "a", "csi": {"driver": "persistent-only.csi.test"}},
                     {"name": "b", "csi": {"driver": "missing.csi.test"}}]}
    }));
    let volumes = vm.setup_pod(&pod, &PodUid("u".into()));
    let messages: Vec<String> = volumes.failed.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        messages,
        [
            "MountVolume.SetUp failed for volume \"a\" : volume mode \"Ephemeral\" not supported by driver persistent-only.csi.test (only supports [\"Persistent\"])",
            "MountVolume.SetUp failed for volume \"b\" : volume mode \"Ephemeral\" not supported by driver missing.csi.test (no CSIDriver object)",
        ]
    );
    api.insert_csi_driver(&object::<CSIDriver>(serde_json::json!({
        "metadata": {"name": "missing.csi.test"},
        "spec": {"volumeLifecycleModes": ["Ephemeral"]}
    })))
    .unwrap();
    let volumes = vm.setup_pod(&pod, &PodUid("u".into()));
    assert_eq!(
        volumes.failed[1].to_string(),
        "MountVolume.SetUp failed for volume \"b\" : driver name missing.csi.test not found in the list of registered CSI drivers"
    );
    // Without CSI wired in, CSI volumes are unsupported (fail closed).
    let plain = VolumeManager::new(&dir.join("root2"));
    let volumes = plain.setup_pod(&pod, &PodUid("u".into()));
    assert_eq!(volumes.unsupported.len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
