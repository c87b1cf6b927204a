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
    RemoteRuntime::connect(&endpoint(), Duration::from_secs(30)).unwrap()
}

/// Stops and removes every sandbox, so each test starts from an empty runtime.
pub fn clean_runtime() {
    let rt = runtime();
    for s in rt.list_pod_sandbox(None).unwrap() {
        rt.stop_pod_sandbox(s.get_id()).unwrap();
        rt.remove_pod_sandbox(s.get_id()).unwrap();
    }
}
