//! The one pod watch of all hollow nodes, routed to each node's mux by `spec.nodeName`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use k8s_openapi::api::core::v1::Pod;

use super::{lock, wake_loop, Shared, Task};
use crate::config::apiserver::PodUpdateSink;
use crate::config::update::{PodOperation, PodUpdate, API_SOURCE};
use std::sync::atomic::Ordering;

/// Routes the one pod watch to the nodes' muxes by `spec.nodeName`, as each node's own
/// field-selected watch would have: a pod newly bound to a node is an addition there, a pod
/// that leaves a node a removal.
pub(super) struct Demux {
    shared: Arc<Shared>,
    wake: Sender<Task>,
    by_name: HashMap<String, usize>,
    /// Which node each pod (by UID) was last given to.
    placed: Mutex<HashMap<String, usize>>,
}

impl Demux {
    pub(super) fn new(shared: Arc<Shared>, wake: Sender<Task>) -> Demux {
        let by_name = shared
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        Demux {
            shared,
            wake,
            by_name,
            placed: Mutex::new(HashMap::new()),
        }
    }

    fn send(&self, index: usize, op: PodOperation, pods: Vec<Arc<Pod>>) {
        let node = &self.shared.nodes[index];
        let update = PodUpdate {
            pods,
            op,
            source: API_SOURCE.to_string(),
        };
        let outs = lock(&node.mux).merge(API_SOURCE, update);
        let any = !outs.is_empty();
        for out in outs {
            let _ = node.updates_tx.send(out);
        }
        if any {
            wake_loop(node, index, &self.wake);
        }
    }

    fn node_of(&self, pod: &Pod) -> Option<usize> {
        let name = pod.spec.as_ref()?.node_name.as_deref()?;
        self.by_name.get(name).copied()
    }
}

impl PodUpdateSink for Demux {
    fn deliver(&self, update: PodUpdate, _stop: &Receiver<()>) -> bool {
        let uid_of = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
        let mut placed = lock(&self.placed);
        match update.op {
            PodOperation::Set => {
                let mut per_node: Vec<Vec<Arc<Pod>>> = vec![Vec::new(); self.shared.nodes.len()];
                placed.clear();
                for pod in update.pods {
                    if let Some(i) = self.node_of(&pod) {
                        placed.insert(uid_of(&pod), i);
                        per_node[i].push(pod);
                    }
                }
                drop(placed);
                for (i, pods) in per_node.into_iter().enumerate() {
                    self.send(i, PodOperation::Set, pods);
                }
            }
            PodOperation::Add | PodOperation::Update => {
                for pod in update.pods {
                    let uid = uid_of(&pod);
                    let before = placed.get(&uid).copied();
                    let now = self.node_of(&pod);
                    if let (Some(old), true) = (before, before != now) {
                        self.send(old, PodOperation::Remove, vec![Arc::clone(&pod)]);
                        placed.remove(&uid);
                    }
                    if let Some(i) = now {
                        let op = if before == now {
                            update.op
                        } else {
                            PodOperation::Add
                        };
                        placed.insert(uid, i);
                        self.send(i, op, vec![pod]);
                    }
                }
            }
            PodOperation::Remove | PodOperation::Delete => {
                for pod in update.pods {
                    if let Some(i) = placed.remove(&uid_of(&pod)).or_else(|| self.node_of(&pod)) {
                        self.send(i, update.op, vec![pod]);
                    }
                }
            }
            PodOperation::Reconcile => {
                for pod in update.pods {
                    if let Some(i) = placed.get(&uid_of(&pod)).copied() {
                        self.send(i, PodOperation::Reconcile, vec![pod]);
                    }
                }
            }
        }
        !self.shared.stopping.load(Ordering::SeqCst)
    }
}
