//! End-to-end persistent storage on containerd: PersistentVolumeClaims bound to hostPath and
//! local PersistentVolumes (data written by one pod is read by the next), a claim that is
//! not bound yet (the pod waits with upstream's FailedMount event and no container), a
//! generic ephemeral volume, and a readOnly claim.
//!
//! The real `rkubelet` binary on the test containerd, joined to the API server test double,
//! which plays the PV controller (`bind_claim`) and the ephemeral volume controller (the
//! test creates the claim). Ignored in a plain `cargo test` (they need the containerd
//! `tests/run.sh` starts); they share that containerd, so they run one at a time.

mod support;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use support::e2e::{container_log, object, wait_phase, Cluster, IMAGE, NODE, SERIAL};
use support::kubelet_api::{request, Auth};
use support::wait_for;

/// A pod bound to the node running `sh -c script` with the claim `claim` at `/data`.
fn claim_pod(name: &str, script: &str, claim: &str, read_only: bool) -> Pod {
    object(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": NODE, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data",
                "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}]
        }
    }))
}

fn claim(name: &str) -> PersistentVolumeClaim {
    object(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "resources": {"requests": {"storage": "1Gi"}}}
    }))
}

fn host_path_pv(name: &str, path: &Path) -> PersistentVolume {
    object(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "hostPath": {"path": path.to_string_lossy(), "type": "DirectoryOrCreate"}}
    }))
}

fn local_pv(name: &str, path: &Path, node: &str) -> PersistentVolume {
    object(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "local": {"path": path.to_string_lossy()},
                 "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                     {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}
    }))
}

