//! Where rkubelet must behave as the upstream kubelet does against a real API server, each
//! checked with the kubelet joined to the API server test double (which enforces
//! NodeRestriction and applies strategic merge patches as kube-apiserver does) over the
//! in-memory fake runtime: restarts during deletion, containers created but never started,
//! hostNetwork pod IPs, pull back-off, readiness gates, terminal phases of deleted pods,
//! start times, slow stops that must not hold the pod workers, and what must never be
//! ignored quietly (RuntimeClass, sysctls, user namespaces, unsupported volumes).

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use rkubelet::cri::{api, Call, CriError, FakeRuntime, RuntimeService};
use serde_json::{json, Value};
use support::apiserver::client::Api;
use support::apiserver::ApiServer;
use support::cluster::{ClusterNode, NODE};
use support::{scratch_dir, wait_for};

const IMAGE: &str = "docker.io/library/busybox:local";
const WAIT: Duration = Duration::from_secs(20);

fn fake() -> Arc<FakeRuntime> {
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image(IMAGE);
    rt
}

fn dir(name: &str) -> PathBuf {
    scratch_dir(&format!("fidelity-{name}"))
}

/// A pod bound to the node with one container `app`; `spec` is merged into the spec and
/// `meta` into the metadata.
fn pod(name: &str, spec: Value, meta: Value) -> Pod {
    let mut p = json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "app", "image": IMAGE, "imagePullPolicy": "IfNotPresent"}]}
    });
    for (k, v) in spec.as_object().unwrap() {
        p["spec"][k] = v.clone();
    }
    for (k, v) in meta.as_object().unwrap() {
        p["metadata"][k] = v.clone();
    }
    serde_json::from_value(p).unwrap()
}

fn status(server: &ApiServer, name: &str) -> Option<PodStatus> {
    server.get_pod("default", name)?.status
}

fn phase(server: &ApiServer, name: &str) -> Option<String> {
    status(server, name)?.phase
}

fn wait_phase(server: &ApiServer, name: &str, want: &str, timeout: Duration) -> PodStatus {
    wait_for(timeout, || {
        let s = status(server, name)?;
        (s.phase.as_deref() == Some(want)).then_some(s)
    })
    .unwrap_or_else(|| panic!("{name} not {want}: {:?}", status(server, name)))
}

fn condition(status: &PodStatus, kind: &str) -> Option<PodCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .cloned()
}

fn containers_of(rt: &FakeRuntime, pod: &str) -> Vec<api::Container> {
    let mut f = api::ContainerFilter::new();
    f.mut_label_selector()
        .insert("io.kubernetes.pod.name".into(), pod.into());
    rt.list_containers(Some(&f)).unwrap()
}

fn running(rt: &FakeRuntime, pod: &str) -> usize {
    containers_of(rt, pod)
        .iter()
        .filter(|c| c.get_state() == api::ContainerState::CONTAINER_RUNNING)
        .count()
}

fn event(server: &ApiServer, object: &str, reason: &str) -> Option<String> {
    server
        .events()
        .into_iter()
        .find(|e| {
            e.involved_object.name.as_deref() == Some(object) && e.reason.as_deref() == Some(reason)
        })
        .and_then(|e| e.message)
}

fn wait_event(server: &ApiServer, object: &str, reason: &str) -> String {
    wait_for(WAIT, || event(server, object, reason))
        .unwrap_or_else(|| panic!("no {reason} event for {object}: {:?}", server.events()))
}

#[test]
fn a_kubelet_restarted_during_a_deletion_finishes_it() {
    let d = dir("restart-delete");
    let server = ApiServer::start();
    let rt = fake();
    let node = ClusterNode::start(&d, &server, &rt);
    server.create_pod(pod("web", json!({}), json!({}))).unwrap();
    wait_phase(&server, "web", "Running", WAIT);
    node.stop();
    // Deleted while no kubelet runs: the restarted one finds it being deleted.
    server.delete_pod("default", "web", Some(30)).unwrap();
    assert!(server
        .get_pod("default", "web")
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_some());
    let node = ClusterNode::start(&d, &server, &rt);
    wait_for(WAIT, || {
        server.get_pod("default", "web").is_none().then_some(())
    })
    .unwrap_or_else(|| panic!("never deleted: {:?}", status(&server, "web")));
    assert_eq!(running(&rt, "web"), 0, "its container was stopped");
    node.stop();
}

