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
fn kubeadms_flags_shape_the_registered_node() {
    let d = dir("kubeadm-flags");
    let server = ApiServer::start();
    let args = [
        "--node-labels=node.kubernetes.io/pool=blue,team=db",
        "--node-labels=bare,team=storage",
        "--register-with-taints=dedicated=db:NoSchedule,gpu:NoExecute",
        "--cloud-provider=external",
        "--provider-id=fake://node-1",
        "--fail-swap-on=false",
        "--eviction-hard=memory.available<100Mi",
    ]
    .map(String::from);
    let node = ClusterNode::start_with_args(&d, &server, &fake(), &args);
    let registered = wait_for(WAIT, || server.get_node(NODE)).expect("node registered");
    let labels = registered.metadata.labels.unwrap();
    assert_eq!(labels["node.kubernetes.io/pool"], "blue");
    assert_eq!(
        labels["team"], "storage",
        "a later flag adds to and overrides earlier ones"
    );
    assert_eq!(labels["bare"], "");
    assert_eq!(labels["kubernetes.io/hostname"], NODE);
    let spec = registered.spec.unwrap();
    assert_eq!(spec.provider_id.as_deref(), Some("fake://node-1"));
    let taints: Vec<(String, Option<String>, String)> = spec
        .taints
        .unwrap()
        .into_iter()
        .map(|t| (t.key, t.value, t.effect))
        .collect();
    for want in [
        ("dedicated", Some("db"), "NoSchedule"),
        ("gpu", None, "NoExecute"),
        (
            "node.cloudprovider.kubernetes.io/uninitialized",
            Some("true"),
            "NoSchedule",
        ),
    ] {
        let want = (
            want.0.to_string(),
            want.1.map(String::from),
            want.2.to_string(),
        );
        assert!(taints.contains(&want), "{want:?} missing from {taints:?}");
    }
    let version = wait_for(WAIT, || {
        server
            .get_node(NODE)?
            .status?
            .node_info
            .map(|i| i.kubelet_version)
    })
    .expect("node info");
    assert!(version.starts_with("v1.33."), "{version}");
    node.stop();
}

#[test]
fn config_drop_ins_and_flags_set_lease_images_and_registration() {
    let d = dir("drop-ins");
    let server = ApiServer::start();
    let rt = fake();
    for image in ["docker.io/library/one:1", "docker.io/library/two:2"] {
        rt.preload_image(image);
    }
    let header = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";
    std::fs::write(
        d.join("config.yaml"),
        format!("{header}nodeLeaseDurationSeconds: 30\nnodeStatusMaxImages: 5\n"),
    )
    .unwrap();
    let drop_ins = d.join("kubelet.conf.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    std::fs::write(
        drop_ins.join("10-lease.conf"),
        format!("{header}nodeLeaseDurationSeconds: 20\n"),
    )
    .unwrap();
    std::fs::write(drop_ins.join("README"), "not a drop-in: no .conf\n").unwrap();
    let args = [
        format!("--config={}", d.join("config.yaml").display()),
        format!("--config-dir={}", drop_ins.display()),
        "--node-status-max-images=1".to_string(),
    ];
    let node = ClusterNode::start_with_args(&d, &server, &rt, &args);
    let lease = wait_for(WAIT, || server.get_lease("kube-node-lease", NODE)).expect("lease");
    assert_eq!(
        lease.spec.unwrap().lease_duration_seconds,
        Some(20),
        "the drop-in wins over the file"
    );
    let images = wait_for(WAIT, || {
        let images = server.get_node(NODE)?.status?.images?;
        (!images.is_empty()).then_some(images)
    })
    .expect("images in the node status");
    assert_eq!(images.len(), 1, "the flag wins over the file: {images:?}");
    node.stop();

    // registerNode: false: no Node is created; one made by someone else gets its status.
    let d = dir("no-register");
    let server = ApiServer::start();
    let node = ClusterNode::start_with_args(&d, &server, &rt, &["--register-node=false".into()]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        server.get_node(NODE).is_none(),
        "the kubelet created its Node"
    );
    let mut made = k8s_openapi::api::core::v1::Node::default();
    made.metadata.name = Some(NODE.into());
    server.create_node(made).unwrap();
    let ready = wait_for(WAIT, || {
        let conditions = server.get_node(NODE)?.status?.conditions?;
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    });
    assert!(
        ready.is_some(),
        "the existing Node's status is kept current"
    );
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

/// A pod as the API server stores it after ServiceAccount admission: the
/// `kube-api-access-*` projected volume mounted in every container.
fn admitted_pod(name: &str, extra_volumes: serde_json::Value) -> Pod {
    let mut volumes = vec![serde_json::json!({
        "name": "kube-api-access-4xkqz",
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]
        }
    })];
    let mut mounts = vec![serde_json::json!({
        "name": "kube-api-access-4xkqz",
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "readOnly": true
    })];
    for v in extra_volumes.as_array().into_iter().flatten() {
        mounts.push(serde_json::json!({"name": v["name"], "mountPath": "/config"}));
        volumes.push(v.clone());
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                            "volumeMounts": mounts}],
            "volumes": volumes
        }
    }))
    .unwrap()
}

