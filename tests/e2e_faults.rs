//! Fault injection against the real runtime and the API server double: the real `rkubelet`
//! binary on containerd while containerd is killed and started again, while chosen CRI calls
//! hang (a proxy between the two holds them), while the API server is down, throttling,
//! failing, closing watches and compacting, and while its root directory's filesystem is
//! full. In every case: no pod lost, no sandbox or container duplicated or left behind, and
//! the node's health reported as upstream reports it.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use rkubelet::cri::{api, RemoteRuntime, RuntimeService};
use support::containerd::OwnContainerd;
use support::cri::{endpoint, runtime, runtime_at};
use support::cri_proxy::CriProxy;
use support::e2e::{api_status, pod, wait_phase, Cluster, Launch, NODE, SERIAL};
use support::{process, wait_for};

/// A pod's sandboxes in the runtime.
fn sandboxes_of(rt: &RemoteRuntime, name: &str) -> Vec<api::PodSandbox> {
    let mut f = api::PodSandboxFilter::new();
    f.mut_label_selector()
        .insert("io.kubernetes.pod.name".into(), name.into());
    rt.list_pod_sandbox(Some(&f)).unwrap()
}

/// A pod's containers in the runtime.
fn containers_of(rt: &RemoteRuntime, name: &str) -> Vec<api::Container> {
    let mut f = api::ContainerFilter::new();
    f.mut_label_selector()
        .insert("io.kubernetes.pod.name".into(), name.into());
    rt.list_containers(Some(&f)).unwrap()
}

/// (ready sandboxes, running containers) of a pod.
fn live_of(rt: &RemoteRuntime, name: &str) -> (usize, Vec<String>) {
    let ready = sandboxes_of(rt, name)
        .iter()
        .filter(|s| s.get_state() == api::PodSandboxState::SANDBOX_READY)
        .count();
    let mut running: Vec<String> = containers_of(rt, name)
        .iter()
        .filter(|c| c.get_state() == api::ContainerState::CONTAINER_RUNNING)
        .map(|c| c.get_id().to_string())
        .collect();
    running.sort();
    (ready, running)
}

/// Waits until each pod in `live` has one ready sandbox and one running container, and each
/// pod in `gone` has no sandbox and no container at all.
fn wait_converged(c: &Cluster, rt: &RemoteRuntime, live: &[&str], gone: &[&str]) {
    let state = || {
        let live: Vec<_> = live.iter().map(|n| (*n, live_of(rt, n))).collect();
        let gone: Vec<_> = gone
            .iter()
            .map(|n| (*n, sandboxes_of(rt, n).len(), containers_of(rt, n).len()))
            .collect();
        (live, gone)
    };
    wait_for(Duration::from_secs(120), || {
        let (live, gone) = state();
        let ok = live.iter().all(|(_, (s, r))| *s == 1 && r.len() == 1)
            && gone.iter().all(|(_, s, k)| *s == 0 && *k == 0);
        ok.then_some(())
    })
    .unwrap_or_else(|| panic!("runtime did not converge: {:?}\n{}", state(), c.log()));
}

/// The node's Ready condition: (status, message).
fn ready(c: &Cluster) -> Option<(String, String)> {
    let node = c.server.get_node(NODE)?;
    let cond = node
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some((cond.status, cond.message.unwrap_or_default()))
}

fn never(name: &str, script: &str) -> Pod {
    let mut p = pod(name, script, 2);
    p.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    p
}

