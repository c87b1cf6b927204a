//! 110 pods on the real containerd, side by side with the CRI floor, in one run.
//!
//! The real `rkubelet` binary joins the API server double and talks to a private containerd
//! through a recording CRI proxy (a gRPC server in this process that forwards every unary
//! call byte for byte and counts it by RPC). 110 single-container pods are created in the
//! API at once; the clock runs until the API shows all of them Running. Then, with the pods
//! at rest, the kubelet's CPU and RSS are read over a window.
//!
//! The CRI floor replays the very `RunPodSandbox` and `CreateContainer` requests rkubelet
//! sent (names and UIDs rewritten, the pods' files copied), then `StartContainer`, with the
//! kubelet's parallelism (8), through the same proxy: what the runtime needs to start the
//! same pods with nothing else going on.
//!
//! Prints: time to 110 Running and × floor, CRI calls per pod start by RPC, rkubelet and
//! containerd CPU during the burst, CRI calls per second at rest, RSS and CPU at rest.
//!
//! `cargo bench --bench containerd_pods` (as root) starts its own containerd with
//! `packaging/containerd.sh` unless `RKUBELET_E2E_CRI_ENDPOINT` names one. Under
//! `cargo test` it runs a 3-pod smoke pass on the test containerd, or skips without one.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grpcio::{
    CallOption, ChannelBuilder, Client, EnvBuilder, Method, MethodType, RpcStatus, RpcStatusCode,
    ServerBuilder, ServerCredentials, ServiceBuilder,
};
use k8s_openapi::api::core::v1::Pod;
use protobuf::Message;
use rkubelet::cri::{api, RemoteRuntime, RuntimeService};
use support::apiserver::ApiServer;
use support::cri::clean_runtime_at;
use support::e2e::{object, IMAGE, NODE};
use support::{free_port, scratch_dir, wait_for};

/// Pod workers of the kubelet, and so the floor's parallelism.
const PARALLELISM: usize = 8;
/// Pod names start with this; the floor's with [`FLOOR_PREFIX`] (same length, so requests
/// can be rewritten in place).
const BENCH_PREFIX: &str = "bench-";
const FLOOR_PREFIX: &str = "floor-";

// ---------------------------------------------------------------------------------------
// The recording proxy.

use support::cri_proxy::RAW;

/// The unary RPCs of `proto/api.proto` as `/runtime.v1.<Service>/<Rpc>`.
fn unary_methods() -> Vec<String> {
    let text = include_str!("../proto/api.proto");
    let mut package = String::new();
    let mut service = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("package ") {
            package = rest.trim_end_matches(';').to_string();
        } else if let Some(rest) = line.strip_prefix("service ") {
            service = rest.trim_end_matches('{').trim().to_string();
        } else if let Some(rest) = line.strip_prefix("rpc ") {
            if line.contains("stream ") {
                continue;
            }
            let name = rest.split('(').next().unwrap_or_default().trim();
            out.push(format!("/{package}.{service}/{name}"));
        }
    }
    out
}

/// What went through the proxy.
#[derive(Default)]
struct Recorded {
    calls: BTreeMap<String, u64>,
    /// Time spent in the runtime by RPC (from the request to the answer), summed.
    latency: BTreeMap<String, Duration>,
    /// When the first `RunPodSandbox` arrived and the last `StartContainer` was answered.
    first_sandbox: Option<Instant>,
    last_start: Option<Instant>,
    /// When the timings were last reset.
    reset_at: Option<Instant>,
    run_sandbox: Vec<Vec<u8>>,
    create_container: Vec<Vec<u8>>,
}

impl Recorded {
    /// Forgets the timings, for a new run.
    fn reset_timings(&mut self) {
        self.reset_at = Some(Instant::now());
        self.latency.clear();
        self.first_sandbox = None;
        self.last_start = None;
    }
}

struct Proxy {
    _server: grpcio::Server,
    recorded: Arc<Mutex<Recorded>>,
    socket: PathBuf,
}

