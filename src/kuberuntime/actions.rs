//! Deciding what a sync must do (upstream `computePodActions`): compare the pod spec with what
//! the runtime reports and list the sandbox and container operations. Pure: no runtime calls,
//! so the table of cases is unit-tested directly.

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::types::{is_host_network, is_sidecar, restart_policy, ContainerId};

use super::hash::hash_container;
use super::runtime_pod::{ContainerState, ContainerStatus, RuntimePodStatus};

/// A container to stop, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillAction {
    /// Runtime id.
    pub id: ContainerId,
    /// Container name.
    pub name: String,
    /// Why it is being stopped (logged and shown in events).
    pub message: String,
    /// A grace period overriding the pod's (a failed probe's `terminationGracePeriodSeconds`).
    pub grace_seconds: Option<i64>,
}

/// What one sync of a pod must do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodActions {
    /// Stop every container and sandbox of the pod first (the sandbox is being replaced).
    pub kill_pod: bool,
    /// Create a new sandbox.
    pub create_sandbox: bool,
    /// The ready sandbox to start containers in, when no new one is created.
    pub sandbox_id: Option<String>,
    /// Attempt number for the new sandbox.
    pub attempt: u32,
    /// Index into `spec.initContainers` of the init container to start next.
    pub next_init_container: Option<usize>,
    /// Indexes into `spec.initContainers` of sidecars that exited after the pod was
    /// initialized and are restarted beside the main containers.
    pub sidecars_to_restart: Vec<usize>,
    /// An init container failed and the restart policy forbids retrying it: the pod fails.
    pub init_failed: bool,
    /// Indexes into `spec.ephemeralContainers` of ephemeral containers to start: those
    /// never started (they are never restarted).
    pub ephemeral_to_start: Vec<usize>,
    /// Indexes into `spec.containers` of containers to start.
    pub containers_to_start: Vec<usize>,
    /// Running containers to stop.
    pub containers_to_kill: Vec<KillAction>,
}

impl PodActions {
    /// True when the sync has nothing to do.
    pub fn is_noop(&self) -> bool {
        !self.kill_pod
            && !self.create_sandbox
            && self.next_init_container.is_none()
            && self.sidecars_to_restart.is_empty()
            && self.containers_to_start.is_empty()
            && self.ephemeral_to_start.is_empty()
            && self.containers_to_kill.is_empty()
    }
}

/// Whether a container that is not running should be started again (upstream
/// `ShouldContainerBeRestarted`): never-run containers always start; exited ones follow the
/// restart policy.
pub fn should_restart(policy: &str, latest: Option<&ContainerStatus>) -> bool {
    let Some(status) = latest else {
        return true;
    };
    match status.state {
        ContainerState::Running => false,
        // Created but never started (the kubelet stopped between create and start): it has
        // not run yet, so it runs whatever the policy.
        ContainerState::Created => true,
        // Unknown: the previous attempt never ran properly.
        ContainerState::Unknown => policy != "Never",
        ContainerState::Exited => match policy {
            "Never" => false,
            "OnFailure" => status.exit_code != 0,
            _ => true,
        },
    }
}

/// Why the sandbox must be (re)created, if it must: none, not ready, or no IP on a pod that
/// needs one. Returns `(create, attempt, ready sandbox id)`.
fn sandbox_changed(pod: &Pod, status: &RuntimePodStatus) -> (bool, u32, Option<String>) {
    let Some(sandbox) = status.latest_sandbox() else {
        return (true, 0, None);
    };
    let next_attempt = sandbox.attempt + 1;
    let multiple_ready = status.sandboxes.iter().filter(|s| s.ready).count() > 1;
    if !sandbox.ready || multiple_ready {
        return (true, next_attempt, None);
    }
    if sandbox.host_network != is_host_network(pod) {
        return (true, next_attempt, None);
    }
    if !sandbox.host_network && sandbox.ip.is_none() {
        return (true, next_attempt, None);
    }
    (false, sandbox.attempt, Some(sandbox.id.clone()))
}

fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
}

fn containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
}

/// Whether one init container has done its part of initialization: a regular one ran to
/// success, a sidecar has started (it may have exited since; it is restarted beside the main
/// containers).
pub fn init_container_done(c: &Container, status: &RuntimePodStatus) -> bool {
    let latest = status.latest(&c.name);
    if is_sidecar(c) {
        latest.is_some_and(|s| matches!(s.state, ContainerState::Running | ContainerState::Exited))
    } else {
        latest.is_some_and(|s| s.state == ContainerState::Exited && s.exit_code == 0)
    }
}

