//! End-to-end lifecycle: init containers, sidecars, restart policies, termination
//! messages, preStop hooks, grace periods and active deadlines.
//!
//! The real `rkubelet` binary on the test containerd, joined to the API server test double,
//! driven with the real `kubectl`. Ignored in a plain `cargo test` (they need the containerd
//! `tests/run.sh` starts); they share that containerd, so they run one at a time.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use rkubelet::cri::{api, RuntimeService};
use support::cri::runtime;
use support::e2e::{
    api_status, container_log, main_status, object, running_of, wait_phase, Cluster, IMAGE, NODE,
    SERIAL,
};
use support::wait_for;

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