fn gone_from_api(c: &Cluster, names: &[&str]) {
    wait_for(Duration::from_secs(120), || {
        names
            .iter()
            .all(|n| c.server.get_pod("default", n).is_none())
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{names:?} not removed from the API\n{}", c.log()));
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn containerd_killed_amid_creations_and_deletions_duplicates_and_strands_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // A containerd of this test's own: the shared one is not killed under other tests.
    let ctd = OwnContainerd::start(Path::new("/var/tmp/rkf-ctd"));
    let rt = runtime_at(&ctd.endpoint);
    let launch = Launch {
        endpoint: ctd.endpoint.clone(),
        wrapper: Vec::new(),
    };
    let c = Cluster::start_in("faults-containerd", &[], launch, |_| {});
    c.wait_ready_node();
    let kept = ["keep-a", "keep-b"];
    let doomed = ["gone-a", "gone-b"];
    let fresh = ["new-a", "new-b", "new-c"];
    for name in kept.iter().chain(&doomed) {
        c.server.create_pod(pod(name, "sleep 3600", 2)).unwrap();
    }
    for name in kept.iter().chain(&doomed) {
        wait_phase(&c, name, "Running", Duration::from_secs(90));
    }
    let kept_before: Vec<_> = kept.iter().map(|n| live_of(&rt, n).1).collect();

    // Creations and deletions under way when containerd dies.
    for name in fresh {
        c.server.create_pod(pod(name, "sleep 3600", 2)).unwrap();
    }
    for name in doomed {
        c.server.delete_pod("default", name, Some(2)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(400));
    ctd.kill9();
    let killed = Instant::now();

    // Ready follows the runtime, in upstream's words, once its last good Status is 30 s old.
    wait_for(Duration::from_secs(90), || {
        let (status, message) = ready(&c)?;
        (status == "False" && message.contains("container runtime is down")).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "Ready while containerd is down: {:?}\n{}",
            ready(&c),
            c.log()
        )
    });
    eprintln!(
        "NotReady (container runtime is down) {:?} after the kill",
        killed.elapsed()
    );
    // The kubelet itself rides it out.
    assert!(
        process::sample(c.pid()).is_some(),
        "kubelet exited:\n{}",
        c.log()
    );

    ctd.restart();
    let restarted = Instant::now();
    wait_for(Duration::from_secs(60), || {
        (ready(&c)?.0 == "True").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "not Ready after containerd came back: {:?}\n{}",
            ready(&c),
            c.log()
        )
    });
    eprintln!(
        "Ready again {:?} after containerd's restart",
        restarted.elapsed()
    );

    for name in kept.iter().chain(&fresh) {
        wait_phase(&c, name, "Running", Duration::from_secs(120));
    }
    gone_from_api(&c, &doomed);
    let live: Vec<&str> = kept.iter().chain(&fresh).copied().collect();
    wait_converged(&c, &rt, &live, &doomed);
    let kept_after: Vec<_> = kept.iter().map(|n| live_of(&rt, n).1).collect();
    assert_eq!(
        kept_before, kept_after,
        "running containers kept, not restarted"
    );

    // The pod lifecycle events flow again: an exit is seen within seconds.
    c.server.create_pod(never("after", "exit 0")).unwrap();
    wait_phase(&c, "after", "Succeeded", Duration::from_secs(30));
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn a_hanging_cri_call_holds_only_its_own_pod_and_ends_at_its_deadline() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = support::scratch_dir("faults-cri-proxy");
    let proxy = CriProxy::start(&dir.join("cri.sock"), &endpoint());
    let launch = Launch {
        endpoint: proxy.endpoint(),
        wrapper: Vec::new(),
    };
    let c = Cluster::start_in(
        "faults-hang",
        &["--runtime-request-timeout=10s"],
        launch,
        |_| {},
    );
    c.wait_ready_node();
    let rt = runtime();
    // The sandbox of "stuck" hangs in the runtime, and so does the stop of "stopping"'s
    // container.
    c.server
        .create_pod(pod("stopping", "sleep 3600", 10))
        .unwrap();
    wait_phase(&c, "stopping", "Running", Duration::from_secs(60));
    let stopping_id = live_of(&rt, "stopping").1.pop().unwrap();
    proxy.hold("RunPodSandbox", "stuck");
    proxy.hold("StopContainer", &stopping_id);
    c.server.create_pod(pod("stuck", "sleep 3600", 2)).unwrap();
    c.server
        .delete_pod("default", "stopping", Some(10))
        .unwrap();
    wait_for(Duration::from_secs(20), || {
        (proxy.held("RunPodSandbox") >= 1 && proxy.held("StopContainer") >= 1).then_some(())
    })
    .expect("the chosen calls reach the proxy");

    // Other pods come and go meanwhile, and the node stays Ready throughout.
    let watch_ready = {
        let mut seen = Vec::new();
        let started = Instant::now();
        c.server.create_pod(pod("free-a", "sleep 3600", 2)).unwrap();
        c.server.create_pod(never("free-b", "exit 0")).unwrap();
        let mut done = false;
        while started.elapsed() < Duration::from_secs(60) && !done {
            if let Some((status, message)) = ready(&c) {
                if status != "True" {
                    seen.push(message);
                }
            }
            done = c.phase("free-a").as_deref() == Some("Running")
                && c.phase("free-b").as_deref() == Some("Succeeded")
                && proxy.held("RunPodSandbox") >= 2;
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            done,
            "free pods: {:?} {:?}, RunPodSandbox held {} times\n{}",
            c.phase("free-a"),
            c.phase("free-b"),
            proxy.held("RunPodSandbox"),
            c.log()
        );
        seen
    };
    assert!(
        watch_ready.is_empty(),
        "node not Ready while a call hung: {watch_ready:?}"
    );
    // The hung call ended at its deadline and was tried again.
    assert!(
        proxy.held("RunPodSandbox") >= 2,
        "retried after the deadline"
    );
    let log = c.log();
    let ended = log
        .lines()
        .find(|l| l.contains("DeadlineExceeded"))
        .unwrap_or_else(|| panic!("no deadline error logged:\n{log}"));
    eprintln!("the hung call: {ended}");
    assert_eq!(c.phase("stuck").as_deref(), Some("Pending"));
    let reported = api_status(&c, "stuck").unwrap();
    let waiting = reported.container_statuses.unwrap_or_default();
    assert!(
        waiting.iter().all(|s| s
            .state
            .as_ref()
            .and_then(|st| st.running.as_ref())
            .is_none()),
        "{waiting:?}"
    );
    assert!(
        c.server.get_pod("default", "stopping").is_some(),
        "its stop still hangs"
    );

    // Let the calls through: the late sandboxes are taken down and the pod runs in one.
    proxy.release();
    wait_phase(&c, "stuck", "Running", Duration::from_secs(90));
    gone_from_api(&c, &["stopping"]);
    wait_converged(&c, &rt, &["stuck", "free-a"], &["stopping"]);
    let sandboxes = sandboxes_of(&rt, "stuck");
    eprintln!(
        "stuck: {} sandboxes in the runtime ({} RunPodSandbox calls passed)",
        sandboxes.len(),
        proxy.passed("RunPodSandbox")
    );
}

/// The kubelet's resident memory now, in KiB.
fn rss_kib(c: &Cluster) -> u64 {
    process::sample(c.pid())
        .unwrap_or_else(|| panic!("kubelet exited:\n{}", c.log()))
        .rss_kib
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn api_outage_throttling_and_compaction_lose_and_duplicate_no_pod() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let c = Cluster::start("faults-api");
    c.wait_ready_node();
    let rt = runtime();
    for name in ["stay", "leave"] {
        c.server.create_pod(pod(name, "sleep 3600", 2)).unwrap();
    }
    for name in ["stay", "leave"] {
        wait_phase(&c, name, "Running", Duration::from_secs(60));
    }
    let stay_before = live_of(&rt, "stay").1;
    let rss_before = rss_kib(&c);

    // 60 s down.
    c.server.go_down();
    let mut peak = rss_before;
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(5));
        peak = peak.max(rss_kib(&c));
    }
    c.server.come_back();
    // Then throttled (429 with Retry-After) and failing (500), while watches keep closing,
    // and the history is compacted (watches from an old resourceVersion get 410).
    c.server.fail_next(30, 429);
    c.server.create_pod(pod("arrive", "sleep 3600", 2)).unwrap();
    c.server.delete_pod("default", "leave", Some(2)).unwrap();
    for round in 0..5 {
        std::thread::sleep(Duration::from_secs(3));
        if round == 2 {
            c.server.fail_next(30, 500);
            c.server.compact();
        }
        c.server.close_watches();
        peak = peak.max(rss_kib(&c));
    }

    wait_phase(&c, "arrive", "Running", Duration::from_secs(90));
    gone_from_api(&c, &["leave"]);
    wait_converged(&c, &rt, &["stay", "arrive"], &["leave"]);
    assert_eq!(live_of(&rt, "stay").1, stay_before, "stay's container kept");
    assert_eq!(c.phase("stay").as_deref(), Some("Running"));
    // The node reports again.
    c.wait_ready_node();
    let rss_after = rss_kib(&c);
    eprintln!("kubelet RSS: {rss_before} KiB before, peak {peak} KiB, {rss_after} KiB after");
    assert!(
        peak < rss_before + 32 * 1024,
        "memory grew from {rss_before} KiB to {peak} KiB during the outage"
    );
}