impl Proxy {
    fn start(socket: &Path, upstream: &str) -> Proxy {
        let env = Arc::new(
            EnvBuilder::new()
                .cq_count(2)
                .name_prefix("cri-proxy")
                .build(),
        );
        let target = format!("unix:{}", upstream.trim_start_matches("unix://"));
        let client = Client::new(ChannelBuilder::new(Arc::clone(&env)).connect(&target));
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let mut builder = ServiceBuilder::new();
        for name in unary_methods() {
            let name: &'static str = Box::leak(name.into_boxed_str());
            let method: &'static Method<Vec<u8>, Vec<u8>> = Box::leak(Box::new(Method {
                ty: MethodType::Unary,
                name,
                req_mar: RAW,
                resp_mar: RAW,
            }));
            let client = client.clone();
            let recorded = Arc::clone(&recorded);
            builder = builder.add_unary_handler(method, move |ctx, req: Vec<u8>, sink| {
                let rpc = name.rsplit('/').next().unwrap_or(name);
                let sent = Instant::now();
                {
                    let mut r = recorded.lock().unwrap();
                    *r.calls.entry(rpc.to_string()).or_default() += 1;
                    match rpc {
                        "RunPodSandbox" => {
                            r.first_sandbox.get_or_insert(sent);
                            r.run_sandbox.push(req.clone())
                        }
                        "CreateContainer" => r.create_container.push(req.clone()),
                        _ => {}
                    }
                }
                let options = CallOption::default().timeout(Duration::from_secs(240));
                let recorded = Arc::clone(&recorded);
                match client.unary_call_async(method, &req, options) {
                    Ok(answer) => ctx.spawn(async move {
                        let answer = answer.await;
                        {
                            let answered = Instant::now();
                            let mut r = recorded.lock().unwrap();
                            *r.latency.entry(rpc.to_string()).or_default() += answered - sent;
                            if rpc == "StartContainer" {
                                r.last_start = Some(answered);
                            }
                        }
                        let _ = match answer {
                            Ok(resp) => sink.success(resp).await,
                            Err(grpcio::Error::RpcFailure(status)) => sink.fail(status).await,
                            Err(e) => {
                                let status =
                                    RpcStatus::with_message(RpcStatusCode::UNKNOWN, e.to_string());
                                sink.fail(status).await
                            }
                        };
                    }),
                    Err(e) => ctx.spawn(async move {
                        let status = RpcStatus::with_message(RpcStatusCode::UNKNOWN, e.to_string());
                        let _ = sink.fail(status).await;
                    }),
                }
            });
        }
        let _ = std::fs::remove_file(socket);
        let mut server = ServerBuilder::new(env)
            .register_service(builder.build())
            .build()
            .unwrap();
        server
            .add_listening_port(
                format!("unix:{}", socket.display()),
                ServerCredentials::insecure(),
            )
            .unwrap();
        server.start();
        Proxy {
            _server: server,
            recorded,
            socket: socket.to_path_buf(),
        }
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn calls(&self) -> BTreeMap<String, u64> {
        self.recorded.lock().unwrap().calls.clone()
    }

    fn reset_timings(&self) {
        self.recorded.lock().unwrap().reset_timings();
    }

    /// Forgets the requests recorded for the floor, for a new round.
    fn reset_recorded(&self) {
        let mut r = self.recorded.lock().unwrap();
        r.run_sandbox.clear();
        r.create_container.clear();
    }

    /// Runtime time by RPC, first sandbox request and last container start since the
    /// last [`Proxy::reset_timings`].
    fn timings(&self) -> Timings {
        let r = self.recorded.lock().unwrap();
        Timings {
            created: r.reset_at.unwrap_or_else(Instant::now),
            latency: r.latency.clone(),
            first_sandbox: r.first_sandbox,
            last_start: r.last_start,
        }
    }
}

struct Timings {
    /// When the timings were reset (the pods were created right after).
    created: Instant,
    latency: BTreeMap<String, Duration>,
    first_sandbox: Option<Instant>,
    last_start: Option<Instant>,
}

