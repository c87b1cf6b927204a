//! End-to-end CSI on containerd: the real `rkubelet` binary joined to the API server double,
//! the test CSI driver registering through `<root-dir>/plugins_registry` as
//! node-driver-registrar does. The double plays the attach/detach controller and the
//! external attacher (`attach_csi_volume`) once the kubelet reports the volume in
//! `volumesInUse`.
//!
//! One persistent volume goes through registration (CSINode, node annotation), the attach
//! handshake, stage and publish (data lands on the driver's volume), the driver's statistics
//! on `/metrics`, a `kill -9` restart (found published, not published again, same
//! container), and a second `kill -9` during which the pod is deleted (unpublished, then
//! unstaged after the restart). An inline ephemeral volume is published without staging and
//! unpublished with its pod.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use support::csi_driver::{DriverOptions, TestCsiDriver, VOLUME_BYTES};
use support::e2e::{container_log, object, wait_phase, Cluster, IMAGE, NODE, SERIAL};
use support::kubelet_api::{request, Auth};
use support::wait_for;

const DRIVER: &str = "e2e.csi.test";

fn pod(name: &str, script: &str, volume: serde_json::Value) -> Pod {
    object(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": NODE, "restartPolicy": "Always", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [volume]
        }
    }))
}

fn volumes_in_use(c: &Cluster) -> Vec<String> {
    c.server
        .get_node(NODE)
        .and_then(|n| n.status)
        .and_then(|s| s.volumes_in_use)
        .unwrap_or_default()
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn a_csi_volume_is_attached_staged_published_survives_kill_9_and_is_torn_down() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start("e2e-csi");
    c.wait_ready_node();
    let root = c.dir.join("root");
    let driver = TestCsiDriver::start(
        DriverOptions::new(DRIVER),
        &c.dir.join("driver"),
        &root.join("plugins_registry"),
    );

    // Registration: the registrar is told, CSINode and the Node carry the driver.
    wait_for(Duration::from_secs(30), || {
        c.server
            .get_csi_node(NODE)
            .filter(|n| n["spec"]["drivers"][0]["name"] == DRIVER && !driver.notified().is_empty())
    })
    .unwrap_or_else(|| panic!("driver not in CSINode:\n{}", c.log()));
    assert_eq!(driver.notified()[0], (true, String::new()));
    let csi_node = c.server.get_csi_node(NODE).unwrap();
    assert_eq!(
        csi_node["spec"]["drivers"][0]["nodeID"],
        format!("{DRIVER}-node-1")
    );
    assert_eq!(csi_node["spec"]["drivers"][0]["allocatable"]["count"], 8);
    assert_eq!(csi_node["metadata"]["ownerReferences"][0]["kind"], "Node");
    let node = c.server.get_node(NODE).unwrap();
    assert_eq!(
        node.metadata.annotations.unwrap()["csi.volume.kubernetes.io/nodeid"],
        format!(r#"{{"{DRIVER}":"{DRIVER}-node-1"}}"#)
    );
    assert_eq!(
        node.metadata.labels.unwrap()["topology.csi.test/zone"],
        "zone-a"
    );

    c.server
        .create_csi_driver(serde_json::json!({
            "metadata": {"name": DRIVER},
            "spec": {"podInfoOnMount": true,
                     "volumeLifecycleModes": ["Persistent", "Ephemeral"]}
        }))
        .unwrap();
    c.server
        .create_persistent_volume(object::<PersistentVolume>(serde_json::json!({
            "metadata": {"name": "pv-csi"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                     "csi": {"driver": DRIVER, "volumeHandle": "e2e-vol",
                             "volumeAttributes": {"tier": "gold"}}}
        })))
        .unwrap();
    c.server
        .create_persistent_volume_claim(object::<PersistentVolumeClaim>(serde_json::json!({
            "metadata": {"name": "data", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "resources": {"requests": {"storage": "1Gi"}}}
        })))
        .unwrap();
    c.server.bind_claim("default", "data", "pv-csi").unwrap();
    c.server
        .create_pod(pod(
            "writer",
            "echo from-pod > /data/file; sleep 3600",
            serde_json::json!({"name": "data", "persistentVolumeClaim": {"claimName": "data"}}),
        ))
        .unwrap();

    // The kubelet reports the volume in use and waits for it to be attached.
    let unique = format!("kubernetes.io/csi/{DRIVER}^e2e-vol");
    wait_for(Duration::from_secs(30), || {
        volumes_in_use(&c).contains(&unique).then_some(())
    })
    .unwrap_or_else(|| panic!("volume never reported in use:\n{}", c.log()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.phase("writer").as_deref(), Some("Pending"));
    assert!(
        driver.methods_for("e2e-vol").is_empty(),
        "used before attached"
    );
    assert!(support::e2e::running_of("writer").is_empty());
    let attachment = rkubelet::csi::attachment_name("e2e-vol", DRIVER, NODE);
    c.server
        .attach_csi_volume(
            &attachment,
            DRIVER,
            "pv-csi",
            NODE,
            &unique,
            serde_json::json!({"devicePath": "/dev/e2e0"}),
        )
        .unwrap();
    wait_phase(&c, "writer", "Running", Duration::from_secs(90));
    wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(driver.volume_dir("e2e-vol").join("file"))
            .ok()
            .filter(|s| s.contains("from-pod"))
    })
    .unwrap_or_else(|| panic!("the pod's write is not on the volume:\n{}", c.log()));
    assert_eq!(
        driver.methods_for("e2e-vol"),
        ["NodeStageVolume", "NodePublishVolume"]
    );
    let writer = c.server.get_pod("default", "writer").unwrap();
    let uid = writer.metadata.uid.clone().unwrap();
    let publish = driver
        .calls()
        .into_iter()
        .find(|call| call.method == "NodePublishVolume")
        .unwrap();
    assert_eq!(
        publish.path,
        root.join(format!("pods/{uid}/volumes/kubernetes.io~csi/pv-csi/mount"))
            .to_string_lossy()
    );
    assert_eq!(publish.publish_context["devicePath"], "/dev/e2e0");
    assert_eq!(publish.context["csi.storage.k8s.io/pod.name"], "writer");
    assert_eq!(publish.context["csi.storage.k8s.io/pod.uid"], uid);
    assert_eq!(publish.context["csi.storage.k8s.io/ephemeral"], "false");
    assert_eq!(publish.context["tier"], "gold");

    // The driver's figures on /metrics.
    let identity = c.server.issue_client_cert("kube-apiserver-kubelet-client");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], c.port));
    let cert_dir = root.join("pki");
    let metrics = request(addr, &cert_dir, "GET", "/metrics", Auth::Cert(&identity)).text();
    let line = format!(
        "kubelet_volume_stats_capacity_bytes{{namespace=\"default\",persistentvolumeclaim=\"data\"}} {VOLUME_BYTES}"
    );
    assert!(metrics.contains(&line), "{line} missing:\n{metrics}");

    // kill -9 and back: found published, not published again, same container.
    let containers = support::e2e::running_of("writer");
    c.kill9_and_restart();
    c.wait_ready_node();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        support::e2e::running_of("writer"),
        containers,
        "{}",
        c.log()
    );
    assert_eq!(
        driver.methods_for("e2e-vol"),
        ["NodeStageVolume", "NodePublishVolume"],
        "{}",
        c.log()
    );
    assert!(volumes_in_use(&c).contains(&unique));

    // An inline ephemeral volume: no staging, told it is ephemeral, unpublished with its pod.
    c.server
        .create_pod(pod(
            "scratch",
            "echo eph > /data/f; cat /data/f; sleep 3600",
            serde_json::json!({"name": "data", "csi": {"driver": DRIVER}}),
        ))
        .unwrap();
    wait_phase(&c, "scratch", "Running", Duration::from_secs(60));
    wait_for(Duration::from_secs(20), || {
        container_log(&c.dir, "scratch")
            .contains("eph")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("inline volume not writable:\n{}", c.log()));
    let inline = driver
        .calls()
        .into_iter()
        .find(|call| call.method == "NodePublishVolume" && call.volume_id != "e2e-vol")
        .unwrap();
    assert!(inline.staging_path.is_empty());
    assert_eq!(inline.context["csi.storage.k8s.io/ephemeral"], "true");
    assert_eq!(volumes_in_use(&c), vec![unique.clone()]);
    c.server.delete_pod("default", "scratch", Some(1)).unwrap();
    wait_for(Duration::from_secs(60), || {
        (driver.methods_for(&inline.volume_id) == ["NodePublishVolume", "NodeUnpublishVolume"])
            .then_some(())
    })
    .unwrap_or_else(|| panic!("inline volume not unpublished:\n{}", c.log()));

    // Deleted while the kubelet is down: unpublished, then unstaged, after the restart.
    c.kill9();
    c.server.delete_pod("default", "writer", Some(0)).unwrap();
    c.restart();
    wait_for(Duration::from_secs(90), || {
        (driver.methods_for("e2e-vol").len() == 4).then_some(())
    })
    .unwrap_or_else(|| panic!("volume not torn down:\n{}", c.log()));
    assert_eq!(
        driver.methods_for("e2e-vol"),
        [
            "NodeStageVolume",
            "NodePublishVolume",
            "NodeUnpublishVolume",
            "NodeUnstageVolume"
        ]
    );
    wait_for(Duration::from_secs(30), || {
        (!volumes_in_use(&c).contains(&unique)).then_some(())
    })
    .unwrap_or_else(|| panic!("volume still reported in use:\n{}", c.log()));
    assert!(!root.join(format!("pods/{uid}")).exists());
    assert_eq!(
        std::fs::read_to_string(driver.volume_dir("e2e-vol").join("file")).unwrap(),
        "from-pod\n"
    );
    driver.stop();
}
