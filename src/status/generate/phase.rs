//! The pod's phase from its containers' statuses (upstream `getPhase`).

use k8s_openapi::api::core::v1::{ContainerStatus as ApiContainerStatus, Pod};

use crate::types::restart_policy;

/// Upstream `getPhase`.
pub(super) fn phase(
    pod: &Pod,
    statuses: &[ApiContainerStatus],
    init_pending: bool,
    init_failed: bool,
) -> &'static str {
    let policy = restart_policy(pod);
    if init_failed && policy == "Never" {
        return "Failed";
    }
    if init_pending {
        return "Pending";
    }
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for s in statuses {
        let state = s.state.as_ref();
        if state.and_then(|s| s.running.as_ref()).is_some() {
            running += 1;
        } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.and_then(|s| s.waiting.as_ref()).is_some() {
            if s.last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .is_some()
            {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }
    match () {
        _ if waiting > 0 => "Pending",
        _ if running > 0 && unknown == 0 => "Running",
        _ if running == 0 && stopped > 0 && unknown == 0 => {
            if policy == "Always" {
                "Running"
            } else if stopped == succeeded {
                "Succeeded"
            } else if policy == "Never" {
                "Failed"
            } else {
                "Running"
            }
        }
        _ => "Pending",
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{cs, generate, pod, runtime, waiting_reason};
    use crate::kuberuntime::ContainerState::{Exited, Running};
    use crate::kuberuntime::ContainerStatus;
    use k8s_openapi::api::core::v1::{ContainerStatus as ApiContainerStatus, Pod};

    #[test]
    fn phase_and_container_states_table() {
        struct Case {
            name: &'static str,
            pod: Pod,
            containers: Vec<ContainerStatus>,
            failure: Option<(&'static str, &'static str)>,
            phase: &'static str,
            first_state: &'static str,
        }
        let state_of = |s: &ApiContainerStatus| -> String {
            let st = s.state.as_ref().unwrap();
            if st.running.is_some() {
                "running".into()
            } else if let Some(t) = &st.terminated {
                format!("terminated:{}", t.reason.clone().unwrap_or_default())
            } else {
                format!("waiting:{}", waiting_reason(s).unwrap_or_default())
            }
        };
        let cases = vec![
            Case {
                name: "nothing yet",
                pod: pod("Always", &[], &["a"]),
                containers: vec![],
                failure: None,
                phase: "Pending",
                first_state: "waiting:ContainerCreating",
            },
            Case {
                name: "running",
                pod: pod("Always", &[], &["a"]),
                containers: vec![cs("a", Running, 0, 0, 1)],
                failure: None,
                phase: "Running",
                first_state: "running",
            },
            Case {
                name: "image pull failure",
                pod: pod("Always", &[], &["a"]),
                containers: vec![],
                failure: Some(("ErrImagePull", "rpc error")),
                phase: "Pending",
                first_state: "waiting:ErrImagePull",
            },
            Case {
                name: "crash loop: waiting with last state",
                pod: pod("Always", &[], &["a"]),
                containers: vec![cs("a", Exited, 1, 2, 3)],
                failure: Some(("CrashLoopBackOff", "back-off 20s")),
                phase: "Running",
                first_state: "waiting:CrashLoopBackOff",
            },
            Case {
                name: "completed under Never",
                pod: pod("Never", &[], &["a"]),
                containers: vec![cs("a", Exited, 0, 0, 1)],
                failure: None,
                phase: "Succeeded",
                first_state: "terminated:Completed",
            },
            Case {
                name: "failed under Never",
                pod: pod("Never", &[], &["a"]),
                containers: vec![cs("a", Exited, 2, 0, 1)],
                failure: None,
                phase: "Failed",
                first_state: "terminated:Error",
            },
            Case {
                name: "failed under OnFailure keeps running",
                pod: pod("OnFailure", &[], &["a"]),
                containers: vec![cs("a", Exited, 2, 0, 1)],
                failure: None,
                phase: "Running",
                first_state: "terminated:Error",
            },
            Case {
                name: "one of two exited 0 under Never",
                pod: pod("Never", &[], &["a", "b"]),
                containers: vec![cs("a", Exited, 0, 0, 1), cs("b", Running, 0, 0, 2)],
                failure: None,
                phase: "Running",
                first_state: "terminated:Completed",
            },
            Case {
                name: "init running",
                pod: pod("Always", &["init"], &["a"]),
                containers: vec![cs("init", Running, 0, 0, 1)],
                failure: None,
                phase: "Pending",
                first_state: "waiting:PodInitializing",
            },
            Case {
                name: "init failed under Never",
                pod: pod("Never", &["init"], &["a"]),
                containers: vec![cs("init", Exited, 1, 0, 1)],
                failure: None,
                phase: "Failed",
                first_state: "waiting:PodInitializing",
            },
        ];
        for c in cases {
            let status = generate(&c.pod, &runtime(c.containers), c.failure);
            assert_eq!(status.phase.as_deref(), Some(c.phase), "{}: phase", c.name);
            let first = &status.container_statuses.as_ref().unwrap()[0];
            assert_eq!(state_of(first), c.first_state, "{}: state", c.name);
        }
    }
}