/// Mean runtime time of `rpc` over `calls` calls, in milliseconds.
fn mean_ms(latency: &BTreeMap<String, Duration>, calls: &BTreeMap<String, u64>, rpc: &str) -> f64 {
    let total = latency.get(rpc).copied().unwrap_or_default();
    let n = calls.get(rpc).copied().unwrap_or(0).max(1);
    total.as_secs_f64() * 1000.0 / n as f64
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Processes.

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

/// CPU seconds of every containerd process (the daemon and its shims).
fn containerd_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with("containerd"))
        })
        .map(cpu_seconds)
        .sum()
}

fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// A `kB` figure of `/proc/<pid>/status` in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The resident size of each mapped file of `pid`, largest first (`RKUBELET_BENCH_SMAPS`).
fn print_mappings(pid: u32) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by_file: BTreeMap<String, u64> = BTreeMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first().is_some_and(|f| f.contains('-')) && fields.len() >= 5 {
            current = fields
                .get(5)
                .map_or("[anon]".to_string(), |f| f.to_string());
        } else if let Some(kb) = line.strip_prefix("Rss:") {
            let kb: u64 = kb
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse()
                .unwrap_or(0);
            *by_file.entry(current.clone()).or_default() += kb;
        }
    }
    let mut sorted: Vec<_> = by_file.into_iter().collect();
    sorted.sort_by_key(|m| std::cmp::Reverse(m.1));
    for (file, kb) in sorted.iter().take(12) {
        println!("  mapping {file}: {kb} kB");
    }
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// The kubelet under measurement, killed when the bench ends however it ends: a kubelet left
/// behind would treat the pod cgroups of any other kubelet on the host as its own orphans.
struct KubeletProcess(Child);