fn failed_mount_events(c: &Cluster, pod: &str) -> Vec<String> {
    c.server
        .events()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedMount"))
        .filter(|e| e.involved_object.name.as_deref() == Some(pod))
        .filter_map(|e| e.message)
        .collect()
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn claims_on_host_path_and_local_volumes_keep_data_across_pods() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start("e2e-storage");
    c.wait_ready_node();
    let host_dir = c.dir.join("pv-host");
    let local_dir = c.dir.join("pv-local");
    std::fs::create_dir_all(&local_dir).unwrap();
    for (pv, claim_name) in [
        (host_path_pv("pv-host", &host_dir), "data-host"),
        (local_pv("pv-local", &local_dir, NODE), "data-local"),
    ] {
        let name = pv.metadata.name.clone().unwrap();
        c.server.create_persistent_volume(pv).unwrap();
        c.server
            .create_persistent_volume_claim(claim(claim_name))
            .unwrap();
        c.server.bind_claim("default", claim_name, &name).unwrap();
    }
    for claim_name in ["data-host", "data-local"] {
        let writer = format!("{claim_name}-writer");
        let reader = format!("{claim_name}-reader");
        c.server
            .create_pod(claim_pod(
                &writer,
                &format!("echo kept-by-{claim_name} > /data/file"),
                claim_name,
                false,
            ))
            .unwrap();
        wait_phase(&c, &writer, "Succeeded", Duration::from_secs(60));
        c.server
            .create_pod(claim_pod(&reader, "cat /data/file", claim_name, false))
            .unwrap();
        wait_phase(&c, &reader, "Succeeded", Duration::from_secs(60));
        let log = container_log(&c.dir, &reader);
        assert!(
            log.contains(&format!("kept-by-{claim_name}")),
            "{reader}: {log}"
        );
    }
    // The data is on the volumes, not in a container's filesystem.
    assert!(std::fs::read_to_string(host_dir.join("file"))
        .unwrap()
        .contains("kept-by-data-host"));
    assert!(std::fs::read_to_string(local_dir.join("file"))
        .unwrap()
        .contains("kept-by-data-local"));

    // A readOnly claim reference: writes fail, reads work.
    c.server
        .create_pod(claim_pod(
            "reader-only",
            "cat /data/file; if echo x > /data/other; then echo wrote; else echo refused; fi",
            "data-local",
            true,
        ))
        .unwrap();
    wait_phase(&c, "reader-only", "Succeeded", Duration::from_secs(60));
    let log = container_log(&c.dir, "reader-only");
    assert!(
        log.contains("kept-by-data-local") && log.contains("refused") && !log.contains("wrote"),
        "{log}"
    );
    assert!(!local_dir.join("other").exists());

    // fsGroup: a non-root user can write to a local volume through the pod's group.
    let mut grouped = claim_pod(
        "grouped",
        "id; echo mine > /data/grouped && echo written",
        "data-local",
        false,
    );
    grouped.spec.as_mut().unwrap().security_context = Some(object(serde_json::json!({
        "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000
    })));
    c.server.create_pod(grouped).unwrap();
    wait_phase(&c, "grouped", "Succeeded", Duration::from_secs(60));
    let log = container_log(&c.dir, "grouped");
    assert!(log.contains("written"), "{log}");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(local_dir.join("grouped")).unwrap().gid(),
        2000
    );
    assert_eq!(
        std::fs::metadata(&local_dir).unwrap().mode() & 0o2070,
        0o2070
    );
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn an_unbound_claim_keeps_the_pod_waiting_and_ephemeral_claims_must_be_the_pods() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start("e2e-storage-wait");
    c.wait_ready_node();
    c.server
        .create_persistent_volume_claim(claim("later"))
        .unwrap();
    c.server
        .create_pod(claim_pod("waiting", "echo ran", "later", false))
        .unwrap();
    let event = wait_for(Duration::from_secs(30), || {
        failed_mount_events(&c, "waiting").into_iter().next()
    })
    .unwrap_or_else(|| panic!("no FailedMount event:\n{}", c.log()));
    assert_eq!(
        event,
        "Unable to attach or mount volumes: unmounted volumes=[data], unattached volumes=[], \
         failed to process volumes=[data]: error processing PVC default/later: PVC is not bound"
    );
    std::thread::sleep(Duration::from_secs(3));
    let status = c
        .server
        .get_pod("default", "waiting")
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let waiting = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"));
    assert!(
        support::e2e::running_of("waiting").is_empty()
            && !c.log().contains("pod=\"default/waiting\" container=app"),
        "a container was created without its volume:\n{}",
        c.log()
    );
    // Bound later: the pod runs.
    c.server
        .create_persistent_volume(host_path_pv("pv-later", &c.dir.join("pv-later")))
        .unwrap();
    c.server.bind_claim("default", "later", "pv-later").unwrap();
    wait_phase(&c, "waiting", "Succeeded", Duration::from_secs(60));

    // A generic ephemeral volume: its claim is `<pod>-<volume>`, made by the ephemeral
    // volume controller (here the test) and owned by the pod.
    let pod: Pod = object(serde_json::json!({
        "metadata": {"name": "scratch", "namespace": "default"},
        "spec": {
            "nodeName": NODE, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "echo eph > /data/f && cat /data/f"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "ephemeral": {"volumeClaimTemplate": {"spec": {
                "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                "resources": {"requests": {"storage": "1Gi"}}}}}}]
        }
    }));
    let created = c.server.create_pod(pod).unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    // First a claim of that name that is not the pod's: refused.
    c.server
        .create_persistent_volume_claim(claim("scratch-data"))
        .unwrap();
    c.server
        .create_persistent_volume(host_path_pv("pv-eph", &c.dir.join("pv-eph")))
        .unwrap();
    c.server
        .bind_claim("default", "scratch-data", "pv-eph")
        .unwrap();
    let event = wait_for(Duration::from_secs(30), || {
        failed_mount_events(&c, "scratch")
            .into_iter()
            .find(|m| m.contains("pod is not owner"))
    })
    .unwrap_or_else(|| panic!("foreign claim not refused:\n{}", c.log()));
    assert!(
        event.ends_with(
            "PVC default/scratch-data was not created for pod default/scratch (pod is not owner)"
        ),
        "{event}"
    );
    // The pod's own claim: it runs.
    let mut owned = c
        .server
        .get_persistent_volume_claim("default", "scratch-data")
        .unwrap();
    owned.metadata.owner_references = Some(vec![object(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "name": "scratch", "uid": uid,
        "controller": true, "blockOwnerDeletion": true
    }))]);
    c.server.update_persistent_volume_claim(owned).unwrap();
    wait_phase(&c, "scratch", "Succeeded", Duration::from_secs(60));
    assert!(container_log(&c.dir, "scratch").contains("eph"));
}

