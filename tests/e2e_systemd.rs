//! End-to-end `cgroupDriver: systemd` against a real systemd manager: a systemd started as
//! PID 1 of its own PID and mount namespaces, a containerd inside them with runc's systemd
//! cgroup driver, and the real `rkubelet` binary inside them too, joined to the API server
//! test double (`tests/support/systemd.rs`). Guaranteed, Burstable and BestEffort pods run
//! in slices with upstream's names and properties; a `kill -9` restart adopts everything;
//! a pod deleted while the kubelet is down has its slice removed once it is back; after
//! systemd re-executes itself (dropping every D-Bus connection) the kubelet reconnects;
//! deleting the pods removes their slices.
//!
//! Ignored in a plain `cargo test`: needs root, systemd, util-linux and containerd
//! (`tests/run.sh` runs it).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rkubelet::cri::{api, RuntimeService};
use support::cri::runtime_at;
use support::e2e::{api_status, pod, wait_phase, Cluster, SERIAL};
use support::systemd::SystemdNode;
use support::wait_for;

fn resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> ResourceRequirements {
    let map = |list: &[(&str, &str)]| {
        (!list.is_empty()).then(|| {
            list.iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect::<BTreeMap<_, _>>()
        })
    };
    ResourceRequirements {
        requests: map(requests),
        limits: map(limits),
        ..Default::default()
    }
}

fn with_resources(mut p: Pod, r: ResourceRequirements) -> Pod {
    p.spec.as_mut().unwrap().containers[0].resources = Some(r);
    p
}

/// The pods' running containers on this node's containerd, by pod name.
fn containers(endpoint: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in runtime_at(endpoint).list_containers(None).unwrap() {
        if c.get_state() == api::ContainerState::CONTAINER_RUNNING {
            let pod = c.get_labels()["io.kubernetes.pod.name"].clone();
            out.entry(pod).or_default().push(c.get_id().to_string());
        }
    }
    out
}

fn sandboxes(endpoint: &str) -> Vec<String> {
    let mut ids: Vec<String> = runtime_at(endpoint)
        .list_pod_sandbox(None)
        .unwrap()
        .iter()
        .map(|s| s.get_id().to_string())
        .collect();
    ids.sort();
    ids
}

/// What the host's cgroup set-up looks like: its hierarchies (from `/proc/self/cgroup`), the
/// entries of `/sys/fs/cgroup`, and that mount's options. The namespaced systemd must leave
/// all three as they were.
fn host_cgroup_layout() -> (Vec<String>, Vec<String>, String) {
    let mut hierarchies: Vec<String> = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(str::to_string))
        .collect();
    hierarchies.sort();
    let mut entries: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    let options = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/sys/fs/cgroup"))
        .and_then(|l| l.split(' ').nth(3).map(str::to_string))
        .unwrap_or_default();
    (hierarchies, entries, options)
}

fn uid(c: &Cluster, name: &str) -> String {
    c.server
        .get_pod("default", name)
        .and_then(|p| p.metadata.uid)
        .unwrap()
}

