//! Hollow nodes against the API server double: 50 nodes in this process register and stay
//! Ready, renew their Leases, run 500 pods to Running, crash-loop the pods annotated to
//! exit 1, complete the ones annotated to exit 0 under `Never`, remove deleted pods, and do
//! all that on a thread count that does not grow with the number of nodes.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkubelet::hollow::{Hollow, HollowArgs};
use structopt::StructOpt;
use support::apiserver::ApiServer;
use support::{scratch_dir, wait_for};

const NODES: usize = 50;
const PODS: usize = 500;

fn pod(i: usize, kind: &str) -> Pod {
    let mut annotations = BTreeMap::new();
    let mut policy = "Always";
    match kind {
        "crash" => {
            annotations.insert("rkubelet.io/fake-exit-after".to_string(), "1s".to_string());
            annotations.insert("rkubelet.io/fake-exit-code".to_string(), "1".to_string());
        }
        "job" => {
            annotations.insert("rkubelet.io/fake-exit-after".to_string(), "1s".to_string());
            policy = "Never";
        }
        _ => {}
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{kind}-{i}")),
            namespace: Some("default".into()),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(format!("hollow-{}", i % NODES)),
            restart_policy: Some(policy.into()),
            termination_grace_period_seconds: Some(1),
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.example/app:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn phases(server: &ApiServer) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for p in server.list_pods() {
        let phase = p
            .status
            .and_then(|s| s.phase)
            .unwrap_or_else(|| "None".into());
        *out.entry(phase).or_insert(0) += 1;
    }
    out
}

fn waiting_reason(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

#[test]
fn fifty_hollow_nodes_run_five_hundred_pods_on_shared_threads() {
    let _ = env_logger::builder()
        .is_test(true)
        .filter_level(log::LevelFilter::Warn)
        .try_init();
    let dir = scratch_dir("hollow");
    let server = ApiServer::start();
    let kubeconfig = dir.join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig, "kubernetes-admin")
        .unwrap();
    let threads_before = threads();
    let args = HollowArgs::from_iter_safe([
        "hollow".to_string(),
        format!("--nodes={NODES}"),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--root-dir={}", dir.join("nodes").display()),
        "--workers=8".into(),
    ])
    .unwrap();
    let hollow = Hollow::start(&args).unwrap();

    // Every node registers and is Ready.
    let ready = |server: &ApiServer| {
        server
            .list_nodes()
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count()
    };
    wait_for(Duration::from_secs(60), || {
        (ready(&server) == NODES).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} of {NODES} nodes Ready: {:?}",
            ready(&server),
            hollow.progress()
        )
    });
    // Their Leases exist and are renewed.
    let renew = |name: &str| {
        server
            .get_lease("kube-node-lease", name)
            .and_then(|l| l.spec?.renew_time)
    };
    wait_for(Duration::from_secs(30), || {
        (0..NODES)
            .all(|i| renew(&format!("hollow-{i}")).is_some())
            .then_some(())
    })
    .expect("every node has a Lease");
    let first = renew("hollow-7");
    wait_for(Duration::from_secs(30), || {
        (renew("hollow-7") != first).then_some(())
    })
    .expect("the Lease is renewed");

    // 500 pods: 460 plain, 20 crashing, 20 jobs.
    let started = Instant::now();
    for i in 0..PODS {
        let kind = match i % 25 {
            0 => "crash",
            1 => "job",
            _ => "web",
        };
        server.create_pod(pod(i, kind)).unwrap();
    }
    wait_for(Duration::from_secs(120), || {
        let p = phases(&server);
        (p.get("Running").copied().unwrap_or(0) >= 460
            && p.get("Succeeded").copied().unwrap_or(0) == 20)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("pods: {:?} {:?}", phases(&server), hollow.progress()));
    eprintln!(
        "{PODS} pods reached their phase in the API after {:?}",
        started.elapsed()
    );
    wait_for(Duration::from_secs(60), || {
        let looping = server
            .list_pods()
            .iter()
            .filter(|p| waiting_reason(p).as_deref() == Some("CrashLoopBackOff"))
            .count();
        (looping == 20).then_some(())
    })
    .unwrap_or_else(|| {
        let reasons: Vec<_> = server
            .list_pods()
            .iter()
            .filter(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .unwrap_or("")
                    .starts_with("crash")
            })
            .map(waiting_reason)
            .collect();
        panic!("crash pods not in CrashLoopBackOff: {reasons:?}")
    });
    let web_running = server
        .list_pods()
        .iter()
        .filter(|p| p.metadata.name.as_deref().unwrap_or("").starts_with("web"))
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count();
    let not_running: Vec<_> = server
        .list_pods()
        .into_iter()
        .filter(|p| p.metadata.name.as_deref().unwrap_or("").starts_with("web"))
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running"))
        .map(|p| (p.metadata.name, p.spec.and_then(|s| s.node_name), p.status))
        .collect();
    assert_eq!(web_running, 460, "{not_running:#?}");

    // Deleted pods are stopped and removed from the API.
    for i in (2..PODS).filter(|i| i % 25 >= 2).take(100) {
        server
            .delete_pod("default", &format!("web-{i}"), None)
            .unwrap();
    }
    wait_for(Duration::from_secs(60), || {
        (server.list_pods().len() == PODS - 100).then_some(())
    })
    .unwrap_or_else(|| panic!("{} pods left", server.list_pods().len()));
    assert_eq!(ready(&server), NODES, "nodes stay Ready");

    let during = threads();
    eprintln!(
        "threads: {threads_before} before, {during} with {NODES} hollow nodes; {:?}",
        hollow.progress()
    );
    assert!(
        during - threads_before < 100,
        "{} threads for {NODES} nodes: not shared",
        during - threads_before
    );
    let progress = hollow.stop();
    assert_eq!(progress.registered, NODES);
    assert_eq!(progress.errors, 0, "{progress:?}");
    server.stop();
}

#[test]
fn the_hollow_command_prints_progress_and_a_summary() {
    let dir = scratch_dir("hollow-cli");
    let server = ApiServer::start();
    let kubeconfig = dir.join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig, "kubernetes-admin")
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rkubelet"))
        .args([
            "hollow",
            "--nodes=3",
            "--name-prefix=cli-",
            &format!("--kubeconfig={}", kubeconfig.display()),
            &format!("--root-dir={}", dir.join("nodes").display()),
            "--duration=4s",
            "--progress-interval=1s",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hollow: 3/3 nodes registered"), "{stdout}");
    assert!(
        stdout.contains("hollow summary: 3 nodes (3 registered)"),
        "{stdout}"
    );
    assert!(stdout.contains("POST nodes: 3"), "{stdout}");
    for i in 0..3 {
        assert!(server.get_node(&format!("cli-{i}")).is_some());
    }
    // Bad flags are named.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_rkubelet"))
        .args(["hollow", "--nodes=x", "--kubeconfig=/nope"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--nodes"));
    server.stop();
}