impl KubeletProcess {
    fn id(&self) -> u32 {
        self.0.id()
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KubeletProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_kubelet(dir: &Path, port: u16, endpoint: &str) -> KubeletProcess {
    let log = std::fs::File::create(dir.join("rkubelet.log")).unwrap();
    KubeletProcess(
        Command::new(env!("CARGO_BIN_EXE_rkubelet"))
            .arg(format!(
                "--kubeconfig={}",
                dir.join("kubelet.conf").display()
            ))
            .arg(format!("--container-runtime-endpoint={endpoint}"))
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
            .args(support::e2e::harness_eviction_thresholds(&[]))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn pod(i: usize) -> Pod {
    object(serde_json::json!({
        "metadata": {"name": format!("{BENCH_PREFIX}{i}"), "namespace": "default"},
        "spec": {
            "nodeName": NODE, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"]}]
        }
    }))
}

// ---------------------------------------------------------------------------------------
// The floor.

/// `bytes` with every occurrence of each `(from, to)` pair (equal lengths) replaced.
fn rewrite(bytes: &[u8], pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for (from, to) in pairs {
        assert_eq!(from.len(), to.len());
        let (from, to) = (from.as_bytes(), to.as_bytes());
        let mut i = 0;
        while i + from.len() <= out.len() {
            if &out[i..i + from.len()] == from {
                out[i..i + from.len()].copy_from_slice(to);
                i += from.len();
            } else {
                i += 1;
            }
        }
    }
    out
}

/// A UID of the same length as `uid` that is not it.
fn floor_uid(uid: &str) -> String {
    let mut chars: Vec<char> = uid.chars().collect();
    for c in chars.iter_mut().take(8) {
        *c = if *c == 'f' { 'e' } else { 'f' };
    }
    chars.into_iter().collect()
}

/// One pod of the floor: its sandbox and container requests, as rkubelet sent them.
struct FloorPod {
    sandbox: api::RunPodSandboxRequest,
    container: api::CreateContainerRequest,
}

/// The recorded requests, rewritten to new names and UIDs; the pods' files (hosts file,
/// termination log...) are copied to the new UIDs' directories.
/// A pod whose sandbox was asked for more than once (a RunPodSandbox that failed, say under
/// load, is retried) gives one floor pod, from its first request.
fn floor_pods(recorded: &Recorded, root: &Path) -> Vec<FloorPod> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for sandbox in &recorded.run_sandbox {
        let parsed = api::RunPodSandboxRequest::parse_from_bytes(sandbox).unwrap();
        let uid = parsed.get_config().get_metadata().get_uid().to_string();
        if !seen.insert(uid.clone()) {
            continue;
        }
        let Some(container) = recorded.create_container.iter().find(|c| {
            api::CreateContainerRequest::parse_from_bytes(c)
                .is_ok_and(|c| c.get_sandbox_config().get_metadata().get_uid() == uid)
        }) else {
            continue;
        };
        let new_uid = floor_uid(&uid);
        let pairs = vec![
            (uid.clone(), new_uid.clone()),
            (BENCH_PREFIX.to_string(), FLOOR_PREFIX.to_string()),
        ];
        let status = Command::new("cp")
            .arg("-a")
            .arg(root.join("pods").join(&uid))
            .arg(root.join("pods").join(&new_uid))
            .status()
            .unwrap();
        assert!(status.success());
        let parsed_new =
            api::RunPodSandboxRequest::parse_from_bytes(&rewrite(sandbox, &pairs)).unwrap();
        // The kubelet makes the pod's log directory before its sandbox; so does the floor.
        std::fs::create_dir_all(parsed_new.get_config().get_log_directory()).unwrap();
        out.push(FloorPod {
            sandbox: api::RunPodSandboxRequest::parse_from_bytes(&rewrite(sandbox, &pairs))
                .unwrap(),
            container: api::CreateContainerRequest::parse_from_bytes(&rewrite(container, &pairs))
                .unwrap(),
        });
    }
    out
}

/// Starts every floor pod (sandbox, container, start) with `PARALLELISM` threads; the time.
fn run_floor(runtime: &Arc<RemoteRuntime>, pods: Vec<FloorPod>) -> Duration {
    let queue = Arc::new(Mutex::new(pods));
    let start = Instant::now();
    let workers: Vec<_> = (0..PARALLELISM)
        .map(|_| {
            let queue = Arc::clone(&queue);
            let runtime = Arc::clone(runtime);
            std::thread::spawn(move || loop {
                let Some(p) = queue.lock().unwrap().pop() else {
                    return;
                };
                let config = p.sandbox.get_config();
                let sandbox = runtime
                    .run_pod_sandbox(config, p.sandbox.get_runtime_handler())
                    .unwrap();
                let id = runtime
                    .create_container(
                        &sandbox,
                        p.container.get_config(),
                        p.container.get_sandbox_config(),
                    )
                    .unwrap();
                runtime.start_container(&id).unwrap();
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    start.elapsed()
}

// ---------------------------------------------------------------------------------------

/// What one round of rkubelet measured.
struct KubeletRound {
    burst: Duration,
    kubelet_cpu: f64,
    containerd_cpu: f64,
    calls: BTreeMap<String, u64>,
    timings: Timings,
    /// From the round 0 at rest.
    rest: Option<Rest>,
    floor: Vec<FloorPod>,
    /// The round's directory (the floor's pods use files in it).
    dir: PathBuf,
}

/// The kubelet at rest with the pods running.
struct Rest {
    cpu: f64,
    calls: BTreeMap<String, f64>,
    rss: f64,
    rss_anon: f64,
    rss_file: f64,
    threads: usize,
}

/// One round of rkubelet: a new API server double and kubelet (in a new directory), `pods`
/// pods created at once, the time until all are Running; at rest after it when `rest` is
/// given. Leaves the pods in the runtime and returns the floor's requests for them.
fn kubelet_round(proxy: &Proxy, pods: usize, rest: Option<Duration>) -> KubeletRound {
    let dir = scratch_dir("bench-containerd-pods");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    proxy.reset_recorded();
    let server = ApiServer::start();
    server
        .write_kubeconfig(&dir.join("kubelet.conf"), &format!("system:node:{NODE}"))
        .unwrap();
    std::fs::write(dir.join("client-ca.crt"), server.ca_pem()).unwrap();
    let port = free_port();
    let mut kubelet = spawn_kubelet(&dir, port, &proxy.endpoint());
    let pid = kubelet.id();
    wait_for(Duration::from_secs(60), || {
        server
            .get_node(NODE)?
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .expect("node not Ready");
    std::thread::sleep(Duration::from_secs(2));
    let calls_before = proxy.calls();
    proxy.reset_timings();
    let (kubelet_cpu0, containerd_cpu0) = (cpu_seconds(pid), containerd_cpu_seconds());
    let start = Instant::now();
    for i in 0..pods {
        server.create_pod(pod(i)).unwrap();
    }
    // Counted in place: decoding every pod 20 times a second would cost the machine more
    // CPU than the kubelet spends.
    let running = |server: &ApiServer| server.count_pods_in_phase("Running");
    wait_for(Duration::from_secs(600), || {
        (running(&server) == pods).then_some(())
    })
    .unwrap_or_else(|| panic!("only {} of {pods} pods Running", running(&server)));
    let burst = start.elapsed();
    let kubelet_cpu = cpu_seconds(pid) - kubelet_cpu0;
    let containerd_cpu = containerd_cpu_seconds() - containerd_cpu0;
    let calls = delta(&proxy.calls(), &calls_before);
    let timings = proxy.timings();

    let rest = rest.map(|window| {
        std::thread::sleep(Duration::from_secs(10).min(window));
        let (cpu0, calls0, rest_start) = (cpu_seconds(pid), proxy.calls(), Instant::now());
        // RKUBELET_BENCH_PERF=<file>: a CPU profile of the kubelet at rest, for `perf report`.
        let profile = std::env::var("RKUBELET_BENCH_PERF").ok().map(|out| {
            Command::new("perf")
                .args(["record", "-q", "-g", "-p", &pid.to_string(), "-o", &out])
                .stderr(Stdio::null())
                .spawn()
                .expect("perf")
        });
        std::thread::sleep(window);
        if let Some(mut perf) = profile {
            let _ = Command::new("kill")
                .args(["-INT", &perf.id().to_string()])
                .status();
            let _ = perf.wait();
        }
        let elapsed = rest_start.elapsed().as_secs_f64();
        let rest = Rest {
            cpu: (cpu_seconds(pid) - cpu0) / elapsed,
            calls: delta(&proxy.calls(), &calls0)
                .into_iter()
                .map(|(k, v)| (k, v as f64 / elapsed))
                .collect(),
            rss: rss_mib(pid),
            rss_anon: status_mib(pid, "RssAnon:"),
            rss_file: status_mib(pid, "RssFile:"),
            threads: threads(pid),
        };
        if std::env::var("RKUBELET_BENCH_SMAPS").is_ok() {
            print_mappings(pid);
        }
        rest
    });

    // The floor's requests, then the pods go. The kubelet stops first, so the pods' files
    // copied for the floor are not changing underneath.
    kubelet.stop();
    let floor = floor_pods(&proxy.recorded.lock().unwrap(), &root);
    assert_eq!(floor.len(), pods, "requests recorded for every pod");
    for m in rkubelet::volume::mount::mounts_under(&dir) {
        let _ = Command::new("umount").arg("-l").arg(&m).status();
    }
    KubeletRound {
        burst,
        kubelet_cpu,
        containerd_cpu,
        calls,
        timings,
        rest,
        floor,
        dir,
    }
}

/// What one round of the floor measured.
struct FloorRound {
    time: Duration,
    containerd_cpu: f64,
    calls: BTreeMap<String, u64>,
    timings: Timings,
}

fn floor_round(proxy: &Proxy, floor: Vec<FloorPod>) -> FloorRound {
    let runtime =
        Arc::new(RemoteRuntime::connect(&proxy.endpoint(), Duration::from_secs(240)).unwrap());
    let calls0 = proxy.calls();
    proxy.reset_timings();
    let containerd_cpu0 = containerd_cpu_seconds();
    let time = run_floor(&runtime, floor);
    FloorRound {
        time,
        containerd_cpu: containerd_cpu_seconds() - containerd_cpu0,
        calls: delta(&proxy.calls(), &calls0),
        timings: proxy.timings(),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let pods = if full { 110 } else { 3 };
    // Rounds of rkubelet then the floor, one after the other: the runtime's speed on this
    // machine drifts by 10-20 % from one minute to the next, so one pair says little.
    let rounds: usize = match std::env::var("RKUBELET_BENCH_ROUNDS") {
        Ok(n) => n
            .parse()
            .expect("RKUBELET_BENCH_ROUNDS: a number of rounds"),
        Err(_) if full => 5,
        Err(_) => 1,
    };
    assert!(rounds > 0, "RKUBELET_BENCH_ROUNDS: at least one round");
    let rest_window = Duration::from_secs(if full { 30 } else { 2 });
    let own_base = Path::new("/var/tmp/rkubelet-bench/containerd");
    let (upstream, own) = match std::env::var("RKUBELET_E2E_CRI_ENDPOINT") {
        Ok(endpoint) => (endpoint, false),
        Err(_) if full => {
            let out = Command::new("bash")
                .arg("packaging/containerd.sh")
                .arg("start")
                .arg(own_base)
                .output()
                .unwrap();
            assert!(out.status.success(), "containerd.sh start failed");
            let sock = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (format!("unix://{sock}"), true)
        }
        Err(_) => {
            println!("containerd_pods: skipped (no RKUBELET_E2E_CRI_ENDPOINT; run tests/run.sh or cargo bench)");
            return;
        }
    };
    clean_runtime_at(&upstream);
    let proxy_dir = scratch_dir("bench-containerd-pods-proxy");
    let proxy = Proxy::start(&proxy_dir.join("cri-proxy.sock"), &upstream);

    let mut kubelet_rounds = Vec::new();
    let mut floor_rounds = Vec::new();
    for round in 0..rounds {
        let mut k = kubelet_round(&proxy, pods, (round == 0).then_some(rest_window));
        clean_runtime_at(&upstream);
        let f = floor_round(&proxy, std::mem::take(&mut k.floor));
        clean_runtime_at(&upstream);
        let _ = std::fs::remove_dir_all(&k.dir);
        kubelet_rounds.push(k);
        floor_rounds.push(f);
    }
    let _ = std::fs::remove_dir_all(&proxy_dir);
    if own {
        let _ = Command::new("bash")
            .arg("packaging/containerd.sh")
            .arg("stop")
            .arg(own_base)
            .status();
    }

    println!(
        "containerd_pods: {pods} single-container pods, {PARALLELISM} in parallel, {rounds} round(s) of rkubelet then the CRI floor"
    );
    let ratios: Vec<f64> = kubelet_rounds
        .iter()
        .zip(&floor_rounds)
        .map(|(k, f)| k.burst.as_secs_f64() / f.time.as_secs_f64())
        .collect();
    for (i, (k, f)) in kubelet_rounds.iter().zip(&floor_rounds).enumerate() {
        println!(
            "  round {}: rkubelet {:.2} s, CRI floor {:.2} s, x floor {:.2}",
            i + 1,
            k.burst.as_secs_f64(),
            f.time.as_secs_f64(),
            ratios[i]
        );
    }
    let n = rounds as f64;
    let burst: f64 = kubelet_rounds
        .iter()
        .map(|k| k.burst.as_secs_f64())
        .sum::<f64>()
        / n;
    let floor: f64 = floor_rounds
        .iter()
        .map(|f| f.time.as_secs_f64())
        .sum::<f64>()
        / n;
    println!(
        "  time to {pods} Running in the API: {burst:.2} s; CRI floor {floor:.2} s; x floor {:.2} (means of the rounds; median of the rounds' x floor {:.2})",
        burst / floor,
        median(ratios.clone())
    );
    let mean = |f: &dyn Fn(usize) -> f64| (0..rounds).map(f).sum::<f64>() / n;
    println!(
        "  CPU during the burst: rkubelet {:.2} s, containerd and shims {:.2} s (floor: {:.2} s)",
        mean(&|i| kubelet_rounds[i].kubelet_cpu),
        mean(&|i| kubelet_rounds[i].containerd_cpu),
        mean(&|i| floor_rounds[i].containerd_cpu),
    );
    println!(
        "  first RunPodSandbox {:.2} s after the pods were created; all Running {:.2} s after the last StartContainer",
        mean(&|i| {
            let k = &kubelet_rounds[i];
            k.timings.first_sandbox.map_or(f64::NAN, |t| t.saturating_duration_since(k.timings.created).as_secs_f64())
        }),
        mean(&|i| {
            let k = &kubelet_rounds[i];
            k.timings.last_start.map_or(f64::NAN, |t| k.timings.created.checked_add(k.burst).map_or(f64::NAN, |end| end.saturating_duration_since(t).as_secs_f64()))
        }),
    );
    let sum_calls = |calls: &mut dyn Iterator<Item = &BTreeMap<String, u64>>| {
        let mut out = BTreeMap::<String, u64>::new();
        for c in calls {
            for (k, v) in c {
                *out.entry(k.clone()).or_default() += v;
            }
        }
        out
    };
    let sum_timings = |timings: &mut dyn Iterator<Item = &Timings>| {
        let mut out = BTreeMap::<String, Duration>::new();
        for t in timings {
            for (k, v) in &t.latency {
                *out.entry(k.clone()).or_default() += *v;
            }
        }
        out
    };
    let burst_calls = sum_calls(&mut kubelet_rounds.iter().map(|k| &k.calls));
    let floor_calls = sum_calls(&mut floor_rounds.iter().map(|f| &f.calls));
    let burst_latency = sum_timings(&mut kubelet_rounds.iter().map(|k| &k.timings));
    let floor_latency = sum_timings(&mut floor_rounds.iter().map(|f| &f.timings));
    let mean: Vec<String> = ["RunPodSandbox", "CreateContainer", "StartContainer"]
        .iter()
        .map(|rpc| {
            format!(
                "{rpc} {:.0} (floor {:.0})",
                mean_ms(&burst_latency, &burst_calls, rpc),
                mean_ms(&floor_latency, &floor_calls, rpc)
            )
        })
        .collect();
    println!("  mean runtime time per call, ms: {}", mean.join(", "));
    let others: Vec<String> = burst_calls
        .keys()
        .filter(|rpc| {
            !matches!(
                rpc.as_str(),
                "RunPodSandbox" | "CreateContainer" | "StartContainer"
            )
        })
        .map(|rpc| format!("{rpc} {:.1}", mean_ms(&burst_latency, &burst_calls, rpc)))
        .collect();
    println!(
        "  mean runtime time of the other calls, ms: {}",
        others.join(", ")
    );
    let started = (pods * rounds) as f64;
    let per_pod: Vec<String> = burst_calls
        .iter()
        .map(|(k, v)| format!("{k} {:.2}", *v as f64 / started))
        .collect();
    println!("  CRI calls per pod start: {}", per_pod.join(", "));
    let total: u64 = burst_calls.values().sum();
    println!(
        "  CRI calls per pod start, all: {:.2}",
        total as f64 / started
    );
    if let Some(rest) = kubelet_rounds.first().and_then(|k| k.rest.as_ref()) {
        let per_second: Vec<String> = rest
            .calls
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        println!("  CRI calls per second at rest: {}", per_second.join(", "));
        println!(
            "  at rest with {pods} pods (round 1): RSS {:.1} MiB (anonymous {:.1}, file-backed {:.1}), CPU {:.1} ms/s, {} threads",
            rest.rss, rest.rss_anon, rest.rss_file, rest.cpu * 1000.0, rest.threads
        );
    }
}
