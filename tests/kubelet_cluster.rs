//! The kubelet joined to the API server test double, over the in-memory fake runtime: node
//! registration and status, the Lease, API pods running with their status in the API,
//! graceful deletion, mirror pods, and recovery from API outages, 410 Gone and malformed
//! watch events.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkubelet::cri::{api, Call, FakeRuntime, RuntimeService};
use support::apiserver::ApiServer;
use support::cluster::{ClusterNode, NODE};
use support::{manifest, scratch_dir, wait_for};

const IMAGE: &str = "docker.io/library/busybox:local";
const WAIT: Duration = Duration::from_secs(20);

fn fake() -> Arc<FakeRuntime> {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image(IMAGE);
    rt
}

fn api_pod(name: &str, grace: i64) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(NODE.into()),
            termination_grace_period_seconds: Some(grace),
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

fn phase(server: &ApiServer, name: &str) -> Option<String> {
    server.get_pod("default", name)?.status?.phase
}

fn running_ids(rt: &FakeRuntime) -> Vec<String> {
    let mut ids: Vec<String> = rt
        .list_containers(None)
        .unwrap()
        .into_iter()
        .filter(|c| c.get_state() == api::ContainerState::CONTAINER_RUNNING)
        .map(|c| c.get_id().to_string())
        .collect();
    ids.sort();
    ids
}

fn proc_value(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
}

fn dir(name: &str) -> PathBuf {
    scratch_dir(&format!("cluster-{name}"))
}

#[test]
fn node_registers_ready_with_real_capacity_and_renews_its_lease() {
    let d = dir("node");
    let server = ApiServer::start();
    let node = ClusterNode::start(&d, &server, &fake());
    let registered = wait_for(WAIT, || {
        let n = server.get_node(NODE)?;
        let ready = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(n)
    })
    .expect("node Ready");
    let status = registered.status.unwrap();
    let capacity = status.capacity.unwrap();
    let cpus = std::thread::available_parallelism()
        .unwrap()
        .get()
        .to_string();
    assert_eq!(capacity["cpu"].0, cpus);
    assert_eq!(
        capacity["memory"].0,
        format!("{}Ki", proc_value("/proc/meminfo", "MemTotal:").unwrap())
    );
    assert_eq!(capacity["pods"].0, "110");
    let labels = registered.metadata.labels.unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], NODE);
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(
        status.node_info.unwrap().container_runtime_version,
        "fake://0.1.0"
    );

    let lease = wait_for(WAIT, || server.get_lease("kube-node-lease", NODE)).expect("lease");
    assert_eq!(
        lease.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some(NODE)
    );
    assert_eq!(
        lease.spec.as_ref().unwrap().lease_duration_seconds,
        Some(40)
    );
    let first = lease.spec.unwrap().renew_time.unwrap();
    let renewed = wait_for(Duration::from_secs(25), || {
        let t = server
            .get_lease("kube-node-lease", NODE)?
            .spec?
            .renew_time?;
        (t.0 > first.0).then_some(t)
    });
    assert!(renewed.is_some(), "lease renewed within 25 s");
    let birth_cry = wait_for(WAIT, || {
        server
            .events()
            .iter()
            .any(|e| e.message.as_deref() == Some("Starting kubelet."))
            .then_some(())
    });
    assert!(birth_cry.is_some(), "Starting kubelet. event");
    node.stop();
}

