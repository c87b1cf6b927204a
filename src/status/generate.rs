//! Building the API `PodStatus` from what the runtime reports (upstream
//! `generateAPIPodStatus` / `convertToAPIContainerStatuses` / `getPhase`).
//!
//! - [`containers`]: the status of each container (`convertToAPIContainerStatuses`).
//! - [`phase`]: the pod's phase from its containers' statuses (`getPhase`).
//! - [`conditions`]: the pod's conditions, readiness gates included.

mod conditions;
mod containers;
mod phase;

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    ContainerStatus as ApiContainerStatus, HostIP, Pod, PodIP, PodStatus,
};

use crate::kuberuntime::actions::init_containers_done;
use crate::kuberuntime::{ContainerState, RuntimePodStatus, StartFailure};
use crate::resources::qos_class;
use crate::types::is_sidecar;

pub use conditions::needs_readiness_reconcile;
use conditions::pod_conditions;
use containers::container_status;

/// What status generation needs besides the pod and the runtime status.
pub struct StatusContext<'a> {
    /// Runtime name for container ids (`containerd` gives `containerd://<id>`).
    pub runtime_name: &'a str,
    /// The node's host IPs (primary first), when known.
    pub host_ips: Vec<String>,
    /// Last start failure of a container (the reason cache).
    pub start_failure: &'a dyn Fn(&str) -> Option<StartFailure>,
    /// Whether a started container's postStart hook still runs (it shows as creating).
    pub post_start_pending: &'a dyn Fn(&str) -> bool,
    /// Now, for condition transition times.
    pub now: SystemTime,
    /// Probe results (readiness and startup), when probes run.
    pub probes: Option<&'a crate::prober::ProbeResults>,
}

pub use crate::types::api_time;

/// Builds the pod's API status.
pub fn generate_api_pod_status(
    pod: &Pod,
    runtime: &RuntimePodStatus,
    ctx: &StatusContext<'_>,
) -> PodStatus {
    let spec = pod.spec.as_ref();
    let init_specs = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let specs = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let init_done = init_containers_done(pod, runtime);
    let init_statuses: Vec<ApiContainerStatus> = init_specs
        .iter()
        .map(|c| {
            let mut status = container_status(pod, c, runtime, ctx, "PodInitializing");
            // An init container that ran to completion is ready (upstream's prober manager).
            let succeeded = status
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0);
            if !is_sidecar(c) && succeeded {
                status.ready = true;
            }
            status
        })
        .collect();
    let init_failed = init_specs.iter().filter(|c| !is_sidecar(c)).any(|c| {
        runtime
            .latest(&c.name)
            .is_some_and(|s| s.state == ContainerState::Exited && s.exit_code != 0)
    });
    let default_waiting = if init_done {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let statuses: Vec<ApiContainerStatus> = specs
        .iter()
        .map(|c| container_status(pod, c, runtime, ctx, default_waiting))
        .collect();
    // Ephemeral containers count for neither phase nor readiness; never ready.
    let ephemeral_statuses: Vec<ApiContainerStatus> = crate::types::ephemeral_containers(pod)
        .iter()
        .map(|(c, _)| {
            let mut status = container_status(pod, c, runtime, ctx, "ContainerCreating");
            status.ready = false;
            status
        })
        .collect();
    let phase = phase::phase(pod, &statuses, !init_done, init_failed);
    let conditions = pod_conditions(
        pod,
        runtime,
        &init_statuses,
        &statuses,
        phase,
        init_done,
        ctx.now,
    );

    // hostNetwork pods have the node's addresses (upstream: the host IPs, immutable once set).
    let pod_ips: Vec<String> = if crate::types::is_host_network(pod) && !ctx.host_ips.is_empty() {
        ctx.host_ips.clone()
    } else {
        runtime.ip().map(str::to_string).into_iter().collect()
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        ephemeral_container_statuses: (!ephemeral_statuses.is_empty())
            .then_some(ephemeral_statuses),
        host_ip: ctx.host_ips.first().cloned(),
        host_ips: (!ctx.host_ips.is_empty()).then(|| {
            ctx.host_ips
                .iter()
                .map(|ip| HostIP { ip: ip.clone() })
                .collect()
        }),
        pod_ip: pod_ips.first().cloned(),
        pod_ips: (!pod_ips.is_empty())
            .then(|| pod_ips.into_iter().map(|ip| PodIP { ip }).collect()),
        qos_class: Some(qos_class(pod).into()),
        // When the kubelet first saw the pod; the status manager keeps the first one.
        start_time: api_time(ctx.now),
        ..Default::default()
    }
}

