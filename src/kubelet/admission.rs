//! Pod admission before a pod starts (upstream `lifecycle/predicate.go` and the scheduler's
//! general predicates the kubelet re-runs): the pod's OS, node name, node selector and
//! required node affinity, host ports, and cpu, memory and pod count against allocatable.
//! A rejected pod is Failed with the reason upstream uses and `Pod was rejected: <why>`.
//! Pure functions over the pod, the node's labels and the active pods; the sync loop calls
//! them for each new pod.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::Pod;

use crate::util::node_selector::term_matches;

pub use crate::resources::pod_request_millis;

/// What the node can give pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocatable {
    /// CPU in millicores.
    pub cpu_millis: i128,
    /// Memory in bytes.
    pub memory_bytes: i128,
    /// `maxPods`.
    pub pods: u32,
}

/// Why a pod was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `OutOfcpu`, `OutOfmemory`, `OutOfpods`, `NodeAffinity`, `NodePorts`, ...
    pub reason: String,
    /// The message after `Pod was rejected: `.
    pub message: String,
}

impl Rejection {
    fn new(reason: &str, message: impl Into<String>) -> Self {
        Rejection {
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// `nodeSelector` and required node affinity against the node's labels.
pub fn node_affinity_matches(pod: &Pod, labels: &BTreeMap<String, String>, node: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affinity_ok = required.is_none_or(|sel| {
        sel.node_selector_terms
            .iter()
            .any(|t| term_matches(t, labels, node))
    });
    selector_ok && affinity_ok
}

/// `(hostIP, protocol, hostPort)` of every container port that binds the host.
fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    pod.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|n| *n > 0)?;
            let ip = p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            Some((ip, p.protocol.clone().unwrap_or_else(|| "TCP".into()), port))
        })
        .collect()
}

fn ports_conflict(a: &(String, String, i32), b: &(String, String, i32)) -> bool {
    let wildcard = |ip: &str| ip == "0.0.0.0" || ip == "::";
    a.2 == b.2 && a.1 == b.1 && (a.0 == b.0 || wildcard(&a.0) || wildcard(&b.0))
}

