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
    runtime_timeout(endpoint, Duration::from_secs(30))
}

/// A CRI client of the containerd at `endpoint` whose calls end after `timeout`.
pub fn runtime_timeout(endpoint: &str, timeout: Duration) -> RemoteRuntime {
    RemoteRuntime::connect(endpoint, timeout).unwrap()
}

/// Stops and removes every sandbox, so each test starts from an empty runtime.
pub fn clean_runtime() {
    clean_runtime_at(&endpoint());
}

/// [`clean_runtime`] on the containerd at `endpoint`. A sandbox that cannot be removed
/// (a start cut short by a kill -9 can leave containerd with a task under an exited
/// container) has its tasks deleted with `ctr` and is tried again for a while, so one
/// test's leftovers never fail the tests after it.
pub fn clean_runtime_at(endpoint: &str) {
    let rt = runtime_at(endpoint);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut failed = Vec::new();
        for s in rt.list_pod_sandbox(None).unwrap() {
            let removed = rt
                .stop_pod_sandbox(s.get_id())
                .and_then(|()| rt.remove_pod_sandbox(s.get_id()));
            if let Err(e) = removed {
                failed.push(format!("{}: {e}", s.get_id()));
            }
        }
        if failed.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the test containerd keeps sandboxes that cannot be removed: {failed:?}"
        );
        // No CRI call removes such a task (containerd issue 11037); containerd's own
        // client does, as an operator would.
        eprintln!("cleaning the test runtime: {failed:?}; deleting leftover tasks with ctr");
        let address = endpoint.trim_start_matches("unix://");
        for c in rt.list_containers(None).unwrap() {
            let _ = std::process::Command::new("ctr")
                .args(["-a", address, "-n", "k8s.io", "task", "delete", "--force"])
                .arg(c.get_id())
                .output();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    remove_pod_cgroups();
}

/// Calls `f` on every pod cgroup directory under `kubepods`, and on the container
/// cgroups below each, deepest first.
fn for_each_pod_cgroup(mut f: impl FnMut(&std::path::Path)) {
    for controller in ["cpu", "memory", "pids"] {
        for qos in ["", "burstable/", "besteffort/"] {
            let dir = super::cgroup_dir(controller, &format!("kubepods/{qos}"));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_name().to_string_lossy().starts_with("pod") {
                    continue;
                }
                for child in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                    if child.file_type().is_ok_and(|t| t.is_dir()) {
                        f(&child.path());
                    }
                }
                f(&e.path());
            }
        }
    }
}

/// Removes the (now empty) pod cgroups a killed kubelet left under `kubepods`.
fn remove_pod_cgroups() {
    for_each_pod_cgroup(|dir| {
        let _ = std::fs::remove_dir(dir);
    });
}
