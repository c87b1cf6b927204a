//! The node Lease, the node's heartbeat (upstream `pkg/kubelet/nodelease` over the
//! component-helpers lease controller), renewed by the `node-lease` thread.
//!
//! The Lease is `coordination.k8s.io/v1` `kube-node-lease/<node>`: `holderIdentity` is the
//! node name, `leaseDurationSeconds` 40, `renewTime` now (microseconds), owned by the Node
//! once its uid is known. Every `renewInterval` (a quarter of the duration, 10 s) the last
//! written Lease is PUT again with a new `renewTime`, without a GET; a conflict re-reads it,
//! a missing Lease is created. Failed syncs are retried after 200 ms doubling up to 7 s.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::to_micro_time;
use super::updater::retry_backoff;
use crate::api::{ApiError, KubeClient};
use crate::clock::Clock;

/// Namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// Upstream default `nodeLeaseDurationSeconds`.
pub const DEFAULT_LEASE_DURATION_SECONDS: i32 = 40;
/// Upstream `renewIntervalFraction`: renew after this share of the duration.
pub const RENEW_INTERVAL_FRACTION: f64 = 0.25;
/// Upstream `maxUpdateRetries`: immediate PUT attempts per sync.
pub const MAX_UPDATE_RETRIES: usize = 5;

/// Creates and renews this node's Lease. See the module docs.
pub struct NodeLeaseController {
    client: Arc<dyn KubeClient>,
    clock: Arc<dyn Clock>,
    node_name: String,
    lease_duration_seconds: i32,
    renew_interval: Duration,
    /// The Lease as last written, so a renewal is one PUT (upstream `latestLease`). Locked
    /// only to copy in or out, never across an API call.
    latest: Mutex<Option<Lease>>,
}

impl NodeLeaseController {
    /// A controller for `node_name`'s Lease of `lease_duration_seconds`.
    pub fn new(
        client: Arc<dyn KubeClient>,
        clock: Arc<dyn Clock>,
        node_name: impl Into<String>,
        lease_duration_seconds: i32,
    ) -> Self {
        let seconds = f64::from(lease_duration_seconds.max(1));
        NodeLeaseController {
            client,
            clock,
            node_name: node_name.into(),
            lease_duration_seconds,
            renew_interval: Duration::from_secs_f64(seconds * RENEW_INTERVAL_FRACTION),
            latest: Mutex::new(None),
        }
    }

    /// How often the Lease is renewed.
    pub fn renew_interval(&self) -> Duration {
        self.renew_interval
    }