fn root_ca(server: &ApiServer) {
    server
        .create_config_map(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "kube-root-ca.crt", "namespace": "default"},
                "data": {"ca.crt": server.ca_pem()}
            }))
            .unwrap(),
        )
        .unwrap();
}

#[test]
fn service_account_volume_is_projected_and_mounted_read_only() {
    let d = dir("sa-volume");
    let server = ApiServer::start();
    root_ca(&server);
    let rt = fake();
    let node = ClusterNode::start(&d, &server, &rt);
    server
        .create_pod(admitted_pod("sa", serde_json::json!([])))
        .unwrap();
    wait_for(WAIT, || {
        (phase(&server, "sa").as_deref() == Some("Running")).then_some(())
    })
    .expect("Running in the API");
    let uid = server
        .get_pod("default", "sa")
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let vol = d.join(format!(
        "root/pods/{uid}/volumes/kubernetes.io~projected/kube-api-access-4xkqz"
    ));
    let read = |f: &str| std::fs::read_to_string(vol.join(f)).unwrap();
    assert_eq!(read("ca.crt"), server.ca_pem());
    assert_eq!(read("namespace"), "default");
    let token = read("token");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    assert_eq!(server.token_requests(), 1);

    let id = running_ids(&rt)[0].clone();
    let status = rt.container_status(&id, false).unwrap();
    let mount = status
        .get_status()
        .get_mounts()
        .iter()
        .find(|m| m.get_container_path() == "/var/run/secrets/kubernetes.io/serviceaccount")
        .expect("service account mount")
        .clone();
    assert_eq!(mount.get_host_path(), vol.to_string_lossy());
    assert!(mount.get_readonly());

    server.delete_pod("default", "sa", Some(0)).unwrap();
    wait_for(WAIT, || {
        (!d.join(format!("root/pods/{uid}")).exists()).then_some(())
    })
    .expect("pod directory removed after deletion");
    node.stop();
}

#[test]
fn missing_config_map_keeps_the_pod_creating_until_it_exists() {
    let d = dir("missing-cm");
    let server = ApiServer::start();
    root_ca(&server);
    let rt = fake();
    let node = ClusterNode::start(&d, &server, &rt);
    let cfg = serde_json::json!([{"name": "cfg", "configMap": {"name": "app-config"}}]);
    server.create_pod(admitted_pod("needs-cfg", cfg)).unwrap();
    let expected =
        "MountVolume.SetUp failed for volume \"cfg\" : configmap \"app-config\" not found";
    wait_for(WAIT, || {
        server
            .events()
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("FailedMount")
                    && e.type_.as_deref() == Some("Warning")
                    && e.message.as_deref() == Some(expected)
            })
            .then_some(())
    })
    .expect("FailedMount event naming the volume and the ConfigMap");
    let pod = server.get_pod("default", "needs-cfg").unwrap();
    let status = pod.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let waiting = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"));
    assert!(
        rt.list_pod_sandbox(None).unwrap().is_empty(),
        "no sandbox yet"
    );

    server
        .create_config_map(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "app-config", "namespace": "default"},
                "data": {"mode": "blue"}
            }))
            .unwrap(),
        )
        .unwrap();
    // Retried with back-off (1 s doubling, at most 60 s).
    wait_for(Duration::from_secs(90), || {
        (phase(&server, "needs-cfg").as_deref() == Some("Running")).then_some(())
    })
    .expect("Running once the ConfigMap exists");
    let uid = server
        .get_pod("default", "needs-cfg")
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let file = d.join(format!(
        "root/pods/{uid}/volumes/kubernetes.io~configmap/cfg/mode"
    ));
    assert_eq!(std::fs::read_to_string(file).unwrap(), "blue");
    node.stop();
}

