//! CSI driver registration through `plugins_registry`, against the test driver speaking the
//! real registration and CSI protocols: a driver is recorded in the node's CSINode (node ID,
//! topology keys, volume limit), in the `csi.volume.kubernetes.io/nodeid` annotation and the
//! topology labels, and told it is registered; a driver speaking no CSI 1.x is refused and
//! told why; a registration socket that goes away unregisters its driver.

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use rkubelet::api::fake::FakeClient;
use rkubelet::api::KubeClient;
use rkubelet::csi::node_info::NodeInfoManager;
use rkubelet::csi::{CsiDrivers, PluginWatcher, NODE_ID_ANNOTATION};
use support::csi_driver::{DriverOptions, TestCsiDriver};
use support::{scratch_dir, wait_for};

fn node() -> Node {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "csi-node", "uid": "node-uid-1"}
    }))
    .unwrap()
}

fn annotation(api: &FakeClient) -> Option<String> {
    api.get_node("csi-node")
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default()
        .get(NODE_ID_ANNOTATION)
        .cloned()
}

#[test]
fn drivers_register_through_plugins_registry_and_unregister_when_their_socket_goes() {
    let dir = scratch_dir("csi-registration");
    let registry = dir.join("root/plugins_registry");
    let api = Arc::new(FakeClient::new());
    api.insert_node(&node()).unwrap();
    let drivers = Arc::new(CsiDrivers::new());
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let watcher = PluginWatcher::start(
        &registry,
        Arc::clone(&drivers),
        Some(NodeInfoManager::new(api.clone(), "csi-node")),
        stop_rx,
    )
    .unwrap();

    let good = TestCsiDriver::start(
        DriverOptions::new("good.csi.test"),
        &dir.join("good"),
        &registry,
    );
    let mut old = DriverOptions::new("old.csi.test");
    old.versions = vec!["0.3.0".into()];
    let refused = TestCsiDriver::start(old, &dir.join("old"), &registry);

    wait_for(Duration::from_secs(15), || {
        (!good.notified().is_empty() && !refused.notified().is_empty()).then_some(())
    })
    .expect("the watcher never answered both registrars");
    assert_eq!(good.notified()[0], (true, String::new()));
    let (registered, why) = refused.notified()[0].clone();
    assert!(!registered);
    assert!(
        why.contains("none of the CSI versions reported by this driver are supported"),
        "{why}"
    );
    assert_eq!(drivers.names(), ["good.csi.test"]);
    assert!(drivers.client("old.csi.test").is_err());

    // CSINode: created owned by the Node, with the driver's node ID, sorted topology keys
    // and its volume limit.
    let csi_node = api.csi_node("csi-node").expect("no CSINode");
    let owner = &csi_node.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Node", "csi-node")
    );
    assert_eq!(owner.uid, "node-uid-1");
    assert_eq!(csi_node.spec.drivers.len(), 1);
    let entry = &csi_node.spec.drivers[0];
    assert_eq!(entry.name, "good.csi.test");
    assert_eq!(entry.node_id, "good.csi.test-node-1");
    assert_eq!(
        entry.topology_keys.clone().unwrap(),
        ["topology.csi.test/zone"]
    );
    assert_eq!(entry.allocatable.as_ref().and_then(|a| a.count), Some(8));
    // The Node: the node ID annotation and the topology label.
    assert_eq!(
        annotation(&api).as_deref(),
        Some(r#"{"good.csi.test":"good.csi.test-node-1"}"#)
    );
    let labels = api.get_node("csi-node").unwrap().metadata.labels.unwrap();
    assert_eq!(labels["topology.csi.test/zone"], "zone-a");

    // The registrar goes away: the driver is forgotten everywhere but in the labels.
    good.stop();
    wait_for(Duration::from_secs(15), || {
        api.csi_node("csi-node")
            .is_some_and(|n| n.spec.drivers.is_empty())
            .then_some(())
    })
    .expect("the driver stayed in CSINode after its socket went");
    assert!(drivers.names().is_empty());
    assert_eq!(annotation(&api), None);

    // A refused driver is tried again later, and told again.
    wait_for(Duration::from_secs(20), || {
        (refused.notified().len() >= 2).then_some(())
    })
    .expect("a refused registration was not tried again");
    refused.stop();
    drop(stop_tx);
    watcher.into_handle().join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
