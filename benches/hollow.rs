//! Hollow node density: 1,000 hollow nodes × 10 pods in this process, against the API server
//! double running in a child process (so this process's figures are the hollow nodes' own).
//! Prints the process RSS, CPU seconds per minute at steady state, thread count, and pods/s
//! from creation to Running in the API. Run with `cargo bench --bench hollow`
//! (`HOLLOW_NODES`, `HOLLOW_PODS_PER_NODE` override the sizes); under `cargo test` it does a
//! 10-node smoke pass.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, Container, DownwardAPIProjection, DownwardAPIVolumeFile,
    KeyToPath, ObjectFieldSelector, Pod, PodSpec, ProjectedVolumeSource,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkubelet::api::{KubeClient, ListOptions, RestClient};
use rkubelet::hollow::{Hollow, HollowArgs};
use structopt::StructOpt;
use support::apiserver::{ApiServer, ApiServerConfig};

const ROLE_ENV: &str = "HOLLOW_BENCH_APISERVER_DIR";

/// The child: serves the double until its stdin closes (the parent went away).
fn serve_apiserver(dir: &Path) {
    let server = ApiServer::start_with(ApiServerConfig {
        max_connections: 512,
        event_window: 200_000,
        ..ApiServerConfig::default()
    });
    server
        .write_kubeconfig(&dir.join("kubeconfig"), "kubernetes-admin")
        .unwrap();
    // What a real control plane publishes in every namespace, for the pods' API volume.
    server
        .create_config_map(ConfigMap {
            metadata: ObjectMeta {
                name: Some("kube-root-ca.crt".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            data: Some([("ca.crt".to_string(), server.ca_pem())].into()),
            ..Default::default()
        })
        .unwrap();
    std::fs::write(dir.join("ready"), b"").unwrap();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    server.stop();
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn proc_status(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds of this process (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The volume a real API server's ServiceAccount admission adds to every pod (see
/// `kube-api-access-*` in a pod read back from a cluster): a token, the cluster CA and the
/// namespace, which every node keeps up to date while the pod runs.
fn api_access_volume() -> Volume {
    Volume {
        name: "kube-api-access".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        expiration_seconds: Some(3607),
                        path: "token".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
            ]),
        }),
        ..Default::default()
    }
}

fn pod(i: usize, node: usize) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("p-{i}")),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(format!("hollow-{node}")),
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.example/app:1".into()),
                volume_mounts: Some(vec![VolumeMount {
                    name: "kube-api-access".into(),
                    mount_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
                    read_only: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            service_account_name: Some("default".into()),
            volumes: Some(vec![api_access_volume()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn running_in_api(client: &RestClient) -> usize {
    client
        .list_pods(&ListOptions::default())
        .map(|l| {
            l.items
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count()
        })
        .unwrap_or(0)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Ok(dir) = std::env::var(ROLE_ENV) {
        serve_apiserver(Path::new(&dir));
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let nodes = env_usize("HOLLOW_NODES", if full { 1000 } else { 10 });
    let per_node = env_usize("HOLLOW_PODS_PER_NODE", if full { 10 } else { 2 });
    let steady = Duration::from_secs(if full { 60 } else { 5 });
    let dir: PathBuf =
        std::env::temp_dir().join(format!("rkubelet-hollow-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE_ENV, &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("ready").exists() {
        assert!(
            Instant::now() < deadline,
            "the API server double did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let kubeconfig = dir.join("kubeconfig");
    let threads_before = proc_status("Threads:");

    let started = Instant::now();
    let args = HollowArgs::from_iter_safe([
        "hollow".to_string(),
        format!("--nodes={nodes}"),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--root-dir={}", dir.join("nodes").display()),
    ])
    .unwrap();
    let hollow = Hollow::start(&args).unwrap();
    while hollow.progress().registered < nodes {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "nodes did not register"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "{nodes} hollow nodes registered in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The pods, created from a few threads as a scheduler would bind them.
    let rest = rkubelet::api::kubeconfig::load(&kubeconfig).unwrap();
    let client = Arc::new(RestClient::new(rest, 0.0, 1, Duration::from_secs(60)).unwrap());
    let total = nodes * per_node;
    let created = Instant::now();
    let creators: Vec<_> = (0..4)
        .map(|t| {
            let client = Arc::clone(&client);
            std::thread::spawn(move || {
                for i in (t..total).step_by(4) {
                    client.create_pod(&pod(i, i % nodes)).unwrap();
                }
            })
        })
        .collect();
    for c in creators {
        c.join().unwrap();
    }
    let create_secs = created.elapsed().as_secs_f64();
    loop {
        let running = running_in_api(&client);
        if running == total {
            break;
        }
        assert!(
            created.elapsed() < Duration::from_secs(900),
            "{running} of {total} pods Running: {:?}",
            hollow.progress()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let to_running = created.elapsed().as_secs_f64();
    println!(
        "{total} pods created in {create_secs:.1} s, all Running in the API after {to_running:.1} s: {:.0} pods/s",
        total as f64 / to_running
    );

    // Steady state: nothing changes but node status, Leases and resyncs.
    std::thread::sleep(Duration::from_secs(if full { 10 } else { 1 }));
    let cpu_before = cpu_seconds();
    let requests_before = hollow.request_stats().total();
    let skipped_before = hollow.skipped_steps();
    let at = Instant::now();
    std::thread::sleep(steady);
    let secs = at.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let requests = hollow.request_stats().total() - requests_before;
    let skipped_steady = hollow.skipped_steps() - skipped_before;
    let rss_kib = proc_status("VmRSS:");
    let threads = proc_status("Threads:");
    println!(
        "steady state over {secs:.0} s: {:.1} CPU seconds per minute ({:.1}% of one core), {:.0} API requests/s, {skipped_steady} steps skipped",
        cpu * 60.0 / secs,
        cpu * 100.0 / secs,
        requests as f64 / secs
    );
    println!(
        "RSS {:.0} MiB ({:.2} MiB per node), {threads} threads ({threads_before} before the nodes started)",
        rss_kib as f64 / 1024.0,
        rss_kib as f64 / 1024.0 / nodes as f64
    );
    let skipped = hollow.skipped_steps();
    for (kind, count, spent) in hollow.step_stats() {
        println!(
            "  {kind}: {count} steps, {:.1} s, {:.0} µs each",
            spent.as_secs_f64(),
            spent.as_secs_f64() * 1e6 / count.max(1) as f64
        );
    }
    let p = hollow.stop();
    println!(
        "{} nodes registered, {} pods running, {} errors, {skipped} skipped steps",
        p.registered, p.running, p.errors
    );
    drop(child.stdin.take());
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