#[test]
fn a_finished_pod_found_after_a_restart_is_not_started_again() {
    let d = dir("restart-done");
    let server = ApiServer::start();
    let rt = fake();
    let node = ClusterNode::start(&d, &server, &rt);
    let job = pod(
        "job",
        json!({"restartPolicy": "Never"}),
        json!({"annotations": {"rkubelet.io/fake-exit-after": "0s"}}),
    );
    server.create_pod(job).unwrap();
    wait_phase(&server, "job", "Succeeded", WAIT);
    node.stop();
    // Its containers are gone (garbage collected) while the kubelet was down.
    for c in containers_of(&rt, "job") {
        rt.remove_container(c.get_id()).unwrap();
    }
    let node = ClusterNode::start(&d, &server, &rt);
    std::thread::sleep(Duration::from_secs(3));
    assert!(containers_of(&rt, "job").is_empty(), "not started again");
    let after = status(&server, "job").unwrap();
    assert_eq!(after.phase.as_deref(), Some("Succeeded"));
    let state = after.container_statuses.unwrap()[0].state.clone().unwrap();
    assert_eq!(
        state.terminated.unwrap().exit_code,
        0,
        "the final state is kept"
    );
    node.stop();
}

#[test]
fn a_container_created_but_never_started_is_replaced_under_the_same_attempt() {
    let d = dir("created");
    let server = ApiServer::start();
    let rt = fake();
    // The first start fails, as when the kubelet dies between create and start.
    rt.inject_error(
        "StartContainer",
        CriError::Unavailable {
            method: "StartContainer",
            message: "connection reset".into(),
        },
    );
    let node = ClusterNode::start(&d, &server, &rt);
    server.create_pod(pod("web", json!({}), json!({}))).unwrap();
    let s = wait_phase(&server, "web", "Running", Duration::from_secs(40));
    assert_eq!(
        s.container_statuses.unwrap()[0].restart_count,
        0,
        "it never ran before"
    );
    let containers = containers_of(&rt, "web");
    assert_eq!(
        containers.len(),
        1,
        "the unstarted one was removed: {containers:?}"
    );
    assert_eq!(containers[0].get_metadata().get_attempt(), 0);
    let creates = rt
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::CreateContainer { .. }))
        .count();
    assert_eq!(creates, 2);
    node.stop();
}