    /// The `node-lease` loop: [`Self::sync`] every renew interval, sooner with back-off after
    /// a failure. Returns when `stop` receives or disconnects.
    pub fn run(self: Arc<Self>, stop: Receiver<()>) {
        log::info!("Starting node lease controller node=\"{}\"", self.node_name);
        let mut backoff = retry_backoff();
        loop {
            let wait = match self.sync() {
                Ok(()) => {
                    backoff.reset();
                    self.renew_interval
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    log::error!(
                        "Failed to renew lease, will retry in {wait:?} node=\"{}\": {e}",
                        self.node_name
                    );
                    wait
                }
            };
            match stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        log::info!("Node lease controller stopped node=\"{}\"", self.node_name);
    }

    /// One renewal (upstream `controller.sync`): PUT on top of the last written Lease; when
    /// that fails, GET (creating when missing) and PUT.
    pub fn sync(&self) -> Result<(), ApiError> {
        if let Some(latest) = self.latest() {
            match self.retry_update_lease(latest) {
                Ok(()) => return Ok(()),
                Err(e) => log::info!(
                    "Failed to update lease using latest lease, fallback to ensure lease: {e}"
                ),
            }
        }
        let (lease, created) = self.ensure_lease()?;
        self.set_latest(lease.clone());
        if created {
            return Ok(());
        }
        self.retry_update_lease(lease)
    }

    fn latest(&self) -> Option<Lease> {
        self.latest.lock().ok().and_then(|l| l.clone())
    }

    fn set_latest(&self, lease: Lease) {
        if let Ok(mut l) = self.latest.lock() {
            *l = Some(lease);
        }
    }

    /// GET the Lease, creating it when missing; `true` when this call created it.
    fn ensure_lease(&self) -> Result<(Lease, bool), ApiError> {
        match self.client.get_lease(NODE_LEASE_NAMESPACE, &self.node_name) {
            Ok(lease) => Ok((lease, false)),
            Err(e) if e.is_not_found() => {
                // Unlike a renewal, creation waits for the owner: a Lease without one would
                // outlive its Node.
                let owner = self.owner_reference()?;
                let created = self.client.create_lease(&self.new_lease(None, owner))?;
                log::info!("Created node lease node=\"{}\"", self.node_name);
                Ok((created, true))
            }
            Err(e) => Err(e),
        }
    }

    /// PUT `base` with a new renew time, up to [`MAX_UPDATE_RETRIES`] times; a conflict
    /// re-reads the Lease first, a missing Lease gives up at once (the caller creates it).
    fn retry_update_lease(&self, mut base: Lease) -> Result<(), ApiError> {
        let mut attempt = 1;
        loop {
            let owner = if has_owner(&base) {
                None
            } else {
                self.owner_reference_for_renewal()
            };
            match self
                .client
                .update_lease(&self.new_lease(Some(&base), owner))
            {
                Ok(updated) => {
                    self.set_latest(updated);
                    return Ok(());
                }
                Err(e) => {
                    log::error!("Failed to update lease node=\"{}\": {e}", self.node_name);
                    if attempt >= MAX_UPDATE_RETRIES || e.is_not_found() {
                        return Err(e);
                    }
                    if e.is_conflict() {
                        base = self.ensure_lease()?.0;
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// The owner reference to add to a renewed Lease that has none; a failure is logged and
    /// does not block the renewal (upstream retries it on the next one).
    fn owner_reference_for_renewal(&self) -> Option<OwnerReference> {
        self.owner_reference().unwrap_or_else(|e| {
            log::error!(
                "Failed to get node when trying to set owner ref to the node lease node=\"{}\": {e}",
                self.node_name
            );
            None
        })
    }

    /// The owner reference to this node, `None` when the Node has no uid.
    fn owner_reference(&self) -> Result<Option<OwnerReference>, ApiError> {
        let node = self.client.get_node(&self.node_name)?;
        Ok(node
            .metadata
            .uid
            .filter(|uid| !uid.is_empty())
            .map(|uid| OwnerReference {
                api_version: "v1".to_string(),
                kind: "Node".to_string(),
                name: self.node_name.clone(),
                uid,
                ..Default::default()
            }))
    }

    /// A copy of `base` (or a fresh Lease) renewed now, owned by `owner` when given.
    fn new_lease(&self, base: Option<&Lease>, owner: Option<OwnerReference>) -> Lease {
        let mut lease = base.cloned().unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.node_name.clone()),
                namespace: Some(NODE_LEASE_NAMESPACE.to_string()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.node_name.clone()),
                lease_duration_seconds: Some(self.lease_duration_seconds),
                ..Default::default()
            }),
        });
        lease.spec.get_or_insert_with(LeaseSpec::default).renew_time =
            Some(to_micro_time(self.clock.wall()));
        if let Some(owner) = owner {
            lease.metadata.owner_references = Some(vec![owner]);
        }
        lease
    }
}

fn has_owner(lease: &Lease) -> bool {
    lease
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| !o.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Call, FakeClient};
    use crate::clock::FakeClock;
    use crate::nodestatus::registration::tests::api_error;
    use crate::nodestatus::registration::{initial_node, NodeRegistration};
    use serde_json::json;

    fn setup() -> (Arc<FakeClient>, Arc<FakeClock>, NodeLeaseController) {
        let api = Arc::new(FakeClient::new());
        let clock = Arc::new(FakeClock::new());
        let c = NodeLeaseController::new(
            api.clone(),
            clock.clone(),
            "rust-node",
            DEFAULT_LEASE_DURATION_SECONDS,
        );
        (api, clock, c)
    }

    /// Registers the Node; its uid.
    fn register(api: &FakeClient) -> String {
        let node = NodeRegistration::new("rust-node", "rust-node");
        let node = api.insert_node(&initial_node(&node)).unwrap();
        node.metadata.uid.unwrap()
    }

    fn stored(api: &FakeClient) -> Lease {
        api.lease(NODE_LEASE_NAMESPACE, "rust-node").unwrap()
    }