/// How many times `target` is mounted (a restart must not mount a volume twice).
fn mount_count(target: &Path) -> usize {
    let target = target.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(target.as_str()))
        .count()
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn local_volumes_survive_kill_9_and_are_unmounted_for_pods_deleted_meanwhile() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start("e2e-storage-restart");
    c.wait_ready_node();
    let local_dir = c.dir.join("pv-local");
    std::fs::create_dir_all(&local_dir).unwrap();
    std::fs::write(local_dir.join("precious"), "data").unwrap();
    for (pv, claim_name) in [("pv-a", "claim-a"), ("pv-b", "claim-b")] {
        c.server
            .create_persistent_volume(local_pv(pv, &local_dir, NODE))
            .unwrap();
        c.server
            .create_persistent_volume_claim(claim(claim_name))
            .unwrap();
        c.server.bind_claim("default", claim_name, pv).unwrap();
    }
    let mut keeper = claim_pod("keeper", "sleep 3600", "claim-a", false);
    keeper.spec.as_mut().unwrap().restart_policy = Some("Always".into());
    let mut goner = claim_pod("goner", "sleep 3600", "claim-b", false);
    goner.spec.as_mut().unwrap().restart_policy = Some("Always".into());
    let keeper = c.server.create_pod(keeper).unwrap();
    let goner = c.server.create_pod(goner).unwrap();
    wait_phase(&c, "keeper", "Running", Duration::from_secs(60));
    wait_phase(&c, "goner", "Running", Duration::from_secs(60));
    let target = |pod: &Pod, pv: &str| {
        c.dir
            .join("root/pods")
            .join(pod.metadata.uid.as_deref().unwrap())
            .join("volumes/kubernetes.io~local-volume")
            .join(pv)
    };
    let keeper_target = target(&keeper, "pv-a");
    let goner_target = target(&goner, "pv-b");
    assert_eq!(mount_count(&keeper_target), 1);
    let containers = support::e2e::running_of("keeper");

    // The claim volume in the Summary API (its pod-spec name, its pvcRef) and in
    // kubelet_volume_stats_* on /metrics.
    let identity = c.server.issue_client_cert("kube-apiserver-kubelet-client");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], c.port));
    let cert_dir = c.dir.join("root/pki");
    let summary = request(
        addr,
        &cert_dir,
        "GET",
        "/stats/summary",
        Auth::Cert(&identity),
    )
    .json();
    let pod = summary["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "keeper")
        .unwrap_or_else(|| panic!("keeper not in {summary}"))
        .clone();
    let volume = pod["volume"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "data")
        .unwrap_or_else(|| panic!("no volume data in {pod}"))
        .clone();
    assert_eq!(
        volume["pvcRef"],
        serde_json::json!({"name": "claim-a", "namespace": "default"})
    );
    assert!(volume["capacityBytes"].as_u64().unwrap() > 0, "{volume}");
    let metrics = request(addr, &cert_dir, "GET", "/metrics", Auth::Cert(&identity)).text();
    for family in [
        "capacity_bytes",
        "available_bytes",
        "used_bytes",
        "inodes",
        "inodes_free",
        "inodes_used",
    ] {
        let line = format!(
            "kubelet_volume_stats_{family}{{namespace=\"default\",persistentvolumeclaim=\"claim-a\"}} "
        );
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }

    // kill -9; meanwhile one pod is deleted for good. Back up: the other pod's volume is
    // found mounted (not mounted again), the deleted pod's is unmounted, and the data on
    // the volume is untouched.
    c.kill9();
    assert!(c
        .server
        .delete_pod("default", "goner", Some(0))
        .unwrap()
        .is_none());
    c.restart();
    c.wait_ready_node();
    wait_for(Duration::from_secs(60), || {
        (!goner_target.exists() && support::e2e::running_of("goner").is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("the deleted pod's volume is still there:\n{}", c.log()));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(mount_count(&keeper_target), 1, "{}", c.log());
    assert_eq!(support::e2e::running_of("keeper"), containers);
    assert_eq!(
        std::fs::read_to_string(local_dir.join("precious")).unwrap(),
        "data"
    );
}
