//! The `node-status` thread (upstream `syncNodeStatus`, `registerWithAPIServer`,
//! `tryUpdateNodeStatus`): registers the Node, then every `nodeStatusUpdateFrequency`
//! (10 s) computes the status with the setters and PATCHes `nodes/{name}/status` when
//! something other than heartbeat times changed, or when `nodeStatusReportFrequency`
//! (5 min) passed since the last report. The Lease, not this patch, is the node's
//! heartbeat.
//!
//! Inputs come from a [`NodeStatusSource`] the kubelet implements: one trait holding both
//! what this thread reads (runtime status, PLEG health, images, pressure) and where the
//! condition transitions it observes go as events, so the kubelet wires one object.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use k8s_openapi::api::core::v1::{Node, NodeStatus};
use serde_json::{Map, Value};

use super::machine::{go_arch, go_os};
use super::registration::{initial_node, register_node, NodeRegistration, LABEL_ARCH, LABEL_OS};
use super::{node_events, set_node_status, NodeEvent, NodeStatusInputs};
use crate::api::{strategic, ApiError, KubeClient};
use crate::clock::Clock;
use crate::util::backoff::Exponential;

/// Upstream default `nodeStatusUpdateFrequency`.
pub const DEFAULT_UPDATE_FREQUENCY: Duration = Duration::from_secs(10);
/// Upstream default `nodeStatusReportFrequency`.
pub const DEFAULT_REPORT_FREQUENCY: Duration = Duration::from_secs(300);
/// Upstream `nodeStatusUpdateRetry`: immediate attempts per sync.
pub const NODE_STATUS_UPDATE_RETRY: usize = 5;

/// Where node status inputs come from and node events go (implemented by the kubelet).
pub trait NodeStatusSource: Send + Sync {
    /// Fresh inputs for one status computation. `now` is overwritten from the updater's clock.
    fn node_status_inputs(&self) -> NodeStatusInputs;
    /// The Node as the API server has it, each time it is read or written (its UID owns
    /// mirror pods, its addresses are the pods' host IPs). Default: nothing.
    fn node_observed(&self, _node: &Node) {}
    /// Records an event for a condition transition (`NodeReady`...). Default: log it.
    fn record_node_event(&self, event: &NodeEvent) {
        log::info!(
            "Recording event message for node event=\"{}\": {}",
            event.reason,
            event.message
        );
    }
}

/// Settings of the updater.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatusConfig {
    /// How the Node is registered (its name is the node name).
    pub registration: NodeRegistration,
    /// `--register-node`; when off the Node must exist already.
    pub register_node: bool,
    /// `nodeStatusUpdateFrequency`: how often status is computed.
    pub update_frequency: Duration,
    /// `nodeStatusReportFrequency`: a status with only new heartbeats is patched this often.
    pub report_frequency: Duration,
}

impl NodeStatusConfig {
    /// Upstream defaults.
    pub fn new(registration: NodeRegistration) -> Self {
        NodeStatusConfig {
            registration,
            register_node: true,
            update_frequency: DEFAULT_UPDATE_FREQUENCY,
            report_frequency: DEFAULT_REPORT_FREQUENCY,
        }
    }
}

/// Registers the Node and keeps its status current. See the module docs.
pub struct NodeStatusUpdater {
    config: NodeStatusConfig,
    client: Arc<dyn KubeClient>,
    source: Arc<dyn NodeStatusSource>,
    clock: Arc<dyn Clock>,
    /// Set once registration succeeded (or is off); the loop backs off until then.
    registered: AtomicBool,
    /// Wakes the loop before the update period ends (a node condition changed and should be
    /// reported promptly).
    nudge: Option<Receiver<()>>,
    /// When status was last patched; the report period counts from here. Locked only to
    /// read or write the value, never across an API call.
    last_report: Mutex<Option<Instant>>,
}

