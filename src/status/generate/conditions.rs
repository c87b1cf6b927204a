//! The pod's conditions (upstream `GeneratePodInitializedCondition`,
//! `GenerateContainersReadyCondition` and `GeneratePodReadyCondition`): `Initialized`,
//! `Ready`, `ContainersReady` and `PodScheduled`, and whether readiness gates call for a sync.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{ContainerStatus as ApiContainerStatus, Pod, PodCondition};

use super::api_time;
use crate::kuberuntime::actions::init_container_done;
use crate::kuberuntime::RuntimePodStatus;
use crate::types::is_sidecar;

fn condition(
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: SystemTime,
) -> PodCondition {
    PodCondition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: api_time(now),
        ..Default::default()
    }
}

/// The pod's conditions, given its containers' statuses (main and init, in spec order) and
/// its phase.
pub(super) fn pod_conditions(
    pod: &Pod,
    runtime: &RuntimePodStatus,
    init_statuses: &[ApiContainerStatus],
    statuses: &[ApiContainerStatus],
    phase: &str,
    init_done: bool,
    now: SystemTime,
) -> Vec<PodCondition> {
    let init_specs = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    // Sidecars count for readiness as the main containers do.
    let sidecar_statuses = init_statuses
        .iter()
        .zip(init_specs)
        .filter(|(_, c)| is_sidecar(c))
        .map(|(s, _)| s);
    let unready: Vec<&str> = sidecar_statuses
        .chain(statuses.iter())
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let containers_ready = unready.is_empty() && phase == "Running";
    let (ready_reason, ready_message) = if containers_ready {
        (None, None)
    } else if phase == "Succeeded" {
        (Some("PodCompleted"), None)
    } else if phase == "Failed" {
        (Some("PodFailed"), None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    // Ready also needs every readiness gate's condition (written by other components) True.
    let gates = if containers_ready {
        readiness_gates_not_ready(pod)
    } else {
        None
    };
    let uninit: Vec<&str> = init_statuses
        .iter()
        .zip(init_specs)
        .filter(|(_, c)| !init_container_done(c, runtime))
        .map(|(s, _)| s.name.as_str())
        .collect();
    let initialized = init_done || phase == "Succeeded";
    let mut conditions = vec![
        if phase == "Succeeded" {
            condition("Initialized", true, Some("PodCompleted"), None, now)
        } else if initialized {
            condition("Initialized", true, None, None, now)
        } else {
            condition(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    uninit.join(" ")
                )),
                now,
            )
        },
        match gates {
            Some(message) => condition(
                "Ready",
                false,
                Some("ReadinessGatesNotReady"),
                Some(message),
                now,
            ),
            None => condition(
                "Ready",
                containers_ready,
                ready_reason,
                ready_message.clone(),
                now,
            ),
        },
        condition(
            "ContainersReady",
            containers_ready,
            ready_reason,
            ready_message,
            now,
        ),
        condition("PodScheduled", true, None, None, now),
    ];
    conditions.iter_mut().for_each(|c| c.last_probe_time = None);
    conditions
}

/// Why the pod's readiness gates hold Ready back (upstream `GeneratePodReadyCondition`):
/// each gate whose condition is missing from the pod's API status or not `True`, in the
/// gates' order; `None` when all are satisfied.
fn readiness_gates_not_ready(pod: &Pod) -> Option<String> {
    let gates = pod.spec.as_ref()?.readiness_gates.as_ref()?;
    let conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let messages: Vec<String> = gates
        .iter()
        .filter_map(|gate| {
            let kind = &gate.condition_type;
            match conditions.iter().find(|c| c.type_ == *kind) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate {kind:?} does not exist."
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate {kind:?} is not \"True\", but {}",
                    c.status
                )),
                Some(_) => None,
            }
        })
        .collect();
    (!messages.is_empty()).then(|| messages.join(", "))
}

/// Whether a status-only change of `pod` calls for a sync because its Ready condition no
/// longer agrees with its readiness gates (upstream `NeedToReconcilePodReadiness`).
pub fn needs_readiness_reconcile(pod: &Pod) -> bool {
    let has_gates = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_some_and(|g| !g.is_empty());
    if !has_gates {
        return false;
    }
    let conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let status_of = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind)
            .map(|c| c.status.as_str())
    };
    let Some(ready) = status_of("Ready") else {
        return false;
    };
    let containers_ready = status_of("ContainersReady") == Some("True");
    let want = containers_ready && readiness_gates_not_ready(pod).is_none();
    (ready == "True") != want
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{cs, generate, pod, runtime};
    use crate::kuberuntime::ContainerState::Running;

    #[test]
    fn unready_message_names_containers_as_upstream() {
        let status = generate(
            &pod("Always", &[], &["app", "side"]),
            &runtime(vec![cs("side", Running, 0, 0, 1)]),
            None,
        );
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [app]")
        );
    }
}
