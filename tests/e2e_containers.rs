//! End-to-end container configuration: environment, security context, resources,
//! admission, and readiness, liveness, startup and TCP probes.
//!
//! The real `rkubelet` binary on the test containerd, joined to the API server test double,
//! driven with the real `kubectl`. Ignored in a plain `cargo test` (they need the containerd
//! `tests/run.sh` starts); they share that containerd, so they run one at a time.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use rkubelet::cri::{api, RuntimeService};
use support::cri::runtime;
use support::e2e::{
    api_status, container_log, main_status, object, running_of, wait_phase, Cluster, IMAGE, NODE,
    SERIAL,
};
use support::wait_for;

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
        if [ -f /sys/fs/cgroup/cpu.max ]; then \
          echo \"cpumax=$(cat /sys/fs/cgroup/cpu.max)\"; echo \"memlimit=$(cat /sys/fs/cgroup/memory.max)\"; \
        else \
          echo \"quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) period=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)\"; \
          echo \"memlimit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)\"; \
        fi; \
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
    // The host's own layout: cgroup v2 (one tree) or v1 (one hierarchy per controller).
    let v2 = support::cgroup_v2();
    if v2 {
        assert!(log.contains("cpumax=50000 100000"), "{log}");
    } else {
        assert!(log.contains("quota=50000 period=100000"), "{log}");
    }
    assert!(log.contains(&format!("memlimit={}", 64 << 20)), "{log}");

    // Limits on every container: a Guaranteed pod, its cgroup right under kubepods.
    let uid = c
        .server
        .get_pod("default", "secure")
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let (memory_file, cpu_file, cpu_value) = if v2 {
        ("memory.max", "cpu.max", "50000 100000")
    } else {
        ("memory.limit_in_bytes", "cpu.cfs_quota_us", "50000")
    };
    let pod_cgroup = support::cgroup_dir("memory", &format!("kubepods/pod{uid}"));
    assert_eq!(
        std::fs::read_to_string(pod_cgroup.join(memory_file))
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", pod_cgroup.display(), c.log()))
            .trim(),
        (64u64 << 20).to_string()
    );
    let cpu_cgroup = support::cgroup_dir("cpu", &format!("kubepods/pod{uid}"));
    assert_eq!(
        std::fs::read_to_string(cpu_cgroup.join(cpu_file))
            .unwrap()
            .trim(),
        cpu_value
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

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn cgroupfs_pod_cgroups_get_pids_limit_init_container_limits_and_burstable_shares() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = support::scratch_dir("e2e-cgroupfs-config");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         cgroupDriver: cgroupfs\npodPidsLimit: 128\n",
    )
    .unwrap();
    let flag = format!("--config={}", config.display());
    let c = Cluster::start_with("e2e-cgroupfs", &[&flag]);
    c.wait_ready_node();
    // Burstable; the init container's limits are larger than the app container's.
    let init = serde_json::json!({"name": "init", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
        "command": ["true"],
        "resources": {"limits": {"cpu": "300m", "memory": "96Mi"}}});
    let app = serde_json::json!({"name": "app", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
        "command": ["sleep", "3600"],
        "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}});
    let p: Pod = object(serde_json::json!({
        "metadata": {"name": "limits", "namespace": "default"},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1,
                 "initContainers": [init], "containers": [app]}
    }));
    c.server.create_pod(p).unwrap();
    wait_phase(&c, "limits", "Running", Duration::from_secs(60));
    let uid = c
        .server
        .get_pod("default", "limits")
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let v2 = support::cgroup_v2();
    let read = |controller: &str, rel: &str, v1: &str, v2_file: &str| {
        let path = support::cgroup_dir(controller, rel).join(if v2 { v2_file } else { v1 });
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), c.log()))
            .trim()
            .to_string()
    };
    let pod_rel = format!("kubepods/burstable/pod{uid}");
    // Memory: the init container's 96Mi beats the app's 64Mi; CPU: the app's 500m beats 300m.
    assert_eq!(
        read("memory", &pod_rel, "memory.limit_in_bytes", "memory.max"),
        (96u64 << 20).to_string()
    );
    let quota = read("cpu", &pod_rel, "cpu.cfs_quota_us", "cpu.max");
    assert_eq!(quota, if v2 { "50000 100000" } else { "50000" });
    assert_eq!(read("pids", &pod_rel, "pids.max", "pids.max"), "128");
    // Requests: the init container's 300m (its limit) beats the app's 250m.
    let shares = read("cpu", &pod_rel, "cpu.shares", "cpu.weight");
    assert_eq!(shares, if v2 { "12" } else { "307" });
    // The burstable QoS cgroup's shares follow its one pod, and drop back when it goes.
    let qos_shares = || read("cpu", "kubepods/burstable", "cpu.shares", "cpu.weight");
    assert_eq!(qos_shares(), if v2 { "12" } else { "307" });
    c.server.delete_pod("default", "limits", Some(0)).unwrap();
    wait_for(Duration::from_secs(60), || {
        (c.server.get_pod("default", "limits").is_none()
            && !support::cgroup_dir("cpu", &pod_rel).exists()
            && qos_shares() == if v2 { "1" } else { "2" })
        .then_some(())
    })
    .unwrap_or_else(|| panic!("pod cgroup and burstable shares not back:\n{}", c.log()));
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}
