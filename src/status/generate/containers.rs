//! The API status of one container (upstream `convertToAPIContainerStatuses`): its state,
//! last state, readiness and why it waits, from the runtime's attempts and the reason cache.

use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as ApiContainerStatus, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{api_time, StatusContext};
use crate::clock::from_unix_nanos;
use crate::kuberuntime::actions::should_restart;
use crate::kuberuntime::{ContainerState, ContainerStatus, RuntimePodStatus};
use crate::types::restart_policy;

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
pub(super) fn container_status(
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

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::super::fixtures::{cs, generate, pod, runtime, waiting_reason};
    use super::super::generate_api_pod_status;
    use super::*;
    use ContainerState::Running;

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
}
