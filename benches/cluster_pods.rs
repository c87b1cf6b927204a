//! Pods from the API server: 500 pods created in the API server test double and bound to the
//! node, run by an in-process kubelet over the fake runtime. Prints the time until the API
//! shows every pod Running, the API writes per pod start (status patches and events
//! separately), and the kubelet's CPU seconds (the double's own threads excluded). Run with
//! `cargo bench --bench cluster_pods`; under `cargo test` it does a 20-pod smoke pass.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkubelet::cri::FakeRuntime;
use support::apiserver::ApiServer;
use support::cluster::{ClusterNode, NODE};

const IMAGE: &str = "docker.io/library/busybox:local";

fn pod(i: usize) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("bench-{i}")),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(NODE.into()),
            containers: vec![Container {
                name: "app".into(),
                image: Some(IMAGE.into()),
                image_pull_policy: Some("IfNotPresent".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// CPU seconds of the kubelet's threads: every thread of this process except the API server
/// double's and the main thread (which drives the benchmark and polls the double).
fn kubelet_cpu_seconds() -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        let main_tid = std::process::id().to_string();
        for t in tasks.flatten() {
            if t.file_name().to_string_lossy() == main_tid {
                continue;
            }
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.starts_with("apiserver") {
                continue;
            }
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // Fields after the parenthesised name: state is 3rd, utime 14th, stime 15th.
            if let Some(rest) = stat.rsplit(')').next() {
                let f: Vec<&str> = rest.split_whitespace().collect();
                total += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                total += f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    total as f64 / ticks
}

fn writes(server: &ApiServer, resource: &str) -> u64 {
    ["create", "update", "patch", "delete"]
        .iter()
        .map(|v| server.request_count(v, resource))
        .sum()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 500 } else { 20 };
    let dir = std::env::temp_dir().join(format!("rkubelet-cluster-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let server = ApiServer::start();
    let runtime = Arc::new(FakeRuntime::without_call_log());
    runtime.add_image(IMAGE);
    // The node's own registration writes are not part of the per-pod figures.
    let node = ClusterNode::start_with_max_pods(&dir, &server, &runtime, n as u32 + 10);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get_node(NODE).is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status0, events0, cpu0) = (
        writes(&server, "pods/status"),
        writes(&server, "events"),
        kubelet_cpu_seconds(),
    );

    let start = Instant::now();
    for i in 0..n {
        server.create_pod(pod(i)).expect("create pod");
    }
    let created = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut running = 0;
    while Instant::now() < deadline {
        running = server
            .list_pods()
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running == n {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let all_running = start.elapsed();
    // Let in-flight events and resyncs land before counting.
    std::thread::sleep(Duration::from_secs(if full { 3 } else { 1 }));
    let status_writes = writes(&server, "pods/status") - status0;
    let event_writes = writes(&server, "events") - events0;
    let cpu = kubelet_cpu_seconds() - cpu0;
    assert_eq!(running, n, "every pod Running in the API");
    println!(
        "cluster: {n} API pods (created in {:.2}s) all Running in the API after {:.2}s; per pod start: {:.2} pods/status writes, {:.2} event writes ({:.2} writes in all); kubelet CPU {:.2}s",
        created.as_secs_f64(),
        all_running.as_secs_f64(),
        status_writes as f64 / n as f64,
        event_writes as f64 / n as f64,
        (status_writes + event_writes) as f64 / n as f64,
        cpu,
    );
    node.stop();
}