/// Runs the admission checks for `pod` against the node and the pods already admitted and
/// still running.
pub fn admit(
    pod: &Pod,
    active: &[&Pod],
    allocatable: &Allocatable,
    node_labels: &BTreeMap<String, String>,
    node_name: &str,
) -> Result<(), Rejection> {
    let spec = pod.spec.as_ref();
    if let Some(os) = spec.and_then(|s| s.os.as_ref()) {
        if os.name != std::env::consts::OS {
            return Err(Rejection::new(
                "PodOSNotSupported",
                "Failed to admit pod as the OS field doesn't match node OS",
            ));
        }
    }
    if let Some(name) = spec
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
    {
        if name != node_name {
            return Err(Rejection::new(
                "NodeName",
                "Predicate NodeName failed: node(s) didn't match the requested node name",
            ));
        }
    }
    let used_pods = u32::try_from(active.len()).unwrap_or(u32::MAX);
    if used_pods >= allocatable.pods {
        return Err(Rejection::new(
            "OutOfpods",
            format!(
                "Node didn't have enough resource: pods, requested: 1, used: {used_pods}, capacity: {}",
                allocatable.pods
            ),
        ));
    }
    for (resource, capacity, scale) in [
        ("cpu", allocatable.cpu_millis, 1),
        ("memory", allocatable.memory_bytes, 1000),
    ] {
        // CPU compares in millicores, memory in bytes, as upstream prints them.
        let requested = pod_request_millis(pod, resource) / scale;
        if requested == 0 {
            continue;
        }
        let used: i128 = active
            .iter()
            .map(|p| pod_request_millis(p, resource) / scale)
            .sum();
        if requested + used > capacity {
            return Err(Rejection::new(
                &format!("OutOf{resource}"),
                format!(
                    "Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
                ),
            ));
        }
    }
    let wanted = host_ports(pod);
    if !wanted.is_empty() {
        let taken: HashSet<(String, String, i32)> =
            active.iter().flat_map(|p| host_ports(p)).collect();
        if wanted
            .iter()
            .any(|w| taken.iter().any(|t| ports_conflict(w, t)))
        {
            return Err(Rejection::new(
                "NodePorts",
                "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports",
            ));
        }
    }
    if !node_affinity_matches(pod, node_labels, node_name) {
        return Err(Rejection::new(
            "NodeAffinity",
            "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec}))
            .unwrap()
    }

    fn alloc() -> Allocatable {
        Allocatable {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            pods: 3,
        }
    }

    fn labels() -> BTreeMap<String, String> {
        [
            ("kubernetes.io/hostname", "node1"),
            ("kubernetes.io/os", "linux"),
            ("disk", "ssd"),
            ("cores", "8"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn with_requests(cpu: &str, memory: &str) -> Pod {
        pod(
            serde_json::json!({"containers": [{"name": "a", "resources": {
            "requests": {"cpu": cpu, "memory": memory}}}]}),
        )
    }

    #[test]
    fn resources_are_checked_against_allocatable_and_the_active_pods() {
        let used = with_requests("1500m", "100Mi");
        assert!(admit(
            &with_requests("500m", "100Mi"),
            &[&used],
            &alloc(),
            &labels(),
            "node1"
        )
        .is_ok());
        let err = admit(
            &with_requests("600m", "100Mi"),
            &[&used],
            &alloc(),
            &labels(),
            "node1",
        )
        .unwrap_err();
        assert_eq!(err.reason, "OutOfcpu");
        assert_eq!(
            err.message,
            "Node didn't have enough resource: cpu, requested: 600, used: 1500, capacity: 2000"
        );
        let err = admit(
            &with_requests("1m", "2Gi"),
            &[],
            &alloc(),
            &labels(),
            "node1",
        )
        .unwrap_err();
        assert_eq!(err.reason, "OutOfmemory");
        let full = [&used, &used, &used];
        let err = admit(
            &with_requests("0", "0"),
            &full,
            &alloc(),
            &labels(),
            "node1",
        )
        .unwrap_err();
        assert_eq!(err.reason, "OutOfpods");
    }

    #[test]
    fn effective_request_counts_init_containers_sidecars_and_overhead() {
        let p = pod(serde_json::json!({
            "overhead": {"cpu": "100m"},
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m"}}},
                {"name": "big", "resources": {"requests": {"cpu": "1"}}}
            ],
            "containers": [{"name": "a", "resources": {"limits": {"cpu": "300m"}}}]
        }));
        // max(300 + 200, 200 + 1000) + 100
        assert_eq!(pod_request_millis(&p, "cpu"), 1300);
    }

    #[test]
    fn selectors_affinity_ports_and_os() {
        let selector = pod(serde_json::json!({"nodeSelector": {"disk": "hdd"}, "containers": []}));
        let err = admit(&selector, &[], &alloc(), &labels(), "node1").unwrap_err();
        assert_eq!(err.reason, "NodeAffinity");
        let affinity = |op: &str, values: serde_json::Value| {
            pod(
                serde_json::json!({"containers": [], "affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "nope", "operator": "Exists"}]},
                    {"matchExpressions": [{"key": "cores", "operator": op, "values": values}]}
                ]}}}}),
            )
        };
        assert!(admit(
            &affinity("Gt", serde_json::json!(["4"])),
            &[],
            &alloc(),
            &labels(),
            "node1"
        )
        .is_ok());
        assert!(admit(
            &affinity("Lt", serde_json::json!(["4"])),
            &[],
            &alloc(),
            &labels(),
            "node1"
        )
        .is_err());
        assert!(admit(
            &affinity("In", serde_json::json!(["8", "16"])),
            &[],
            &alloc(),
            &labels(),
            "node1"
        )
        .is_ok());
        assert!(admit(
            &affinity("NotIn", serde_json::json!(["8"])),
            &[],
            &alloc(),
            &labels(),
            "node1"
        )
        .is_err());

        let port = |ip: &str| {
            pod(serde_json::json!({"containers": [{"name": "a", "ports": [
                {"containerPort": 80, "hostPort": 8080, "hostIP": ip}]}]}))
        };
        let taken = port("");
        let err = admit(&port("127.0.0.1"), &[&taken], &alloc(), &labels(), "node1").unwrap_err();
        assert_eq!(err.reason, "NodePorts");
        let udp = pod(serde_json::json!({"containers": [{"name": "a", "ports": [
            {"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]}]}));
        assert!(admit(&udp, &[&taken], &alloc(), &labels(), "node1").is_ok());

        let windows = pod(serde_json::json!({"os": {"name": "windows"}, "containers": []}));
        assert_eq!(
            admit(&windows, &[], &alloc(), &labels(), "node1")
                .unwrap_err()
                .reason,
            "PodOSNotSupported"
        );
        let elsewhere = pod(serde_json::json!({"nodeName": "node2", "containers": []}));
        assert_eq!(
            admit(&elsewhere, &[], &alloc(), &labels(), "node1")
                .unwrap_err()
                .reason,
            "NodeName"
        );
    }
}