impl NodeStatusUpdater {
    /// A new updater; nothing is sent until [`Self::sync_node_status`] or [`Self::run`].
    pub fn new(
        config: NodeStatusConfig,
        client: Arc<dyn KubeClient>,
        source: Arc<dyn NodeStatusSource>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let registered = AtomicBool::new(!config.register_node);
        NodeStatusUpdater {
            config,
            client,
            source,
            clock,
            registered,
            nudge: None,
            last_report: Mutex::new(None),
        }
    }

    /// Also syncs whenever `nudge` receives, not only every update period.
    pub fn with_nudge(mut self, nudge: Receiver<()>) -> Self {
        self.nudge = Some(nudge);
        self
    }

    fn node_name(&self) -> &str {
        &self.config.registration.node_name
    }

    /// Whether the Node is known to be registered.
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::SeqCst)
    }

    /// The `node-status` loop: [`Self::sync_node_status`] every update period; while the
    /// Node is not registered, retries after 200 ms doubling up to 7 s. Returns when `stop`
    /// receives or disconnects.
    pub fn run(self: Arc<Self>, stop: Receiver<()>) {
        log::info!("Starting node status updater node=\"{}\"", self.node_name());
        let mut backoff = retry_backoff();
        loop {
            let wait = match self.sync_node_status() {
                Ok(_) => {
                    backoff.reset();
                    self.config.update_frequency
                }
                Err(e) if !self.is_registered() => {
                    let wait = backoff.next_delay();
                    log::error!(
                        "Unable to register node with API server, will retry in {wait:?} node=\"{}\": {e}",
                        self.node_name()
                    );
                    wait
                }
                Err(e) => {
                    log::error!(
                        "Unable to update node status node=\"{}\": {e}",
                        self.node_name()
                    );
                    self.config.update_frequency
                }
            };
            let never = crossbeam_channel::never();
            let nudge = self.nudge.as_ref().unwrap_or(&never);
            crossbeam_channel::select! {
                recv(stop) -> _ => break,
                recv(nudge) -> msg => if msg.is_err() {
                    // The sender is gone: wait out the period on `stop` alone.
                    match stop.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                },
                default(wait) => {}
            }
        }
        log::info!("Node status updater stopped node=\"{}\"", self.node_name());
    }

    /// One sync: registers if needed (one attempt), then up to
    /// [`NODE_STATUS_UPDATE_RETRY`] attempts to update status. `Ok(true)` when status was
    /// patched, `Ok(false)` when nothing needed reporting (or the server already had it).
    pub fn sync_node_status(&self) -> Result<bool, ApiError> {
        if !self.is_registered() {
            self.register()?;
        }
        let mut attempt = 1;
        loop {
            match self.try_update_node_status() {
                Ok(patched) => return Ok(patched),
                Err(e) if attempt >= NODE_STATUS_UPDATE_RETRY => {
                    log::error!(
                        "Unable to update node status: update node status exceeds retry count"
                    );
                    return Err(e);
                }
                Err(e) => {
                    log::error!("Error updating node status, will retry attempt={attempt}: {e}");
                    attempt += 1;
                }
            }
        }
    }

    fn inputs(&self) -> NodeStatusInputs {
        let mut inputs = self.source.node_status_inputs();
        inputs.now = self.clock.wall();
        inputs
    }

    fn record(&self, before: &Node, after: &Node) {
        for event in node_events(self.node_name(), before, after) {
            self.source.record_node_event(&event);
        }
    }

    /// Builds the initial Node with its status and registers it. Events for the initial
    /// conditions are recorded once registration succeeded.
    fn register(&self) -> Result<(), ApiError> {
        let mut node = initial_node(&self.config.registration);
        set_node_status(&mut node, &self.inputs());
        log::info!("Attempting to register node node=\"{}\"", self.node_name());
        let registered = register_node(&*self.client, &node)?;
        self.source.node_observed(&registered);
        log::info!("Successfully registered node node=\"{}\"", self.node_name());
        self.registered.store(true, Ordering::SeqCst);
        self.record(&Node::default(), &node);
        Ok(())
    }

    /// GET the Node, apply the setters, PATCH when changed or the report is due.
    fn try_update_node_status(&self) -> Result<bool, ApiError> {
        let original = self.client.get_node(self.node_name())?;
        self.source.node_observed(&original);
        if let Some(patch) = os_arch_labels_patch(&original) {
            log::info!(
                "Restoring the os and arch labels node=\"{}\"",
                self.node_name()
            );
            self.client.patch_node(self.node_name(), &patch)?;
        }
        let mut node = original.clone();
        set_node_status(&mut node, &self.inputs());
        self.record(&original, &node);

        let changed = status_changed(original.status.as_ref(), node.status.as_ref());
        let now = self.clock.now();
        let last = self.last_report.lock().map(|l| *l).unwrap_or(None);
        let due =
            last.is_none_or(|t| now.saturating_duration_since(t) >= self.config.report_frequency);
        if !changed && !due {
            log::debug!(
                "Node status unchanged, not reporting node=\"{}\"",
                self.node_name()
            );
            return Ok(false);
        }
        let patch = match node_status_patch(&original, &node) {
            Ok(patch) => patch,
            Err(e) => {
                log::error!("Encoding node status: {e}");
                return Ok(false);
            }
        };
        // Nothing differs right after registration, whose create carried the status.
        let sent = match patch {
            Some(patch) => {
                let node = self.client.patch_node_status(self.node_name(), &patch)?;
                self.source.node_observed(&node);
                log::debug!(
                    "Patched node status node=\"{}\" changed={changed}",
                    self.node_name()
                );
                true
            }
            None => false,
        };
        if let Ok(mut l) = self.last_report.lock() {
            *l = Some(now);
        }
        Ok(sent)
    }
}

