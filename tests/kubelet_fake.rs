//! The whole kubelet (sources, mux, sync loop, pod workers, runtime manager, PLEG) against the
//! in-memory fake runtime: the foundation's behaviour without a real containerd.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rkubelet::app::{make_pod_sources, new_main_kubelet, start_kubelet};
use rkubelet::clock::RealClock;
use rkubelet::config::settings::KubeletConfig;
use rkubelet::cri::{Call, FakeRuntime, RuntimeService};
use rkubelet::events::FakeRecorder;
use rkubelet::kubelet::{Deps, Kubelet, KubeletError};
use support::{manifest, scratch_dir, wait_for};

const IMAGE: &str = "docker.io/library/busybox:local";
const WAIT: Duration = Duration::from_secs(15);

struct Node {
    kubelet: Arc<Kubelet>,
    stop: Option<crossbeam_channel::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    sync_loop: Option<JoinHandle<Result<(), KubeletError>>>,
}

impl Node {
    fn start(dir: &Path, runtime: &Arc<FakeRuntime>) -> Node {
        Node::try_start(dir, runtime, &[]).unwrap()
    }

    /// A node with `extra` flags, or the error that stops it from starting.
    fn try_start(
        dir: &Path,
        runtime: &Arc<FakeRuntime>,
        extra: &[String],
    ) -> Result<Node, rkubelet::app::AppError> {
        let mut args = vec![
            "rkubelet".to_string(),
            format!("--pod-manifest-path={}", dir.join("manifests").display()),
            format!("--root-dir={}", dir.join("root").display()),
            format!("--pod-logs-dir={}", dir.join("logs/pods").display()),
            "--hostname-override=node1".into(),
            "--resolv-conf=".into(),
        ];
        args.extend(extra.iter().cloned());
        let config = KubeletConfig::from_args(args.iter().map(Into::into)).unwrap();
        let config = Arc::new(config);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let sources = make_pod_sources(&config, None, &stop_rx).unwrap();
        let deps = Deps {
            runtime: runtime.clone(),
            images: runtime.clone(),
            clock: Arc::new(RealClock),
            recorder: Arc::new(FakeRecorder::default()),
            runtime_name: "fake".into(),
            sources_ready: sources.sources_ready.clone(),
            api: None,
            tmpfs: false,
            host_cgroups: false,
            shared_pod_work: None,
            waiters: None,
            services: None,
        };
        let kubelet = new_main_kubelet(config, deps)?;
        let sync_loop = start_kubelet(kubelet.clone(), sources.updates, stop_rx).unwrap();
        Ok(Node {
            kubelet,
            stop: Some(stop_tx),
            threads: sources.threads,
            sync_loop: Some(sync_loop),
        })
    }

    fn stop(mut self) {
        self.stop.take();
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        if let Some(s) = self.sync_loop.take() {
            s.join().unwrap().unwrap();
        }
    }

    /// The summary line of the pod whose key ends with `name`.
    fn phase_of(&self, name: &str) -> Option<String> {
        self.kubelet
            .pod_statuses()
            .into_iter()
            .find(|(_, e)| e.key.ends_with(name))
            .map(|(_, e)| rkubelet::status::summary(&e.status))
    }
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(dir.join("manifests").join(file), text).unwrap();
}

fn running_containers(rt: &FakeRuntime) -> Vec<String> {
    rt.list_containers(None)
        .unwrap()
        .into_iter()
        .filter(|c| c.get_state() == rkubelet::cri::api::ContainerState::CONTAINER_RUNNING)
        .map(|c| c.get_id().to_string())
        .collect()
}

fn fake() -> Arc<FakeRuntime> {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image(IMAGE);
    rt
}

