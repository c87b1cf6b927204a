use super::systemd::{quota_per_sec_usec, resource_properties, unit_and_parent, SystemdRoots};
use super::*;
use crate::cm::dbus::{Property, Value};
use crate::nodestatus::Reserved;
use crate::resources::shares_to_weight;

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
}

fn containers(containers: serde_json::Value) -> Pod {
    pod(serde_json::json!({ "containers": containers }))
}

/// A scratch cgroup v1 tree: plain directories for cpu, memory and pids.
fn v1_tree(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rkubelet-cm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for c in V1_CONTROLLERS {
        std::fs::create_dir_all(dir.join(c)).unwrap();
    }
    dir
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Plain directories hold the limit files, so removal in a scratch tree empties them first.
fn empty_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

#[test]
fn pod_limits_sum_containers_and_need_every_limit() {
    let both = containers(serde_json::json!([
        {"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
        {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}}}
    ]));
    assert_eq!(
        pod_limits(&both, "Guaranteed", false),
        CgroupLimits {
            cpu_shares: Some(768),
            cpu_quota: Some(75_000),
            memory_bytes: Some(96 << 20),
            ..Default::default()
        }
    );
    let partial = containers(serde_json::json!([
        {"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi"}}},
        {"name": "b"}
    ]));
    assert_eq!(
        pod_limits(&partial, "Burstable", false),
        CgroupLimits {
            cpu_shares: Some(102),
            ..Default::default()
        }
    );
    let besteffort = containers(serde_json::json!([{"name": "a"}]));
    assert_eq!(
        pod_limits(&besteffort, "BestEffort", false).cpu_shares,
        Some(2)
    );
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(262_144), 10_000);
}