/// The root dir on a small tmpfs of its own, with few inodes so it can be filled in both
/// senses.
fn mount_small_tmpfs(root: &Path) {
    let status = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=16m,nr_inodes=4096",
            "rkubelet-test-root",
        ])
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs on {}", root.display());
}

/// Fills the filesystem of `dir` to the last byte and the last inode, with files under
/// `dir/fill`, which it returns.
fn fill(dir: &Path) -> std::path::PathBuf {
    let fill = dir.join("fill");
    std::fs::create_dir(&fill).unwrap();
    let path = fill.join("blocks");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", path.display()))
        .stderr(std::process::Stdio::null())
        .status();
    // dd stops at the block that did not fit: top up what is left in small writes.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let chunk = [0u8; 512];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    while std::io::Write::write_all(&mut f, &chunk[..1]).is_ok() {}
    let mut n = 0;
    while std::fs::File::create(fill.join(format!("inode-{n}"))).is_ok() {
        n += 1;
    }
    fill
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn a_full_root_dir_keeps_running_pods_reports_clearly_and_recovers() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // Eviction would rightly take pods off a node whose nodefs is full; this test is about
    // what the kubelet's own files do, so only the memory threshold is set.
    let mut c = Cluster::start_with_root(
        "faults-full",
        &["--eviction-hard=memory.available<100Mi"],
        mount_small_tmpfs,
    );
    let root = c.dir.join("root");
    c.wait_ready_node();
    let rt = runtime();
    c.server.create_pod(pod("before", "sleep 3600", 2)).unwrap();
    wait_phase(&c, "before", "Running", Duration::from_secs(60));
    let before_id = live_of(&rt, "before").1;

    let filler = fill(&root);
    c.server.create_pod(pod("during", "sleep 3600", 2)).unwrap();
    // The new pod cannot get its directories: it waits, and the reason names the disk.
    let said = wait_for(Duration::from_secs(60), || {
        let log = c.log();
        let line = log
            .lines()
            .find(|l| l.contains("No space left on device"))?;
        Some(line.to_string())
    })
    .unwrap_or_else(|| panic!("no clear error about the full disk:\n{}", c.log()));
    eprintln!("on the full disk: {said}");
    std::thread::sleep(Duration::from_secs(5));
    assert_ne!(c.phase("during").as_deref(), Some("Running"));
    assert_eq!(
        live_of(&rt, "during").1.len(),
        0,
        "nothing started without its directories"
    );
    // What ran before runs on, and the node keeps reporting.
    assert_eq!(live_of(&rt, "before").1, before_id);
    assert_eq!(c.phase("before").as_deref(), Some("Running"));
    assert!(c.running(), "kubelet exited on a full disk:\n{}", c.log());

    // Space returns: the waiting pod starts, and a restart finds every file whole.
    std::fs::remove_dir_all(&filler).unwrap();
    wait_phase(&c, "during", "Running", Duration::from_secs(90));
    c.kill9_and_restart();
    c.wait_ready_node();
    std::thread::sleep(Duration::from_secs(5));
    wait_converged(&c, &rt, &["before", "during"], &[]);
    assert_eq!(live_of(&rt, "before").1, before_id, "nothing restarted");
    c.server.create_pod(pod("after", "sleep 3600", 2)).unwrap();
    wait_phase(&c, "after", "Running", Duration::from_secs(60));
    assert!(
        !c.log().contains("corrupt"),
        "a file kept by the kubelet was found corrupt:\n{}",
        c.log()
    );
}
