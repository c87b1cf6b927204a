//! Building the API `PodStatus` from what the runtime reports (upstream
//! `generateAPIPodStatus` / `convertToAPIContainerStatuses` / `getPhase`).

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as ApiContainerStatus, HostIP, Pod, PodCondition, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::clock::from_unix_nanos;
use crate::kuberuntime::actions::{init_container_done, init_containers_done, should_restart};
use crate::kuberuntime::{ContainerState, ContainerStatus, RuntimePodStatus, StartFailure};
use crate::resources::qos_class;
use crate::types::{is_sidecar, restart_policy};

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

/// An API time from a wall-clock time.
pub fn api_time(t: SystemTime) -> Option<Time> {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    let secs = i64::try_from(since.as_secs()).ok()?;
    let nanos = i32::try_from(since.subsec_nanos()).ok()?;
    k8s_openapi::jiff::Timestamp::new(secs, nanos)
        .ok()
        .map(Time)
}

fn nanos_time(n: i64) -> Option<Time> {
    (n > 0).then(|| api_time(from_unix_nanos(n))).flatten()
}

fn terminated(c: &ContainerStatus, runtime: &str) -> ContainerStateTerminated {
    let reason = if c.reason.is_empty() {
        if c.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .to_string()
    } else {
        c.reason.clone()
    };
    ContainerStateTerminated {
        container_id: Some(format!("{runtime}://{}", c.id)),
        exit_code: c.exit_code,
        finished_at: nanos_time(c.finished_at),
        message: (!c.message.is_empty()).then(|| c.message.clone()),
        reason: Some(reason),
        signal: None,
        started_at: nanos_time(c.started_at),
    }
}

fn api_state(c: &ContainerStatus, runtime: &str) -> ApiState {
    match c.state {
        ContainerState::Running => ApiState {
            running: Some(ContainerStateRunning {
                started_at: nanos_time(c.started_at),
            }),
            ..Default::default()
        },
        ContainerState::Exited => ApiState {
            terminated: Some(terminated(c, runtime)),
            ..Default::default()
        },
        ContainerState::Created | ContainerState::Unknown => ApiState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        },
    }
}

fn waiting(reason: &str, message: Option<String>) -> ApiState {
    ApiState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

/// The API status of one container.
fn container_status(
    pod: &Pod,
    spec: &Container,
    runtime: &RuntimePodStatus,
    ctx: &StatusContext<'_>,
    default_waiting: &str,
) -> ApiContainerStatus {
    let mut attempts = runtime.containers.iter().filter(|c| c.name == spec.name);
    let latest = attempts.next();
    let previous = attempts.next();
    let mut status = ApiContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        image_id: String::new(),
        ..Default::default()
    };
    match latest {
        None => status.state = Some(waiting(default_waiting, None)),
        Some(c) => {
            status.container_id = Some(format!("{}://{}", ctx.runtime_name, c.id));
            status.image_id = c.image_ref.clone();
            if !c.image.is_empty() && !c.image.starts_with("sha256:") {
                status.image = c.image.clone();
            }
            status.restart_count = i32::try_from(c.restart_count).unwrap_or(i32::MAX);
            // Until its postStart hook ends a started container still shows as creating.
            let hooked = c.state == ContainerState::Running && (ctx.post_start_pending)(&spec.name);
            status.state = Some(if hooked {
                waiting("ContainerCreating", None)
            } else {
                api_state(c, ctx.runtime_name)
            });
            let running = c.state == ContainerState::Running && !hooked;
            let passed = |kind| {
                ctx.probes.and_then(|p| p.get(&c.id.0, kind))
                    == Some(crate::prober::ProbeResult::Success)
            };
            let started = running
                && (spec.startup_probe.is_none() || passed(crate::prober::ProbeKind::Startup));
            status.started = Some(started);
            status.ready = started
                && (spec.readiness_probe.is_none() || passed(crate::prober::ProbeKind::Readiness));
            if let Some(p) = previous.filter(|p| p.state == ContainerState::Exited) {
                status.last_state = Some(ApiState {
                    terminated: Some(terminated(p, ctx.runtime_name)),
                    ..Default::default()
                });
            }
        }
    }
    // A container that failed to start (or waits in back-off) shows why, unless it is
    // running or finished for good.
    if let Some(f) = (ctx.start_failure)(&spec.name) {
        let running = latest.is_some_and(|c| c.state == ContainerState::Running);
        let done = latest.is_some_and(|c| c.state == ContainerState::Exited)
            && !should_restart(
                spec.restart_policy
                    .as_deref()
                    .unwrap_or_else(|| restart_policy(pod)),
                latest,
            );
        if !running && !done {
            if let Some(term) = status.state.as_ref().and_then(|s| s.terminated.clone()) {
                status.last_state = Some(ApiState {
                    terminated: Some(term),
                    ..Default::default()
                });
            }
            status.state = Some(waiting(&f.reason, Some(f.message)));
        }
    }
    status
}

/// Upstream `getPhase`.
fn phase(
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
    let phase = phase(pod, &statuses, !init_done, init_failed);

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
    let now = ctx.now;
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
        start_time: api_time(now),
        ..Default::default()
    }
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
    use super::*;
    use crate::kuberuntime::runtime_pod::SandboxStatus;
    use crate::types::{ContainerId, PodUid};
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn pod(policy: &str, init: &[&str], names: &[&str]) -> Pod {
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

    fn cs(
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

    fn runtime(containers: Vec<ContainerStatus>) -> RuntimePodStatus {
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

    fn generate(pod: &Pod, rt: &RuntimePodStatus, failure: Option<(&str, &str)>) -> PodStatus {
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

    fn waiting_reason(s: &ApiContainerStatus) -> Option<&str> {
        s.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
    }

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
    fn a_container_shows_as_creating_until_its_post_start_hook_ends() {
        let p = pod("Always", &[], &["app"]);
        let rt = runtime(vec![cs("app", Running, 0, 0, 5)]);
        let lookup = |_: &str| None;
        let ctx = StatusContext {
            runtime_name: "containerd",
            host_ips: Vec::new(),
            start_failure: &lookup,
            post_start_pending: &|name| name == "app",
            now: SystemTime::now(),
            probes: None,
        };
        let status = generate_api_pod_status(&p, &rt, &ctx);
        let app = &status.container_statuses.unwrap()[0];
        assert_eq!(waiting_reason(app), Some("ContainerCreating"));
        assert!(!app.ready);
        assert_eq!(app.started, Some(false));
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        let status = generate(&p, &rt, None);
        assert!(status.container_statuses.unwrap()[0]
            .state
            .as_ref()
            .unwrap()
            .running
            .is_some());
    }

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