#[test]
fn init_containers_count_in_pod_limits() {
    // A large init container: the pod's limit is the larger of it and the app containers.
    let big_init = pod(serde_json::json!({
        "initContainers": [
            {"name": "init", "resources": {"limits": {"cpu": "2", "memory": "256Mi"}}}
        ],
        "containers": [
            {"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}
        ]
    }));
    let l = pod_limits(&big_init, "Guaranteed", false);
    assert_eq!(l.cpu_quota, Some(200_000));
    assert_eq!(l.memory_bytes, Some(256 << 20));
    assert_eq!(l.cpu_shares, Some(2048));
    // A sidecar runs beside the app containers and the init containers after it.
    let sidecar = pod(serde_json::json!({
        "initContainers": [
            {"name": "side", "restartPolicy": "Always",
             "resources": {"limits": {"cpu": "100m", "memory": "16Mi"}}},
            {"name": "init", "resources": {"limits": {"cpu": "300m", "memory": "32Mi"}}}
        ],
        "containers": [
            {"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}
        ]
    }));
    let l = pod_limits(&sidecar, "Guaranteed", false);
    assert_eq!(
        l.cpu_quota,
        Some(60_000),
        "500m + sidecar 100m > init 300m + sidecar 100m"
    );
    assert_eq!(l.memory_bytes, Some(80 << 20));
    // An init container without a limit leaves the pod without that limit.
    let unlimited_init = pod(serde_json::json!({
        "initContainers": [{"name": "init", "resources": {"limits": {"memory": "32Mi"}}}],
        "containers": [
            {"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}
        ]
    }));
    let l = pod_limits(&unlimited_init, "Burstable", false);
    assert_eq!(l.cpu_quota, None);
    assert_eq!(l.memory_bytes, Some(64 << 20));
}

#[test]
fn memory_qos_sets_memory_min_from_requests() {
    let p = containers(serde_json::json!([
        {"name": "a", "resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "128Mi"}}}
    ]));
    assert_eq!(pod_limits(&p, "Burstable", true).memory_min, Some(64 << 20));
    assert_eq!(pod_limits(&p, "Burstable", false).memory_min, None);
    let pods = [
        PodRequests {
            qos: "Burstable",
            cpu_millis: 250,
            memory_bytes: 64 << 20,
        },
        PodRequests {
            qos: "Burstable",
            cpu_millis: 500,
            memory_bytes: 0,
        },
        PodRequests {
            qos: "Guaranteed",
            cpu_millis: 1000,
            memory_bytes: 128 << 20,
        },
        PodRequests {
            qos: "BestEffort",
            cpu_millis: 0,
            memory_bytes: 0,
        },
    ];
    let (burstable, guaranteed) = qos_limits(pods.iter(), true);
    assert_eq!(burstable.cpu_shares, Some(768));
    assert_eq!(burstable.memory_min, Some(64 << 20));
    assert_eq!(guaranteed, Some(192 << 20));
    let (burstable, guaranteed) = qos_limits(pods.iter(), false);
    assert_eq!(burstable.memory_min, None);
    assert_eq!(guaranteed, None);
    // No burstable pod: the minimum shares, as upstream.
    assert_eq!(qos_limits([].iter(), false).0.cpu_shares, Some(2));
}

#[test]
fn v1_tree_is_created_limited_and_removed() {
    let dir = v1_tree("v1");
    let cm = CgroupManager::detect(&dir, "/")
        .unwrap()
        .with_pod_pids_limit(Some(100));
    assert_eq!(cm.version(), CgroupVersion::V1);
    let node = NodeAllocatableConfig {
        capacity: Reservation {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            pids: 4_194_304,
        },
        enforce: vec!["pods".into()],
        ..Default::default()
    };
    cm.start(&node).unwrap();
    assert_eq!(read(&dir, "cpu/kubepods/cpu.shares"), "4096");
    assert_eq!(
        read(&dir, "memory/kubepods/memory.limit_in_bytes"),
        (8u64 << 30).to_string()
    );
    assert_eq!(read(&dir, "pids/kubepods/pids.max"), "4194304");
    assert_eq!(read(&dir, "cpu/kubepods/besteffort/cpu.shares"), "2");
    assert_eq!(read(&dir, "cpu/kubepods/burstable/cpu.shares"), "2");
    let p = containers(serde_json::json!([{"name": "a", "resources": {
        "requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}}}]));
    let uid = PodUid::from("u1");
    let name = cm.ensure_pod_cgroup(&p, &uid, "Burstable").unwrap();
    assert_eq!(name, "/kubepods/burstable/podu1");
    assert_eq!(
        read(&dir, "cpu/kubepods/burstable/podu1/cpu.cfs_quota_us"),
        "50000"
    );
    assert_eq!(read(&dir, "cpu/kubepods/burstable/podu1/cpu.shares"), "256");
    assert_eq!(
        read(
            &dir,
            "memory/kubepods/burstable/podu1/memory.limit_in_bytes"
        ),
        (64u64 << 20).to_string()
    );
    // podPidsLimit on the pod cgroup; the burstable cgroup's shares follow its pods.
    assert_eq!(read(&dir, "pids/kubepods/burstable/podu1/pids.max"), "100");
    assert_eq!(read(&dir, "cpu/kubepods/burstable/cpu.shares"), "256");
    let other = containers(serde_json::json!([{"name": "a", "resources": {
        "requests": {"cpu": "1"}}}]));
    cm.ensure_pod_cgroup(&other, &PodUid::from("u2"), "Burstable")
        .unwrap();
    assert_eq!(read(&dir, "cpu/kubepods/burstable/cpu.shares"), "1280");
    assert_eq!(
        cm.pods_with_cgroups(),
        [uid.clone(), PodUid::from("u2")].into()
    );
    for u in ["u1", "u2"] {
        for c in V1_CONTROLLERS {
            empty_files(&dir.join(c).join(format!("kubepods/burstable/pod{u}")));
        }
    }
    cm.remove_pod_cgroup(&uid).unwrap();
    assert_eq!(read(&dir, "cpu/kubepods/burstable/cpu.shares"), "1024");
    cm.remove_pod_cgroup(&PodUid::from("u2")).unwrap();
    assert_eq!(read(&dir, "cpu/kubepods/burstable/cpu.shares"), "2");
    assert!(cm.pods_with_cgroups().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn v2_tree_gets_weights_max_and_memory_min() {
    let dir = std::env::temp_dir().join(format!("rkubelet-cm-v2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
    std::fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
    let cm = CgroupManager::detect(&dir, "/")
        .unwrap()
        .with_pod_pids_limit(Some(50))
        .with_memory_qos(true);
    assert_eq!(cm.version(), CgroupVersion::V2);
    let uid = PodUid::from("g1");
    let node = NodeAllocatableConfig {
        capacity: Reservation {
            cpu_millis: 2000,
            memory_bytes: 4 << 30,
            pids: 32768,
        },
        system_reserved: Reserved {
            cpu_millis: 500,
            memory_bytes: 1 << 30,
            pids: 768,
            ..Default::default()
        },
        enforce: vec!["pods".into()],
        ..Default::default()
    };
    cm.start(&node).unwrap();
    assert_eq!(
        read(&dir, "kubepods/cpu.weight"),
        shares_to_weight(1536).to_string()
    );
    assert_eq!(read(&dir, "kubepods/memory.max"), (3u64 << 30).to_string());
    assert_eq!(read(&dir, "kubepods/pids.max"), "32000");
    assert_eq!(read(&dir, "kubepods/besteffort/cpu.weight"), "1");
    let p = containers(serde_json::json!([{"name": "a", "resources": {
        "limits": {"cpu": "1500m", "memory": "128Mi"}}}]));
    let parent = cm.ensure_pod_cgroup(&p, &uid, "Guaranteed").unwrap();
    assert_eq!(parent, "/kubepods/podg1");
    assert_eq!(read(&dir, "kubepods/podg1/cpu.max"), "150000 100000");
    assert_eq!(
        read(&dir, "kubepods/podg1/memory.max"),
        (128u64 << 20).to_string()
    );
    assert_eq!(
        read(&dir, "kubepods/podg1/memory.min"),
        (128u64 << 20).to_string()
    );
    assert_eq!(read(&dir, "kubepods/podg1/pids.max"), "50");
    // Memory QoS: kubepods' memory.min covers the Guaranteed pod's request.
    assert_eq!(
        read(&dir, "kubepods/memory.min"),
        (128u64 << 20).to_string()
    );
    assert!(read(&dir, "cgroup.subtree_control").contains("pids"));
    // An existing pod cgroup is adopted as it is (a restarted kubelet rewrites nothing).
    std::fs::write(dir.join("kubepods/podg1/cpu.max"), "max 100000").unwrap();
    cm.ensure_pod_cgroup(&p, &uid, "Guaranteed").unwrap();
    assert_eq!(read(&dir, "kubepods/podg1/cpu.max"), "max 100000");
    // A controller the cgroup does not have is not written.
    std::fs::write(
        dir.join("kubepods/besteffort/cgroup.controllers"),
        "memory pids\n",
    )
    .unwrap();
    cm.update(
        &cm.qos_name("BestEffort"),
        &CgroupLimits {
            cpu_shares: Some(50),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(read(&dir, "kubepods/besteffort/cpu.weight"), "1");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cgroup_root_must_exist_and_reserved_cgroups_are_limited() {
    let dir = v1_tree("root");
    let cm = CgroupManager::detect(&dir, "/custom").unwrap();
    let err = cm.start(&NodeAllocatableConfig::default()).unwrap_err();
    assert!(err.to_string().contains("cgroup-root \"/custom\""), "{err}");
    for c in V1_CONTROLLERS {
        std::fs::create_dir_all(dir.join(c).join("custom")).unwrap();
        std::fs::create_dir_all(dir.join(c).join("system.slice")).unwrap();
    }
    let node = NodeAllocatableConfig {
        capacity: Reservation {
            cpu_millis: 2000,
            memory_bytes: 4 << 30,
            pids: 1000,
        },
        system_reserved: Reserved {
            cpu_millis: 500,
            memory_bytes: 1 << 30,
            ..Default::default()
        },
        enforce: vec!["pods".into(), "system-reserved".into()],
        system_reserved_cgroup: "/system.slice".into(),
        ..Default::default()
    };
    cm.start(&node).unwrap();
    assert_eq!(read(&dir, "cpu/custom/kubepods/cpu.shares"), "1536");
    assert_eq!(read(&dir, "cpu/system.slice/cpu.shares"), "512");
    assert_eq!(
        read(&dir, "memory/system.slice/memory.limit_in_bytes"),
        (1u64 << 30).to_string()
    );
    assert_eq!(
        cm.pod_cgroup(&PodUid::from("x"), "BestEffort"),
        "/custom/kubepods/besteffort/podx"
    );
    // A reserved cgroup that does not exist is an error naming it.
    let missing = NodeAllocatableConfig {
        kube_reserved: Reserved {
            memory_bytes: 1 << 20,
            ..Default::default()
        },
        enforce: vec!["kube-reserved".into()],
        kube_reserved_cgroup: "/kube.slice".into(),
        ..node
    };
    let err = cm.start(&missing).unwrap_err().to_string();
    assert!(
        err.contains("kube-reserved on /kube.slice") && err.contains("does not exist"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn systemd_names_as_upstream() {
    let root = CgroupName::default();
    let kubepods = root.child("kubepods");
    assert_eq!(root.to_systemd(), "/");
    assert_eq!(kubepods.to_systemd(), "/kubepods.slice");
    let pod = kubepods
        .child("burstable")
        .child("pod0b5a2c3e-1111-4222-8333-444455556666");
    assert_eq!(
        pod.to_systemd(),
        "/kubepods.slice/kubepods-burstable.slice/\
         kubepods-burstable-pod0b5a2c3e_1111_4222_8333_444455556666.slice"
    );
    assert_eq!(
        pod.to_cgroupfs(),
        "/kubepods/burstable/pod0b5a2c3e-1111-4222-8333-444455556666"
    );
    assert_eq!(
        unit_and_parent(&pod),
        (
            "kubepods-burstable-pod0b5a2c3e_1111_4222_8333_444455556666.slice".to_string(),
            "kubepods-burstable.slice".to_string()
        )
    );
    assert_eq!(
        unit_and_parent(&kubepods),
        ("kubepods.slice".to_string(), "-.slice".to_string())
    );
    // cgroupRoot in cgroupfs form, as upstream parses it for either driver.
    let custom = CgroupName::from_cgroupfs("/node-a/").child("kubepods");
    assert_eq!(custom.to_systemd(), "/node_a.slice/node_a-kubepods.slice");
    // systemReservedCgroup in systemd form.
    assert_eq!(
        CgroupName::from_systemd("/system.slice").components(),
        ["system"]
    );
    assert_eq!(
        CgroupName::from_systemd("/a.slice/a-b_c.slice").components(),
        ["a", "b-c"]
    );
    assert!(CgroupName::from_systemd("-.slice").components().is_empty());
}

#[test]
fn systemd_roots_come_from_pid_1() {
    let hybrid = "12:pids:/ctr/init.scope\n4:cpu,cpuacct:/ctr/init.scope\n\
                  1:name=systemd:/ctr/init.scope\n0::/ctr/init.scope\n";
    let v1 = SystemdRoots::parse(hybrid, CgroupVersion::V1);
    assert_eq!(v1.root(Some("cpu")), "/ctr");
    assert_eq!(v1.root(Some("cpuacct")), "/ctr");
    assert_eq!(v1.root(Some("pids")), "/ctr");
    assert_eq!(
        v1.root(Some("memory")),
        "/",
        "not listed: the hierarchy's root"
    );
    let v2 = SystemdRoots::parse("0::/init.scope\n", CgroupVersion::V2);
    assert_eq!(v2.root(None), "/");
}

#[test]
fn limits_become_the_unit_properties_libcontainer_sets() {
    assert_eq!(quota_per_sec_usec(50_000, 100_000), 500_000);
    assert_eq!(quota_per_sec_usec(1_000, 100_000), 10_000);
    assert_eq!(
        quota_per_sec_usec(1_234, 100_000),
        20_000,
        "rounded up to 10 ms"
    );
    let limits = CgroupLimits {
        cpu_shares: Some(1024),
        cpu_quota: Some(50_000),
        memory_bytes: Some(64 << 20),
        pids: Some(100),
        memory_min: Some(32 << 20),
    };
    let names = |props: &[Property]| -> Vec<(&str, Value)> {
        props.iter().map(|p| (p.name, p.value.clone())).collect()
    };
    assert_eq!(
        names(&resource_properties(&limits, CgroupVersion::V1, 252)),
        [
            ("MemoryLimit", Value::U64(64 << 20)),
            ("CPUShares", Value::U64(1024)),
            ("CPUQuotaPeriodUSec", Value::U64(100_000)),
            ("CPUQuotaPerSecUSec", Value::U64(500_000)),
            ("TasksMax", Value::U64(100)),
        ]
    );
    assert_eq!(
        names(&resource_properties(&limits, CgroupVersion::V2, 241)),
        [
            ("MemoryMax", Value::U64(64 << 20)),
            ("CPUWeight", Value::U64(39)),
            ("CPUQuotaPerSecUSec", Value::U64(500_000)),
            ("TasksMax", Value::U64(100)),
            ("MemoryMin", Value::U64(32 << 20)),
        ]
    );
}

#[test]
fn processes_of_a_cgroup_and_its_children_are_killed_and_the_kubelet_never() {
    use std::os::unix::process::ExitStatusExt;
    let dir = v1_tree("kill");
    let pod = dir.join("pids/kubepods/podu1");
    std::fs::create_dir_all(pod.join("container")).unwrap();
    let mut top = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let mut below = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let own = std::process::id();
    std::fs::write(pod.join("cgroup.procs"), format!("{}\n{own}\n", top.id())).unwrap();
    std::fs::write(
        pod.join("container/cgroup.procs"),
        format!("{}\n", below.id()),
    )
    .unwrap();
    // The same pid in a second controller's directory is signalled once.
    let memory = dir.join("memory/kubepods/podu1");
    std::fs::create_dir_all(&memory).unwrap();
    std::fs::write(memory.join("cgroup.procs"), format!("{}\n", top.id())).unwrap();

    assert_eq!(fs::kill_processes(&[pod.clone(), memory]).unwrap(), 2);
    assert_eq!(top.wait().unwrap().signal(), Some(9));
    assert_eq!(below.wait().unwrap().signal(), Some(9));
    // Gone processes are no error; an empty or missing cgroup signals nothing.
    assert_eq!(fs::kill_processes(&[pod]).unwrap(), 0);
    assert_eq!(fs::kill_processes(&[dir.join("pids/none")]).unwrap(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
