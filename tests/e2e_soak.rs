//! Soak: the real `rkubelet` binary on containerd under steady churn (pods created, probed,
//! crashing, completing and deleted) with `kill -9` restarts of the kubelet on the way, its
//! RSS, threads (by role) and open fds recorded at a steady interval. At the end nothing may
//! be lost (every pod reached what it should have, each live pod had one sandbox) or left
//! behind (no sandbox or container, no pod in the API), and the late readings must be no
//! higher than the early ones: no growth trend.
//!
//! `tests/run.sh` runs it for 3 minutes. The long run, with a reading every minute:
//!
//! ```text
//! RKUBELET_SOAK_SECONDS=3600 RKUBELET_E2E=1 RKUBELET_E2E_CRI_ENDPOINT=unix://<socket> \
//!     cargo test --release --test e2e_soak -- --include-ignored --nocapture
//! ```
//!
//! Readings go to stderr and, as CSV, to `$RKUBELET_SOAK_REPORT` when set.
//! `RKUBELET_SOAK_RESTARTS` changes the number of restarts (5); with 0 the whole run is one
//! life of the kubelet, where a slow rise within a life cannot hide behind restarts.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use rkubelet::cri::{api, RuntimeService};
use support::cri::runtime;
use support::e2e::{object, Cluster, IMAGE, NODE, SERIAL};
use support::{process, wait_for};

/// kill -9 restarts over the run, unless `RKUBELET_SOAK_RESTARTS` says otherwise.
const RESTARTS: u64 = 5;
/// Pods created per churn step, one of each kind.
const KINDS: [&str; 3] = ["svc", "crash", "job"];
/// A pod lives this many churn steps before it is deleted.
const LIFETIME_STEPS: u64 = 6;
/// One churn step.
const STEP: Duration = Duration::from_secs(3);

fn soak_pod(kind: &str, name: &str) -> Pod {
    let (restart, script) = match kind {
        "svc" => ("Always", "touch /tmp/ready; exec sleep 3600"),
        "crash" => ("Always", "echo crashing; exit 3"),
        _ => ("Never", "echo done"),
    };
    object(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"soak": kind}},
        "spec": {
            "nodeName": NODE, "restartPolicy": restart, "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script],
                "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 2},
                "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 3}
            }]
        }
    }))
}

/// One figure of a reading.
type Reading = fn(&process::Sample) -> u64;

/// What each pod was seen to reach.
#[derive(Default)]
struct Seen {
    /// Pod name -> (kind, reached its goal: Running+Ready for svc, a restart for crash,
    /// Succeeded for job).
    pods: BTreeMap<String, (String, bool)>,
    /// Most ready sandboxes seen for one pod at once.
    most_sandboxes: usize,
}

fn reached(kind: &str, pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    let phase = status.phase.as_deref();
    let first = status.container_statuses.as_ref().and_then(|s| s.first());
    match kind {
        "svc" => phase == Some("Running") && first.is_some_and(|s| s.ready),
        "crash" => first.is_some_and(|s| s.restart_count >= 1),
        _ => phase == Some("Succeeded"),
    }
}

fn observe(c: &Cluster, seen: &mut Seen) {
    for pod in c.server.list_pods() {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Some((kind, ok)) = seen.pods.get_mut(&name) {
            *ok = *ok || reached(kind, &pod);
        }
    }
}