#[test]
fn a_host_network_pod_has_the_nodes_ip() {
    let d = dir("hostnet");
    let server = ApiServer::start();
    let rt = fake();
    let node = ClusterNode::start(&d, &server, &rt);
    let probe = json!({"httpGet": {"path": "/", "port": 1}, "periodSeconds": 1});
    let mut p = pod("hostnet", json!({"hostNetwork": true}), json!({}));
    p.spec.as_mut().unwrap().containers[0].readiness_probe =
        Some(serde_json::from_value(probe).unwrap());
    server.create_pod(p).unwrap();
    let s = wait_phase(&server, "hostnet", "Running", WAIT);
    assert_eq!(s.pod_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(s.pod_ips.unwrap()[0].ip, "127.0.0.1");
    assert_eq!(s.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(s.host_ips.unwrap()[0].ip, "127.0.0.1");
    // Its probe goes to the node's address (nothing listens on port 1): a failure with a
    // connection error, not "no IP yet".
    let message = wait_event(&server, "hostnet", "Unhealthy");
    assert!(!message.contains("no IP"), "{message}");
    node.stop();
}

#[test]
fn pod_ip_and_host_ip_of_a_pod_on_the_pod_network() {
    let d = dir("podnet");
    let server = ApiServer::start();
    let node = ClusterNode::start(&d, &server, &fake());
    server.create_pod(pod("web", json!({}), json!({}))).unwrap();
    let s = wait_phase(&server, "web", "Running", WAIT);
    assert_ne!(s.pod_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(s.host_ips.unwrap()[0].ip, "127.0.0.1");
    node.stop();
}

#[test]
fn a_failed_pull_is_retried_after_its_back_off_not_minutes_later() {
    let d = dir("pull");
    let server = ApiServer::start();
    let rt = fake();
    let node = ClusterNode::start(&d, &server, &rt);
    let image = "registry.example/late:1";
    let mut p = pod("late", json!({}), json!({}));
    p.spec.as_mut().unwrap().containers[0].image = Some(image.into());
    server.create_pod(p).unwrap();
    let waiting = |server: &ApiServer| -> Option<String> {
        status(server, "late")?.container_statuses?[0]
            .state
            .clone()?
            .waiting?
            .reason
    };
    wait_for(WAIT, || {
        (waiting(&server).as_deref() == Some("ErrImagePull")).then_some(())
    })
    .expect("ErrImagePull");
    // The image appears in the registry: the next pull (10 s after the failure) gets it.
    rt.add_image(image);
    wait_phase(&server, "late", "Running", Duration::from_secs(40));
    node.stop();
}

#[test]
fn readiness_gates_hold_ready_and_other_components_conditions_survive() {
    let d = dir("gates");
    let server = ApiServer::start();
    let node = ClusterNode::start(&d, &server, &fake());
    let p = pod(
        "gated",
        json!({"readinessGates": [{"conditionType": "lb.example.com/ready"}]}),
        json!({}),
    );
    server.create_pod(p).unwrap();
    let s = wait_for(WAIT, || {
        let s = status(&server, "gated")?;
        (condition(&s, "ContainersReady")?.status == "True").then_some(s)
    })
    .expect("containers ready");
    let ready = condition(&s, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("ReadinessGatesNotReady"))
    );
    assert_eq!(
        ready.message.as_deref(),
        Some("corresponding condition of pod readiness gate \"lb.example.com/ready\" does not exist.")
    );
    // The load balancer controller sets its condition with a strategic merge patch.
    let lb = Api::new(&server);
    let patch = |status: &str| json!({"status": {"conditions": [{"type": "lb.example.com/ready", "status": status}]}});
    let send = |body: Value| {
        let r = lb.send(
            "PATCH",
            "/api/v1/namespaces/default/pods/gated/status",
            "application/strategic-merge-patch+json",
            Some(body),
        );
        assert_eq!(r.status().as_u16(), 200);
    };
    send(patch("False"));
    wait_for(WAIT, || {
        let m = condition(&status(&server, "gated")?, "Ready")?.message?;
        m.contains("is not \"True\", but False").then_some(())
    })
    .expect("Ready names the gate's status");
    send(patch("True"));
    wait_for(WAIT, || {
        (condition(&status(&server, "gated")?, "Ready")?.status == "True").then_some(())
    })
    .expect("Ready once the gate is True");
    // Later kubelet writes keep the controller's condition.
    std::thread::sleep(Duration::from_secs(2));
    let s = status(&server, "gated").unwrap();
    assert_eq!(
        condition(&s, "lb.example.com/ready").unwrap().status,
        "True"
    );
    node.stop();
}

#[test]
fn a_deleted_pod_held_by_a_finalizer_shows_a_terminal_phase() {
    let d = dir("finalizer");
    let server = ApiServer::start();
    let node = ClusterNode::start(&d, &server, &fake());
    server
        .create_pod(pod(
            "held",
            json!({}),
            json!({"finalizers": ["example.com/keep"]}),
        ))
        .unwrap();
    wait_phase(&server, "held", "Running", WAIT);
    server.delete_pod("default", "held", Some(5)).unwrap();
    // Stopped with SIGTERM (exit 143): Failed, and the kubelet's delete leaves it to the
    // finalizer.
    let s = wait_phase(&server, "held", "Failed", WAIT);
    assert_eq!(condition(&s, "Ready").unwrap().status, "False");
    let terminated = s.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(terminated.exit_code, 143);
    wait_for(WAIT, || {
        let p = server.get_pod("default", "held")?;
        (p.metadata.deletion_grace_period_seconds == Some(0)).then_some(())
    })
    .expect("the kubelet's final delete (grace 0)");
    node.stop();
}

#[test]
fn a_pod_waiting_for_its_volume_has_a_start_time_and_its_deadline_fires() {
    let d = dir("deadline");
    let server = ApiServer::start();
    let rt = fake();
    let node = ClusterNode::start(&d, &server, &rt);
    let p = pod(
        "stuck",
        json!({"activeDeadlineSeconds": 3,
            "volumes": [{"name": "cfg", "configMap": {"name": "missing"}}]}),
        json!({}),
    );
    server.create_pod(p).unwrap();
    let s = wait_for(WAIT, || {
        let s = status(&server, "stuck")?;
        s.start_time.is_some().then_some(s)
    })
    .expect("startTime while ContainerCreating");
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let failed = wait_phase(&server, "stuck", "Failed", WAIT);
    assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        failed.start_time, s.start_time,
        "the start time never changes"
    );
    assert!(containers_of(&rt, "stuck").is_empty());
    // A deadline beyond what time can hold never runs out, and breaks nothing.
    let p = pod(
        "forever",
        json!({"activeDeadlineSeconds": i64::MAX}),
        json!({}),
    );
    server.create_pod(p).unwrap();
    wait_phase(&server, "forever", "Running", WAIT);
    node.stop();
}

#[test]
fn stops_that_wait_out_their_grace_period_do_not_hold_the_pod_workers() {
    let d = dir("slow-stops");
    let server = ApiServer::start();
    let rt = fake();
    let node = ClusterNode::start_with_args(&d, &server, &rt, &["--pod-workers=2".to_string()]);
    let stubborn: Vec<String> = (0..4).map(|i| format!("stubborn-{i}")).collect();
    for name in &stubborn {
        let p = pod(
            name,
            json!({"terminationGracePeriodSeconds": 30}),
            json!({"annotations": {"rkubelet.io/fake-ignore-sigterm": "true"}}),
        );
        server.create_pod(p).unwrap();
    }
    for name in &stubborn {
        wait_phase(&server, name, "Running", WAIT);
    }
    for name in &stubborn {
        server.delete_pod("default", name, None).unwrap();
    }
    server
        .create_pod(pod("fresh", json!({}), json!({})))
        .unwrap();
    wait_phase(&server, "fresh", "Running", WAIT);
    // The new pod ran while every stubborn one still waited out its 30 s.
    for name in &stubborn {
        assert_eq!(running(&rt, name), 1, "{name} still stopping");
    }
    // A forced deletion does not wait for the first grace period to pass.
    server.delete_pod("default", &stubborn[0], Some(0)).unwrap();
    wait_for(WAIT, || (running(&rt, &stubborn[0]) == 0).then_some(()))
        .expect("killed at once by the forced deletion");
    node.stop();
}

#[test]
fn what_is_not_supported_is_refused_never_ignored() {
    let d = dir("refused");
    let server = ApiServer::start();
    let rt = fake();
    let node = ClusterNode::start(&d, &server, &rt);
    let sysctl = json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}});
    server.create_pod(pod("sysctl", sysctl, json!({}))).unwrap();
    let userns = json!({"hostUsers": false});
    server.create_pod(pod("userns", userns, json!({}))).unwrap();
    let claim = json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        "containers": [{"name": "app", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]});
    server.create_pod(pod("claim", claim, json!({}))).unwrap();
    server
        .create_pod(pod(
            "sandboxed",
            json!({"runtimeClassName": "gvisor"}),
            json!({}),
        ))
        .unwrap();

    let s = wait_phase(&server, "sysctl", "Failed", WAIT);
    assert_eq!(s.reason.as_deref(), Some("SysctlForbidden"));
    assert_eq!(
        s.message.as_deref(),
        Some("Pod was rejected: forbidden sysctl: \"kernel.msgmax\" not allowlisted")
    );
    let s = wait_phase(&server, "userns", "Failed", WAIT);
    assert_eq!(s.reason.as_deref(), Some("UserNamespacesNotSupported"));

    let message = wait_event(&server, "claim", "FailedMount");
    assert!(
        message.starts_with("Unable to attach or mount volumes: unmounted volumes=[data]"),
        "{message}"
    );
    assert_eq!(phase(&server, "claim").as_deref(), Some("Pending"));
    assert!(
        containers_of(&rt, "claim").is_empty(),
        "nothing starts without its volume"
    );

    let message = wait_event(&server, "sandboxed", "FailedCreatePodSandBox");
    assert_eq!(
        message,
        "Failed to create pod sandbox: runtimeclasses.node.k8s.io \"gvisor\" not found"
    );
    server.create_runtime_class("gvisor", "runsc").unwrap();
    wait_phase(&server, "sandboxed", "Running", Duration::from_secs(40));
    let handler = rt.calls().into_iter().find_map(|c| match c {
        Call::RunPodSandbox { name, handler, .. } if name == "sandboxed" => Some(handler),
        _ => None,
    });
    assert_eq!(handler.as_deref(), Some("runsc"));
    node.stop();
}