#[test]
fn churned_api_pods_leave_nothing_behind_in_the_kubelets_tables() {
    let d = dir("churn-tables");
    let server = ApiServer::start();
    root_ca(&server);
    let rt = fake();
    let node = ClusterNode::start(&d, &server, &rt);
    let probe: k8s_openapi::api::core::v1::Probe = serde_json::from_value(serde_json::json!({
        "exec": {"command": ["true"]}, "periodSeconds": 1
    }))
    .unwrap();
    // Three rounds of eight API pods with a service account token, a ConfigMap and probes:
    // each pod's container exits once (a restart back-off, a second attempt with probes of
    // its own), then the pods are deleted.
    for round in 0..3 {
        let names: Vec<String> = (0..8).map(|i| format!("churn-{round}-{i}")).collect();
        for name in &names {
            let mut pod = admitted_pod(name, serde_json::json!([]));
            let container = &mut pod.spec.as_mut().unwrap().containers[0];
            container.readiness_probe = Some(probe.clone());
            container.liveness_probe = Some(probe.clone());
            server.create_pod(pod).unwrap();
        }
        wait_for(WAIT, || (running_ids(&rt).len() == 8).then_some(())).expect("running");
        for id in running_ids(&rt) {
            rt.exit_container(&id, 1);
        }
        wait_for(WAIT, || {
            names
                .iter()
                .all(|name| {
                    server
                        .get_pod("default", name)
                        .and_then(|p| p.status?.container_statuses)
                        .is_some_and(|s| s.iter().any(|c| c.restart_count >= 1 && c.ready))
                })
                .then_some(())
        })
        .unwrap_or_else(|| {
            let states: Vec<String> = names
                .iter()
                .map(|name| {
                    let status = server.get_pod("default", name).and_then(|p| p.status);
                    format!("{name}: {status:?}")
                })
                .collect();
            panic!("not restarted once and ready again:\n{}", states.join("\n"))
        });
        for name in &names {
            server.delete_pod("default", name, Some(0)).unwrap();
        }
        wait_for(WAIT, || {
            (server.list_pods().is_empty()
                && rt.list_pod_sandbox(None).unwrap().is_empty()
                && rt.list_containers(None).unwrap().is_empty())
            .then_some(())
        })
        .expect("gone from the API and the runtime");
    }
    support::assert_nothing_kept_per_pod(&node.kubelet, Duration::from_secs(30));
    node.stop();
}

#[test]
fn a_rejected_pods_status_stays_until_the_pod_is_deleted() {
    let d = dir("rejected-status");
    let server = ApiServer::start();
    let rt = fake();
    let node = ClusterNode::start(&d, &server, &rt);
    let mut pod = api_pod("refused", 1);
    pod.spec.as_mut().unwrap().security_context = Some(
        serde_json::from_value(serde_json::json!({
            "sysctls": [{"name": "kernel.msgmax", "value": "1"}]
        }))
        .unwrap(),
    );
    server.create_pod(pod).unwrap();
    wait_for(WAIT, || {
        (phase(&server, "refused").as_deref() == Some("Failed")).then_some(())
    })
    .expect("Failed in the API");
    let uid = server
        .get_pod("default", "refused")
        .unwrap()
        .metadata
        .uid
        .unwrap();
    // Housekeeping (every 2 s) sweeps the statuses of pods neither wanted nor worked on:
    // a rejected pod's status stays while its object does, and never starts it.
    std::thread::sleep(Duration::from_secs(5));
    let kept = node
        .kubelet
        .pod_statuses()
        .into_iter()
        .find(|(u, _)| u.0 == uid)
        .map(|(_, e)| e.status.reason.clone());
    assert_eq!(kept, Some(Some("SysctlForbidden".to_string())));
    server.delete_pod("default", "refused", Some(0)).unwrap();
    support::assert_nothing_kept_per_pod(&node.kubelet, WAIT);
    assert!(rt.list_pod_sandbox(None).unwrap().is_empty(), "never ran");
    node.stop();
}
