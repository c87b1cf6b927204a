//! The node's CSI records (upstream `nodeinfomanager`): each registered driver in the
//! node's `CSINode` (name, node ID, sorted topology keys, volume limit), in the
//! `csi.volume.kubernetes.io/nodeid` Node annotation (a JSON map of driver to node ID), and
//! its topology segments as Node labels. Unregistering removes the CSINode entry and the
//! annotation key; labels stay, as upstream leaves them.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::{CSINode, CSINodeDriver, CSINodeSpec, VolumeNodeResources};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::json;

use super::NODE_ID_ANNOTATION;
use crate::api::{ApiError, KubeClient};

/// Writes tried again after a 409 Conflict before giving up.
const CONFLICT_RETRIES: usize = 5;

/// What a driver reported about this node (`NodeGetInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverNodeInfo {
    /// The driver's name.
    pub driver: String,
    /// This node's ID in the driver.
    pub node_id: String,
    /// Volumes the driver can publish on this node; 0 is no limit.
    pub max_volumes: i64,
    /// Topology segments (label key to value).
    pub topology: BTreeMap<String, String>,
}

/// Keeps the node's CSINode and annotations in step with the registered drivers.
pub struct NodeInfoManager {
    api: Arc<dyn KubeClient>,
    node_name: String,
}

impl NodeInfoManager {
    /// A manager for node `node_name`.
    pub fn new(api: Arc<dyn KubeClient>, node_name: &str) -> Self {
        NodeInfoManager {
            api,
            node_name: node_name.to_string(),
        }
    }

    /// Creates the node's CSINode (without drivers) if it does not exist, owned by the Node
    /// (upstream does this once the Node is registered).
    pub fn init(&self) -> Result<(), String> {
        let node = self
            .api
            .get_node(&self.node_name)
            .map_err(|e| format!("error getting node {:?}: {e}", self.node_name))?;
        self.csi_node_or_create(&node).map(drop)
    }

    /// Records `info` for its driver: Node annotation and labels first, then CSINode.
    pub fn install(&self, info: &DriverNodeInfo) -> Result<(), String> {
        let node = self.update_node(|node| {
            let annotation = annotation_with(node, &info.driver, Some(&info.node_id))?;
            let labels = topology_labels(node, &info.topology)?;
            Ok((annotation, labels))
        })?;
        self.update_csi_node(&node, |spec| install_driver(spec, info))
            .map_err(|e| format!("error updating CSINode object with CSI driver node info: {e}"))
    }

    /// Forgets `driver`: its CSINode entry and its annotation key.
    pub fn uninstall(&self, driver: &str) -> Result<(), String> {
        let node = self
            .api
            .get_node(&self.node_name)
            .map_err(|e| e.to_string())?;
        self.update_csi_node(&node, |spec| {
            let before = spec.drivers.len();
            spec.drivers.retain(|d| d.name != driver);
            spec.drivers.len() != before
        })
        .map_err(|e| format!("error uninstalling CSI driver from CSINode object: {e}"))?;
        self.update_node(|node| Ok((annotation_with(node, driver, None)?, BTreeMap::new())))
            .map(drop)
    }

    /// Patches the Node's annotation and labels with what `change` computes from the
    /// current Node (`None` annotation: unchanged); a patch is sent only when something
    /// changes.
    fn update_node(
        &self,
        change: impl Fn(&Node) -> Result<(AnnotationChange, BTreeMap<String, String>), String>,
    ) -> Result<Node, String> {
        let node = self
            .api
            .get_node(&self.node_name)
            .map_err(|e| format!("error getting node {:?}: {e}", self.node_name))?;
        let (annotation, labels) = change(&node)?;
        let mut metadata = serde_json::Map::new();
        match annotation {
            AnnotationChange::Keep => {}
            AnnotationChange::Set(value) => {
                metadata.insert("annotations".into(), json!({ NODE_ID_ANNOTATION: value }));
            }
            AnnotationChange::Remove => {
                metadata.insert("annotations".into(), json!({ NODE_ID_ANNOTATION: null }));
            }
        }
        if !labels.is_empty() {
            metadata.insert("labels".into(), json!(labels));
        }
        if metadata.is_empty() {
            return Ok(node);
        }
        self.api
            .patch_node(&self.node_name, &json!({ "metadata": metadata }))
            .map_err(|e| format!("error updating node {:?}: {e}", self.node_name))
    }

