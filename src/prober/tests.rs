//! Tests of the prober: every probe runs and publishes, removed pods are forgotten, a
//! container's new attempt is probed afresh, and housekeeping's sweep.

use super::*;
use crate::clock::RealClock;
use crate::cri::{api, FakeRuntime};
use crate::events::FakeRecorder;

fn running_container(rt: &FakeRuntime, i: usize, image: &str) -> String {
    let mut sandbox = api::PodSandboxConfig::new();
    sandbox.mut_metadata().set_name(format!("p{i}"));
    sandbox.mut_metadata().set_uid(format!("u{i}"));
    sandbox.mut_metadata().set_namespace("ns".into());
    let sandbox_id = rt.run_pod_sandbox(&sandbox, "").unwrap();
    let mut config = api::ContainerConfig::new();
    config.mut_metadata().set_name("app".into());
    config.mut_image().set_image(image.into());
    let id = rt.create_container(&sandbox_id, &config, &sandbox).unwrap();
    rt.start_container(&id).unwrap();
    id
}

#[test]
fn every_probe_runs_and_publishes_and_removed_pods_are_forgotten() {
    let rt = Arc::new(FakeRuntime::new());
    let image = rt.preload_image("docker.io/library/busybox:local");
    rt.set_exec_result(b"", b"", 0);
    let (manager, updates, threads) = ProbeManager::start(ProberDeps {
        runtime: rt.clone(),
        clock: Arc::new(RealClock),
        recorder: Arc::new(FakeRecorder::default()),
        workers: 2,
    })
    .unwrap();
    let mut ids = Vec::new();
    for i in 0..20 {
        let id = running_container(&rt, i, &image);
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("p{i}"), "namespace": "ns", "uid": format!("u{i}")},
            "spec": {"containers": [{"name": "app", "readinessProbe": {
                "exec": {"command": ["true"]}, "periodSeconds": 1}}]}
        }))
        .unwrap();
        manager.set_pod(
            Arc::new(pod),
            Some("10.0.0.1".into()),
            vec![ContainerState {
                name: "app".into(),
                id: Some(id.clone()),
                running: true,
                started_at: Some(SystemTime::now()),
            }],
        );
        ids.push(id);
    }
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < ids.len() && Instant::now() < deadline {
        if let Ok(u) = updates.recv_timeout(Duration::from_millis(100)) {
            assert_eq!(
                (u.kind, u.result),
                (ProbeKind::Readiness, ProbeResult::Success)
            );
            seen.insert(u.container_id);
        }
    }
    assert_eq!(
        seen.len(),
        ids.len(),
        "every container's readiness was published"
    );
    for id in &ids {
        assert_eq!(
            manager.results().get(id, ProbeKind::Readiness),
            Some(ProbeResult::Success)
        );
    }
    assert!(manager
        .metrics()
        .totals()
        .iter()
        .any(|(k, r, n)| *k == "Readiness" && *r == "successful" && *n >= 20));
    manager.remove_pod(&PodUid::from("u0"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while manager
        .results()
        .get(&ids[0], ProbeKind::Readiness)
        .is_some()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(manager.results().get(&ids[0], ProbeKind::Readiness), None);
    manager.shutdown();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_ready_container_replaced_by_a_new_attempt_becomes_ready_again() {
    let rt = Arc::new(FakeRuntime::new());
    let image = rt.preload_image("docker.io/library/busybox:local");
    rt.set_exec_result(b"", b"", 0);
    let (manager, _updates, threads) = ProbeManager::start(ProberDeps {
        runtime: rt.clone(),
        clock: Arc::new(RealClock),
        recorder: Arc::new(FakeRecorder::default()),
        workers: 4,
    })
    .unwrap();
    let pods: Vec<Arc<Pod>> = (0..40)
        .map(|i| {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("p{i}"), "namespace": "ns", "uid": format!("u{i}")},
                    "spec": {"containers": [{"name": "app", "readinessProbe": {
                        "exec": {"command": ["true"]}, "periodSeconds": 1}}]}
                }))
                .unwrap(),
            )
        })
        .collect();
    let report = |ids: &[String]| {
        for (pod, id) in pods.iter().zip(ids) {
            manager.set_pod(
                Arc::clone(pod),
                None,
                vec![ContainerState {
                    name: "app".into(),
                    id: Some(id.clone()),
                    running: true,
                    started_at: Some(SystemTime::now()),
                }],
            );
        }
    };
    let all_ready = |ids: &[String]| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = ids
                .iter()
                .filter(|id| {
                    manager.results().get(id, ProbeKind::Readiness) == Some(ProbeResult::Success)
                })
                .count();
            if ready == ids.len() || Instant::now() >= deadline {
                return ready;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let first: Vec<String> = (0..40).map(|i| running_container(&rt, i, &image)).collect();
    report(&first);
    assert_eq!(all_ready(&first), 40);
    // Every container is replaced by its next attempt, reported running straight away
    // (a restart the prober never saw stopped): the new attempt starts not ready, and
    // its first run, due at once and ending at once, makes it ready again. That result
    // must not end up under the not-ready one the new attempt started with, or the
    // container stays not ready for good (later runs see no change to publish).
    let second: Vec<String> = (0..40)
        .map(|i| running_container(&rt, 100 + i, &image))
        .collect();
    report(&second);
    assert_eq!(
        all_ready(&second),
        40,
        "every new attempt ready after its first run"
    );
    for id in &first {
        assert_eq!(manager.results().get(id, ProbeKind::Readiness), None);
    }
    // Housekeeping's sweep: only the pods kept go on being probed.
    let keep: std::collections::HashSet<PodUid> = (0..10)
        .map(|i| PodUid::from(format!("u{i}").as_str()))
        .collect();
    manager.retain_pods(keep);
    let deadline = Instant::now() + Duration::from_secs(10);
    while manager.results().len() > 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (i, id) in second.iter().enumerate() {
        let expected = (i < 10).then_some(ProbeResult::Success);
        assert_eq!(
            manager.results().get(id, ProbeKind::Readiness),
            expected,
            "{i}"
        );
    }
    assert!(manager.metrics().series().iter().all(|(k, _)| [
        "u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9"
    ]
    .contains(&k.5.as_str())));
    manager.shutdown();
    for t in threads {
        t.join().unwrap();
    }
}
