//! End-to-end, a pod's way through the cluster: created with kubectl, run, deleted
//! gracefully; an API server outage; service-account, ConfigMap and Secret volumes.
//!
//! The real `rkubelet` binary on the test containerd, joined to the API server test double,
//! driven with the real `kubectl`. Ignored in a plain `cargo test` (they need the containerd
//! `tests/run.sh` starts); they share that containerd, so they run one at a time.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use support::e2e::{container_log, object, pod, running_of, Cluster, IMAGE, NODE, SERIAL};
use support::wait_for;

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn api_pod_runs_and_kubectl_sees_it_and_deletes_it_gracefully() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start("e2e-cluster-pod");
    c.wait_ready_node();
    let nodes = c.kubectl(&["get", "nodes"]);
    let text = String::from_utf8_lossy(&nodes.stdout);
    assert!(
        text.contains(NODE) && text.contains("Ready"),
        "{text}\n{}",
        String::from_utf8_lossy(&nodes.stderr)
    );

    let created = Instant::now();
    c.server
        .create_pod(pod("trap", "trap 'echo got SIGTERM; sleep 1; exit 0' TERM; echo started; while true; do sleep 0.2; done", 30))
        .unwrap();
    wait_for(Duration::from_secs(30), || {
        (c.phase("trap").as_deref() == Some("Running")).then_some(())
    })
    .unwrap_or_else(|| panic!("not Running:\n{}", c.log()));
    let took = created.elapsed();
    eprintln!("pod Running in the API {took:?} after creation");
    let status = c.server.get_pod("default", "trap").unwrap().status.unwrap();
    let cs = &status.container_statuses.unwrap()[0];
    assert!(
        cs.container_id
            .as_deref()
            .unwrap_or_default()
            .starts_with("containerd://"),
        "{cs:?}"
    );
    assert_eq!(cs.image, IMAGE);
    assert!(!cs.image_id.is_empty());
    assert!(cs
        .state
        .as_ref()
        .unwrap()
        .running
        .as_ref()
        .unwrap()
        .started_at
        .is_some());
    let table = c.kubectl(&["get", "pods"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("trap") && text.contains("Running"), "{text}");

    // kubectl delete (grace 30 s): SIGTERM reaches the trap, which logs and exits; the
    // object disappears, and kubectl's wait returns.
    let watcher_dir = c.dir.clone();
    let seen = std::thread::spawn(move || {
        wait_for(Duration::from_secs(40), || {
            let log = container_log(&watcher_dir, "trap");
            log.contains("got SIGTERM").then_some(log)
        })
    });
    let started = Instant::now();
    let out = c.kubectl(&["delete", "pod", "trap", "--timeout=60s"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.log()
    );
    assert!(c.server.get_pod("default", "trap").is_none());
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the trap exits at once, not at the deadline"
    );
    assert!(
        seen.join().unwrap().is_some(),
        "SIGTERM trap ran:\n{}",
        c.log()
    );

    // A container that ignores SIGTERM is killed at the grace deadline.
    c.server
        .create_pod(pod(
            "stubborn",
            "trap '' TERM; while true; do sleep 0.2; done",
            3,
        ))
        .unwrap();
    wait_for(Duration::from_secs(30), || {
        (c.phase("stubborn").as_deref() == Some("Running")).then_some(())
    })
    .unwrap_or_else(|| panic!("not Running:\n{}", c.log()));
    let started = Instant::now();
    let out = c.kubectl(&["delete", "pod", "stubborn", "--timeout=60s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(20),
        "killed at the 3 s deadline, took {took:?}"
    );
    assert!(running_of("stubborn").is_empty());
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn api_outage_of_30_seconds_restarts_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start("e2e-cluster-outage");
    c.wait_ready_node();
    c.server
        .create_pod(pod("steady", "while true; do sleep 1; done", 2))
        .unwrap();
    wait_for(Duration::from_secs(30), || {
        (c.phase("steady").as_deref() == Some("Running")).then_some(())
    })
    .unwrap_or_else(|| panic!("not Running:\n{}", c.log()));
    let before = running_of("steady");
    assert_eq!(before.len(), 1);

    c.server.go_down();
    std::thread::sleep(Duration::from_secs(30));
    assert_eq!(
        running_of("steady"),
        before,
        "still running during the outage"
    );
    c.server.come_back();
    c.server
        .create_pod(pod("after", "while true; do sleep 1; done", 2))
        .unwrap();
    wait_for(Duration::from_secs(60), || {
        (c.phase("after").as_deref() == Some("Running")).then_some(())
    })
    .unwrap_or_else(|| panic!("no catch-up after the outage:\n{}", c.log()));
    assert_eq!(running_of("steady"), before, "nothing restarted");
    let restarts = c
        .server
        .get_pod("default", "steady")
        .unwrap()
        .status
        .unwrap()
        .container_statuses
        .unwrap()[0]
        .restart_count;
    assert_eq!(restarts, 0);
    assert!(c.log().contains("retrying"), "outage logged with retries");
}

/// Mount points under `dir` in this mount namespace, as `/proc/self/mountinfo` lists them.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    out.sort();
    out
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn service_account_config_map_and_secret_volumes_through_updates_restarts_and_deletion() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start("e2e-cluster-volumes");
    c.wait_ready_node();
    c.server
        .create_config_map(object(serde_json::json!({
            "metadata": {"name": "kube-root-ca.crt", "namespace": "default"},
            "data": {"ca.crt": c.server.ca_pem()}
        })))
        .unwrap();
    c.server
        .create_config_map(object(serde_json::json!({
            "metadata": {"name": "app-config", "namespace": "default"},
            "data": {"greeting": "one"}
        })))
        .unwrap();
    c.server
        .create_secret(object(serde_json::json!({
            "metadata": {"name": "creds", "namespace": "default"},
            "stringData": {"password": "hunter2"}
        })))
        .unwrap();
    // As ServiceAccount admission leaves it: the kube-api-access projected volume.
    let script = "sa=/var/run/secrets/kubernetes.io/serviceaccount; \
        echo \"namespace=$(cat $sa/namespace)\"; echo \"token=$(cat $sa/token)\"; \
        echo \"ca=$(sed -n 2p $sa/ca.crt)\"; echo \"password=$(cat /creds/password)\"; \
        last=; while true; do [ -e /config/greeting ] || echo EMPTY; \
        g=$(cat /config/greeting); [ \"$g\" != \"$last\" ] && echo \"greeting=$g\"; \
        last=$g; sleep 0.1; done";
    let pod: Pod = object(serde_json::json!({
        "metadata": {"name": "vols", "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script],
                "volumeMounts": [
                    {"name": "kube-api-access-9fz2q", "readOnly": true,
                     "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                    {"name": "cfg", "mountPath": "/config"},
                    {"name": "creds", "mountPath": "/creds"}
                ]
            }],
            "volumes": [
                {"name": "kube-api-access-9fz2q", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt",
                                   "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                ]}},
                {"name": "cfg", "configMap": {"name": "app-config"}},
                {"name": "creds", "secret": {"secretName": "creds"}}
            ]
        }
    }));
    c.server.create_pod(pod).unwrap();
    wait_for(Duration::from_secs(60), || {
        container_log(&c.dir, "vols")
            .contains("greeting=one")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("container did not start:\n{}", c.log()));
    let uid = c
        .server
        .get_pod("default", "vols")
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let pod_dir = c.dir.join(format!("root/pods/{uid}"));
    let host_token = std::fs::read_to_string(
        pod_dir.join("volumes/kubernetes.io~projected/kube-api-access-9fz2q/token"),
    )
    .unwrap();
    let log = container_log(&c.dir, "vols");
    assert!(log.contains("namespace=default"), "{log}");
    assert!(log.contains(&format!("token={host_token}")), "{log}");
    let ca_line = c.server.ca_pem().lines().nth(1).unwrap().to_string();
    assert!(log.contains(&format!("ca={ca_line}")), "{log}");
    assert!(log.contains("password=hunter2"), "{log}");
    // Secrets and projected volumes are tmpfs, configMaps are on disk.
    let mounts = mounts_under(&c.dir.join("root"));
    let expected: Vec<String> = [
        "volumes/kubernetes.io~projected/kube-api-access-9fz2q",
        "volumes/kubernetes.io~secret/creds",
    ]
    .iter()
    .map(|p| pod_dir.join(p).to_string_lossy().into_owned())
    .collect();
    assert_eq!(mounts, expected);

    // An update reaches the file (resync every minute, objects at most 10 s old).
    let mut cm = c.server.get_config_map("default", "app-config").unwrap();
    cm.data = Some([("greeting".to_string(), "two".to_string())].into());
    let updated = Instant::now();
    c.server.update_config_map(cm).unwrap();
    wait_for(Duration::from_secs(90), || {
        container_log(&c.dir, "vols")
            .contains("greeting=two")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("update not seen within 90 s:\n{}", c.log()));
    eprintln!(
        "ConfigMap update visible in the container after {:?}",
        updated.elapsed()
    );
    assert!(
        !container_log(&c.dir, "vols").contains("EMPTY"),
        "the directory was never empty"
    );

    // kill -9 and restart: the same container, the same mounts, none twice.
    let before = running_of("vols");
    c.kill9_and_restart();
    c.wait_ready_node();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(running_of("vols"), before, "container kept");
    assert_eq!(
        mounts_under(&c.dir.join("root")),
        expected,
        "mounts kept, none twice"
    );
    assert_eq!(
        c.server.token_requests(),
        2,
        "one token per kubelet process"
    );

    c.server.delete_pod("default", "vols", Some(1)).unwrap();
    wait_for(Duration::from_secs(60), || {
        c.server.get_pod("default", "vols").is_none().then_some(())
    })
    .unwrap_or_else(|| panic!("pod not deleted:\n{}", c.log()));
    wait_for(Duration::from_secs(30), || {
        (!pod_dir.exists()).then_some(())
    })
    .unwrap_or_else(|| panic!("pod directory left behind:\n{}", c.log()));
    assert!(
        mounts_under(&c.dir.join("root")).is_empty(),
        "no tmpfs leaked"
    );
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn deleted_pods_are_removed_once_and_never_taken_for_orphans() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start("e2e-cluster-removed-once");
    c.wait_ready_node();
    let names: Vec<String> = (0..8).map(|i| format!("gone-{i}")).collect();
    for name in &names {
        c.server
            .create_pod(pod(name, "exec sleep 3600", 1))
            .unwrap();
    }
    wait_for(Duration::from_secs(60), || {
        names
            .iter()
            .all(|n| c.phase(n).as_deref() == Some("Running"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not Running:\n{}", c.log()));
    for name in &names {
        c.server.delete_pod("default", name, Some(1)).unwrap();
    }
    wait_for(Duration::from_secs(60), || {
        (c.server.list_pods().is_empty() && running_of_any(&names).is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("pods not removed:\n{}", c.log()));
    // Housekeeping runs every 2 s on a runtime listing up to a relist old: a pod whose
    // removal ended after that listing began is still in it, and must not be taken for an
    // orphan and killed a second time (a worker pass and a status write to an object gone).
    std::thread::sleep(Duration::from_secs(5));
    let log = c.log();
    let again: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("is not wanted by any source"))
        .collect();
    assert!(
        again.is_empty(),
        "removed pods killed again:\n{}",
        again.join("\n")
    );
}

/// The names among `names` of pods with any sandbox left in the runtime.
fn running_of_any(names: &[String]) -> Vec<String> {
    use rkubelet::cri::RuntimeService;
    support::cri::runtime()
        .list_pod_sandbox(None)
        .unwrap()
        .iter()
        .map(|s| s.get_metadata().get_name().to_string())
        .filter(|n| names.contains(n))
        .collect()
}
