//! The e2e harness: the real `rkubelet` binary on the test containerd, joined to the API
//! server test double, driven through the double and the real `kubectl`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkubelet::cri::{api, RuntimeService};

use super::apiserver::ApiServer;
use super::cri::{clean_runtime_at, endpoint, runtime};
use super::{scratch_dir, wait_for};

pub const IMAGE: &str = "docker.io/library/busybox:local";
pub const NODE: &str = "e2e-cluster-node";
pub static SERIAL: Mutex<()> = Mutex::new(());

/// Where and how the kubelet runs: the runtime it uses, and a command it runs under.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The CRI endpoint (`unix://...`).
    pub endpoint: String,
    /// A command the kubelet runs under (e.g. `nsenter -t PID -p -m --`); empty: none.
    pub wrapper: Vec<String>,
}

impl Default for Launch {
    /// The test containerd, no wrapper.
    fn default() -> Self {
        Launch {
            endpoint: endpoint(),
            wrapper: Vec::new(),
        }
    }
}

pub struct Cluster {
    /// The API server test double the kubelet joined.
    pub server: ApiServer,
    kubelet: Child,
    launch: Launch,
    /// The scratch directory (root dir, logs, kubeconfigs).
    pub dir: PathBuf,
    /// The kubelet API port.
    pub port: u16,
    /// Flags added to every start.
    extra_args: Vec<String>,
}

impl Cluster {
    pub fn start(name: &str) -> Cluster {
        Self::start_with(name, &[])
    }

    /// Like [`Cluster::start`] with extra kubelet flags.
    pub fn start_with(name: &str, extra_args: &[&str]) -> Cluster {
        Self::start_with_root(name, extra_args, |_| {})
    }

    /// Like [`Cluster::start_with`], calling `setup` on the kubelet's root dir (empty, just
    /// created) before the kubelet starts.
    pub fn start_with_root(name: &str, extra_args: &[&str], setup: impl FnOnce(&Path)) -> Cluster {
        Self::start_in(name, extra_args, Launch::default(), setup)
    }

    /// Like [`Cluster::start_with_root`] on the runtime and under the command `launch` names.
    pub fn start_in(
        name: &str,
        extra_args: &[&str],
        launch: Launch,
        setup: impl FnOnce(&Path),
    ) -> Cluster {
        clean_runtime_at(&launch.endpoint);
        let dir = scratch_dir(name);
        std::fs::create_dir_all(dir.join("root")).unwrap();
        setup(&dir.join("root"));
        let server = ApiServer::start();
        server
            .write_kubeconfig(&dir.join("kubelet.conf"), &format!("system:node:{NODE}"))
            .unwrap();
        server
            .write_kubeconfig(&dir.join("admin.conf"), "kubernetes-admin")
            .unwrap();
        std::fs::write(dir.join("client-ca.crt"), server.ca_pem()).unwrap();
        let port = super::free_port();
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let kubelet = spawn_kubelet_in(&dir, port, &extra_args, &launch);
        Cluster {
            server,
            kubelet,
            launch,
            dir,
            port,
            extra_args,
        }
    }