fn ready_sandboxes_per_pod() -> usize {
    let mut per_pod: BTreeMap<String, usize> = BTreeMap::new();
    for s in runtime().list_pod_sandbox(None).unwrap() {
        if s.get_state() == api::PodSandboxState::SANDBOX_READY {
            *per_pod
                .entry(s.get_metadata().get_uid().to_string())
                .or_default() += 1;
        }
    }
    per_pod.values().copied().max().unwrap_or(0)
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn churn_with_kill_9_restarts_ends_flat_and_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let seconds: u64 = std::env::var("RKUBELET_SOAK_SECONDS")
        .ok()
        .map(|s| s.parse().expect("RKUBELET_SOAK_SECONDS: whole seconds"))
        .unwrap_or(180);
    let restarts: u64 = std::env::var("RKUBELET_SOAK_RESTARTS")
        .ok()
        .map(|s| s.parse().expect("RKUBELET_SOAK_RESTARTS: a whole number"))
        .unwrap_or(RESTARTS);
    let interval = Duration::from_secs((seconds / 12).clamp(5, 60));
    let run = Duration::from_secs(seconds);
    let mut c = Cluster::start("soak");
    c.wait_ready_node();

    let mut seen = Seen::default();
    let mut csv = String::from("seconds,pid,rss_kib,threads,fds,roles\n");
    let mut readings: Vec<(Duration, process::Sample)> = Vec::new();
    let started = Instant::now();
    // Half an interval off the restarts, so no reading catches a kubelet starting up.
    let mut next_reading = interval / 2;
    let mut restarts_done = 0;
    let mut step = 0u64;
    let mut live: Vec<(u64, String)> = Vec::new();
    while started.elapsed() < run {
        let at = started.elapsed();
        // The restarts fall evenly over the run, the last a share of the run before its end.
        if restarts_done < restarts
            && at >= run * (restarts_done as u32 + 1) / (restarts as u32 + 1)
        {
            observe(&c, &mut seen);
            c.kill9_and_restart();
            restarts_done += 1;
            eprintln!("{:>5}s kill -9 and restart #{restarts_done}", at.as_secs());
        }
        for kind in KINDS {
            let name = format!("{kind}-{step}");
            c.server.create_pod(soak_pod(kind, &name)).unwrap();
            seen.pods.insert(name.clone(), (kind.to_string(), false));
            live.push((step, name));
        }
        // Pods past their lifetime go, once they reached their goal (or a long time passed).
        observe(&c, &mut seen);
        live.retain(|(born, name)| {
            let old = step >= born + LIFETIME_STEPS;
            let very_old = step >= born + 4 * LIFETIME_STEPS;
            let done = seen.pods.get(name).is_some_and(|(_, ok)| *ok);
            if old && (done || very_old) {
                let _ = c.server.delete_pod("default", name, None);
                false
            } else {
                true
            }
        });
        seen.most_sandboxes = seen.most_sandboxes.max(ready_sandboxes_per_pod());
        if at >= next_reading {
            if let Some(s) = process::sample(c.pid()) {
                eprintln!("{:>5}s pid {} {s}", at.as_secs(), c.pid());
                let roles: Vec<String> = s.roles.iter().map(|(r, n)| format!("{r}={n}")).collect();
                let _ = writeln!(
                    csv,
                    "{},{},{},{},{},{}",
                    at.as_secs(),
                    c.pid(),
                    s.rss_kib,
                    s.threads,
                    s.fds,
                    roles.join(" ")
                );
                readings.push((at, s));
            }
            next_reading += interval;
        }
        step += 1;
        std::thread::sleep(STEP);
    }

    // Wind down: the last pods reach their goal, then everything goes and nothing stays.
    wait_for(Duration::from_secs(120), || {
        observe(&c, &mut seen);
        live.iter()
            .all(|(_, name)| seen.pods.get(name).is_some_and(|(_, ok)| *ok))
            .then_some(())
    });
    for (_, name) in live.drain(..) {
        let _ = c.server.delete_pod("default", &name, None);
    }
    wait_for(Duration::from_secs(180), || {
        observe(&c, &mut seen);
        c.server.list_pods().is_empty().then_some(())
    })
    .unwrap_or_else(|| {
        let left: Vec<_> = c
            .server
            .list_pods()
            .into_iter()
            .map(|p| p.metadata.name)
            .collect();
        panic!("pods left in the API: {left:?}\n{}", c.log())
    });
    wait_for(Duration::from_secs(120), || {
        let rt = runtime();
        (rt.list_pod_sandbox(None).unwrap().is_empty()
            && rt.list_containers(None).unwrap().is_empty())
        .then_some(())
    })
    .unwrap_or_else(|| panic!("sandboxes or containers left in the runtime\n{}", c.log()));
    // At rest: the elastic pools (pod waiters, API handlers) end idle threads after 30 s.
    std::thread::sleep(Duration::from_secs(40));
    if let Some(s) = process::sample(c.pid()) {
        let at = started.elapsed();
        eprintln!(
            "{:>5}s pid {} {s} (all pods gone, at rest)",
            at.as_secs(),
            c.pid()
        );
        let _ = writeln!(
            csv,
            "{},{},{},{},{},",
            at.as_secs(),
            c.pid(),
            s.rss_kib,
            s.threads,
            s.fds
        );
        readings.push((at, s));
    }
    if let Ok(path) = std::env::var("RKUBELET_SOAK_REPORT") {
        std::fs::write(&path, &csv).unwrap();
    }

    assert_eq!(restarts_done, restarts);
    let missed: Vec<_> = seen
        .pods
        .iter()
        .filter(|(_, (_, ok))| !ok)
        .map(|(name, (kind, _))| format!("{name} ({kind})"))
        .collect();
    eprintln!(
        "{} pods churned, {} missed their goal",
        seen.pods.len(),
        missed.len()
    );
    assert!(
        missed.is_empty(),
        "pods that never reached their goal: {missed:?}\n{}",
        c.log()
    );
    assert_eq!(
        seen.most_sandboxes, 1,
        "a pod had more than one ready sandbox at once"
    );

    // No growth: the last third's readings stay within the first third's highs.
    let third = run / 3;
    let high = |from: Duration, to: Duration, f: Reading| {
        readings
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, s)| f(s))
            .max()
            .unwrap_or(0)
    };
    let end = run * 2;
    let checks: [(&str, Reading, u64); 3] = [
        ("rss_kib", |s| s.rss_kib, 4096),
        ("threads", |s| s.threads as u64, 4),
        ("fds", |s| s.fds as u64, 8),
    ];
    for (what, f, slack) in checks {
        let early = high(Duration::ZERO, third, f);
        let late = high(run - third, end, f);
        eprintln!("{what}: first third's high {early}, last third's high {late}");
        assert!(
            late <= early + slack,
            "{what} grew: {early} early, {late} late"
        );
    }
}