/// Whether every init container has done its part (trivially true without init containers).
pub fn init_containers_done(pod: &Pod, status: &RuntimePodStatus) -> bool {
    init_containers(pod)
        .iter()
        .all(|c| init_container_done(c, status))
}

/// Computes the actions that bring the runtime in line with the pod spec.
pub fn compute_pod_actions(pod: &Pod, status: &RuntimePodStatus) -> PodActions {
    compute_pod_actions_with(pod, status, &|_| None)
}

/// [`compute_pod_actions`] with probe results: `unhealthy` names the probe (`liveness`,
/// `startup`) a running container failed, and such a container is killed and, unless the
/// restart policy is Never, started again.
pub fn compute_pod_actions_with(
    pod: &Pod,
    status: &RuntimePodStatus,
    unhealthy: &dyn Fn(&ContainerStatus) -> Option<&'static str>,
) -> PodActions {
    let policy = restart_policy(pod);
    let (create_sandbox, attempt, sandbox_id) = sandbox_changed(pod, status);
    let mut actions = PodActions {
        create_sandbox,
        attempt,
        sandbox_id,
        ..Default::default()
    };

    if create_sandbox {
        let has_history = !status.sandboxes.is_empty();
        actions.kill_pod = has_history;
        // A pod that must never restart does not get a second sandbox once it has run.
        if policy == "Never" && has_history && !status.containers.is_empty() {
            actions.create_sandbox = false;
            return actions;
        }
        if !init_containers(pod).is_empty() {
            actions.next_init_container = Some(0);
            return actions;
        }
        actions.containers_to_start = containers(pod)
            .iter()
            .enumerate()
            .filter(|(_, c)| should_restart(policy, status.latest(&c.name)))
            .map(|(i, _)| i)
            .collect();
        return actions;
    }

    // Ephemeral containers start even before the pod is initialized, once, and never again
    // (upstream: "Ephemeral Containers are never restarted").
    let ephemeral = crate::types::ephemeral_containers(pod);
    actions.ephemeral_to_start = ephemeral
        .iter()
        .enumerate()
        .filter(|(_, (c, _))| status.latest(&c.name).is_none())
        .map(|(i, _)| i)
        .collect();

    // Init containers run one at a time, in order, each to success; a sidecar only has to
    // be running before the next one starts.
    // Once a main container has run, the pod was initialized even if dead init containers
    // have been garbage-collected since.
    let initialized = init_containers_done(pod, status)
        || containers(pod)
            .iter()
            .any(|c| status.latest(&c.name).is_some());
    for (i, c) in init_containers(pod).iter().enumerate() {
        let latest = status.latest(&c.name);
        if is_sidecar(c) {
            match latest {
                Some(s) if s.state == ContainerState::Running => continue,
                None => {
                    actions.next_init_container = Some(i);
                    return actions;
                }
                // Exited (or stuck in Created): restarted whatever the pod's restartPolicy.
                Some(_) if initialized => actions.sidecars_to_restart.push(i),
                Some(_) => {
                    actions.next_init_container = Some(i);
                    return actions;
                }
            }
            continue;
        }
        match latest {
            _ if initialized => continue,
            None => {
                actions.next_init_container = Some(i);
                return actions;
            }
            Some(s) if s.state == ContainerState::Running => return actions,
            Some(s) if s.state == ContainerState::Exited && s.exit_code == 0 => continue,
            Some(_) => {
                if policy == "Never" {
                    actions.init_failed = true;
                } else {
                    actions.next_init_container = Some(i);
                }
                return actions;
            }
        }
    }

    let specs = containers(pod);
    for (i, c) in specs.iter().enumerate() {
        let latest = status.latest(&c.name);
        match latest {
            Some(s) if s.state == ContainerState::Running && unhealthy(s).is_some() => {
                let probe = unhealthy(s).unwrap_or("liveness");
                let spec = if probe == "startup" {
                    c.startup_probe.as_ref()
                } else {
                    c.liveness_probe.as_ref()
                };
                actions.containers_to_kill.push(KillAction {
                    id: s.id.clone(),
                    name: c.name.clone(),
                    message: format!(
                        "Container {} failed {probe} probe, will be restarted",
                        c.name
                    ),
                    grace_seconds: spec.and_then(|p| p.termination_grace_period_seconds),
                });
                if policy != "Never" {
                    actions.containers_to_start.push(i);
                }
            }
            Some(s) if s.state == ContainerState::Running => {
                let want = hash_container(c);
                if s.hash.is_some_and(|h| h != want) {
                    actions.containers_to_kill.push(KillAction {
                        id: s.id.clone(),
                        name: c.name.clone(),
                        message: format!(
                            "Container {} definition changed, will be restarted",
                            c.name
                        ),
                        grace_seconds: None,
                    });
                    actions.containers_to_start.push(i);
                }
            }
            _ => {
                if should_restart(policy, latest) {
                    actions.containers_to_start.push(i);
                }
            }
        }
    }

    // Main containers finished for good (restartPolicy Never/OnFailure): the sidecars have
    // nothing left to serve and are stopped.
    let main_done = !specs.is_empty()
        && actions.containers_to_start.is_empty()
        && specs.iter().all(|c| {
            status
                .latest(&c.name)
                .is_some_and(|s| s.state == ContainerState::Exited)
        });
    if main_done {
        actions.sidecars_to_restart.clear();
        for c in init_containers(pod).iter().filter(|c| is_sidecar(c)) {
            if let Some(s) = status
                .latest(&c.name)
                .filter(|s| s.state == ContainerState::Running)
            {
                actions.containers_to_kill.push(KillAction {
                    id: s.id.clone(),
                    name: c.name.clone(),
                    message: format!(
                        "Sidecar container {} is stopped: the main containers have completed",
                        c.name
                    ),
                    grace_seconds: None,
                });
            }
        }
    }

    // Running containers the spec no longer names are stopped.
    for s in &status.containers {
        let known = specs.iter().any(|c| c.name == s.name)
            || init_containers(pod).iter().any(|c| c.name == s.name)
            || ephemeral.iter().any(|(c, _)| c.name == s.name);
        if s.state == ContainerState::Running && !known {
            actions.containers_to_kill.push(KillAction {
                id: s.id.clone(),
                name: s.name.clone(),
                message: format!("Container {} is not in the pod spec", s.name),
                grace_seconds: None,
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kuberuntime::runtime_pod::SandboxStatus;
    use crate::types::PodUid;
    use k8s_openapi::api::core::v1::PodSpec;

    fn container(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            image: Some(image.into()),
            ..Default::default()
        }
    }

    fn pod(policy: &str, init: &[&str], names: &[&str]) -> Pod {
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                init_containers: Some(init.iter().map(|n| container(n, "busybox")).collect()),
                containers: names.iter().map(|n| container(n, "busybox")).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sandbox(ready: bool, attempt: u32) -> SandboxStatus {
        SandboxStatus {
            id: format!("sb{attempt}"),
            ready,
            attempt,
            created_at: i64::from(attempt),
            ip: Some("10.0.0.2".into()),
            host_network: false,
        }
    }

    fn cstatus(name: &str, state: ContainerState, exit_code: i32, image: &str) -> ContainerStatus {
        ContainerStatus {
            id: ContainerId(format!("{name}-id")),
            name: name.into(),
            state,
            restart_count: 0,
            hash: Some(hash_container(&container(name, image))),
            image: image.into(),
            image_ref: String::new(),
            created_at: 1,
            started_at: 1,
            finished_at: 2,
            exit_code,
            reason: String::new(),
            message: String::new(),
            sandbox_id: "sb0".into(),
        }
    }

    fn status(sandboxes: Vec<SandboxStatus>, containers: Vec<ContainerStatus>) -> RuntimePodStatus {
        RuntimePodStatus {
            uid: PodUid::from("u"),
            sandboxes,
            containers,
        }
    }

    use ContainerState::{Exited, Running};

    #[test]
    fn ephemeral_containers_start_once_even_before_init_and_are_never_restarted() {
        let mut p = pod("Always", &["init"], &["app"]);
        p.spec.as_mut().unwrap().ephemeral_containers =
            Some(vec![k8s_openapi::api::core::v1::EphemeralContainer {
                name: "debugger".into(),
                image: Some("busybox".into()),
                target_container_name: Some("app".into()),
                ..Default::default()
            }]);
        // A new sandbox starts no ephemeral container (upstream: they are not recreated).
        let a = compute_pod_actions(&p, &status(Vec::new(), Vec::new()));
        assert!(a.create_sandbox && a.ephemeral_to_start.is_empty());
        // The init container still runs: the debugger starts beside it.
        let st = status(
            vec![sandbox(true, 0)],
            vec![cstatus("init", Running, 0, "busybox")],
        );
        let a = compute_pod_actions(&p, &st);
        assert_eq!(a.ephemeral_to_start, vec![0]);
        assert!(!a.is_noop());
        // Running, it is in the spec: nothing to kill, nothing to start.
        let st = status(
            vec![sandbox(true, 0)],
            vec![
                cstatus("init", Exited, 0, "busybox"),
                cstatus("app", Running, 0, "busybox"),
                cstatus("debugger", Running, 0, "busybox"),
            ],
        );
        let a = compute_pod_actions(&p, &st);
        assert!(a.is_noop(), "{a:?}");
        // Exited, even failed, under restartPolicy Always: never started again.
        let st = status(
            vec![sandbox(true, 0)],
            vec![
                cstatus("init", Exited, 0, "busybox"),
                cstatus("app", Running, 0, "busybox"),
                cstatus("debugger", Exited, 1, "busybox"),
            ],
        );
        assert!(compute_pod_actions(&p, &st).is_noop());
    }

    #[test]
    fn a_failed_liveness_probe_kills_and_restarts_unless_never() {
        for (policy, restarts) in [("Always", true), ("OnFailure", true), ("Never", false)] {
            let p = pod(policy, &[], &["a", "b"]);
            let st = status(
                vec![sandbox(true, 0)],
                vec![
                    cstatus("a", Running, 0, "busybox"),
                    cstatus("b", Running, 0, "busybox"),
                ],
            );
            let a = compute_pod_actions_with(&p, &st, &|c| (c.name == "b").then_some("liveness"));
            assert_eq!(a.containers_to_kill.len(), 1, "{policy}");
            assert_eq!(
                a.containers_to_kill[0].message,
                "Container b failed liveness probe, will be restarted"
            );
            assert_eq!(
                a.containers_to_start,
                if restarts { vec![1] } else { vec![] },
                "{policy}"
            );
        }
    }

    #[test]
    fn pod_actions_table() {
        struct Case {
            name: &'static str,
            pod: Pod,
            status: RuntimePodStatus,
            want: PodActions,
        }
        let ready = || Some("sb0".to_string());
        // init "setup", sidecar "proxy", main "app".
        let with_sidecar = |policy: &str| {
            let mut p = pod(policy, &["setup", "proxy"], &["app"]);
            let spec = p.spec.as_mut().unwrap();
            spec.init_containers.as_mut().unwrap()[1].restart_policy = Some("Always".into());
            p
        };
        let cases = vec![
            Case {
                name: "sidecar starts after the init container that precedes it",
                pod: with_sidecar("Always"),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![cstatus("setup", Exited, 0, "busybox")],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    next_init_container: Some(1),
                    ..Default::default()
                },
            },
            Case {
                name: "a running sidecar lets the main containers start",
                pod: with_sidecar("Always"),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![
                        cstatus("setup", Exited, 0, "busybox"),
                        cstatus("proxy", Running, 0, "busybox"),
                    ],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    containers_to_start: vec![0],
                    ..Default::default()
                },
            },
            Case {
                name: "an exited sidecar is restarted beside running main containers, even under Never",
                pod: with_sidecar("Never"),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![
                        cstatus("setup", Exited, 0, "busybox"),
                        cstatus("proxy", Exited, 1, "busybox"),
                        cstatus("app", Running, 0, "busybox"),
                    ],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    sidecars_to_restart: vec![1],
                    ..Default::default()
                },
            },
            Case {
                name: "main containers done under Never: the sidecar is stopped",
                pod: with_sidecar("Never"),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![
                        cstatus("setup", Exited, 0, "busybox"),
                        cstatus("proxy", Running, 0, "busybox"),
                        cstatus("app", Exited, 0, "busybox"),
                    ],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    containers_to_kill: vec![KillAction {
                        id: ContainerId("proxy-id".into()),
                        name: "proxy".into(),
                        message: "Sidecar container proxy is stopped: the main containers have completed".into(),
                        grace_seconds: None,
                    }],
                    ..Default::default()
                },
            },
            Case {
                name: "init containers are not rerun once a main container ran",
                pod: pod("Always", &["setup"], &["app"]),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![cstatus("app", Running, 0, "busybox")],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    ..Default::default()
                },
            },
            Case {
                name: "new pod: sandbox and all containers",
                pod: pod("Always", &[], &["a", "b"]),
                status: status(vec![], vec![]),
                want: PodActions {
                    create_sandbox: true,
                    containers_to_start: vec![0, 1],
                    ..Default::default()
                },
            },
            Case {
                name: "all running: nothing to do",
                pod: pod("Always", &[], &["a", "b"]),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![
                        cstatus("a", Running, 0, "busybox"),
                        cstatus("b", Running, 0, "busybox"),
                    ],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    ..Default::default()
                },
            },
            Case {
                name: "exited under Always restarts",
                pod: pod("Always", &[], &["a"]),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![cstatus("a", Exited, 0, "busybox")],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    containers_to_start: vec![0],
                    ..Default::default()
                },
            },
            Case {
                name: "exit 0 under OnFailure stays down",
                pod: pod("OnFailure", &[], &["a"]),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![cstatus("a", Exited, 0, "busybox")],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    ..Default::default()
                },
            },
            Case {
                name: "exit 1 under OnFailure restarts",
                pod: pod("OnFailure", &[], &["a"]),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![cstatus("a", Exited, 1, "busybox")],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    containers_to_start: vec![0],
                    ..Default::default()
                },
            },
            Case {
                name: "exit 1 under Never stays down",
                pod: pod("Never", &[], &["a"]),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![cstatus("a", Exited, 1, "busybox")],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    ..Default::default()
                },
            },
            Case {
                name: "dead sandbox: kill and recreate with next attempt",
                pod: pod("Always", &[], &["a"]),
                status: status(
                    vec![sandbox(false, 0)],
                    vec![cstatus("a", Exited, 137, "busybox")],
                ),
                want: PodActions {
                    kill_pod: true,
                    create_sandbox: true,
                    attempt: 1,
                    containers_to_start: vec![0],
                    ..Default::default()
                },
            },
            Case {
                name: "dead sandbox under Never: kill only",
                pod: pod("Never", &[], &["a"]),
                status: status(
                    vec![sandbox(false, 0)],
                    vec![cstatus("a", Exited, 0, "busybox")],
                ),
                want: PodActions {
                    kill_pod: true,
                    attempt: 1,
                    ..Default::default()
                },
            },
            Case {
                name: "changed spec hash: kill and restart that container",
                pod: pod("Always", &[], &["a", "b"]),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![
                        cstatus("a", Running, 0, "busybox:old"),
                        cstatus("b", Running, 0, "busybox"),
                    ],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    containers_to_start: vec![0],
                    containers_to_kill: vec![KillAction {
                        id: ContainerId("a-id".into()),
                        name: "a".into(),
                        message: "Container a definition changed, will be restarted".into(),
                        grace_seconds: None,
                    }],
                    ..Default::default()
                },
            },
            Case {
                name: "container removed from spec is stopped",
                pod: pod("Always", &[], &["a"]),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![
                        cstatus("a", Running, 0, "busybox"),
                        cstatus("gone", Running, 0, "busybox"),
                    ],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    containers_to_kill: vec![KillAction {
                        id: ContainerId("gone-id".into()),
                        name: "gone".into(),
                        message: "Container gone is not in the pod spec".into(),
                        grace_seconds: None,
                    }],
                    ..Default::default()
                },
            },
            Case {
                name: "new pod with init containers starts the first init only",
                pod: pod("Always", &["i1", "i2"], &["a"]),
                status: status(vec![], vec![]),
                want: PodActions {
                    create_sandbox: true,
                    next_init_container: Some(0),
                    ..Default::default()
                },
            },
            Case {
                name: "first init done: second init next",
                pod: pod("Always", &["i1", "i2"], &["a"]),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![cstatus("i1", Exited, 0, "busybox")],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    next_init_container: Some(1),
                    ..Default::default()
                },
            },
            Case {
                name: "init running: wait",
                pod: pod("Always", &["i1"], &["a"]),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![cstatus("i1", Running, 0, "busybox")],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    ..Default::default()
                },
            },
            Case {
                name: "failed init under Never fails the pod",
                pod: pod("Never", &["i1"], &["a"]),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![cstatus("i1", Exited, 2, "busybox")],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    init_failed: true,
                    ..Default::default()
                },
            },
            Case {
                name: "inits done: regular containers start",
                pod: pod("Always", &["i1"], &["a"]),
                status: status(
                    vec![sandbox(true, 0)],
                    vec![cstatus("i1", Exited, 0, "busybox")],
                ),
                want: PodActions {
                    sandbox_id: ready(),
                    containers_to_start: vec![0],
                    ..Default::default()
                },
            },
        ];
        for case in cases {
            assert_eq!(
                compute_pod_actions(&case.pod, &case.status),
                case.want,
                "case: {}",
                case.name
            );
        }
    }

    #[test]
    fn sandbox_without_ip_is_recreated_unless_host_network() {
        let mut s = sandbox(true, 2);
        s.ip = None;
        let st = status(vec![s.clone()], vec![]);
        let a = compute_pod_actions(&pod("Always", &[], &["a"]), &st);
        assert!(a.create_sandbox && a.kill_pod);
        assert_eq!(a.attempt, 3);
        let mut p = pod("Always", &[], &["a"]);
        if let Some(spec) = p.spec.as_mut() {
            spec.host_network = Some(true);
        }
        s.host_network = true;
        let a = compute_pod_actions(&p, &status(vec![s], vec![]));
        assert!(!a.create_sandbox);
    }
}
