//! The node conditions: `MemoryPressure`, `DiskPressure` and `PIDPressure` from the eviction
//! manager's signals, and `Ready` with upstream's reasons for holding it back.

use k8s_openapi::api::core::v1::{Node, NodeCondition};

use super::status_mut;
use crate::nodestatus::{to_time, NodeStatusInputs, RuntimeSync};

/// Resources whose absence from capacity keeps the node NotReady (upstream, with local
/// storage capacity isolation on).
const REQUIRED_CAPACITIES: [&str; 4] = ["cpu", "memory", "pods", "ephemeral-storage"];

/// Reason and message of a pressure condition in one state.
type Texts = (&'static str, &'static str);

/// `MemoryPressure` (upstream `MemoryPressureCondition`).
pub fn memory_pressure(node: &mut Node, inputs: &NodeStatusInputs) {
    pressure_condition(
        node,
        inputs,
        "MemoryPressure",
        inputs.memory_pressure,
        (
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
        ),
        (
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
    );
}

/// `DiskPressure` (upstream `DiskPressureCondition`).
pub fn disk_pressure(node: &mut Node, inputs: &NodeStatusInputs) {
    pressure_condition(
        node,
        inputs,
        "DiskPressure",
        inputs.disk_pressure,
        ("KubeletHasDiskPressure", "kubelet has disk pressure"),
        ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    );
}

/// `PIDPressure` (upstream `PIDPressureCondition`).
pub fn pid_pressure(node: &mut Node, inputs: &NodeStatusInputs) {
    pressure_condition(
        node,
        inputs,
        "PIDPressure",
        inputs.pid_pressure,
        (
            "KubeletHasInsufficientPID",
            "kubelet has insufficient PID available",
        ),
        (
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    );
}

/// Heartbeat always; status, reason, message and transition time only when the status
/// changes (a new condition starts as `Unknown`, so it always "changes").
fn pressure_condition(
    node: &mut Node,
    inputs: &NodeStatusInputs,
    type_: &str,
    under_pressure: bool,
    when_true: Texts,
    when_false: Texts,
) {
    let now = to_time(inputs.now);
    let conditions = status_mut(node).conditions.get_or_insert_with(Vec::new);
    let index = match conditions.iter().position(|c| c.type_ == type_) {
        Some(i) => i,
        None => {
            conditions.push(NodeCondition {
                type_: type_.to_string(),
                status: "Unknown".to_string(),
                ..Default::default()
            });
            conditions.len() - 1
        }
    };
    let cond = &mut conditions[index];
    cond.last_heartbeat_time = Some(now.clone());
    let (status, (reason, message)) = if under_pressure {
        ("True", when_true)
    } else {
        ("False", when_false)
    };
    if cond.status != status {
        cond.status = status.to_string();
        cond.reason = Some(reason.to_string());
        cond.message = Some(message.to_string());
        cond.last_transition_time = Some(now);
    }
}

/// `Ready` (upstream `ReadyCondition`): `True`/`KubeletReady` when [`ready_errors`] finds
/// nothing, else `False`/`KubeletNotReady` with the errors aggregated as upstream prints
/// them. The transition time is kept while the status holds.
pub fn ready_condition(node: &mut Node, inputs: &NodeStatusInputs) {
    let now = to_time(inputs.now);
    let errors = ready_errors(node, inputs);
    let (status, reason, message) = match aggregate(&errors) {
        None => (
            "True",
            "KubeletReady",
            "kubelet is posting ready status".to_string(),
        ),
        Some(message) => ("False", "KubeletNotReady", message),
    };
    let mut cond = NodeCondition {
        type_: "Ready".to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now),
    };
    let conditions = status_mut(node).conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(old) => {
            if old.status == cond.status {
                cond.last_transition_time = old.last_transition_time.take();
            }
            *old = cond;
        }
        None => conditions.push(cond),
    }
}