/// The strategic merge patch of `nodes/{name}/status` that turns the Node as read into the
/// Node with its new status (upstream `PatchNodeStatus`): conditions merge by `type`, so one
/// another component (node-problem-detector) wrote meanwhile survives. Addresses are declared
/// merged by `type` though a node may have several of one type, so when they changed they
/// are sent whole with a `replace` directive, as upstream does. `None` when nothing changed.
pub fn node_status_patch(
    original: &Node,
    updated: &Node,
) -> Result<Option<Value>, serde_json::Error> {
    let mut target = updated.clone();
    target.spec.clone_from(&original.spec);
    let addresses = |n: &Node| n.status.as_ref().and_then(|s| s.addresses.clone());
    let (old_addresses, new_addresses) = (addresses(original), addresses(updated));
    let replace_addresses = old_addresses.is_some() && old_addresses != new_addresses;
    if replace_addresses {
        if let Some(status) = target.status.as_mut() {
            status.addresses.clone_from(&old_addresses);
        }
    }
    let old = serde_json::to_value(original)?;
    let new = serde_json::to_value(&target)?;
    let mut patch = strategic::two_way(&old, &new, strategic::node_schema);
    if replace_addresses {
        let mut list = serde_json::to_value(new_addresses.unwrap_or_default())?;
        if let Value::Array(items) = &mut list {
            items.push(serde_json::json!({"$patch": "replace"}));
        }
        let patch = patch.get_or_insert_with(|| Value::Object(Map::new()));
        patch["status"]["addresses"] = list;
    }
    Ok(patch)
}

/// The merge patch of `nodes/{name}` restoring `kubernetes.io/os` and `kubernetes.io/arch`
/// when missing or wrong (upstream `updateNode`), `None` when they are right.
fn os_arch_labels_patch(node: &Node) -> Option<Value> {
    let labels = node.metadata.labels.as_ref();
    let fix: Map<String, Value> = [(LABEL_OS, go_os()), (LABEL_ARCH, go_arch())]
        .into_iter()
        .filter(|(key, value)| labels.and_then(|l| l.get(*key)).map(String::as_str) != Some(*value))
        .map(|(key, value)| (key.to_string(), Value::String(value.to_string())))
        .collect();
    (!fix.is_empty()).then(|| {
        let labels = Map::from_iter([("labels".to_string(), Value::Object(fix))]);
        Value::Object(Map::from_iter([(
            "metadata".to_string(),
            Value::Object(labels),
        )]))
    })
}