#[test]
#[ignore = "needs root, systemd and containerd (tests/run.sh)"]
fn systemd_driver_runs_pods_in_slices_and_adopts_them_after_a_restart() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let host_before = host_cgroup_layout();
    let node = SystemdNode::start("driver");
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let config = node.base.join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         cgroupDriver: systemd\npodPidsLimit: 256\n\
         systemReserved: {cpu: 100m, memory: 64Mi, pid: \"100\"}\n\
         systemReservedCgroup: /system.slice\n\
         enforceNodeAllocatable: [pods, system-reserved]\n",
    )
    .unwrap();
    let flag = format!("--config={}", config.display());
    let mut c = Cluster::start_in("systemd-driver", &[&flag], node.launch(), |_| {});
    c.wait_ready_node();
    assert!(
        c.log().contains("systemd driver"),
        "the kubelet did not report the systemd driver:\n{}",
        c.log()
    );

    let guaranteed = with_resources(
        pod("guaranteed", "sleep 3600", 2),
        resources(&[], &[("cpu", "200m"), ("memory", "64Mi")]),
    );
    let burstable = with_resources(
        pod("burstable", "sleep 3600", 2),
        resources(
            &[("cpu", "100m"), ("memory", "32Mi")],
            &[("memory", "128Mi")],
        ),
    );
    let besteffort = pod("besteffort", "sleep 3600", 2);
    for p in [guaranteed, burstable, besteffort] {
        c.server.create_pod(p).unwrap();
    }
    for name in ["guaranteed", "burstable", "besteffort"] {
        wait_phase(&c, name, "Running", Duration::from_secs(90));
    }

    // The slices and their properties, as the upstream kubelet sets them.
    let slice = |qos: &str, name: &str| {
        let uid = uid(&c, name).replace('-', "_");
        match qos {
            "" => format!("kubepods-pod{uid}.slice"),
            q => format!("kubepods-{q}-pod{uid}.slice"),
        }
    };
    let (cpu_key, memory_key) = if v2 {
        ("CPUWeight", "MemoryMax")
    } else {
        ("CPUShares", "MemoryLimit")
    };
    let props = [
        cpu_key,
        memory_key,
        "CPUQuotaPerSecUSec",
        "TasksMax",
        "ActiveState",
        "InvocationID",
    ];
    let show = |unit: &str| node.show(unit, &props);
    let g_unit = slice("", "guaranteed");
    let b_unit = slice("burstable", "burstable");
    let e_unit = slice("besteffort", "besteffort");
    let g = show(&g_unit);
    assert_eq!(g["ActiveState"], "active", "{g_unit}: {g:?}\n{}", c.log());
    assert_eq!(g[memory_key], (64u64 << 20).to_string(), "{g:?}");
    assert_eq!(g["CPUQuotaPerSecUSec"], "200ms", "{g:?}");
    assert_eq!(g["TasksMax"], "256", "{g:?}");
    let b = show(&b_unit);
    assert_eq!(b[memory_key], (128u64 << 20).to_string(), "{b:?}");
    assert_eq!(b["CPUQuotaPerSecUSec"], "infinity", "no CPU limit: {b:?}");
    let e = show(&e_unit);
    assert_eq!(e["TasksMax"], "256", "{e:?}");
    if v2 {
        assert_eq!(g[cpu_key], "8", "{g:?}");
        assert_eq!(e[cpu_key], "1", "{e:?}");
    } else {
        assert_eq!(g[cpu_key], "204", "{g:?}");
        assert_eq!(b[cpu_key], "102", "{b:?}");
        assert_eq!(e[cpu_key], "2", "{e:?}");
        // The burstable QoS slice's shares follow its pods' CPU requests.
        let qos = node.show("kubepods-burstable.slice", &[cpu_key]);
        assert_eq!(qos[cpu_key], "102", "{qos:?}");
        let qos = node.show("kubepods-besteffort.slice", &[cpu_key]);
        assert_eq!(qos[cpu_key], "2", "{qos:?}");
    }
    // Node allocatable: kubepods gets capacity less systemReserved, system.slice the
    // reservation.
    let kubepods = node.show("kubepods.slice", &["ActiveState", memory_key, "TasksMax"]);
    assert_eq!(kubepods["ActiveState"], "active", "{kubepods:?}");
    let mem_total: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert_eq!(
        kubepods[memory_key],
        (mem_total * 1024 - (64 << 20)).to_string(),
        "{kubepods:?}"
    );
    let system = node.show("system.slice", &[memory_key, cpu_key, "TasksMax"]);
    assert_eq!(system[memory_key], (64u64 << 20).to_string(), "{system:?}");
    assert_eq!(system["TasksMax"], "100", "{system:?}");
    if !v2 {
        assert_eq!(system[cpu_key], "102", "{system:?}");
    }

    // Every container's cgroup sits under its pod's slice (runc's scope for containerd).
    let controller = if v2 { None } else { Some("pids") };
    let root = node.cgroup_root(controller);
    let pod_dir = |qos_path: &str, unit: &str| -> PathBuf {
        root.join("kubepods.slice").join(qos_path).join(unit)
    };
    let dirs = [
        ("guaranteed", pod_dir("", &g_unit)),
        ("burstable", pod_dir("kubepods-burstable.slice", &b_unit)),
        ("besteffort", pod_dir("kubepods-besteffort.slice", &e_unit)),
    ];
    let before = containers(&node.endpoint);
    for (name, dir) in &dirs {
        let ids = &before[*name];
        assert_eq!(ids.len(), 1, "{name}: {before:?}");
        let scope = dir.join(format!("cri-containerd-{}.scope", ids[0]));
        assert!(scope.is_dir(), "{} missing\n{}", scope.display(), c.log());
        if !v2 {
            let max = std::fs::read_to_string(dir.join("pids.max")).unwrap();
            assert_eq!(max.trim(), "256", "{}", dir.display());
        }
    }

    // kill -9 and start again: nothing is recreated, the slices are the same units.
    let sandboxes_before = sandboxes(&node.endpoint);
    c.kill9_and_restart();
    wait_for(Duration::from_secs(30), || {
        (c.log().matches("pod cgroups under /kubepods.slice").count() == 2).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the restarted kubelet did not set up its cgroups:\n{}",
            c.log()
        )
    });
    std::thread::sleep(Duration::from_secs(5));
    assert!(c.running(), "the restarted kubelet exited:\n{}", c.log());
    for name in ["guaranteed", "burstable", "besteffort"] {
        wait_phase(&c, name, "Running", Duration::from_secs(30));
        let restarts = api_status(&c, name).unwrap().container_statuses.unwrap()[0].restart_count;
        assert_eq!(restarts, 0, "{name} restarted\n{}", c.log());
    }
    assert_eq!(
        containers(&node.endpoint),
        before,
        "containers recreated\n{}",
        c.log()
    );
    assert_eq!(sandboxes(&node.endpoint), sandboxes_before);
    for (unit, earlier) in [(&g_unit, &g), (&b_unit, &b), (&e_unit, &e)] {
        let now = show(unit);
        assert_eq!(
            now["InvocationID"], earlier["InvocationID"],
            "{unit} restarted"
        );
        assert_eq!(now["ActiveState"], "active");
    }

    let slice_gone = |unit: &str, dir: &PathBuf| {
        let state = node.show(unit, &["LoadState", "ActiveState"]);
        let gone = state.get("LoadState").map(String::as_str) == Some("not-found")
            || state.get("ActiveState").map(String::as_str) == Some("inactive");
        gone && !dir.exists()
    };

    // A pod removed while the kubelet is down: its containers and slice go once it is back.
    c.kill9();
    assert!(c
        .server
        .delete_pod("default", "besteffort", Some(0))
        .unwrap()
        .is_none());
    c.restart();
    wait_for(Duration::from_secs(60), || {
        slice_gone(&e_unit, &dirs[2].1).then_some(())
    })
    .unwrap_or_else(|| panic!("leftover slice {e_unit} not removed\n{}", c.log()));
    assert!(!containers(&node.endpoint).contains_key("besteffort"));

    // systemd re-executes itself: every D-Bus connection drops; the next call reconnects.
    let reexec = node
        .enter()
        .args(["systemctl", "daemon-reexec"])
        .status()
        .unwrap();
    assert!(reexec.success());

    // Deleting the pods removes their slices, and the burstable QoS slice's shares drop.
    for name in ["guaranteed", "burstable"] {
        c.server.delete_pod("default", name, Some(1)).unwrap();
    }
    for (unit, (name, dir)) in [&g_unit, &b_unit].into_iter().zip(&dirs) {
        wait_for(Duration::from_secs(60), || {
            slice_gone(unit, dir).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "{name}: slice {unit} not removed: {:?}\n{}",
                node.show(unit, &["LoadState", "ActiveState"]),
                c.log()
            )
        });
    }
    assert!(
        c.log().contains("reconnected to systemd"),
        "no reconnection after daemon-reexec:\n{}",
        c.log()
    );
    if !v2 {
        wait_for(Duration::from_secs(10), || {
            let qos = node.show("kubepods-burstable.slice", &[cpu_key]);
            (qos[cpu_key] == "2").then_some(())
        })
        .expect("burstable shares not back to the minimum");
    }
    drop(c);
    drop(node);
    assert_eq!(
        host_cgroup_layout(),
        host_before,
        "the namespaced systemd changed the host's cgroups"
    );
}

#[test]
#[ignore = "needs root, systemd and containerd (tests/run.sh)"]
fn systemd_driver_without_systemd_is_a_start_up_error() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The test containerd's host has no systemd running: /run/systemd/private is missing.
    let dir = support::scratch_dir("systemd-missing");
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    // Bounded: a kubelet that wrongly starts is stopped after 60 s.
    let out = std::process::Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_rkubelet"))
        .arg(format!("--root-dir={}", dir.join("root").display()))
        .arg(format!(
            "--container-runtime-endpoint={}",
            support::cri::endpoint()
        ))
        .arg("--cgroup-driver=systemd")
        .arg(format!(
            "--pod-manifest-path={}",
            dir.join("manifests").display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without systemd:\n{stderr}");
    assert!(
        stderr.contains("cgroupDriver is systemd, but systemd cannot be reached")
            && stderr.contains("/run/systemd/private"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
