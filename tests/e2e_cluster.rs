//! End-to-end: the real `rkubelet` binary on the test containerd, joined to the API server
//! test double, driven with the real `kubectl`. Ignored in a plain `cargo test` (they need the
//! containerd `tests/run.sh` starts); they share that containerd, so they run one at a time.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use rkubelet::cri::{api, RuntimeService};
use support::cri::runtime;
use support::e2e::{
    api_status, container_log, main_status, pod, running_of, wait_phase, Cluster, IMAGE, NODE,
    SERIAL,
};
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

fn object<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
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

/// `<seconds since boot> <what>` appended to a host file, for ordering across containers.
const STAMP: &str = "stamp() { echo \"$(cut -d' ' -f1 /proc/uptime) $1\" >> /host/log; }";

fn stamped_lines(path: &Path) -> Vec<(f64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (t, what) = l.split_once(' ')?;
            Some((t.parse().ok()?, what.to_string()))
        })
        .collect()
}

fn host_log_volume(dir: &Path) -> serde_json::Value {
    serde_json::json!({"name": "host", "hostPath": {
        "path": dir.to_string_lossy(), "type": "DirectoryOrCreate"}})
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn init_containers_sidecars_restart_policies_and_termination_messages() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start("e2e-cluster-lifecycle");
    c.wait_ready_node();
    let host = c.dir.join("host-init");
    let sidecar_host = c.dir.join("host-sidecar");
    let mount = serde_json::json!([{"name": "host", "mountPath": "/host"}]);
    let sh = |script: &str| serde_json::json!(["sh", "-c", format!("{STAMP}; {script}")]);
    let container = |name: &str, script: &str| {
        serde_json::json!({"name": name, "image": IMAGE, "imagePullPolicy": "IfNotPresent",
            "command": sh(script), "volumeMounts": mount})
    };
    let make = |name: &str,
                policy: &str,
                init: serde_json::Value,
                main: serde_json::Value,
                vol_dir: &Path|
     -> Pod {
        object(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": NODE, "restartPolicy": policy, "terminationGracePeriodSeconds": 5,
                     "initContainers": init, "containers": main,
                     "volumes": [host_log_volume(vol_dir)]}
        }))
    };
    // Two init containers, then the main one.
    c.server
        .create_pod(make(
            "init-order",
            "Always",
            serde_json::json!([
                container("i1", "stamp i1; sleep 1"),
                container("i2", "stamp i2; sleep 1")
            ]),
            serde_json::json!([container("app", "stamp app; sleep 3600")]),
            &host,
        ))
        .unwrap();
    // A failing init container under Never fails the pod.
    c.server
        .create_pod(make(
            "init-fails",
            "Never",
            serde_json::json!([container("bad", "exit 1")]),
            serde_json::json!([container("app", "sleep 3600")]),
            &c.dir.join("host-unused"),
        ))
        .unwrap();
    // A sidecar that outlives the main container's termination.
    let mut sidecar = container(
        "proxy",
        "trap 'stamp proxy-term; exit 0' TERM; stamp proxy-start; while true; do sleep 0.1; done",
    );
    sidecar["restartPolicy"] = serde_json::json!("Always");
    c.server
        .create_pod(make(
            "sidecar",
            "Always",
            serde_json::json!([sidecar]),
            serde_json::json!([container(
                "app",
                "trap 'stamp app-term; sleep 1; exit 0' TERM; stamp app-start; while true; do sleep 0.1; done"
            )]),
            &sidecar_host,
        ))
        .unwrap();
    // Restart policies and termination messages.
    c.server
        .create_pod(make(
            "onfailure-ok",
            "OnFailure",
            serde_json::json!([]),
            serde_json::json!([container("app", "exit 0")]),
            &c.dir.join("host-unused"),
        ))
        .unwrap();
    c.server
        .create_pod(make(
            "never-3",
            "Never",
            serde_json::json!([]),
            serde_json::json!([container(
                "app",
                "echo 'disk is full' > /dev/termination-log; exit 3"
            )]),
            &c.dir.join("host-unused"),
        ))
        .unwrap();
    let mut from_logs = container("app", "echo 'last words from the log'; exit 4");
    from_logs["terminationMessagePolicy"] = serde_json::json!("FallbackToLogsOnError");
    c.server
        .create_pod(make(
            "fallback",
            "Never",
            serde_json::json!([]),
            serde_json::json!([from_logs]),
            &c.dir.join("host-unused"),
        ))
        .unwrap();
    c.server
        .create_pod(make(
            "crashloop",
            "Always",
            serde_json::json!([]),
            serde_json::json!([container("app", "exit 1")]),
            &c.dir.join("host-unused"),
        ))
        .unwrap();

    wait_phase(&c, "init-order", "Running", Duration::from_secs(60));
    let order = stamped_lines(&host.join("log"));
    let names: Vec<&str> = order.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["i1", "i2", "app"], "{order:?}");
    assert!(
        order[0].0 + 1.0 <= order[1].0 && order[1].0 + 1.0 <= order[2].0,
        "{order:?}"
    );

    wait_phase(&c, "init-fails", "Failed", Duration::from_secs(60));
    let status = api_status(&c, "init-fails").unwrap();
    let init = &status.init_container_statuses.unwrap()[0];
    let term = init.state.clone().unwrap().terminated.unwrap();
    assert_eq!((term.exit_code, term.reason.as_deref()), (1, Some("Error")));
    assert!(
        running_of("init-fails").is_empty(),
        "main container never started"
    );

    wait_phase(&c, "sidecar", "Running", Duration::from_secs(60));
    let status = api_status(&c, "sidecar").unwrap();
    let proxy = &status.init_container_statuses.unwrap()[0];
    assert!(proxy.state.clone().unwrap().running.is_some(), "{proxy:?}");
    assert_eq!(running_of("sidecar").len(), 2);

    wait_phase(&c, "onfailure-ok", "Succeeded", Duration::from_secs(60));
    assert_eq!(main_status(&c, "onfailure-ok").unwrap().restart_count, 0);

    wait_phase(&c, "never-3", "Failed", Duration::from_secs(60));
    let term = main_status(&c, "never-3")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(term.exit_code, 3);
    assert_eq!(term.message.as_deref(), Some("disk is full\n"));
    wait_phase(&c, "fallback", "Failed", Duration::from_secs(60));
    let term = main_status(&c, "fallback")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(term.message.as_deref(), Some("last words from the log\n"));

    // CrashLoopBackOff: restarts with a growing gap, the last exit kept as lastState.
    let waiting = wait_for(Duration::from_secs(90), || {
        let s = main_status(&c, "crashloop")?;
        let w = s.state.clone()?.waiting?;
        (s.restart_count >= 2 && w.reason.as_deref() == Some("CrashLoopBackOff")).then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "no CrashLoopBackOff: {:?}\n{}",
            main_status(&c, "crashloop"),
            c.log()
        )
    });
    let message = waiting.state.unwrap().waiting.unwrap().message.unwrap();
    assert!(
        message.starts_with("back-off ")
            && message.contains("restarting failed container=app pod=crashloop_default("),
        "{message}"
    );
    let last = waiting.last_state.unwrap().terminated.unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    // Container GC: one dead attempt is kept per container, older ones go with their logs.
    let mut f = api::ContainerFilter::new();
    f.mut_label_selector()
        .insert("io.kubernetes.pod.name".into(), "crashloop".into());
    let attempts = runtime().list_containers(Some(&f)).unwrap();
    assert!(attempts.len() <= 2, "{attempts:?}");
    let logs_dir = std::fs::read_dir(c.dir.join("logs/pods"))
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("default_crashloop_")
        })
        .unwrap()
        .path()
        .join("app");
    let log_files = std::fs::read_dir(&logs_dir).unwrap().count();
    assert!(log_files <= 2, "old attempts' logs removed: {log_files}");

    // Deleting the sidecar pod stops the main container first, the sidecar after it.
    c.server.delete_pod("default", "sidecar", Some(10)).unwrap();
    wait_for(Duration::from_secs(60), || {
        c.server
            .get_pod("default", "sidecar")
            .is_none()
            .then_some(())
    })
    .unwrap_or_else(|| panic!("sidecar pod not deleted:\n{}", c.log()));
    let lines = stamped_lines(&sidecar_host.join("log"));
    let at = |what: &str| {
        lines
            .iter()
            .find(|(_, n)| n == what)
            .unwrap_or_else(|| panic!("{what} missing: {lines:?}"))
            .0
    };
    assert!(at("proxy-start") <= at("app-start"), "{lines:?}");
    assert!(
        at("app-term") + 1.0 <= at("proxy-term"),
        "sidecar stopped last: {lines:?}"
    );
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn pre_stop_runs_before_sigterm_sigkill_comes_at_the_deadline_and_active_deadline_fails_the_pod() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start("e2e-cluster-termination");
    c.wait_ready_node();
    let host = c.dir.join("host-prestop");
    let pod = |name: &str, grace: i64, script: &str, extra: serde_json::Value| -> Pod {
        let mut container = serde_json::json!({"name": "app", "image": IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", format!("{STAMP}; {script}")],
            "volumeMounts": [{"name": "host", "mountPath": "/host"}]});
        if let Some(lifecycle) = extra.get("lifecycle") {
            container["lifecycle"] = lifecycle.clone();
        }
        let mut spec = serde_json::json!({"nodeName": NODE, "terminationGracePeriodSeconds": grace,
            "containers": [container], "volumes": [host_log_volume(&host)]});
        if let Some(ads) = extra.get("activeDeadlineSeconds") {
            spec["activeDeadlineSeconds"] = ads.clone();
        }
        object(
            serde_json::json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}),
        )
    };
    c.server
        .create_pod(pod(
            "graceful",
            30,
            "trap 'stamp got-term; exit 0' TERM; while true; do sleep 0.1; done",
            serde_json::json!({"lifecycle": {"preStop": {"exec": {"command": ["sh", "-c",
                format!("{STAMP}; echo prestop-ran > /proc/1/fd/1; stamp prestop; sleep 1")]}}}}),
        ))
        .unwrap();
    c.server
        .create_pod(pod(
            "stubborn",
            3,
            "trap '' TERM; while true; do sleep 0.1; done",
            serde_json::json!({}),
        ))
        .unwrap();
    c.server
        .create_pod(pod(
            "deadline",
            2,
            "sleep 3600",
            serde_json::json!({"activeDeadlineSeconds": 5}),
        ))
        .unwrap();
    c.server
        .create_pod(pod(
            "poststart-fails",
            2,
            "sleep 3600",
            serde_json::json!({"lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "exit 7"]}}}}),
        ))
        .unwrap();
    wait_phase(&c, "graceful", "Running", Duration::from_secs(60));
    wait_phase(&c, "stubborn", "Running", Duration::from_secs(60));

    c.server
        .delete_pod("default", "graceful", Some(30))
        .unwrap();
    let log = wait_for(Duration::from_secs(30), || {
        let log = container_log(&c.dir, "graceful");
        log.contains("prestop-ran").then_some(log)
    });
    wait_for(Duration::from_secs(60), || {
        c.server
            .get_pod("default", "graceful")
            .is_none()
            .then_some(())
    })
    .unwrap_or_else(|| panic!("graceful not deleted:\n{}", c.log()));
    assert!(log.is_some(), "preStop output reached the container log");
    let lines = stamped_lines(&host.join("log"));
    let names: Vec<&str> = lines.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["prestop", "got-term"], "{lines:?}");
    assert!(
        lines[0].0 + 1.0 <= lines[1].0,
        "SIGTERM after the hook finished: {lines:?}"
    );

    let deleted = Instant::now();
    c.server.delete_pod("default", "stubborn", Some(3)).unwrap();
    wait_for(Duration::from_secs(60), || {
        c.server
            .get_pod("default", "stubborn")
            .is_none()
            .then_some(())
    })
    .unwrap_or_else(|| panic!("stubborn not deleted:\n{}", c.log()));
    let took = deleted.elapsed();
    eprintln!("a container ignoring SIGTERM was killed and its pod deleted {took:?} after a 3 s grace deletion");
    assert!(
        took >= Duration::from_secs(3),
        "SIGKILL only at the deadline: {took:?}"
    );

    wait_phase(&c, "deadline", "Failed", Duration::from_secs(60));
    let status = api_status(&c, "deadline").unwrap();
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        status.message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );
    wait_for(Duration::from_secs(30), || {
        running_of("deadline").is_empty().then_some(())
    })
    .expect("deadline pod's container stopped");

    let event = wait_for(Duration::from_secs(60), || {
        c.server.events().into_iter().find(|e| {
            e.reason.as_deref() == Some("FailedPostStartHook")
                && e.involved_object.name.as_deref() == Some("poststart-fails")
        })
    })
    .unwrap_or_else(|| panic!("no FailedPostStartHook event:\n{}", c.log()));
    let message = event.message.unwrap_or_default();
    assert!(message.contains("exited with 7"), "{message}");
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn environment_security_context_resources_and_admission() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start("e2e-cluster-config");
    c.wait_ready_node();
    c.server
        .create_config_map(object(serde_json::json!({
            "metadata": {"name": "settings", "namespace": "default"},
            "data": {"mode": "blue", "level": "3"}
        })))
        .unwrap();
    c.server
        .create_secret(object(serde_json::json!({
            "metadata": {"name": "creds", "namespace": "default"},
            "stringData": {"password": "hunter2"}
        })))
        .unwrap();
    c.server
        .create_service(object(serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]}
        })))
        .unwrap();
    let pod = |name: &str, container: serde_json::Value, extra: serde_json::Value| -> Pod {
        let mut spec = serde_json::json!({"nodeName": NODE, "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1, "containers": [container]});
        for (k, v) in extra.as_object().into_iter().flatten() {
            spec[k] = v.clone();
        }
        object(
            serde_json::json!({"metadata": {"name": name, "namespace": "default",
            "labels": {"app": "env"}}, "spec": spec}),
        )
    };
    let app = |script: &str| {
        serde_json::json!({"name": "app", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", script]})
    };
    let mut env = app("env | sort; echo \"args: $0 $1\"");
    env["command"] = serde_json::json!([
        "sh",
        "-c",
        "env | sort; echo \"args: $0 $1\"",
        "$(GREETING)",
        "$$(GREETING)"
    ]);
    env["resources"] = serde_json::json!({"limits": {"cpu": "500m", "memory": "64Mi"}});
    env["envFrom"] = serde_json::json!([{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}]);
    env["env"] = serde_json::json!([
        {"name": "NAME", "value": "world"},
        {"name": "GREETING", "value": "hello-$(NAME)-$(CFG_mode)"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "APP_LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "CPU_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "LITERAL", "value": "$$(NAME) $(UNDEFINED)"}
    ]);
    c.server
        .create_pod(pod("env", env, serde_json::json!({})))
        .unwrap();

    let mut missing = app("echo started");
    missing["env"] = serde_json::json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "colour"}}}]);
    c.server
        .create_pod(pod("missing-key", missing, serde_json::json!({})))
        .unwrap();

    let mut user = app("echo \"uid=$(id -u) gid=$(id -g)\"; grep CapEff /proc/self/status; \
        if touch /newfile 2>/dev/null; then echo rootfs-writable; else echo rootfs-readonly; fi; \
        echo \"quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) period=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)\"; \
        echo \"memlimit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)\"; \
        echo checks-done; exec sleep 3600");
    user["securityContext"] = serde_json::json!({"runAsUser": 1234, "runAsGroup": 4321,
        "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}});
    user["resources"] = serde_json::json!({"limits": {"cpu": "500m", "memory": "64Mi"}});
    c.server
        .create_pod(pod("secure", user, serde_json::json!({})))
        .unwrap();

    c.server
        .create_pod(pod(
            "nonroot",
            app("id -u"),
            serde_json::json!({"securityContext": {"runAsNonRoot": true}}),
        ))
        .unwrap();
    let mut huge = app("echo never");
    huge["resources"] = serde_json::json!({"requests": {"memory": "100Ti"}});
    c.server
        .create_pod(pod("huge", huge, serde_json::json!({})))
        .unwrap();
    c.server
        .create_pod(pod(
            "elsewhere",
            app("echo never"),
            serde_json::json!({"nodeSelector": {"disktype": "nvme"}}),
        ))
        .unwrap();

    wait_phase(&c, "env", "Succeeded", Duration::from_secs(60));
    let log = container_log(&c.dir, "env");
    let pod_ip = api_status(&c, "env").unwrap().pod_ip.unwrap_or_default();
    for want in [
        "GREETING=hello-world-blue".to_string(),
        "CFG_mode=blue".into(),
        "CFG_level=3".into(),
        "POD_NAME=env".into(),
        "POD_NS=default".into(),
        "APP_LABEL=env".into(),
        format!("NODE={NODE}"),
        "HOST_IP=127.0.0.1".into(),
        format!("POD_IP={pod_ip}"),
        "MEM_MI=64".into(),
        "CPU_M=500".into(),
        "MODE=blue".into(),
        "PASSWORD=hunter2".into(),
        "LITERAL=$(NAME) $(UNDEFINED)".into(),
        "args: hello-world-blue $(GREETING)".into(),
        "KUBERNETES_SERVICE_HOST=10.96.0.1".into(),
        "KUBERNETES_SERVICE_PORT=443".into(),
        "KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443".into(),
    ] {
        assert!(log.contains(&want), "{want} missing from:\n{log}");
    }

    let waiting = wait_for(Duration::from_secs(60), || {
        let w = main_status(&c, "missing-key")?.state?.waiting?;
        (w.reason.as_deref() == Some("CreateContainerConfigError")).then_some(w)
    })
    .unwrap_or_else(|| panic!("no CreateContainerConfigError:\n{}", c.log()));
    assert_eq!(
        waiting.message.as_deref(),
        Some("couldn't find key colour in ConfigMap default/settings")
    );
    let mut cm = c.server.get_config_map("default", "settings").unwrap();
    cm.data
        .get_or_insert_with(Default::default)
        .insert("colour".into(), "green".into());
    c.server.update_config_map(cm).unwrap();
    wait_phase(&c, "missing-key", "Succeeded", Duration::from_secs(90));

    // The pod keeps running until its cgroups are checked: once it ended, the kubelet may
    // remove them at any moment.
    wait_phase(&c, "secure", "Running", Duration::from_secs(60));
    let log = wait_for(Duration::from_secs(30), || {
        let log = container_log(&c.dir, "secure");
        log.contains("checks-done").then_some(log)
    })
    .unwrap_or_else(|| panic!("secure pod never finished its checks:\n{}", c.log()));
    assert!(log.contains("uid=1234 gid=4321"), "{log}");
    assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
    assert!(log.contains("rootfs-readonly"), "{log}");
    assert!(log.contains("quota=50000 period=100000"), "{log}");
    assert!(log.contains(&format!("memlimit={}", 64 << 20)), "{log}");

    // Limits on every container: a Guaranteed pod, its cgroup right under kubepods.
    let uid = c
        .server
        .get_pod("default", "secure")
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let pod_cgroup = PathBuf::from(format!("/sys/fs/cgroup/memory/kubepods/pod{uid}"));
    assert_eq!(
        std::fs::read_to_string(pod_cgroup.join("memory.limit_in_bytes"))
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", pod_cgroup.display(), c.log()))
            .trim(),
        (64u64 << 20).to_string()
    );
    let cpu_cgroup = PathBuf::from(format!("/sys/fs/cgroup/cpu/kubepods/pod{uid}"));
    assert_eq!(
        std::fs::read_to_string(cpu_cgroup.join("cpu.cfs_quota_us"))
            .unwrap()
            .trim(),
        "50000"
    );
    c.server.delete_pod("default", "secure", Some(0)).unwrap();
    wait_for(Duration::from_secs(60), || {
        (c.server.get_pod("default", "secure").is_none()
            && !pod_cgroup.exists()
            && !cpu_cgroup.exists())
        .then_some(())
    })
    .unwrap_or_else(|| panic!("pod cgroup not removed with the pod:\n{}", c.log()));

    let waiting = wait_for(Duration::from_secs(60), || {
        let w = main_status(&c, "nonroot")?.state?.waiting?;
        (w.reason.as_deref() == Some("CreateContainerConfigError")).then_some(w)
    })
    .unwrap_or_else(|| panic!("runAsNonRoot not enforced:\n{}", c.log()));
    assert!(waiting
        .message
        .unwrap_or_default()
        .starts_with("container has runAsNonRoot and image will run as root"),);

    for (name, reason) in [("huge", "OutOfmemory"), ("elsewhere", "NodeAffinity")] {
        wait_phase(&c, name, "Failed", Duration::from_secs(30));
        let status = api_status(&c, name).unwrap();
        assert_eq!(status.reason.as_deref(), Some(reason));
        assert!(
            status
                .message
                .unwrap_or_default()
                .starts_with("Pod was rejected: "),
            "{name}"
        );
        let mut f = api::PodSandboxFilter::new();
        f.mut_label_selector()
            .insert("io.kubernetes.pod.name".into(), name.into());
        assert!(
            runtime().list_pod_sandbox(Some(&f)).unwrap().is_empty(),
            "{name} never reached containerd"
        );
    }
}

fn ready_condition(c: &Cluster, name: &str) -> Option<String> {
    api_status(c, name)?
        .conditions?
        .into_iter()
        .find(|cond| cond.type_ == "Ready")
        .map(|cond| cond.status)
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn readiness_liveness_startup_and_tcp_probes() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start("e2e-cluster-probes");
    c.wait_ready_node();
    let pod = |name: &str, container: serde_json::Value| -> Pod {
        object(
            serde_json::json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1, "containers": [container]}}),
        )
    };
    let base = |script: &str| {
        serde_json::json!({"name": "app", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", script]})
    };
    // Readiness: busybox httpd serves /www/ready only while the file exists.
    let mut web = base("mkdir -p /www; httpd -p 8080 -h /www; while true; do sleep 1; done");
    web["readinessProbe"] = serde_json::json!({"httpGet": {"path": "/ready", "port": 8080},
        "periodSeconds": 1, "failureThreshold": 1});
    c.server.create_pod(pod("web", web)).unwrap();
    // Liveness: healthy for a few seconds, then the file goes away.
    let mut live = base("touch /tmp/healthy; sleep 4; rm /tmp/healthy; sleep 3600");
    live["livenessProbe"] = serde_json::json!({"exec": {"command": ["cat", "/tmp/healthy"]},
        "periodSeconds": 1, "failureThreshold": 2});
    c.server.create_pod(pod("live", live)).unwrap();
    // Startup: liveness would fail at once, but waits until startup succeeded (at ~4 s).
    let mut slow = base("sleep 4; touch /tmp/started; sleep 3600");
    slow["startupProbe"] = serde_json::json!({"exec": {"command": ["cat", "/tmp/started"]},
        "periodSeconds": 1, "failureThreshold": 30});
    slow["livenessProbe"] = serde_json::json!({"exec": {"command": ["cat", "/tmp/started"]},
        "periodSeconds": 1, "failureThreshold": 1});
    c.server.create_pod(pod("slow", slow)).unwrap();
    // tcpSocket against a port nobody listens on: never ready.
    let mut closed = base("sleep 3600");
    closed["readinessProbe"] = serde_json::json!({"tcpSocket": {"port": 9},
        "periodSeconds": 1});
    c.server.create_pod(pod("closed", closed)).unwrap();

    wait_phase(&c, "web", "Running", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        ready_condition(&c, "web").as_deref(),
        Some("False"),
        "no file yet"
    );
    let id = running_of("web")[0].clone();
    let exec = |cmd: &str| {
        runtime()
            .exec_sync(
                &id,
                &["sh".into(), "-c".into(), cmd.into()],
                Duration::from_secs(10),
            )
            .unwrap()
    };
    exec("echo ok > /www/ready");
    wait_for(Duration::from_secs(30), || {
        (ready_condition(&c, "web").as_deref() == Some("True")).then_some(())
    })
    .unwrap_or_else(|| panic!("web never Ready: {:?}\n{}", api_status(&c, "web"), c.log()));
    assert!(main_status(&c, "web").unwrap().ready);
    exec("rm /www/ready");
    wait_for(Duration::from_secs(30), || {
        (ready_condition(&c, "web").as_deref() == Some("False")).then_some(())
    })
    .unwrap_or_else(|| panic!("web still Ready:\n{}", c.log()));

    let restarted = wait_for(Duration::from_secs(90), || {
        let s = main_status(&c, "live")?;
        (s.restart_count >= 1).then_some(s)
    })
    .unwrap_or_else(|| panic!("no restart after the liveness probe failed:\n{}", c.log()));
    assert!(restarted.restart_count >= 1);
    let unhealthy = c.server.events().into_iter().find(|e| {
        e.reason.as_deref() == Some("Unhealthy")
            && e.involved_object.name.as_deref() == Some("live")
    });
    let message = unhealthy.and_then(|e| e.message).unwrap_or_default();
    assert!(
        message.starts_with("Liveness probe failed: "),
        "{message:?}"
    );
    let killing = c.server.events().into_iter().any(|e| {
        e.reason.as_deref() == Some("Killing")
            && e.message.as_deref() == Some("Stopping container app")
            && e.involved_object.name.as_deref() == Some("live")
    });
    assert!(killing, "Killing event");

    wait_for(Duration::from_secs(30), || {
        main_status(&c, "slow")
            .filter(|s| s.started == Some(true) && s.ready)
            .map(|_| ())
    })
    .unwrap_or_else(|| {
        panic!(
            "slow never started: {:?}\n{}",
            main_status(&c, "slow"),
            c.log()
        )
    });
    assert_eq!(
        main_status(&c, "slow").unwrap().restart_count,
        0,
        "liveness waited for the startup probe"
    );

    let closed = main_status(&c, "closed").unwrap();
    assert!(closed.state.unwrap().running.is_some());
    assert!(!closed.ready);
    assert_eq!(ready_condition(&c, "closed").as_deref(), Some("False"));
}

/// Lines of a running command's stdout, as they come.
fn line_reader(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn kubelet_api_logs_exec_port_forward_metrics_and_summary_through_kubectl() {
    use support::kubelet_api::{parse_prometheus, request, sample, Auth};
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start("e2e-cluster-api");
    c.wait_ready_node();
    c.server
        .create_pod(pod(
            "talker",
            "echo first; echo second; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done",
            1,
        ))
        .unwrap();
    let mut crasher = pod("crasher", "echo run-$(date +%s%N); sleep 2; exit 1", 1);
    crasher.spec.as_mut().unwrap().restart_policy = Some("Always".into());
    c.server.create_pod(crasher).unwrap();
    c.server
        .create_pod(pod(
            "web",
            "mkdir -p /www; echo hello-through-port-forward > /www/index.html; httpd -f -p 8080 -h /www",
            1,
        ))
        .unwrap();
    for name in ["talker", "web"] {
        wait_phase(&c, name, "Running", Duration::from_secs(60));
    }

    // Logs through the API server's pods/log, as `kubectl logs` reads them.
    let logs = wait_for(Duration::from_secs(30), || {
        let out = c.kubectl(&["logs", "talker"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("tick-2").then_some(text)
    })
    .unwrap_or_else(|| panic!("no logs:\n{}", c.log()));
    assert!(logs.starts_with("first\nsecond\ntick-1\n"), "{logs}");
    let tail = c.kubectl(&["logs", "talker", "--tail=1"]);
    let tail = String::from_utf8_lossy(&tail.stdout).into_owned();
    assert_eq!(tail.lines().count(), 1, "{tail:?}");
    assert!(tail.starts_with("tick-"), "{tail:?}");
    let stamped = c.kubectl(&["logs", "talker", "--tail=1", "--timestamps"]);
    let stamped = String::from_utf8_lossy(&stamped.stdout).into_owned();
    let (time, text) = stamped.trim_end().split_once(' ').unwrap();
    assert!(
        time.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "{stamped:?}"
    );
    assert!(text.starts_with("tick-"), "{stamped:?}");
    // follow: lines written after the request began arrive while it is open.
    let mut follow = c
        .kubectl_command(&["logs", "-f", "talker", "--tail=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = line_reader(&mut follow);
    let first = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("first followed line");
    let n = |l: &str| l.trim_start_matches("tick-").parse::<u64>().unwrap();
    let mut later = Vec::new();
    while later.len() < 2 {
        later.push(
            lines
                .recv_timeout(Duration::from_secs(10))
                .expect("new lines arrive while following"),
        );
    }
    assert!(
        n(&later[1]) > n(&later[0]) && n(&later[0]) > n(&first),
        "{first} {later:?}"
    );
    let _ = follow.kill();
    let _ = follow.wait();
    // previous: the attempt before a restart.
    wait_for(Duration::from_secs(60), || {
        let restarts = main_status(&c, "crasher")?.restart_count;
        (restarts >= 1).then_some(())
    })
    .unwrap_or_else(|| panic!("crasher never restarted:\n{}", c.log()));
    let previous = c.kubectl(&["logs", "crasher", "--previous"]);
    let previous_text = String::from_utf8_lossy(&previous.stdout).into_owned();
    assert!(
        previous_text.starts_with("run-"),
        "{previous_text:?} {}",
        String::from_utf8_lossy(&previous.stderr)
    );

    // exec through the API server, the kubelet's streaming proxy and containerd.
    let out = c.kubectl(&["exec", "talker", "--", "echo", "hi"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi\n",
        "exec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    let out = c.kubectl(&["exec", "talker", "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "exit codes come back");

    // port-forward to busybox httpd in the pod.
    let local = support::free_port();
    let mut forward = c
        .kubectl_command(&["port-forward", "pod/web", &format!("{local}:8080")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = line_reader(&mut forward);
    let ready = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("port-forward started");
    assert!(ready.contains("Forwarding from"), "{ready}");
    let body = wait_for(Duration::from_secs(20), || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", local)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(b"GET /index.html HTTP/1.0\r\nHost: web\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.contains("hello-through-port-forward").then_some(out)
    });
    let _ = forward.kill();
    let _ = forward.wait();
    let body = body.unwrap_or_else(|| panic!("no answer through port-forward:\n{}", c.log()));
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");

    // /metrics and /stats/summary, read as the API server reads them.
    let identity = c.server.issue_client_cert("kube-apiserver-kubelet-client");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], c.port));
    let cert_dir = c.dir.join("root/pki");
    let metrics = request(addr, &cert_dir, "GET", "/metrics", Auth::Cert(&identity));
    assert_eq!(metrics.status, 200);
    let samples = parse_prometheus(&metrics.text());
    assert!(sample(&samples, "kubelet_running_pods").unwrap() >= 2.0);
    assert!(
        sample(
            &samples,
            "kubelet_runtime_operations_total{operation_type=\"run_podsandbox\"}"
        )
        .unwrap()
            >= 3.0
    );
    assert!(
        sample(
            &samples,
            "kubelet_runtime_operations_duration_seconds_count{operation_type=\"create_container\"}"
        )
        .unwrap()
            >= 3.0
    );
    assert!(sample(&samples, "kubelet_pod_start_duration_seconds_count").unwrap() >= 2.0);
    assert!(sample(&samples, "kubelet_pleg_relist_interval_seconds_count").unwrap() >= 1.0);
    assert!(sample(&samples, "process_cpu_seconds_total").unwrap() > 0.0);
    let summary = request(
        addr,
        &cert_dir,
        "GET",
        "/stats/summary",
        Auth::Cert(&identity),
    )
    .json();
    for name in ["talker", "web"] {
        let pod = summary["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["podRef"]["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {summary}"));
        let memory = pod["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
        assert!(memory > 0, "{name}: {pod}");
        let cpu = pod["containers"][0]["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .unwrap_or(0);
        assert!(cpu > 0, "{name}: {pod}");
    }
    assert!(
        summary["node"]["runtime"]["imageFs"]["usedBytes"]
            .as_u64()
            .unwrap()
            > 0
    );
}