/// Pods, runtime statuses and a status context for the tests of status generation.
#[cfg(test)]
mod fixtures {
    use super::*;
    use crate::kuberuntime::runtime_pod::SandboxStatus;
    use crate::kuberuntime::ContainerStatus;
    use crate::types::{ContainerId, PodUid};
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    pub(super) fn pod(policy: &str, init: &[&str], names: &[&str]) -> Pod {
        let c = |n: &&str| Container {
            name: n.to_string(),
            image: Some("busybox".into()),
            ..Default::default()
        };
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                init_containers: Some(init.iter().map(c).collect()),
                containers: names.iter().map(c).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub(super) fn cs(
        name: &str,
        state: ContainerState,
        exit_code: i32,
        restart_count: u32,
        created_at: i64,
    ) -> ContainerStatus {
        ContainerStatus {
            id: ContainerId(format!("{name}-{restart_count}")),
            name: name.into(),
            state,
            restart_count,
            hash: None,
            image: "docker.io/library/busybox:latest".into(),
            image_ref: "sha256:abc".into(),
            created_at,
            started_at: if state == ContainerState::Created {
                0
            } else {
                1_700_000_000_000_000_000
            },
            finished_at: if state == ContainerState::Exited {
                1_700_000_001_000_000_000
            } else {
                0
            },
            exit_code,
            reason: String::new(),
            message: String::new(),
            sandbox_id: "sb".into(),
        }
    }

    pub(super) fn runtime(containers: Vec<ContainerStatus>) -> RuntimePodStatus {
        let mut containers = containers;
        containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        RuntimePodStatus {
            uid: PodUid::from("u"),
            sandboxes: vec![SandboxStatus {
                id: "sb".into(),
                ready: true,
                attempt: 0,
                created_at: 1_700_000_000_000_000_000,
                ip: Some("10.0.0.5".into()),
                host_network: false,
            }],
            containers,
        }
    }

    pub(super) fn generate(
        pod: &Pod,
        rt: &RuntimePodStatus,
        failure: Option<(&str, &str)>,
    ) -> PodStatus {
        let lookup = move |_: &str| failure.map(|(r, m)| StartFailure::new(r, m.to_string()));
        let ctx = StatusContext {
            runtime_name: "containerd",
            host_ips: vec!["192.0.2.2".into()],
            start_failure: &lookup,
            post_start_pending: &|_| false,
            now: SystemTime::now(),
            probes: None,
        };
        generate_api_pod_status(pod, rt, &ctx)
    }

    pub(super) fn waiting_reason(s: &ApiContainerStatus) -> Option<&str> {
        s.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{cs, generate, pod, runtime};
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use ContainerState::{Exited, Running};

    #[test]
    fn completed_init_containers_are_ready_and_a_succeeded_pod_is_initialized_completed() {
        let p = pod("Never", &["init"], &["a"]);
        let rt = runtime(vec![cs("a", Running, 0, 0, 2), cs("init", Exited, 0, 0, 1)]);
        let status = generate(&p, &rt, None);
        let init = &status.init_container_statuses.unwrap()[0];
        assert!(init.ready, "{init:?}");
        assert_eq!(init.started, Some(false));
        let rt = runtime(vec![cs("a", Exited, 0, 0, 2), cs("init", Exited, 0, 0, 1)]);
        let status = generate(&p, &rt, None);
        assert_eq!(status.phase.as_deref(), Some("Succeeded"));
        let initialized = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Initialized")
            .unwrap();
        assert_eq!(
            (initialized.status.as_str(), initialized.reason.as_deref()),
            ("True", Some("PodCompleted"))
        );
        let rt = runtime(vec![cs("init", Exited, 1, 0, 1)]);
        let failed = generate(&p, &rt, None);
        assert!(!failed.init_container_statuses.unwrap()[0].ready);
    }

    #[test]
    fn running_container_status_fields_and_conditions() {
        let rt = runtime(vec![cs("a", Exited, 1, 0, 1), cs("a", Running, 0, 1, 2)]);
        let status = generate(&pod("Always", &[], &["a"]), &rt, None);
        let c = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(c.container_id.as_deref(), Some("containerd://a-1"));
        assert_eq!(c.image, "docker.io/library/busybox:latest");
        assert_eq!(c.image_id, "sha256:abc");
        assert_eq!(c.restart_count, 1);
        assert!(c.ready);
        assert_eq!(c.started, Some(true));
        let last = c.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
        assert!(c
            .state
            .as_ref()
            .unwrap()
            .running
            .as_ref()
            .unwrap()
            .started_at
            .is_some());
        let conditions = status.conditions.unwrap();
        let get = |t: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .status
                .clone()
        };
        assert_eq!(
            (get("Initialized"), get("Ready"), get("ContainersReady")),
            ("True".into(), "True".into(), "True".into())
        );
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(status.pod_ips.unwrap()[0].ip, "10.0.0.5");
        assert_eq!(status.host_ip.as_deref(), Some("192.0.2.2"));
        assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));
        assert!(status.start_time.is_some());
    }

    #[test]
    fn qos_classes() {
        let with = |req: &[(&str, &str)], lim: &[(&str, &str)]| {
            let q = |v: &[(&str, &str)]| {
                (!v.is_empty()).then(|| {
                    v.iter()
                        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                        .collect()
                })
            };
            let mut p = pod("Always", &[], &["a"]);
            p.spec.as_mut().unwrap().containers[0].resources = Some(ResourceRequirements {
                requests: q(req),
                limits: q(lim),
                ..Default::default()
            });
            qos_class(&p)
        };
        assert_eq!(with(&[], &[]), "BestEffort");
        assert_eq!(with(&[("cpu", "100m")], &[]), "Burstable");
        assert_eq!(
            with(
                &[("cpu", "1"), ("memory", "1Gi")],
                &[("cpu", "1"), ("memory", "1Gi")]
            ),
            "Guaranteed"
        );
        assert_eq!(with(&[], &[("cpu", "1"), ("memory", "1Gi")]), "Guaranteed");
        assert_eq!(
            with(&[("cpu", "1")], &[("cpu", "2"), ("memory", "1Gi")]),
            "Burstable"
        );
    }
}