    /// `kill -9` the kubelet, then start it again with the same flags and files.
    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        self.restart();
    }

    /// `kill -9` the kubelet (pods and containers go on): its whole process group, so a
    /// kubelet under a wrapper goes too.
    pub fn kill9(&mut self) {
        signal_group(&self.kubelet, "KILL");
        let _ = self.kubelet.kill();
        let _ = self.kubelet.wait();
    }

    /// Starts the kubelet again with the same flags and files (after [`Cluster::kill9`]).
    pub fn restart(&mut self) {
        self.kubelet = spawn_kubelet_in(&self.dir, self.port, &self.extra_args, &self.launch);
    }

    /// The kubelet's pid (of the wrapper, when it runs under one).
    pub fn pid(&self) -> u32 {
        self.kubelet.id()
    }

    /// Whether the kubelet process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.kubelet.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rkubelet.log")).unwrap_or_default()
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(args)
            .output()
            .expect("kubectl must be installed (/usr/bin/kubectl)")
    }

    /// kubectl against the double, streaming over SPDY (the protocol the runtime's streaming
    /// server speaks for every kubectl version).
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg(format!(
            "--kubeconfig={}",
            self.dir.join("admin.conf").display()
        ))
        .args(args)
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false");
        cmd
    }

    pub fn phase(&self, name: &str) -> Option<String> {
        self.server.get_pod("default", name)?.status?.phase
    }

    pub fn wait_ready_node(&self) {
        wait_for(Duration::from_secs(60), || {
            let n = self.server.get_node(NODE)?;
            n.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        })
        .unwrap_or_else(|| panic!("node not Ready:\n{}", self.log()));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        signal_group(&self.kubelet, "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.kubelet.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        signal_group(&self.kubelet, "KILL");
        let _ = self.kubelet.kill();
        let _ = self.kubelet.wait();
        // A test that already failed keeps its own message: a second panic here would abort
        // the whole test binary.
        let endpoint = self.launch.endpoint.clone();
        if let Err(e) = std::panic::catch_unwind(move || clean_runtime_at(&endpoint)) {
            if !std::thread::panicking() {
                std::panic::resume_unwind(e);
            }
        }
        // A stopped kubelet leaves its pods' tmpfs volumes mounted (as upstream's would);
        // the test's own are unmounted here, deepest first.
        for mount in rkubelet::volume::mount::mounts_under(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&mount).status();
        }
        // A passing test leaves nothing behind; a failing one keeps its files to look at.
        // Nothing is removed while anything is still mounted below (a bind mount would take
        // the removal into the directory it shows).
        let unmounted = rkubelet::volume::mount::mounts_under(&self.dir).is_empty();
        if unmounted && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Sends `signal` to the process group the kubelet leads (it and what runs under it).
fn signal_group(kubelet: &Child, signal: &str) {
    let _ = Command::new("kill")
        .args([
            format!("-{signal}"),
            "--".into(),
            format!("-{}", kubelet.id()),
        ])
        .stderr(Stdio::null())
        .status();
}

/// The real binary joined to the double, its log appended to `rkubelet.log`.
pub fn spawn_kubelet(dir: &Path, port: u16, extra_args: &[String]) -> Child {
    spawn_kubelet_in(dir, port, extra_args, &Launch::default())
}

/// [`spawn_kubelet`] on the runtime and under the command `launch` names, leading a process
/// group of its own.
pub fn spawn_kubelet_in(dir: &Path, port: u16, extra_args: &[String], launch: &Launch) -> Child {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("rkubelet.log"))
        .unwrap();
    let binary = env!("CARGO_BIN_EXE_rkubelet");
    let mut cmd = match launch.wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(binary);
            cmd
        }
        None => Command::new(binary),
    };
    cmd.process_group(0)
        .arg(format!(
            "--kubeconfig={}",
            dir.join("kubelet.conf").display()
        ))
        .arg(format!("--container-runtime-endpoint={}", launch.endpoint))
        .arg(format!("--root-dir={}", dir.join("root").display()))
        .arg(format!(
            "--pod-logs-dir={}",
            dir.join("logs/pods").display()
        ))
        .arg(format!("--hostname-override={NODE}"))
        .arg("--node-ip=127.0.0.1")
        .arg("--address=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg(format!(
            "--client-ca-file={}",
            dir.join("client-ca.crt").display()
        ))
        .args(["-v", "2"])
        .args(harness_eviction_thresholds(extra_args))
        .args(extra_args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Hard eviction thresholds for tests that are not about eviction: the defaults' memory
/// threshold and disk thresholds of 1%, so a shared machine's disk running below upstream's
/// 10-15% does not turn these tests into eviction tests. A test that passes
/// `--eviction-hard` itself gets no harness thresholds.
pub fn harness_eviction_thresholds(extra_args: &[String]) -> Vec<String> {
    if extra_args.iter().any(|a| a.starts_with("--eviction-hard")) {
        return Vec::new();
    }
    vec![HARNESS_EVICTION_HARD.to_string()]
}

/// See [`harness_eviction_thresholds`].
pub const HARNESS_EVICTION_HARD: &str = "--eviction-hard=memory.available<100Mi,\
     nodefs.available<1%,nodefs.inodesFree<1%,imagefs.available<1%,imagefs.inodesFree<1%";

/// A pod bound to the node running `sh -c script`.
pub fn pod(name: &str, script: &str, grace: i64) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(NODE.into()),
            termination_grace_period_seconds: Some(grace),
            containers: vec![Container {
                name: "app".into(),
                image: Some(IMAGE.into()),
                image_pull_policy: Some("IfNotPresent".into()),
                command: Some(vec!["sh".into(), "-c".into(), script.into()]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Running containers of a pod, by id.
pub fn running_of(pod: &str) -> Vec<String> {
    let mut f = api::ContainerFilter::new();
    f.mut_label_selector()
        .insert("io.kubernetes.pod.name".into(), pod.into());
    let mut ids: Vec<String> = runtime()
        .list_containers(Some(&f))
        .unwrap()
        .into_iter()
        .filter(|c| c.get_state() == api::ContainerState::CONTAINER_RUNNING)
        .map(|c| c.get_id().to_string())
        .collect();
    ids.sort();
    ids
}

/// Everything the container logged so far (the pod's log directory goes with the pod).
pub fn container_log(dir: &Path, pod: &str) -> String {
    let Ok(entries) = std::fs::read_dir(dir.join("logs/pods")) else {
        return String::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("default_{pod}_"))
        })
        .map(|e| std::fs::read_to_string(e.path().join("app/0.log")).unwrap_or_default())
        .collect()
}

/// A pod's status in the API.
pub fn api_status(c: &Cluster, name: &str) -> Option<k8s_openapi::api::core::v1::PodStatus> {
    c.server.get_pod("default", name)?.status
}

/// The status of a pod's first container.
pub fn main_status(c: &Cluster, name: &str) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    api_status(c, name)?.container_statuses?.into_iter().next()
}

/// Waits for a pod's phase, panicking with the kubelet's log.
pub fn wait_phase(c: &Cluster, name: &str, phase: &str, within: Duration) {
    wait_for(within, || {
        (c.phase(name).as_deref() == Some(phase)).then_some(())
    })
    .unwrap_or_else(|| panic!("{name} not {phase}: {:?}\n{}", api_status(c, name), c.log()));
}

/// A typed object from its JSON form (tests write objects as `serde_json::json!`).
pub fn object<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}
