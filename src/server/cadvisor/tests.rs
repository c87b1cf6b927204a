use super::*;

const CID: &str = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
const SID: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const UID: &str = "1f2e3d4c-0000-4000-8000-000000000001";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rkubelet-cadvisor-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `/proc` and `/sys` fixtures: the sandbox's process 77 with its network counters, the
/// container's process 88 with a socket, a file and one sleeping task; block device 8:0.
fn host(dir: &Path) -> HostPaths {
    let proc_dir = dir.join("proc");
    let header = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n";
    write(
        &proc_dir,
        "77/net/dev",
        &format!("{header}    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n  eth0: 1500 10 1 2 0 0 0 0 900 6 3 4 0 0 0 0\n"),
    );
    write(
        &proc_dir,
        "self/net/dev",
        &format!("{header}  ens3: 10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\nveth1: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n"),
    );
    std::fs::create_dir_all(proc_dir.join("88/fd")).unwrap();
    // Made once: the fixture is shared by the renders of one test.
    let _ = std::os::unix::fs::symlink("socket:[123]", proc_dir.join("88/fd/3"));
    let _ = std::os::unix::fs::symlink("/dev/null", proc_dir.join("88/fd/0"));
    write(&proc_dir, "88/task/88/stat", "88 (sleep 1) S 1 88 88 0");
    write(&proc_dir, "88/task/89/stat", "89 (sleep 1) R 1 88 88 0");
    write(&proc_dir, "cpuinfo", "processor\t: 0\nphysical id\t: 0\ncore id\t: 0\n\nprocessor\t: 1\nphysical id\t: 0\ncore id\t: 1\n");
    write(
        &proc_dir,
        "meminfo",
        "MemTotal:        2048 kB\nMemFree: 1 kB\n",
    );
    write(&proc_dir, "sys/kernel/osrelease", "6.1.0-test\n");
    let sys_dir = dir.join("sys");
    write(
        &sys_dir,
        "dev/block/8:0/uevent",
        "MAJOR=8\nMINOR=0\nDEVNAME=sda\n",
    );
    let etc_dir = dir.join("etc");
    write(
        &etc_dir,
        "os-release",
        "NAME=Debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
    );
    write(&etc_dir, "machine-id", "abc123\n");
    HostPaths {
        proc_dir,
        sys_dir,
        etc_dir,
    }
}

fn runtime_view() -> RuntimeView {
    let entry = |container: &str, sandbox: bool| RuntimeEntry {
        container: container.into(),
        image: if sandbox {
            "registry.k8s.io/pause:3.10"
        } else {
            "busybox:1"
        }
        .into(),
        pod: "web".into(),
        namespace: "default".into(),
        pod_uid: UID.into(),
        created: 1_700_000_000.5,
        sandbox,
        writable_layer: (!sandbox).then_some(4096),
    };
    RuntimeView {
        by_id: HashMap::from([
            (CID.to_string(), entry("app", false)),
            (SID.to_string(), entry("", true)),
        ]),
        complete: true,
        filesystems: vec![("/dev/sda1".into(), 100, 1000)],
        image_fs: Some(0),
    }
}

/// Every sample line parses as `name{label="value",...} number`, each family has one
/// HELP and one TYPE, and samples follow their family's TYPE line.
fn check_exposition(text: &str) -> Vec<(String, f64)> {
    let mut families = std::collections::HashSet::new();
    let mut current = String::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            current = rest.split(' ').next().unwrap().to_string();
            assert!(families.insert(current.clone()), "{current} twice");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let name = series.split('{').next().unwrap();
        assert_eq!(name, current, "{line} outside its family");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap();
            let names: Vec<&str> = inner
                .split("\",")
                .map(|p| p.split('=').next().unwrap())
                .collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted, "labels in name order: {line}");
        }
        samples.push((series.to_string(), value));
    }
    samples
}