    /// The verbs called since the last look.
    fn verbs(api: &FakeClient) -> Vec<&'static str> {
        let verbs = api
            .calls()
            .iter()
            .map(|c| match c {
                Call::GetNode(_) => "get_node",
                Call::GetLease { .. } => "get_lease",
                Call::CreateLease { .. } => "create_lease",
                Call::UpdateLease { .. } => "update_lease",
                _ => "other",
            })
            .collect();
        api.clear_calls();
        verbs
    }

    #[test]
    fn renew_interval_is_a_quarter_of_the_duration() {
        let (_, _, c) = setup();
        assert_eq!(c.renew_interval(), Duration::from_secs(10));
    }

    #[test]
    fn creates_the_lease_like_the_reference() {
        let (api, clock, c) = setup();
        let uid = register(&api);
        c.sync().unwrap();
        assert_eq!(verbs(&api), ["get_lease", "get_node", "create_lease"]);
        let mut json = serde_json::to_value(stored(&api)).unwrap();
        let renew = json["spec"]["renewTime"].as_str().unwrap().to_string();
        for volatile in ["resourceVersion", "uid"] {
            json["metadata"][volatile] = json!(null);
        }
        json["spec"]["renewTime"] = json!(null);
        assert_eq!(
            json,
            json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": "rust-node",
                    "namespace": "kube-node-lease",
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "rust-node", "uid": uid}],
                    "resourceVersion": null,
                    "uid": null,
                },
                "spec": {"holderIdentity": "rust-node", "leaseDurationSeconds": 40, "renewTime": null},
            })
        );
        // RFC 3339 with microseconds, like 2026-11-27T03:49:18.151422Z.
        assert_eq!(renew.len(), 27, "{renew}");
        assert_eq!(
            stored(&api).spec.unwrap().renew_time,
            Some(to_micro_time(clock.wall()))
        );
    }

    #[test]
    fn renews_with_one_put() {
        let (api, clock, c) = setup();
        register(&api);
        c.sync().unwrap();
        verbs(&api);
        for _ in 0..3 {
            clock.step(c.renew_interval());
            c.sync().unwrap();
            assert_eq!(verbs(&api), ["update_lease"]);
            let renew = stored(&api).spec.unwrap().renew_time;
            assert_eq!(renew, Some(to_micro_time(clock.wall())));
        }
    }

    #[test]
    fn adopts_an_existing_lease_and_sets_its_owner() {
        let (api, _, c) = setup();
        let uid = register(&api);
        api.create_lease(&c.new_lease(None, None)).unwrap();
        api.clear_calls();
        c.sync().unwrap();
        assert_eq!(verbs(&api), ["get_lease", "get_node", "update_lease"]);
        let owners = stored(&api).metadata.owner_references.unwrap();
        assert_eq!(owners[0].uid, uid);
        // Owned now: no more node GETs.
        c.sync().unwrap();
        assert_eq!(verbs(&api), ["update_lease"]);
    }

    #[test]
    fn conflict_rereads_and_retries() {
        let (api, _, c) = setup();
        register(&api);
        c.sync().unwrap();
        // Someone else wrote the Lease: our resourceVersion is stale.
        api.update_lease(&stored(&api)).unwrap();
        verbs(&api);
        c.sync().unwrap();
        assert_eq!(verbs(&api), ["update_lease", "get_lease", "update_lease"]);
    }

    #[test]
    fn missing_lease_stops_the_puts_and_falls_back() {
        let (api, _, c) = setup();
        register(&api);
        c.sync().unwrap();
        api.inject_error("update_lease", api_error(404, "NotFound"));
        verbs(&api);
        c.sync().unwrap();
        assert_eq!(verbs(&api), ["update_lease", "get_lease", "update_lease"]);
    }

    #[test]
    fn errors_are_returned_without_panics() {
        let (api, _, c) = setup();
        // No Node yet: the Lease is not created without its owner.
        assert!(c.sync().unwrap_err().is_not_found());
        assert_eq!(api.lease(NODE_LEASE_NAMESPACE, "rust-node"), None);
        register(&api);
        api.inject_error("get_lease", api_error(503, "ServiceUnavailable"));
        assert!(c.sync().unwrap_err().is_retriable());
        c.sync().unwrap();
        // Renewals keep failing: five PUTs, the fallback GET, five more PUTs, the error.
        for _ in 0..2 * MAX_UPDATE_RETRIES {
            api.inject_error("update_lease", api_error(500, "InternalError"));
        }
        verbs(&api);
        assert!(c.sync().is_err());
        let v = verbs(&api);
        let count = |verb| v.iter().filter(|v| **v == verb).count();
        assert_eq!(count("update_lease"), 2 * MAX_UPDATE_RETRIES);
        assert_eq!(count("get_lease"), 1);
        // The next sync succeeds.
        c.sync().unwrap();
    }

    #[test]
    fn run_renews_until_stopped() {
        let (api, _, c) = setup();
        register(&api);
        let c = Arc::new(c);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("node-lease".into())
            .spawn({
                let c = c.clone();
                move || c.run(rx)
            })
            .unwrap();
        tx.send(()).unwrap();
        thread.join().unwrap();
        assert!(api.lease(NODE_LEASE_NAMESPACE, "rust-node").is_some());
    }
}
