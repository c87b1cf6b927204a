//! Identifier newtypes and small pod accessors shared by every subsystem.

use std::fmt;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A pod's UID (`metadata.uid`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PodUid(pub String);

impl From<&str> for PodUid {
    fn from(s: &str) -> Self {
        PodUid(s.to_string())
    }
}

impl fmt::Display for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A container ID as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ContainerId(pub String);

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The UID of a pod as a newtype.
pub fn uid_of(pod: &Pod) -> PodUid {
    PodUid(pod.metadata.uid.clone().unwrap_or_default())
}

/// `namespace/name`, the form every log line uses for a pod.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether the pod runs in the host's network namespace.
pub fn is_host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The pod's restart policy (`Always` when unset, as the API server defaults it).
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// The pod's ephemeral containers (`kubectl debug`) as containers, with the fields the two
/// share (the API server refuses the others on ephemeral containers), each with its
/// `targetContainerName`.
pub fn ephemeral_containers(pod: &Pod) -> Vec<(Container, Option<String>)> {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .map(|e| {
            let c = Container {
                name: e.name.clone(),
                image: e.image.clone(),
                command: e.command.clone(),
                args: e.args.clone(),
                env: e.env.clone(),
                env_from: e.env_from.clone(),
                image_pull_policy: e.image_pull_policy.clone(),
                security_context: e.security_context.clone(),
                stdin: e.stdin,
                stdin_once: e.stdin_once,
                tty: e.tty,
                volume_mounts: e.volume_mounts.clone(),
                volume_devices: e.volume_devices.clone(),
                working_dir: e.working_dir.clone(),
                termination_message_path: e.termination_message_path.clone(),
                termination_message_policy: e.termination_message_policy.clone(),
                ..Default::default()
            };
            (c, e.target_container_name.clone().filter(|t| !t.is_empty()))
        })
        .collect()
}

/// Whether an init container is a sidecar (`restartPolicy: Always`): started in order with the
/// init containers, then kept running beside the main containers.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's termination grace period in seconds (30 when unset, as the API server defaults it).
pub fn termination_grace_period(pod: &Pod) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
}

/// Resolves a probe or hook port: a number, or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port number: {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| {
                    format!("couldn't find port: {name} in container {}", container.name)
                })
        }
    }
}

/// An API time from a wall-clock time.
pub fn api_time(t: std::time::SystemTime) -> Option<Time> {
    let since = t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok()?;
    let secs = i64::try_from(since.as_secs()).ok()?;
    let nanos = i32::try_from(since.subsec_nanos()).ok()?;
    k8s_openapi::jiff::Timestamp::new(secs, nanos)
        .ok()
        .map(Time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    #[test]
    fn named_and_numeric_ports() {
        let c = Container {
            name: "app".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(resolve_port(&IntOrString::String("81".into()), &c), Ok(81));
        assert!(resolve_port(&IntOrString::String("nope".into()), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(70000), &c).is_err());
    }
}