    fn csi_node_or_create(&self, node: &Node) -> Result<CSINode, String> {
        match self.api.get_csi_node(&self.node_name) {
            Ok(csi_node) => return Ok(csi_node),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.to_string()),
        }
        let csi_node = CSINode {
            metadata: ObjectMeta {
                name: Some(self.node_name.clone()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: self.node_name.clone(),
                    uid: node.metadata.uid.clone().unwrap_or_default(),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            spec: CSINodeSpec {
                drivers: Vec::new(),
            },
        };
        match self.api.create_csi_node(&csi_node) {
            Ok(created) => Ok(created),
            Err(e) if e.is_already_exists() => self
                .api
                .get_csi_node(&self.node_name)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Reads (or creates) the CSINode, applies `change` to its spec and writes it back when
    /// `change` says it changed, again on a 409 Conflict.
    fn update_csi_node(
        &self,
        node: &Node,
        change: impl Fn(&mut CSINodeSpec) -> bool,
    ) -> Result<(), String> {
        let mut last: Option<ApiError> = None;
        for _ in 0..CONFLICT_RETRIES {
            let mut csi_node = self.csi_node_or_create(node)?;
            if !change(&mut csi_node.spec) {
                return Ok(());
            }
            match self.api.update_csi_node(&csi_node) {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => last = Some(e),
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(last.map(|e| e.to_string()).unwrap_or_default())
    }
}

/// How the node ID annotation changes.
#[derive(Debug, PartialEq, Eq)]
enum AnnotationChange {
    Keep,
    Set(String),
    Remove,
}

/// The node ID annotation with `driver` set to `node_id` (or removed when `None`).
fn annotation_with(
    node: &Node,
    driver: &str,
    node_id: Option<&str>,
) -> Result<AnnotationChange, String> {
    let current = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NODE_ID_ANNOTATION));
    let mut ids: BTreeMap<String, String> = match current {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            format!("failed to parse node annotation {NODE_ID_ANNOTATION} {text:?}: {e}")
        })?,
        None => BTreeMap::new(),
    };
    let changed = match node_id {
        Some(id) => ids.insert(driver.to_string(), id.to_string()).as_deref() != Some(id),
        None => ids.remove(driver).is_some(),
    };
    Ok(match (changed, ids.is_empty()) {
        (false, _) => AnnotationChange::Keep,
        (true, true) => AnnotationChange::Remove,
        (true, false) => AnnotationChange::Set(serde_json::to_string(&ids).unwrap_or_default()),
    })
}

/// The topology labels to add: segments the Node lacks. A segment whose key the Node has
/// with another value is an error, as upstream.
fn topology_labels(
    node: &Node,
    topology: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let mut add = BTreeMap::new();
    for (key, value) in topology {
        match labels.get(key) {
            Some(existing) if existing == value => {}
            Some(existing) => {
                return Err(format!(
                    "detected topology value collision: driver reported {key:?}:{value:?} but existing label is {key:?}:{existing:?}"
                ))
            }
            None => {
                add.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(add)
}

/// Puts `info` into the CSINode spec; false when it is there already as it is.
fn install_driver(spec: &mut CSINodeSpec, info: &DriverNodeInfo) -> bool {
    let topology_keys: Vec<String> = info.topology.keys().cloned().collect();
    let allocatable = (info.max_volumes > 0).then(|| VolumeNodeResources {
        count: Some(i32::try_from(info.max_volumes).unwrap_or(i32::MAX)),
    });
    let wanted = CSINodeDriver {
        name: info.driver.clone(),
        node_id: info.node_id.clone(),
        topology_keys: (!topology_keys.is_empty()).then_some(topology_keys),
        allocatable,
    };
    if spec.drivers.contains(&wanted) {
        return false;
    }
    spec.drivers.retain(|d| d.name != info.driver);
    spec.drivers.push(wanted);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeClient;

    fn node(labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                uid: Some("node-uid".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn info(driver: &str, id: &str, max: i64) -> DriverNodeInfo {
        DriverNodeInfo {
            driver: driver.into(),
            node_id: id.into(),
            max_volumes: max,
            topology: [("topology.example.com/zone".to_string(), "z1".to_string())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn install_and_uninstall_keep_csinode_annotation_and_labels_in_step() {
        let api = Arc::new(FakeClient::new());
        api.insert_node(&node(&[])).unwrap();
        let manager = NodeInfoManager::new(api.clone(), "n1");
        manager.init().unwrap();
        let created = api.csi_node("n1").unwrap();
        assert!(created.spec.drivers.is_empty());
        let owner = &created.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Node", "node-uid")
        );

        manager.install(&info("b.example.com", "id-b", 0)).unwrap();
        manager.install(&info("a.example.com", "id-a", 16)).unwrap();
        let csi_node = api.csi_node("n1").unwrap();
        let names: Vec<&str> = csi_node
            .spec
            .drivers
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(names, ["b.example.com", "a.example.com"]);
        let a = &csi_node.spec.drivers[1];
        assert_eq!(a.node_id, "id-a");
        assert_eq!(a.allocatable.as_ref().and_then(|r| r.count), Some(16));
        assert!(csi_node.spec.drivers[0].allocatable.is_none());
        assert_eq!(
            a.topology_keys.as_deref(),
            Some(&["topology.example.com/zone".to_string()][..])
        );
        let stored = api.get_node("n1").unwrap();
        let annotations = stored.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations[NODE_ID_ANNOTATION],
            r#"{"a.example.com":"id-a","b.example.com":"id-b"}"#
        );
        assert_eq!(
            stored.metadata.labels.unwrap_or_default()["topology.example.com/zone"],
            "z1"
        );

        // The same registration again writes nothing.
        api.clear_calls();
        manager.install(&info("a.example.com", "id-a", 16)).unwrap();
        assert!(!api.calls().iter().any(|c| matches!(
            c,
            crate::api::fake::Call::UpdateCsiNode(_) | crate::api::fake::Call::PatchNode { .. }
        )));

        manager.uninstall("b.example.com").unwrap();
        manager.uninstall("a.example.com").unwrap();
        assert!(api.csi_node("n1").unwrap().spec.drivers.is_empty());
        let stored = api.get_node("n1").unwrap();
        assert!(!stored
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(NODE_ID_ANNOTATION));
    }

    #[test]
    fn a_topology_collision_is_refused() {
        let api = Arc::new(FakeClient::new());
        api.insert_node(&node(&[("topology.example.com/zone", "z9")]))
            .unwrap();
        let manager = NodeInfoManager::new(api.clone(), "n1");
        let err = manager
            .install(&info("a.example.com", "id-a", 0))
            .unwrap_err();
        assert!(err.contains("detected topology value collision"), "{err}");
        assert!(api.csi_node("n1").is_none());
    }
}