/// Why the node is not ready, in upstream's order: runtime errors (status check, PLEG,
/// RuntimeReady), network errors, other subsystems' errors, missing capacity.
pub fn ready_errors(node: &Node, inputs: &NodeStatusInputs) -> Vec<String> {
    let mut errors = Vec::new();
    match inputs.runtime_sync {
        RuntimeSync::NotYet => {
            errors.push("container runtime status check may not have completed yet".to_string())
        }
        RuntimeSync::Stale => errors.push("container runtime is down".to_string()),
        RuntimeSync::Recent => {}
    }
    if !inputs.pleg_healthy {
        errors.push(format!("PLEG is not healthy: {}", inputs.pleg_message));
    }
    let condition = |type_: &str| -> Result<(), String> {
        let conds = inputs.runtime_conditions.as_deref().unwrap_or_default();
        match conds.iter().find(|c| c.type_ == type_) {
            Some(c) if c.status => Ok(()),
            Some(c) => Err(c.to_string()),
            None => Err("<nil>".to_string()),
        }
    };
    match &inputs.runtime_conditions {
        None => {}
        Some(_) => {
            if let Err(c) = condition("RuntimeReady") {
                errors.push(format!("container runtime not ready: {c}"));
            }
        }
    }
    match &inputs.runtime_conditions {
        None => errors.push("network state unknown".to_string()),
        Some(_) => {
            if let Err(c) = condition("NetworkReady") {
                errors.push(format!("container runtime network not ready: {c}"));
            }
        }
    }
    errors.extend(inputs.other_errors.iter().cloned());
    let capacity = node.status.as_ref().and_then(|s| s.capacity.as_ref());
    let missing: Vec<&str> = REQUIRED_CAPACITIES
        .iter()
        .copied()
        .filter(|r| !capacity.is_some_and(|c| c.contains_key(*r)))
        .collect();
    if !missing.is_empty() {
        errors.push(format!(
            "missing node capacity for resources: {}",
            missing.join(", ")
        ));
    }
    errors
}

