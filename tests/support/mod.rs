//! Shared test helpers: scratch directories, bounded waiting and the API server double.

#![allow(dead_code)]

pub mod apiserver;
pub mod cluster;
pub mod containerd;
pub mod cri;
pub mod cri_proxy;
pub mod csi_driver;
pub mod device_plugin;
pub mod e2e;
pub mod kubelet_api;
pub mod process;
pub mod systemd;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A fresh scratch directory under the system temp dir, unique per test and process.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rkubelet-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether the host has the unified cgroup v2 hierarchy at `/sys/fs/cgroup` (else v1, one
/// hierarchy per controller).
pub fn cgroup_v2() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The host directory of cgroup `rel` (`kubepods/pod<uid>`) for `controller`: in its v1
/// hierarchy, or in the one v2 tree.
pub fn cgroup_dir(controller: &str, rel: &str) -> PathBuf {
    let base = std::path::Path::new("/sys/fs/cgroup");
    if cgroup_v2() {
        base.join(rel)
    } else {
        base.join(controller).join(rel)
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A static pod manifest with the given containers (`name`, `image`, shell command).
pub fn manifest(name: &str, restart_policy: &str, containers: &[(&str, &str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  restartPolicy: {restart_policy}\n  terminationGracePeriodSeconds: 2\n  containers:\n"
    );
    for (cname, image, cmd) in containers {
        out.push_str(&format!(
            "  - name: {cname}\n    image: {image}\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", {cmd:?}]\n"
        ));
    }
    out
}

/// Waits up to `timeout` for every table `kubelet` keeps per pod or container to be empty
/// (the pods are gone); fails naming the tables still holding entries.
pub fn assert_nothing_kept_per_pod(kubelet: &rkubelet::kubelet::Kubelet, timeout: Duration) {
    let nonempty = || -> Vec<(&'static str, usize)> {
        kubelet
            .per_pod_entries()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect()
    };
    if wait_for(timeout, || nonempty().is_empty().then_some(())).is_none() {
        panic!("entries kept for pods that are gone: {:?}", nonempty());
    }
}