#[test]
fn objects_defaulted_as_the_api_server_stores_them_run() {
    let d = dir("defaults");
    let server = ApiServer::start();
    let rt = fake();
    let node = ClusterNode::start(&d, &server, &rt);
    // No divisor (stored as "0"), no limits (the node's allocatable), an init container.
    let p = pod(
        "defaulted",
        json!({
            "initContainers": [{"name": "init", "image": IMAGE}],
            "volumes": [{"name": "info", "downwardAPI": {"items": [
                {"path": "mem", "resourceFieldRef": {"containerName": "app", "resource": "limits.memory"}},
                {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "requests.cpu"}}
            ]}}]
        }),
        json!({"annotations": {"rkubelet.io/fake-exit-after.init": "0s"}}),
    );
    server.create_pod(p).unwrap();
    let stored = server.get_pod("default", "defaulted").unwrap();
    let item = &stored.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
    let source = item.downward_api.as_ref().unwrap();
    assert_eq!(source.default_mode, Some(0o644));
    let field = source.items.as_ref().unwrap()[0]
        .resource_field_ref
        .as_ref()
        .unwrap();
    assert_eq!(field.divisor.as_ref().map(|q| q.0.as_str()), Some("0"));
    let s = wait_phase(&server, "defaulted", "Running", WAIT);
    let init = &s.init_container_statuses.as_ref().unwrap()[0];
    assert!(init.ready, "a completed init container is ready: {init:?}");
    let uid = stored.metadata.uid.unwrap();
    let files = d.join(format!(
        "root/pods/{uid}/volumes/kubernetes.io~downward-api/info"
    ));
    let mem: i64 = std::fs::read_to_string(files.join("mem"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(mem > 0, "allocatable memory, {mem}");
    assert_eq!(std::fs::read_to_string(files.join("cpu")).unwrap(), "0");
    node.stop();
}