/// Upstream `utilerrors.NewAggregate(errs).Error()`: nothing → `None`, one distinct message
/// as is, several as `[a, b]`.
pub fn aggregate(errors: &[String]) -> Option<String> {
    let mut distinct: Vec<&str> = Vec::new();
    for e in errors {
        if !distinct.contains(&e.as_str()) {
            distinct.push(e);
        }
    }
    match distinct.len() {
        0 => None,
        1 => Some(distinct[0].to_string()),
        _ => Some(format!("[{}]", distinct.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodestatus::setters::fixtures::{apply, at, cond, reference_inputs, status};
    use crate::nodestatus::setters::machine_info;

    fn find<'a>(node: &'a Node, type_: &str) -> &'a NodeCondition {
        status(node)
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    #[test]
    fn pressure_conditions() {
        type PressureCase = (
            fn(&mut Node, &NodeStatusInputs),
            &'static str,
            fn(&mut NodeStatusInputs),
            &'static str,
            &'static str,
            &'static str,
            &'static str,
        );
        let cases: [PressureCase; 3] = [
            (
                memory_pressure,
                "MemoryPressure",
                |i| i.memory_pressure = true,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (
                disk_pressure,
                "DiskPressure",
                |i| i.disk_pressure = true,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
            ),
            (
                pid_pressure,
                "PIDPressure",
                |i| i.pid_pressure = true,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
        ];
        for (setter, type_, press, ok_reason, ok_msg, bad_reason, bad_msg) in cases {
            let mut inputs = reference_inputs();
            let mut node = apply(setter, &inputs);
            let c = find(&node, type_).clone();
            assert_eq!(
                (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
                ("False", Some(ok_reason), Some(ok_msg))
            );
            assert_eq!(c.last_transition_time, Some(to_time(at(0))));
            // Heartbeat moves, transition stays.
            inputs.now = at(10);
            setter(&mut node, &inputs);
            let c = find(&node, type_).clone();
            assert_eq!(c.last_heartbeat_time, Some(to_time(at(10))));
            assert_eq!(c.last_transition_time, Some(to_time(at(0))));
            // Pressure: flips with a new transition time.
            inputs.now = at(20);
            press(&mut inputs);
            setter(&mut node, &inputs);
            let c = find(&node, type_);
            assert_eq!(
                (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
                ("True", Some(bad_reason), Some(bad_msg))
            );
            assert_eq!(c.last_transition_time, Some(to_time(at(20))));
            assert_eq!(status(&node).conditions.as_ref().unwrap().len(), 1);
        }
    }

    #[test]
    fn ready_messages() {
        let with_capacity = |inputs: &NodeStatusInputs| {
            let mut node = apply(machine_info, inputs);
            ready_condition(&mut node, inputs);
            find(&node, "Ready").clone()
        };
        let cni = cond(
            "NetworkReady",
            false,
            "NetworkPluginNotReady",
            "Network plugin returns error: cni plugin not initialized",
        );
        type Tweak = fn(&mut NodeStatusInputs);
        let cases: Vec<(&str, Tweak, &str, &str, &str)> = vec![
            ("ready", |_| {}, "True", "KubeletReady", "kubelet is posting ready status"),
            ("before the first status", |i| {
                i.runtime_sync = RuntimeSync::NotYet;
                i.runtime_conditions = None;
            }, "False", "KubeletNotReady",
             "[container runtime status check may not have completed yet, network state unknown]"),
            ("runtime down", |i| i.runtime_sync = RuntimeSync::Stale, "False", "KubeletNotReady",
             "container runtime is down"),
            ("network not ready", |i| {
                i.runtime_conditions = Some(vec![
                    cond("RuntimeReady", true, "", ""),
                    cond("NetworkReady", false, "NetworkPluginNotReady",
                         "Network plugin returns error: cni plugin not initialized"),
                ]);
            }, "False", "KubeletNotReady",
             "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"),
            ("runtime condition missing", |i| {
                i.runtime_conditions = Some(vec![cond("NetworkReady", true, "", "")]);
            }, "False", "KubeletNotReady", "container runtime not ready: <nil>"),
            ("PLEG unhealthy and storage", |i| {
                i.pleg_healthy = false;
                i.pleg_message = "pleg was last seen active 3m0.5s ago; threshold is 3m0s".into();
                i.other_errors = vec!["storage broken".into(), "storage broken".into()];
            }, "False", "KubeletNotReady",
             "[PLEG is not healthy: pleg was last seen active 3m0.5s ago; threshold is 3m0s, storage broken]"),
            ("missing storage capacity", |i| i.machine.ephemeral_storage_bytes = None,
             "False", "KubeletNotReady", "missing node capacity for resources: ephemeral-storage"),
        ];
        for (name, tweak, status_, reason, message) in cases {
            let mut inputs = reference_inputs();
            tweak(&mut inputs);
            let c = with_capacity(&inputs);
            assert_eq!(
                (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
                (status_, Some(reason), Some(message)),
                "{name}"
            );
        }
        assert_eq!(cni.to_string(), "NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized");
        // Without machine_info nothing is known.
        let node = apply(ready_condition, &reference_inputs());
        assert_eq!(
            find(&node, "Ready").message.as_deref(),
            Some("missing node capacity for resources: cpu, memory, pods, ephemeral-storage")
        );
    }

    #[test]
    fn ready_transition_time_kept_until_status_changes() {
        let mut inputs = reference_inputs();
        inputs.runtime_sync = RuntimeSync::NotYet;
        let mut node = apply(machine_info, &inputs);
        ready_condition(&mut node, &inputs);
        assert_eq!(find(&node, "Ready").status, "False");
        // Still not ready, different message: transition time kept.
        inputs.now = at(5);
        inputs.runtime_sync = RuntimeSync::Stale;
        ready_condition(&mut node, &inputs);
        let c = find(&node, "Ready");
        assert_eq!(c.last_transition_time, Some(to_time(at(0))));
        assert_eq!(c.last_heartbeat_time, Some(to_time(at(5))));
        assert_eq!(c.message.as_deref(), Some("container runtime is down"));
        // Ready: new transition time, still one Ready condition, last.
        inputs.now = at(10);
        inputs.runtime_sync = RuntimeSync::Recent;
        memory_pressure(&mut node, &inputs);
        ready_condition(&mut node, &inputs);
        let c = find(&node, "Ready");
        assert_eq!(c.status, "True");
        assert_eq!(c.last_transition_time, Some(to_time(at(10))));
        let types: Vec<_> = status(&node)
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(types, ["Ready", "MemoryPressure"]);
    }

    #[test]
    fn aggregate_like_upstream() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(aggregate(&[]), None);
        assert_eq!(aggregate(&s(&["a"])).as_deref(), Some("a"));
        assert_eq!(aggregate(&s(&["a", "a"])).as_deref(), Some("a"));
        assert_eq!(aggregate(&s(&["a", "b", "a"])).as_deref(), Some("[a, b]"));
    }
}
