//! End-to-end device plugins on containerd: the real `rkubelet` binary joined to the API
//! server double, and the test device plugin (`support::device_plugin`) registering on
//! `<root-dir>/device-plugins/kubelet.sock` over the real v1beta1 API.
//!
//! The plugin's devices become the Node's `test.device/widget` capacity (all) and
//! allocatable (healthy); a pod asking for one gets the plugin's env, device node and mount;
//! a pod asking for more than is free is rejected as upstream rejects it; pod-resources
//! reports the assignment. After a `kill -9` and restart the plugin registers again, the
//! pod keeps its container and its device, a restart of its container gets the same device
//! without a new `Allocate`, and a new pod gets another device.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use rkubelet::cri::RuntimeService;
use rkubelet::server::podresources::{podresources as pr, podresources_grpc};
use support::cri::runtime;
use support::device_plugin::{Call, TestDevicePlugin};
use support::e2e::{api_status, container_log, main_status, object, running_of, wait_phase};
use support::e2e::{Cluster, IMAGE, NODE, SERIAL};
use support::wait_for;

const RESOURCE: &str = "test.device/widget";

fn widget_pod(name: &str, count: u32, script: &str) -> Pod {
    object(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": NODE, "restartPolicy": "Always", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script],
                "resources": {"limits": {RESOURCE: count.to_string()}}}]
        }
    }))
}

/// The Node's capacity and allocatable of the widgets.
fn widgets(c: &Cluster) -> (Option<String>, Option<String>) {
    let status = c.server.get_node(NODE).and_then(|n| n.status);
    let get = |m: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >| { m.and_then(|m| m.get(RESOURCE)).map(|q| q.0.clone()) };
    (
        get(status.as_ref().and_then(|s| s.capacity.as_ref())),
        get(status.as_ref().and_then(|s| s.allocatable.as_ref())),
    )
}

fn wait_widgets(c: &Cluster, capacity: &str, allocatable: &str) {
    let want = (Some(capacity.to_string()), Some(allocatable.to_string()));
    wait_for(Duration::from_secs(40), || {
        (widgets(c) == want).then_some(())
    })
    .unwrap_or_else(|| panic!("node widgets {:?}, not {want:?}\n{}", widgets(c), c.log()));
}

fn wait_log(c: &Cluster, pod: &str, attempt: u32, text: &str) -> String {
    let read = || -> String {
        let Ok(entries) = std::fs::read_dir(c.dir.join("logs/pods")) else {
            return String::new();
        };
        entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("default_{pod}_"))
            })
            .map(|e| {
                std::fs::read_to_string(e.path().join(format!("app/{attempt}.log")))
                    .unwrap_or_default()
            })
            .collect()
    };
    wait_for(Duration::from_secs(60), || {
        let log = read();
        log.contains(text).then_some(log)
    })
    .unwrap_or_else(|| {
        panic!(
            "{pod} attempt {attempt} never logged {text:?}: {:?}\n{}",
            read(),
            c.log()
        )
    })
}

fn allocations(plugin: &TestDevicePlugin) -> Vec<Vec<String>> {
    plugin
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Allocate(ids) => Some(ids),
            _ => None,
        })
        .collect()
}

fn pod_resources_client(c: &Cluster) -> podresources_grpc::PodResourcesListerClient {
    let socket = c.dir.join("root/pod-resources/kubelet.sock");
    let env = std::sync::Arc::new(grpcio::EnvBuilder::new().cq_count(1).build());
    let channel = grpcio::ChannelBuilder::new(env).connect(&format!("unix:{}", socket.display()));
    podresources_grpc::PodResourcesListerClient::new(channel)
}

/// The healthy widgets `GetAllocatableResources` lists.
fn allocatable_widgets(c: &Cluster) -> Vec<String> {
    let resp = pod_resources_client(c)
        .get_allocatable_resources_opt(
            &pr::AllocatableResourcesRequest::new(),
            grpcio::CallOption::default().timeout(Duration::from_secs(10)),
        )
        .unwrap();
    let mut ids: Vec<String> = resp
        .get_devices()
        .iter()
        .filter(|d| d.get_resource_name() == RESOURCE)
        .flat_map(|d| d.get_device_ids().to_vec())
        .collect();
    ids.sort();
    ids
}