#[test]
fn static_pod_runs_and_is_removed_with_its_manifest() {
    let dir = scratch_dir("run-remove");
    let rt = fake();
    write(
        &dir,
        "web.yaml",
        &manifest(
            "web",
            "Always",
            &[("a", IMAGE, "sleep 1000"), ("b", IMAGE, "sleep 1000")],
        ),
    );
    let node = Node::start(&dir, &rt);
    let status = wait_for(WAIT, || {
        node.phase_of("web-node1")
            .filter(|s| s.contains("phase=Running"))
    })
    .expect("pod runs");
    assert!(
        status.contains("a=running") && status.contains("b=running"),
        "{status}"
    );
    assert_eq!(running_containers(&rt).len(), 2);
    // Log directory layout and symlinks.
    let pods = std::fs::read_dir(dir.join("logs/pods")).unwrap().count();
    assert_eq!(pods, 1);
    let links = std::fs::read_dir(dir.join("logs/containers"))
        .unwrap()
        .count();
    assert_eq!(links, 2);

    std::fs::remove_file(dir.join("manifests/web.yaml")).unwrap();
    wait_for(WAIT, || {
        (rt.list_containers(None).unwrap().is_empty()
            && rt.list_pod_sandbox(None).unwrap().is_empty())
        .then_some(())
    })
    .expect("containers and sandbox removed");
    assert!(wait_for(WAIT, || node.phase_of("web-node1").is_none().then_some(())).is_some());
    node.stop();
}