#[test]
fn api_pod_runs_reports_status_and_is_deleted_gracefully() {
    let d = dir("pod");
    let server = ApiServer::start();
    let rt = fake();
    let node = ClusterNode::start(&d, &server, &rt);
    let created = Instant::now();
    server.create_pod(api_pod("web", 5)).unwrap();
    wait_for(WAIT, || {
        (phase(&server, "web").as_deref() == Some("Running")).then_some(())
    })
    .expect("Running in the API");
    eprintln!("Running in the API after {:?}", created.elapsed());
    let pod = server.get_pod("default", "web").unwrap();
    let status = pod.status.unwrap();
    let cs = &status.container_statuses.unwrap()[0];
    assert!(cs.container_id.as_deref().unwrap().starts_with("fake://"));
    assert_eq!(cs.image, IMAGE);
    assert!(cs
        .state
        .as_ref()
        .unwrap()
        .running
        .as_ref()
        .unwrap()
        .started_at
        .is_some());
    assert!(
        status
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "PodScheduled"),
        "scheduler's condition kept"
    );
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(status.pod_ip.is_some());
    // Events are written by their own thread: wait for them.
    let started_event = wait_for(WAIT, || {
        server
            .events()
            .iter()
            .any(|e| e.reason.as_deref() == Some("Started"))
            .then_some(())
    });
    assert!(started_event.is_some(), "Started event recorded");

    // Graceful deletion: the container is stopped with the grace period, then the object goes.
    let id = running_ids(&rt)[0].clone();
    server.delete_pod("default", "web", Some(5)).unwrap();
    wait_for(WAIT, || {
        server.get_pod("default", "web").is_none().then_some(())
    })
    .expect("pod object deleted");
    assert!(
        rt.calls().contains(&Call::StopContainer(id)),
        "container stopped"
    );
    wait_for(WAIT, || {
        rt.list_containers(None).unwrap().is_empty().then_some(())
    })
    .expect("containers removed");
    node.stop();
}

#[test]
fn static_pod_gets_a_mirror_that_comes_back_when_deleted() {
    let d = dir("mirror");
    let server = ApiServer::start();
    std::fs::create_dir_all(d.join("manifests")).unwrap();
    std::fs::write(
        d.join("manifests/static.yaml"),
        manifest("static", "Always", &[("app", IMAGE, "sleep 1000")]),
    )
    .unwrap();
    let node = ClusterNode::start(&d, &server, &fake());
    let name = format!("static-{NODE}");
    let mirror = wait_for(WAIT, || server.get_pod("default", &name)).expect("mirror pod");
    assert!(mirror
        .metadata
        .annotations
        .as_ref()
        .unwrap()
        .contains_key("kubernetes.io/config.mirror"));
    wait_for(WAIT, || {
        (phase(&server, &name).as_deref() == Some("Running")).then_some(())
    })
    .expect("mirror shows Running");
    let first_uid = mirror.metadata.uid.clone();
    server.delete_pod("default", &name, Some(30)).unwrap();
    let again = wait_for(WAIT, || {
        server
            .get_pod("default", &name)
            .filter(|p| p.metadata.uid != first_uid && p.metadata.deletion_timestamp.is_none())
    });
    assert!(again.is_some(), "mirror recreated");

    // Removing the static pod removes its mirror.
    std::fs::remove_file(d.join("manifests/static.yaml")).unwrap();
    let gone = wait_for(WAIT, || {
        server.get_pod("default", &name).is_none().then_some(())
    });
    assert!(gone.is_some(), "mirror removed with the static pod");
    node.stop();
}

#[test]
fn api_outage_410_and_malformed_events_lose_and_duplicate_nothing() {
    let d = dir("outage");
    let server = ApiServer::start();
    let rt = fake();
    let node = ClusterNode::start(&d, &server, &rt);
    for name in ["a", "b"] {
        server.create_pod(api_pod(name, 5)).unwrap();
    }
    wait_for(WAIT, || (running_ids(&rt).len() == 2).then_some(())).expect("both run");
    let before = running_ids(&rt);

    server.go_down();
    std::thread::sleep(Duration::from_secs(5));
    server.come_back();
    server.compact();
    server.close_watches();
    server.inject_raw_watch_line(b"{this is not json\n");
    server.create_pod(api_pod("c", 5)).unwrap();
    wait_for(WAIT, || {
        (phase(&server, "c").as_deref() == Some("Running")).then_some(())
    })
    .expect("new pod after recovery");
    let after = running_ids(&rt);
    assert_eq!(after.len(), 3, "nothing duplicated");
    assert!(
        before.iter().all(|id| after.contains(id)),
        "nothing restarted"
    );
    node.stop();
}
