//! The test containerd that `tests/run.sh` starts, for the e2e tests.

use std::time::Duration;

use rkubelet::cri::{RemoteRuntime, RuntimeService};

/// The test containerd's endpoint.
pub fn endpoint() -> String {
    std::env::var("RKUBELET_E2E_CRI_ENDPOINT")
        .expect("RKUBELET_E2E_CRI_ENDPOINT must name the test containerd (run tests/run.sh)")
}

/// A CRI client of the test containerd.
pub fn runtime() -> RemoteRuntime {
    runtime_at(&endpoint())
}

/// A CRI client of the containerd at `endpoint`.
pub fn runtime_at(endpoint: &str) -> RemoteRuntime {
    RemoteRuntime::connect(endpoint, Duration::from_secs(30)).unwrap()
}

/// Stops and removes every sandbox, so each test starts from an empty runtime.
pub fn clean_runtime() {
    clean_runtime_at(&endpoint());
}

/// [`clean_runtime`] on the containerd at `endpoint`.
pub fn clean_runtime_at(endpoint: &str) {
    let rt = runtime_at(endpoint);
    for s in rt.list_pod_sandbox(None).unwrap() {
        rt.stop_pod_sandbox(s.get_id()).unwrap();
        rt.remove_pod_sandbox(s.get_id()).unwrap();
    }
    remove_pod_cgroups();
}

/// Removes the (now empty) pod cgroups a killed kubelet left under `kubepods`.
fn remove_pod_cgroups() {
    for controller in ["cpu", "memory", "pids"] {
        for qos in ["", "burstable/", "besteffort/"] {
            let dir = super::cgroup_dir(controller, &format!("kubepods/{qos}"));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("pod") {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
    }
}