/// Whether status differs beyond condition heartbeats (upstream `nodeStatusHasChanged`).
fn status_changed(old: Option<&NodeStatus>, new: Option<&NodeStatus>) -> bool {
    let strip = |s: Option<&NodeStatus>| {
        s.cloned().map(|mut s| {
            for c in s.conditions.iter_mut().flatten() {
                c.last_heartbeat_time = None;
            }
            s
        })
    };
    strip(old) != strip(new)
}

/// Registration and lease retries back off as upstream's: 200 ms doubling up to 7 s.
pub(crate) fn retry_backoff() -> Exponential {
    Exponential::new(Duration::from_millis(200), Duration::from_secs(7))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Call, FakeClient};
    use crate::clock::FakeClock;
    use crate::nodestatus::registration::tests::api_error;
    use crate::nodestatus::{RuntimeCondition, RuntimeSync};
    use serde_json::json;

    /// A source whose inputs tests change, recording events.
    struct Source {
        inputs: Mutex<NodeStatusInputs>,
        events: Mutex<Vec<NodeEvent>>,
    }

    impl NodeStatusSource for Source {
        fn node_status_inputs(&self) -> NodeStatusInputs {
            self.inputs.lock().unwrap().clone()
        }
        fn record_node_event(&self, event: &NodeEvent) {
            self.events.lock().unwrap().push(event.clone());
        }
    }

    struct Harness {
        api: Arc<FakeClient>,
        source: Arc<Source>,
        clock: Arc<FakeClock>,
        updater: NodeStatusUpdater,
    }

    impl Harness {
        fn new() -> Self {
            let api = Arc::new(FakeClient::new());
            let mut inputs = NodeStatusInputs {
                hostname: "rust-node".into(),
                node_ips: vec!["192.0.2.2".parse().unwrap()],
                runtime_name: "containerd".into(),
                runtime_version: Some("v1.6.20".into()),
                runtime_sync: RuntimeSync::Recent,
                runtime_conditions: Some(vec![RuntimeCondition {
                    type_: "RuntimeReady".into(),
                    status: true,
                    reason: String::new(),
                    message: String::new(),
                }]),
                ..Default::default()
            };
            inputs.machine.num_cores = 2;
            inputs.machine.memory_capacity_bytes = 1 << 30;
            inputs.machine.ephemeral_storage_bytes = Some(10 << 30);
            inputs.machine.boot_id = "boot-1".into();
            let source = Arc::new(Source {
                inputs: Mutex::new(inputs),
                events: Mutex::new(Vec::new()),
            });
            let clock = Arc::new(FakeClock::new());
            let updater = NodeStatusUpdater::new(
                NodeStatusConfig::new(NodeRegistration::new("rust-node", "rust-node")),
                api.clone(),
                source.clone(),
                clock.clone(),
            );
            Harness {
                api,
                source,
                clock,
                updater,
            }
        }

        fn set(&self, f: impl FnOnce(&mut NodeStatusInputs)) {
            f(&mut self.source.inputs.lock().unwrap());
        }

        fn events(&self) -> Vec<&'static str> {
            let mut events = self.source.events.lock().unwrap();
            events.drain(..).map(|e| e.reason).collect()
        }

        fn status_patches(&self) -> Vec<Value> {
            self.api
                .calls()
                .into_iter()
                .filter_map(|c| match c {
                    Call::PatchNodeStatus { patch, .. } => Some(patch),
                    _ => None,
                })
                .collect()
        }

        fn ready(&self) -> (String, String) {
            let node = self.api.node("rust-node").unwrap();
            let c = node
                .status
                .unwrap()
                .conditions
                .unwrap()
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .unwrap();
            (c.status, c.message.unwrap_or_default())
        }
    }

    #[test]
    fn registers_then_reports_network_readiness() {
        let h = Harness::new();
        // The runtime has no NetworkReady condition yet: registered NotReady. The create
        // carried the status, so there is nothing to patch yet.
        assert!(!h.updater.sync_node_status().unwrap());
        assert!(h.updater.is_registered());
        assert_eq!(h.api.calls()[0], Call::CreateNode("rust-node".into()));
        assert!(
            h.status_patches().is_empty(),
            "the node is created with its status"
        );
        assert_eq!(
            h.ready(),
            (
                "False".to_string(),
                "container runtime network not ready: <nil>".to_string()
            )
        );
        assert_eq!(
            h.events(),
            [
                "NodeHasSufficientMemory",
                "NodeHasNoDiskPressure",
                "NodeHasSufficientPID"
            ]
        );

        // CNI comes up: Ready flips, one event, patched at once.
        h.clock.step(Duration::from_secs(10));
        h.set(|i| {
            i.runtime_conditions
                .as_mut()
                .unwrap()
                .push(RuntimeCondition {
                    type_: "NetworkReady".into(),
                    status: true,
                    reason: String::new(),
                    message: String::new(),
                })
        });
        assert!(h.updater.sync_node_status().unwrap());
        assert_eq!(h.ready().0, "True");
        assert_eq!(h.events(), ["NodeReady"]);
    }

    #[test]
    fn patches_only_on_change_or_after_the_report_period() {
        let h = Harness::new();
        h.updater.sync_node_status().unwrap();
        let first = h.status_patches().len();
        assert_eq!(first, 0, "the create carried the first status");

        // Heartbeat-only changes are held back...
        for _ in 0..5 {
            h.clock.step(Duration::from_secs(10));
            assert!(!h.updater.sync_node_status().unwrap());
        }
        assert_eq!(h.status_patches().len(), first);

        // ...until something changes: only the changed parts are sent.
        h.clock.step(Duration::from_secs(10));
        h.set(|i| i.max_pods = 50);
        assert!(h.updater.sync_node_status().unwrap());
        assert_eq!(h.status_patches().len(), 1);
        let patch = h.status_patches().pop().unwrap();
        assert_eq!(patch["status"]["capacity"], json!({"pods": "50"}));
        assert_eq!(patch["status"]["allocatable"], json!({"pods": "50"}));
        assert!(patch.get("metadata").is_none());
        assert!(patch["status"].get("nodeInfo").is_none());

        // ...or the report period passes: heartbeats go out.
        h.clock
            .step(DEFAULT_REPORT_FREQUENCY - Duration::from_secs(1));
        assert!(!h.updater.sync_node_status().unwrap());
        h.clock.step(Duration::from_secs(1));
        assert!(h.updater.sync_node_status().unwrap());
        let patch = h.status_patches().pop().unwrap();
        // A strategic merge patch: the conditions by type, with their order.
        assert_eq!(
            patch["status"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["$setElementOrder/conditions", "conditions"]
        );
        assert!(patch["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["type"].is_string() && c["lastHeartbeatTime"].is_string()));
        assert!(h.events().len() == 3, "only the initial events");
    }

    #[test]
    fn a_condition_written_by_another_component_survives_the_status_patch() {
        let h = Harness::new();
        h.updater.sync_node_status().unwrap();
        // node-problem-detector adds its condition between two kubelet updates.
        let npd = json!({"status": {"conditions": [{"type": "KernelDeadlock", "status": "False",
            "reason": "KernelHasNoDeadlock"}]}});
        h.api.patch_node_status("rust-node", &npd).unwrap();
        for _ in 0..2 {
            h.clock.step(Duration::from_secs(10));
            h.set(|i| i.max_pods += 1);
            assert!(h.updater.sync_node_status().unwrap());
        }
        let kinds: Vec<String> = h
            .api
            .node("rust-node")
            .unwrap()
            .status
            .unwrap()
            .conditions
            .unwrap()
            .into_iter()
            .map(|c| c.type_)
            .collect();
        assert!(kinds.contains(&"KernelDeadlock".to_string()), "{kinds:?}");
        assert!(kinds.contains(&"Ready".to_string()), "{kinds:?}");
    }

    #[test]
    fn changed_addresses_are_replaced_whole() {
        let address = |ip: &str| k8s_openapi::api::core::v1::NodeAddress {
            type_: "InternalIP".into(),
            address: ip.into(),
        };
        let old = Node {
            status: Some(NodeStatus {
                addresses: Some(vec![address("10.0.0.1"), address("10.0.0.2")]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut new = old.clone();
        new.status.as_mut().unwrap().addresses = Some(vec![address("10.0.0.3")]);
        let patch = node_status_patch(&old, &new).unwrap().unwrap();
        assert_eq!(
            patch["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "10.0.0.3"}, {"$patch": "replace"}])
        );
        let applied = crate::api::strategic::apply(
            &serde_json::to_value(&old).unwrap(),
            &patch,
            crate::api::strategic::node_schema,
        )
        .unwrap();
        assert_eq!(
            applied["status"]["addresses"],
            json!([{"type": "InternalIP", "address": "10.0.0.3"}])
        );
    }

    #[test]
    fn missing_os_label_is_restored() {
        let h = Harness::new();
        h.updater.sync_node_status().unwrap();
        h.api
            .patch_node(
                "rust-node",
                &json!({"metadata": {"labels": {"kubernetes.io/os": null}}}),
            )
            .unwrap();
        h.api.clear_calls();
        h.updater.sync_node_status().unwrap();
        let patch = h
            .api
            .calls()
            .into_iter()
            .find_map(|c| match c {
                Call::PatchNode { patch, .. } => Some(patch),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {"labels": {"kubernetes.io/os": "linux"}}})
        );
        let labels = h.api.node("rust-node").unwrap().metadata.labels.unwrap();
        assert_eq!(labels[LABEL_OS], "linux");
        assert!(h.status_patches().is_empty());
    }

    #[test]
    fn errors_are_retried_and_returned() {
        let h = Harness::new();
        // Registration fails: error out, not registered, nothing else tried.
        h.api
            .inject_error("create_node", api_error(503, "ServiceUnavailable"));
        assert!(h.updater.sync_node_status().is_err());
        assert!(!h.updater.is_registered());
        assert!(h.events().is_empty());
        // Registered; the first two status attempts fail, the third succeeds.
        h.api
            .inject_error("get_node", api_error(500, "InternalError"));
        h.api
            .inject_error("get_node", api_error(500, "InternalError"));
        assert!(h.updater.sync_node_status().is_ok());
        assert!(h.updater.is_registered());
        let gets = h
            .api
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::GetNode(_)))
            .count();
        assert_eq!(gets, 3);
        // A failed PATCH is retried with a fresh GET.
        h.set(|i| i.max_pods = 20);
        h.api
            .inject_error("patch_node_status", api_error(409, "Conflict"));
        assert!(h.updater.sync_node_status().unwrap());
        assert_eq!(h.status_patches().len(), 2);
        assert_eq!(
            h.api
                .node("rust-node")
                .unwrap()
                .status
                .unwrap()
                .capacity
                .unwrap()["pods"]
                .0,
            "20"
        );
        // Every attempt fails: the last error after five tries.
        for _ in 0..NODE_STATUS_UPDATE_RETRY {
            h.api
                .inject_error("get_node", api_error(500, "InternalError"));
        }
        h.clock.step(DEFAULT_REPORT_FREQUENCY);
        let before = h.api.calls().len();
        assert!(h.updater.sync_node_status().is_err());
        assert_eq!(h.api.calls().len() - before, NODE_STATUS_UPDATE_RETRY);
    }

    #[test]
    fn reboot_is_an_event() {
        let h = Harness::new();
        h.updater.sync_node_status().unwrap();
        h.events();
        h.set(|i| i.machine.boot_id = "boot-2".into());
        h.updater.sync_node_status().unwrap();
        assert_eq!(h.events(), ["NodeRebooted"]);
    }

    #[test]
    fn run_stops_on_signal() {
        let h = Harness::new();
        let updater = Arc::new(h.updater);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("node-status".into())
            .spawn({
                let updater = updater.clone();
                move || updater.run(rx)
            })
            .unwrap();
        tx.send(()).unwrap();
        thread.join().unwrap();
        assert!(updater.is_registered());
    }

    #[test]
    fn retries_back_off_from_200_ms_to_seven_seconds() {
        let mut b = retry_backoff();
        let waits: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 6400, 7000, 7000]);
    }
}