#[test]
fn malformed_manifest_does_not_stop_the_good_one() {
    let dir = scratch_dir("malformed");
    let rt = fake();
    write(
        &dir,
        "good.yaml",
        &manifest("good", "Always", &[("a", IMAGE, "sleep 1000")]),
    );
    write(
        &dir,
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: [this is not a map\n",
    );
    let node = Node::start(&dir, &rt);
    wait_for(WAIT, || {
        node.phase_of("good-node1")
            .filter(|s| s.contains("phase=Running"))
    })
    .expect("good pod runs");
    assert_eq!(node.kubelet.pod_statuses().len(), 1);
    node.stop();
}

#[test]
fn restart_adopts_running_containers_without_duplicates() {
    let dir = scratch_dir("restart");
    let rt = fake();
    write(
        &dir,
        "web.yaml",
        &manifest(
            "web",
            "Always",
            &[("a", IMAGE, "sleep 1000"), ("b", IMAGE, "sleep 1000")],
        ),
    );
    let node = Node::start(&dir, &rt);
    wait_for(WAIT, || {
        node.phase_of("web-node1")
            .filter(|s| s.contains("phase=Running"))
    })
    .expect("pod runs");
    let before = running_containers(&rt);
    node.stop();

    rt.clear_calls();
    let node = Node::start(&dir, &rt);
    wait_for(WAIT, || {
        node.phase_of("web-node1")
            .filter(|s| s.contains("phase=Running"))
    })
    .expect("pod adopted");
    // Let a few housekeeping and PLEG rounds pass: still nothing created or stopped.
    std::thread::sleep(Duration::from_secs(3));
    let mut after = running_containers(&rt);
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(before, after);
    let mutating: Vec<Call> = rt
        .calls()
        .into_iter()
        .filter(|c| {
            matches!(
                c,
                Call::RunPodSandbox { .. }
                    | Call::CreateContainer { .. }
                    | Call::StopContainer(_)
                    | Call::StopPodSandbox(_)
                    | Call::RemoveContainer(_)
                    | Call::RemovePodSandbox(_)
            )
        })
        .collect();
    assert!(mutating.is_empty(), "{mutating:?}");
    node.stop();
}

#[test]
fn exited_container_is_restarted_with_the_next_attempt() {
    let dir = scratch_dir("restart-exited");
    let rt = fake();
    write(
        &dir,
        "crash.yaml",
        &manifest("crash", "Always", &[("app", IMAGE, "exit 1")]),
    );
    let node = Node::start(&dir, &rt);
    wait_for(WAIT, || {
        node.phase_of("crash-node1")
            .filter(|s| s.contains("app=running"))
    })
    .expect("runs");
    let first = running_containers(&rt);
    assert_eq!(first.len(), 1);
    assert!(rt.exit_container(&first[0], 1));
    let status = wait_for(WAIT, || {
        node.phase_of("crash-node1")
            .filter(|s| s.contains("app=running restarts=1"))
    })
    .expect("restarted once");
    assert!(status.contains("phase=Running"), "{status}");
    let attempts: Vec<u32> = rt
        .list_containers(None)
        .unwrap()
        .iter()
        .map(|c| c.get_metadata().get_attempt())
        .collect();
    assert!(attempts.contains(&1), "{attempts:?}");
    node.stop();
}

#[test]
fn unpullable_image_waits_with_err_image_pull_while_others_run() {
    let dir = scratch_dir("bad-image");
    let rt = fake();
    write(
        &dir,
        "good.yaml",
        &manifest("good", "Always", &[("a", IMAGE, "sleep 1000")]),
    );
    write(
        &dir,
        "bad.yaml",
        &manifest(
            "bad",
            "Always",
            &[("a", "example.invalid/nope:1", "sleep 1000")],
        ),
    );
    let node = Node::start(&dir, &rt);
    wait_for(WAIT, || {
        node.phase_of("good-node1")
            .filter(|s| s.contains("phase=Running"))
    })
    .expect("good runs");
    let bad = wait_for(WAIT, || {
        node.phase_of("bad-node1")
            .filter(|s| s.contains("ErrImagePull") || s.contains("ImagePullBackOff"))
    })
    .expect("bad pod waits on its image");
    assert!(bad.contains("phase=Pending"), "{bad}");
    node.stop();
}

#[test]
fn never_restart_pod_completes_and_is_not_restarted() {
    let dir = scratch_dir("complete");
    let rt = fake();
    write(
        &dir,
        "job.yaml",
        &manifest("job", "Never", &[("app", IMAGE, "true")]),
    );
    let node = Node::start(&dir, &rt);
    wait_for(WAIT, || {
        node.phase_of("job-node1")
            .filter(|s| s.contains("app=running"))
    })
    .expect("runs");
    let id = running_containers(&rt)[0].clone();
    rt.exit_container(&id, 0);
    let status = wait_for(WAIT, || {
        node.phase_of("job-node1")
            .filter(|s| s.contains("phase=Succeeded"))
    })
    .expect("succeeds");
    assert!(status.contains("terminated(Completed, exit 0)"), "{status}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rt.list_containers(None).unwrap().len(), 1);
    node.stop();
}

#[test]
fn orphaned_runtime_pod_is_stopped_once_sources_are_ready() {
    let dir = scratch_dir("orphan");
    let rt = fake();
    write(
        &dir,
        "web.yaml",
        &manifest("web", "Always", &[("a", IMAGE, "sleep 1000")]),
    );
    let node = Node::start(&dir, &rt);
    wait_for(WAIT, || {
        node.phase_of("web-node1")
            .filter(|s| s.contains("phase=Running"))
    })
    .expect("runs");
    node.stop();
    // The manifest disappears while the kubelet is down.
    std::fs::remove_file(dir.join("manifests/web.yaml")).unwrap();
    let node = Node::start(&dir, &rt);
    wait_for(WAIT, || {
        rt.list_containers(None).unwrap().is_empty().then_some(())
    })
    .expect("orphan removed");
    node.stop();
}

/// Sandboxes and containers made so far, per pod name and per container name.
fn creations(rt: &FakeRuntime) -> (Vec<String>, Vec<String>) {
    let mut sandboxes = Vec::new();
    let mut containers = Vec::new();
    for call in rt.calls() {
        match call {
            Call::RunPodSandbox { name, .. } => sandboxes.push(name),
            Call::CreateContainer { name, .. } => containers.push(name),
            _ => {}
        }
    }
    sandboxes.sort();
    containers.sort();
    (sandboxes, containers)
}

/// New pods start from PLEG's listing instead of a runtime read, and a sync reuses a read
/// newer than the latest listing: neither may ever make a sandbox or container twice, even
/// for pods arriving together, a container restarted, or a pod removed and added again under
/// the same UID (a static pod's manifest taken away and put back).
#[test]
fn status_reads_saved_by_the_pleg_listing_never_duplicate_a_sandbox_or_container() {
    let dir = scratch_dir("status-cache");
    let rt = fake();
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    let node = Node::start(&dir, &rt);
    // PLEG has listed (nothing) before the pods arrive.
    std::thread::sleep(Duration::from_millis(1500));
    for name in ["p1", "p2", "p3", "p4"] {
        write(
            &dir,
            &format!("{name}.yaml"),
            &manifest(name, "Always", &[("app", IMAGE, "sleep 1000")]),
        );
    }
    for name in ["p1", "p2", "p3", "p4"] {
        wait_for(WAIT, || {
            node.phase_of(&format!("{name}-node1"))
                .filter(|s| s.contains("app=running"))
        })
        .unwrap_or_else(|| panic!("{name} runs"));
    }
    // A few PLEG and resync rounds: nothing made again.
    std::thread::sleep(Duration::from_secs(3));
    let (sandboxes, containers) = creations(&rt);
    assert_eq!(sandboxes, ["p1-node1", "p2-node1", "p3-node1", "p4-node1"]);
    assert_eq!(containers, ["app", "app", "app", "app"]);

    // A container exits: one replacement.
    let p1 = rt
        .list_containers(None)
        .unwrap()
        .into_iter()
        .find(|c| {
            c.get_labels()
                .get("io.kubernetes.pod.name")
                .map(String::as_str)
                == Some("p1-node1")
        })
        .expect("p1's container");
    assert!(rt.exit_container(p1.get_id(), 1));
    wait_for(WAIT, || {
        node.phase_of("p1-node1")
            .filter(|s| s.contains("app=running restarts=1"))
    })
    .expect("p1 restarted");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(creations(&rt).1.len(), 5, "{:?}", rt.calls());

    // p2 removed and put back: its old sandbox stopped, one new sandbox and container.
    let manifest_p2 = manifest("p2", "Always", &[("app", IMAGE, "sleep 1000")]);
    std::fs::remove_file(dir.join("manifests/p2.yaml")).unwrap();
    wait_for(WAIT, || node.phase_of("p2-node1").is_none().then_some(())).expect("p2 removed");
    write(&dir, "p2.yaml", &manifest_p2);
    wait_for(WAIT, || {
        node.phase_of("p2-node1")
            .filter(|s| s.contains("app=running"))
    })
    .expect("p2 runs again");
    std::thread::sleep(Duration::from_secs(3));
    let (sandboxes, containers) = creations(&rt);
    assert_eq!(
        sandboxes,
        ["p1-node1", "p2-node1", "p2-node1", "p3-node1", "p4-node1"]
    );
    assert_eq!(containers.len(), 6, "{:?}", rt.calls());
    assert_eq!(running_containers(&rt).len(), 4);
    node.stop();
}

#[test]
fn credential_provider_plugins_answer_for_matching_images_and_are_cached() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir("credential-provider");
    let rt = fake();
    rt.allow_any_image();
    rt.require_pull_credentials("registry.example:5000/team/", "robot", "s3cret");
    rt.require_pull_credentials("other.example/", "someone", "else");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let plugin = dir.join("bin/registry-login");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\necho run >> {}\ncat <<'EOF'\n{}\nEOF\n",
            dir.join("runs").display(),
            r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheDuration":"1h","auth":{"registry.example:5000":{"username":"robot","password":"s3cret"}}}"#
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.join("credential-providers.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n- name: registry-login\n  matchImages: [\"registry.example:5000\"]\n  defaultCacheDuration: 10m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n",
    )
    .unwrap();
    let flags = [
        format!("--image-credential-provider-config={}", config.display()),
        format!(
            "--image-credential-provider-bin-dir={}",
            dir.join("bin").display()
        ),
    ];
    for (file, image) in [
        ("app.yaml", "registry.example:5000/team/app:1"),
        ("db.yaml", "registry.example:5000/team/db:2"),
        ("other.yaml", "other.example/app:1"),
    ] {
        let name = file.trim_end_matches(".yaml");
        write(
            &dir,
            file,
            &manifest(name, "Always", &[("c", image, "sleep 1000")]),
        );
    }
    let node = Node::try_start(&dir, &rt, &flags).unwrap();
    for pod in ["app-node1", "db-node1"] {
        wait_for(WAIT, || {
            node.phase_of(pod).filter(|s| s.contains("phase=Running"))
        })
        .unwrap_or_else(|| {
            panic!(
                "{pod} runs with the plugin's credentials: {:?}",
                rt.pull_auths()
            )
        });
    }
    let with = |image: &str| {
        rt.pull_auths()
            .into_iter()
            .filter(|(i, _)| i.contains(image))
            .map(|(_, auth)| auth)
            .collect::<Vec<_>>()
    };
    let robot = Some(("robot".to_string(), "s3cret".to_string()));
    assert_eq!(with("team/app:1"), vec![robot.clone()]);
    assert_eq!(with("team/db:2"), vec![robot]);
    // One run for the registry: the second image took the cached answer.
    let runs = std::fs::read_to_string(dir.join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 1, "{runs}");
    // No provider matches the other registry: pulled without credentials, refused, and
    // the plugin never ran for it.
    let other = wait_for(WAIT, || {
        node.phase_of("other-node1")
            .filter(|s| s.contains("ErrImagePull") || s.contains("ImagePullBackOff"))
    });
    assert!(other.is_some(), "{:?}", node.phase_of("other-node1"));
    assert!(with("other.example/app:1").iter().all(Option::is_none));
    assert_eq!(
        std::fs::read_to_string(dir.join("runs"))
            .unwrap()
            .lines()
            .count(),
        1
    );
    node.stop();

    // A config naming a plugin the directory lacks stops the start, naming both.
    std::fs::remove_file(&plugin).unwrap();
    let e = Node::try_start(&dir, &fake(), &flags)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("credential-providers.yaml") && e.contains("registry-login"),
        "{e}"
    );
}