/// `(pod, container, device ids)` from the pod-resources API's `List`.
fn pod_resources(c: &Cluster) -> Vec<(String, String, Vec<String>)> {
    let resp = pod_resources_client(c)
        .list_opt(
            &pr::ListPodResourcesRequest::new(),
            grpcio::CallOption::default().timeout(Duration::from_secs(10)),
        )
        .unwrap();
    let mut out = Vec::new();
    for pod in resp.get_pod_resources() {
        for container in pod.get_containers() {
            let ids: Vec<String> = container
                .get_devices()
                .iter()
                .filter(|d| d.get_resource_name() == RESOURCE)
                .flat_map(|d| d.get_device_ids().to_vec())
                .collect();
            out.push((
                pod.get_name().to_string(),
                container.get_name().to_string(),
                ids,
            ));
        }
    }
    out.sort();
    out
}

#[test]
#[ignore = "needs containerd: run tests/run.sh"]
fn a_plugins_devices_reach_the_node_and_a_pod_and_stay_assigned_across_kill_9() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut c = Cluster::start("e2e-devices");
    c.wait_ready_node();
    let plugins_dir = c.dir.join("root/device-plugins");
    let plugin = TestDevicePlugin::start(
        RESOURCE,
        &[("w0", true), ("w1", true), ("w2", false)],
        &plugins_dir,
        &c.dir.join("tools"),
        true,
    );
    wait_widgets(&c, "3", "2");

    // A pod asking for one widget gets the plugin's env, device node and mount.
    let script = "echo devices=$TEST_DEVICES; test -c /dev/$TEST_DEVICES && echo char-device; \
                  cat /opt/test-device-tools/README; sleep 3600";
    c.server.create_pod(widget_pod("user", 1, script)).unwrap();
    wait_phase(&c, "user", "Running", Duration::from_secs(60));
    let log = wait_log(&c, "user", 0, "test device tools");
    assert!(log.contains("devices=w0\n"), "{log}");
    assert!(log.contains("char-device\n"), "{log}");
    assert_eq!(allocations(&plugin), vec![vec!["w0".to_string()]]);
    assert!(plugin.calls().contains(&Call::PreStart(vec!["w0".into()])));
    assert_eq!(
        pod_resources(&c),
        vec![(
            "user".to_string(),
            "app".to_string(),
            vec!["w0".to_string()]
        )]
    );
    assert_eq!(allocatable_widgets(&c), ["w0", "w1"]);

    // More than is free: rejected with upstream's reason and message.
    c.server
        .create_pod(widget_pod("greedy", 2, "sleep 3600"))
        .unwrap();
    wait_phase(&c, "greedy", "Failed", Duration::from_secs(30));
    let status = api_status(&c, "greedy").unwrap();
    assert_eq!(status.reason.as_deref(), Some("UnexpectedAdmissionError"));
    assert_eq!(
        status.message.as_deref(),
        Some("Pod was rejected: Allocate failed due to requested number of devices unavailable for test.device/widget. Requested: 2, Available: 1, which is unexpected")
    );
    assert!(running_of("greedy").is_empty());

    // Health changes reach allocatable.
    plugin.set_health("w1", false);
    wait_widgets(&c, "3", "1");
    plugin.set_health("w1", true);
    wait_widgets(&c, "3", "2");

    // kill -9: the plugin registers again and the pod keeps its container and device.
    let before = running_of("user");
    assert_eq!(before.len(), 1);
    c.kill9_and_restart();
    wait_for(Duration::from_secs(40), || {
        let streams = plugin
            .calls()
            .iter()
            .filter(|c| **c == Call::ListAndWatch)
            .count();
        (streams >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("the plugin never registered again:\n{}", c.log()));
    wait_widgets(&c, "3", "2");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(running_of("user"), before);
    assert_eq!(main_status(&c, "user").unwrap().restart_count, 0);
    assert_eq!(
        pod_resources(&c),
        vec![(
            "user".to_string(),
            "app".to_string(),
            vec!["w0".to_string()]
        )]
    );

    // A new pod cannot take the restored w0.
    c.server
        .create_pod(widget_pod(
            "second",
            1,
            "echo devices=$TEST_DEVICES; sleep 3600",
        ))
        .unwrap();
    wait_phase(&c, "second", "Running", Duration::from_secs(60));
    assert!(container_log(&c.dir, "second").contains("devices=w1\n"));

    // The user's container restarts with w0 again, and the plugin is not asked anew.
    let allocated = allocations(&plugin).len();
    runtime().stop_container(&before[0], 0).unwrap();
    let log = wait_log(&c, "user", 1, "test device tools");
    assert!(
        log.contains("devices=w0\n") && log.contains("char-device\n"),
        "{log}"
    );
    assert_eq!(allocations(&plugin).len(), allocated);

    // The plugin goes away: its devices stay in capacity, none allocatable.
    plugin.stop();
    wait_widgets(&c, "3", "0");
    for name in ["user", "second", "greedy"] {
        c.server.delete_pod("default", name, Some(0)).unwrap();
    }
}