fn value(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

fn container_labels(extra: &str) -> String {
    let id = format!("/kubepods/besteffort/pod{UID}/{CID}");
    format!("container=\"app\",{extra}id=\"{id}\",image=\"busybox:1\",name=\"{CID}\",namespace=\"default\",pod=\"web\"")
}

#[test]
fn v1_cgroup_files_become_cadvisor_series_with_its_labels() {
    let dir = scratch("v1");
    let mount = dir.join("cgroup");
    let pod = format!("kubepods/besteffort/pod{UID}");
    let c = format!("{pod}/{CID}");
    for controller in ["cpu", "cpuacct", "memory", "pids", "blkio"] {
        std::fs::create_dir_all(mount.join(controller).join(&c)).unwrap();
        std::fs::create_dir_all(mount.join(controller).join(format!("{pod}/{SID}"))).unwrap();
    }
    let m = |controller: &str, file: &str, text: &str| {
        write(&mount.join(controller).join(&c), file, text)
    };
    m("cpuacct", "cpuacct.usage", "2500000000\n");
    m("cpuacct", "cpuacct.stat", "user 150\nsystem 50\n");
    m(
        "cpu",
        "cpu.stat",
        "nr_periods 10\nnr_throttled 3\nthrottled_time 2000000000\n",
    );
    m("cpu", "cpu.cfs_quota_us", "50000\n");
    m("cpu", "cpu.cfs_period_us", "100000\n");
    m("cpu", "cpu.shares", "512\n");
    m("memory", "memory.usage_in_bytes", "10485760\n");
    m("memory", "memory.max_usage_in_bytes", "20000000\n");
    m("memory", "memory.failcnt", "0\n");
    m(
        "memory",
        "memory.stat",
        "cache 1\nrss 1\ntotal_cache 4096\ntotal_rss 8192\ntotal_mapped_file 1024\ntotal_inactive_file 2097152\ntotal_pgfault 7\ntotal_pgmajfault 1\ntotal_swap 0\n",
    );
    m("memory", "memory.limit_in_bytes", "9223372036854771712\n");
    m(
        "memory",
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    m("pids", "pids.current", "3\n");
    m("pids", "pids.max", "max\n");
    m("pids", "cgroup.procs", "88\n");
    m("blkio", "blkio.io_service_bytes_recursive", "Total 0\n");
    m(
        "blkio",
        "blkio.throttle.io_service_bytes_recursive",
        "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\nTotal 12288\n",
    );
    write(
        &mount.join("pids").join(format!("{pod}/{SID}")),
        "cgroup.procs",
        "77\n",
    );
    write(&mount.join("cpuacct"), "cpuacct.usage", "9000000000\n");
    let tree = Tree {
        version: CgroupVersion::V1,
        mount: mount.clone(),
        kubepods_id: "/kubepods".into(),
        kubepods_dirs: ["cpu", "memory", "pids"]
            .into_iter()
            .map(|c| (Some(c), mount.join(c).join("kubepods")))
            .collect(),
    };
    let text = render(Some(&tree), &runtime_view(), &host(&dir), 1_800_000_000.7);
    let s = check_exposition(&text);
    let at = |name: &str, extra: &str| value(&s, &format!("{name}{{{}}}", container_labels(extra)));
    assert_eq!(
        at("container_cpu_usage_seconds_total", "cpu=\"total\","),
        Some(2.5)
    );
    assert_eq!(at("container_cpu_user_seconds_total", ""), Some(1.5));
    assert_eq!(at("container_cpu_system_seconds_total", ""), Some(0.5));
    assert_eq!(at("container_cpu_cfs_periods_total", ""), Some(10.0));
    assert_eq!(
        at("container_cpu_cfs_throttled_periods_total", ""),
        Some(3.0)
    );
    assert_eq!(
        at("container_cpu_cfs_throttled_seconds_total", ""),
        Some(2.0)
    );
    assert_eq!(at("container_spec_cpu_quota", ""), Some(50000.0));
    assert_eq!(at("container_spec_cpu_period", ""), Some(100000.0));
    assert_eq!(at("container_spec_cpu_shares", ""), Some(512.0));
    assert_eq!(at("container_memory_usage_bytes", ""), Some(10485760.0));
    assert_eq!(
        at("container_memory_working_set_bytes", ""),
        Some(8388608.0)
    );
    assert_eq!(at("container_memory_cache", ""), Some(4096.0));
    assert_eq!(at("container_memory_rss", ""), Some(8192.0));
    assert_eq!(at("container_memory_mapped_file", ""), Some(1024.0));
    assert_eq!(at("container_memory_max_usage_bytes", ""), Some(20000000.0));
    for (kind, scope, v) in [
        ("pgfault", "container", 7.0),
        ("pgfault", "hierarchy", 7.0),
        ("pgmajfault", "container", 1.0),
    ] {
        let labels = container_labels(&format!("failure_type=\"{kind}\","));
        let series = format!("container_memory_failures_total{{{labels},scope=\"{scope}\"}}");
        assert_eq!(value(&s, &series), Some(v), "{series}");
    }
    assert_eq!(
        at("container_spec_memory_limit_bytes", ""),
        Some(0.0),
        "unlimited is 0"
    );
    assert_eq!(at("container_oom_events_total", ""), Some(2.0));
    assert_eq!(at("container_threads", ""), Some(3.0));
    assert_eq!(at("container_threads_max", ""), Some(0.0));
    assert_eq!(at("container_processes", ""), Some(1.0));
    assert_eq!(at("container_file_descriptors", ""), Some(2.0));
    assert_eq!(at("container_sockets", ""), Some(1.0));
    assert_eq!(
        at("container_fs_reads_bytes_total", "device=\"/dev/sda\","),
        Some(4096.0)
    );
    assert_eq!(
        at("container_fs_writes_bytes_total", "device=\"/dev/sda\","),
        Some(8192.0)
    );
    assert_eq!(
        at("container_fs_usage_bytes", "device=\"/dev/sda1\","),
        Some(4096.0)
    );
    assert_eq!(
        at("container_fs_limit_bytes", "device=\"/dev/sda1\","),
        Some(1000.0)
    );
    assert_eq!(
        at("container_start_time_seconds", ""),
        Some(1_700_000_000.5)
    );
    assert_eq!(at("container_last_seen", ""), Some(1_800_000_000.0));
    assert!(text.contains(&format!(
        "name=\"{CID}\",namespace=\"default\",pod=\"web\",state=\"sleeping\"}} 1"
    )));
    assert!(text.contains(&format!(
        "name=\"{CID}\",namespace=\"default\",pod=\"web\",state=\"running\"}} 1"
    )));
    // The pod cgroup's row names the pod but no container.
    let pod_row = format!(
        "container=\"\",id=\"/{pod}\",image=\"\",name=\"\",namespace=\"default\",pod=\"web\""
    );
    assert_eq!(
        value(&s, &format!("container_processes{{{pod_row}}}")),
        Some(0.0)
    );
    // The sandbox carries the pod's network counters; lo is left out, as cAdvisor does.
    let sandbox = format!(
        "container=\"\",id=\"/{pod}/{SID}\",image=\"registry.k8s.io/pause:3.10\",interface=\"eth0\",name=\"{SID}\",namespace=\"default\",pod=\"web\""
    );
    assert_eq!(
        value(
            &s,
            &format!("container_network_receive_bytes_total{{{sandbox}}}")
        ),
        Some(1500.0)
    );
    assert_eq!(
        value(
            &s,
            &format!("container_network_receive_errors_total{{{sandbox}}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            &format!("container_network_receive_packets_dropped_total{{{sandbox}}}")
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &s,
            &format!("container_network_transmit_packets_total{{{sandbox}}}")
        ),
        Some(6.0)
    );
    assert_eq!(
        value(
            &s,
            &format!("container_network_transmit_packets_dropped_total{{{sandbox}}}")
        ),
        Some(4.0)
    );
    assert!(!text.contains("interface=\"lo\"") && !text.contains("interface=\"veth1\""));
    // The root row: the host's interfaces and filesystems, the root cgroup's CPU.
    let root = "container=\"\",id=\"/\",image=\"\",name=\"\",namespace=\"\",pod=\"\"";
    assert_eq!(value(&s, "container_cpu_usage_seconds_total{container=\"\",cpu=\"total\",id=\"/\",image=\"\",name=\"\",namespace=\"\",pod=\"\"}"), Some(9.0));
    assert!(text.contains("id=\"/\",image=\"\",interface=\"ens3\""));
    assert_eq!(value(&s, "container_fs_usage_bytes{container=\"\",device=\"/dev/sda1\",id=\"/\",image=\"\",name=\"\",namespace=\"\",pod=\"\"}"), Some(100.0));
    assert!(value(&s, &format!("container_last_seen{{{root}}}")).is_some());
    // Rows for kubepods and the QoS cgroup too.
    assert!(text.contains("id=\"/kubepods\""));
    assert!(text.contains("id=\"/kubepods/besteffort\""));
    // Machine figures and the version line.
    let ids = "boot_id=\"\",machine_id=\"abc123\",system_uuid=\"\"";
    assert_eq!(value(&s, &format!("machine_cpu_cores{{{ids}}}")), Some(2.0));
    assert_eq!(
        value(&s, &format!("machine_cpu_physical_cores{{{ids}}}")),
        Some(2.0)
    );
    assert_eq!(
        value(&s, &format!("machine_cpu_sockets{{{ids}}}")),
        Some(1.0)
    );
    assert_eq!(
        value(&s, &format!("machine_memory_bytes{{{ids}}}")),
        Some(2_097_152.0)
    );
    assert!(text
        .contains("kernelVersion=\"6.1.0-test\",osVersion=\"Debian GNU/Linux 12 (bookworm)\"} 1"));
    assert_eq!(value(&s, "container_scrape_error"), Some(0.0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn v2_cgroup_files_and_a_failed_runtime_listing() {
    let dir = scratch("v2");
    let mount = dir.join("cgroup");
    let c = mount.join(format!("kubepods/besteffort/pod{UID}/{CID}"));
    write(&c, "cpu.stat", "usage_usec 2500000\nuser_usec 1500000\nsystem_usec 1000000\nnr_periods 4\nnr_throttled 1\nthrottled_usec 500000\n");
    write(&c, "cpu.max", "25000 100000\n");
    write(&c, "cpu.weight", "39\n");
    write(&c, "memory.current", "5000\n");
    write(
        &c,
        "memory.stat",
        "anon 3000\nfile 2000\nfile_mapped 100\ninactive_file 1500\npgfault 9\npgmajfault 0\n",
    );
    write(&c, "memory.max", "max\n");
    write(&c, "memory.min", "1024\n");
    write(
        &c,
        "memory.events",
        "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
    );
    write(&c, "memory.swap.current", "0\n");
    write(&c, "io.stat", "8:0 rbytes=100 wbytes=200 rios=1 wios=2\n");
    write(&c, "pids.current", "2\n");
    write(&c, "pids.max", "100\n");
    let tree = Tree {
        version: CgroupVersion::V2,
        mount: mount.clone(),
        kubepods_id: "/kubepods".into(),
        kubepods_dirs: vec![(None, mount.join("kubepods"))],
    };
    let mut view = runtime_view();
    let text = render(Some(&tree), &view, &host(&dir), 0.0);
    let s = check_exposition(&text);
    let at = |name: &str, extra: &str| value(&s, &format!("{name}{{{}}}", container_labels(extra)));
    assert_eq!(
        at("container_cpu_usage_seconds_total", "cpu=\"total\","),
        Some(2.5)
    );
    assert_eq!(at("container_cpu_user_seconds_total", ""), Some(1.5));
    assert_eq!(
        at("container_cpu_cfs_throttled_seconds_total", ""),
        Some(0.5)
    );
    assert_eq!(at("container_spec_cpu_quota", ""), Some(25000.0));
    assert_eq!(at("container_spec_cpu_shares", ""), Some(998.0));
    assert_eq!(at("container_memory_working_set_bytes", ""), Some(3500.0));
    assert_eq!(at("container_memory_rss", ""), Some(3000.0));
    assert_eq!(at("container_memory_cache", ""), Some(2000.0));
    assert_eq!(at("container_memory_failcnt", ""), Some(4.0));
    assert_eq!(at("container_oom_events_total", ""), Some(1.0));
    assert_eq!(at("container_spec_memory_limit_bytes", ""), Some(0.0));
    assert_eq!(
        at("container_spec_memory_reservation_limit_bytes", ""),
        Some(1024.0)
    );
    assert_eq!(
        at("container_fs_writes_bytes_total", "device=\"/dev/sda\","),
        Some(200.0)
    );
    assert_eq!(at("container_threads_max", ""), Some(100.0));

    // A runtime that could not be listed: the cgroup rows stay, unnamed, and the error
    // shows.
    view.by_id.clear();
    view.complete = false;
    let text = render(Some(&tree), &view, &host(&dir), 0.0);
    let s = check_exposition(&text);
    assert_eq!(value(&s, "container_scrape_error"), Some(1.0));
    let bare = format!("container=\"\",id=\"/kubepods/besteffort/pod{UID}/{CID}\",image=\"\",name=\"\",namespace=\"\",pod=\"\"");
    assert_eq!(
        value(&s, &format!("container_memory_working_set_bytes{{{bare}}}")),
        Some(3500.0)
    );
    // Without pod cgroups there are no rows, only the machine figures.
    let text = render(None, &view, &host(&dir), 0.0);
    assert!(!text.contains("{container="));
    assert!(text.contains("machine_cpu_cores{"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn container_and_pod_cgroup_names_of_both_drivers() {
    assert_eq!(container_id(CID), Some(CID));
    assert_eq!(
        container_id(&format!("cri-containerd-{CID}.scope")),
        Some(CID)
    );
    assert_eq!(container_id(&format!("crio-{CID}.scope")), Some(CID));
    assert_eq!(container_id("besteffort"), None);
    assert_eq!(pod_uid(&format!("pod{UID}")).as_deref(), Some(UID));
    let slice = format!("kubepods-besteffort-pod{}.slice", UID.replace('-', "_"));
    assert_eq!(pod_uid(&slice).as_deref(), Some(UID));
    assert_eq!(pod_uid("kubepods-besteffort.slice"), None);
    let mountinfo =
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n30 22 0:40 / /var/lib/kubelet rw - tmpfs tmpfs rw\n";
    assert_eq!(
        mount_source(mountinfo, Path::new("/var/lib/kubelet/pods")).as_deref(),
        Some("tmpfs")
    );
    assert_eq!(
        mount_source(mountinfo, Path::new("/var/lib/containerd")).as_deref(),
        Some("/dev/sda1")
    );
}