#[test]
fn a_device_plugins_answer_reaches_the_containers_cri_config() {
    use support::device_plugin::{Call as PluginCall, TestDevicePlugin};
    let dir = scratch_dir("device-plugin");
    let rt = fake();
    let resource = "test.device/widget";
    let plugin = TestDevicePlugin::start(
        resource,
        &[("w0", true), ("w1", true), ("w2", true)],
        &dir.join("root/device-plugins"),
        &dir.join("tools"),
        false,
    );
    let node = Node::start(&dir, &rt);
    // As upstream, a pod asking for a resource no plugin has registered is not held back
    // for it: the manifest comes once the plugin streams its devices.
    wait_for(WAIT, || {
        plugin
            .calls()
            .contains(&PluginCall::ListAndWatch)
            .then_some(())
    })
    .expect("the plugin registers");
    write(
        &dir,
        "gpu.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: gpu\nspec:\n  containers:\n  - name: app\n    image: {IMAGE}\n    command: [sh, -c, 'echo $(TEST_DEVICES)']\n    env:\n    - name: OWN\n      value: mine\n    resources:\n      limits:\n        {resource}: \"2\"\n"
        ),
    );
    // The pod waits for the plugin's devices: admitted only once they are there.
    let running = wait_for(WAIT, || {
        node.phase_of("gpu-node1")
            .filter(|s| s.contains("phase=Running"))
    });
    assert!(
        running.is_some(),
        "{:?} {:?}",
        node.phase_of("gpu-node1"),
        plugin.calls()
    );
    let id = running_containers(&rt).pop().unwrap();
    let config = rt.container_config(&id).unwrap();
    let envs: Vec<(&str, &str)> = config
        .get_envs()
        .iter()
        .map(|kv| (kv.get_key(), kv.get_value()))
        .collect();
    assert_eq!(envs[0], ("TEST_DEVICES", "w0,w1"), "{envs:?}");
    assert!(envs.contains(&("OWN", "mine")));
    // `$(VAR)` expansion sees the device envs.
    assert_eq!(
        config.get_command().last().map(String::as_str),
        Some("echo w0,w1")
    );
    let devices: Vec<(&str, &str, &str)> = config
        .get_devices()
        .iter()
        .map(|d| {
            (
                d.get_container_path(),
                d.get_host_path(),
                d.get_permissions(),
            )
        })
        .collect();
    assert_eq!(
        devices,
        [
            ("/dev/w0", "/dev/zero", "rw"),
            ("/dev/w1", "/dev/zero", "rw")
        ]
    );
    let tools = &config.get_mounts()[0];
    assert_eq!(tools.get_container_path(), "/opt/test-device-tools");
    assert!(tools.get_readonly());
    assert_eq!(config.get_annotations()["test.device/ids"], "w0,w1");
    assert!(plugin
        .calls()
        .contains(&PluginCall::Allocate(vec!["w0".into(), "w1".into()])));
    node.stop();
    plugin.stop();
}

