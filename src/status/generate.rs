//! Building the API `PodStatus` from what the runtime reports (upstream
//! `generateAPIPodStatus` / `convertToAPIContainerStatuses` / `getPhase`).

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as ApiContainerStatus, Pod, PodCondition, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::clock::from_unix_nanos;
use crate::kuberuntime::actions::{init_containers_done, should_restart};
use crate::kuberuntime::{ContainerState, ContainerStatus, RuntimePodStatus, StartFailure};
use crate::types::restart_policy;

/// What status generation needs besides the pod and the runtime status.
pub struct StatusContext<'a> {
    /// Runtime name for container ids (`containerd` gives `containerd://<id>`).
    pub runtime_name: &'a str,
    /// The node's IP, when known.
    pub host_ip: Option<String>,
    /// Last start failure of a container (the reason cache).
    pub start_failure: &'a dyn Fn(&str) -> Option<StartFailure>,
    /// Now, for condition transition times.
    pub now: SystemTime,
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
            status.state = Some(api_state(c, ctx.runtime_name));
            status.ready = c.state == ContainerState::Running;
            status.started = Some(c.state == ContainerState::Running);
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
            && !should_restart(restart_policy(pod), latest);
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
        .map(|c| container_status(pod, c, runtime, ctx, "PodInitializing"))
        .collect();
    let init_failed = init_specs.iter().any(|c| {
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

    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let ready = unready.is_empty() && phase == "Running";
    let (ready_reason, ready_message) = if ready {
        (None, None)
    } else if phase == "Succeeded" || phase == "Failed" {
        (Some("PodCompleted"), None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let uninit: Vec<&str> = init_statuses
        .iter()
        .filter(|s| {
            s.state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_none_or(|t| t.exit_code != 0)
        })
        .map(|s| s.name.as_str())
        .collect();
    let initialized = init_done || phase == "Succeeded";
    let now = ctx.now;
    let mut conditions = vec![
        if initialized {
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
        condition("Ready", ready, ready_reason, ready_message.clone(), now),
        condition("ContainersReady", ready, ready_reason, ready_message, now),
        condition("PodScheduled", true, None, None, now),
    ];
    conditions.iter_mut().for_each(|c| c.last_probe_time = None);

    let ip = runtime.ip().map(str::to_string);
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        host_ip: ctx.host_ip.clone(),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        qos_class: Some(qos_class(pod).into()),
        start_time: runtime
            .sandboxes
            .iter()
            .map(|s| s.created_at)
            .min()
            .and_then(nanos_time),
        ..Default::default()
    }
}

/// The pod's QoS class (upstream `GetPodQOS`, for cpu and memory).
pub fn qos_class(pod: &Pod) -> &'static str {
    let spec = pod.spec.as_ref();
    let all = spec.iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    });
    let mut any_set = false;
    let mut guaranteed = true;
    for c in all {
        let res = c.resources.as_ref();
        let req = res.and_then(|r| r.requests.as_ref());
        let lim = res.and_then(|r| r.limits.as_ref());
        for name in ["cpu", "memory"] {
            let r = req.and_then(|m| m.get(name)).filter(|q| q.0 != "0");
            let l = lim.and_then(|m| m.get(name)).filter(|q| q.0 != "0");
            if r.is_some() || l.is_some() {
                any_set = true;
            }
            match (r, l) {
                (_, None) => guaranteed = false,
                (Some(r), Some(l)) if r.0 != l.0 => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any_set {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}