#[test]
fn churned_pods_leave_nothing_behind_in_the_kubelets_tables() {
    let dir = scratch_dir("churn-tables");
    let rt = fake();
    let node = Node::start(&dir, &rt);
    let probed = |name: &str| {
        let mut text = manifest(name, "Always", &[("app", IMAGE, "sleep 3600")]);
        text.push_str(
            "    readinessProbe:\n      exec:\n        command: [\"true\"]\n      periodSeconds: 1\n    livenessProbe:\n      exec:\n        command: [\"true\"]\n      periodSeconds: 1\n",
        );
        text
    };
    // Three rounds of ten probed pods: each pod's container exits once (a second attempt
    // with probes of its own), then the pods go.
    for round in 0..3 {
        for i in 0..10 {
            write(
                &dir,
                &format!("p{i}.yaml"),
                &probed(&format!("churn-{round}-{i}")),
            );
        }
        wait_for(WAIT, || (running_containers(&rt).len() == 10).then_some(())).expect("running");
        for id in running_containers(&rt) {
            rt.exit_container(&id, 1);
        }
        let restarted_once = wait_for(WAIT, || {
            let restarted = node
                .kubelet
                .pod_statuses()
                .iter()
                .filter(|(_, e)| {
                    rkubelet::status::summary(&e.status).contains("app=running restarts=1")
                })
                .count();
            (restarted == 10).then_some(())
        });
        if restarted_once.is_none() {
            let seen: Vec<String> = node
                .kubelet
                .pod_statuses()
                .iter()
                .map(|(_, e)| rkubelet::status::summary(&e.status))
                .collect();
            panic!("round {round}: not every pod restarted once: {seen:#?}");
        }
        std::thread::sleep(Duration::from_secs(2));
        for i in 0..10 {
            std::fs::remove_file(dir.join("manifests").join(format!("p{i}.yaml"))).unwrap();
        }
        wait_for(Duration::from_secs(30), || {
            (rt.list_pod_sandbox(None).unwrap().is_empty()
                && rt.list_containers(None).unwrap().is_empty())
            .then_some(())
        })
        .expect("removed from the runtime");
    }
    support::assert_nothing_kept_per_pod(&node.kubelet, Duration::from_secs(30));
    node.stop();
}
