//! Starting and stopping one container (upstream `startContainer` / `killContainer`): the CRI
//! container config (command, args, env, working dir, log path, labels, annotations), create,
//! start, the legacy log symlink, and stop with a grace period.

use k8s_openapi::api::core::v1::{Container, Pod};
use protobuf::RepeatedField;

use crate::cri::api;
use crate::events::EventType;
use crate::types::{pod_key, ContainerId};
use crate::volume::PodVolumes;

use super::labels::{new_container_annotations, new_container_labels, pod_name, pod_namespace};
use super::logs::{container_log_relative_path, create_legacy_symlink, legacy_symlink_path};
use super::sandbox::namespace_options;
use super::{RuntimeManager, StartFailure};

/// Builds the CRI config for `container` at `restart_count`.
pub fn generate_container_config(
    pod: &Pod,
    container: &Container,
    restart_count: u32,
    image_ref: &str,
    mounts: Vec<api::Mount>,
) -> api::ContainerConfig {
    let mut meta = api::ContainerMetadata::new();
    meta.set_name(container.name.clone());
    meta.set_attempt(restart_count);

    let mut image = api::ImageSpec::new();
    image.set_image(if image_ref.is_empty() {
        container.image.clone().unwrap_or_default()
    } else {
        image_ref.to_string()
    });
    image.set_user_specified_image(container.image.clone().unwrap_or_default());

    let envs = container
        .env
        .iter()
        .flatten()
        .map(|e| {
            let mut kv = api::KeyValue::new();
            kv.set_key(e.name.clone());
            kv.set_value(e.value.clone().unwrap_or_default());
            kv
        })
        .collect();

    let mut config = api::ContainerConfig::new();
    config.set_metadata(meta);
    config.set_image(image);
    config.set_command(RepeatedField::from_vec(
        container.command.clone().unwrap_or_default(),
    ));
    config.set_args(RepeatedField::from_vec(
        container.args.clone().unwrap_or_default(),
    ));
    config.set_working_dir(container.working_dir.clone().unwrap_or_default());
    config.set_envs(RepeatedField::from_vec(envs));
    config.set_labels(new_container_labels(pod, container));
    config.set_annotations(new_container_annotations(pod, container, restart_count));
    config.set_log_path(
        container_log_relative_path(&container.name, restart_count)
            .to_string_lossy()
            .into_owned(),
    );
    config.set_mounts(RepeatedField::from_vec(mounts));
    config.set_stdin(container.stdin.unwrap_or(false));
    config.set_stdin_once(container.stdin_once.unwrap_or(false));
    config.set_tty(container.tty.unwrap_or(false));

    let mut security = api::LinuxContainerSecurityContext::new();
    security.set_namespace_options(namespace_options(pod));
    let mut linux = api::LinuxContainerConfig::new();
    linux.set_security_context(security);
    config.set_linux(linux);
    config
}

impl RuntimeManager {
    /// Pulls (per policy), creates and starts one container in a sandbox. Failures come back
    /// with the upstream waiting reason.
    pub(super) fn start_container(
        &self,
        pod: &Pod,
        container: &Container,
        sandbox_id: &str,
        sandbox_config: &api::PodSandboxConfig,
        restart_count: u32,
        volumes: &PodVolumes,
    ) -> Result<ContainerId, StartFailure> {
        let image_ref = self.ensure_image(pod, container, sandbox_config)?;
        let log_dir = std::path::Path::new(sandbox_config.get_log_directory());
        let container_log_dir = log_dir.join(&container.name);
        if let Err(e) = std::fs::create_dir_all(&container_log_dir) {
            return Err(StartFailure::new(
                "CreateContainerConfigError",
                format!(
                    "creating log directory {}: {e}",
                    container_log_dir.display()
                ),
            ));
        }
        let mounts = self
            .volumes
            .container_mounts(pod, container, volumes)
            .map_err(|e| StartFailure::new("CreateContainerConfigError", e.to_string()))?;
        let config = generate_container_config(pod, container, restart_count, &image_ref, mounts);
        let id = self
            .runtime
            .create_container(sandbox_id, &config, sandbox_config)
            .map_err(|e| {
                let message = format!("Error: {e}");
                self.recorder
                    .pod_event(pod, EventType::Warning, "Failed", message);
                StartFailure::new("CreateContainerError", e.to_string())
            })?;
        self.recorder.pod_event(
            pod,
            EventType::Normal,
            "Created",
            format!("Created container {}", container.name),
        );
        if let Err(e) = self.runtime.start_container(&id) {
            self.recorder
                .pod_event(pod, EventType::Warning, "Failed", format!("Error: {e}"));
            return Err(StartFailure::new("RunContainerError", e.to_string()));
        }
        self.recorder.pod_event(
            pod,
            EventType::Normal,
            "Started",
            format!("Started container {}", container.name),
        );
        let target = log_dir.join(config.get_log_path());
        let link = legacy_symlink_path(
            &self.settings.container_logs_dir,
            pod_name(pod),
            pod_namespace(pod),
            &container.name,
            &id,
        );
        if let Err(e) = create_legacy_symlink(&target, &link) {
            log::warn!(
                "pod=\"{}\" container={} creating log symlink {}: {e}",
                pod_key(pod),
                container.name,
                link.display()
            );
        }
        Ok(ContainerId(id))
    }

    /// Stops one container, giving it `grace_secs` before the runtime kills it.
    pub(super) fn kill_container(
        &self,
        pod_desc: &str,
        id: &ContainerId,
        name: &str,
        grace_secs: i64,
        reason: &str,
    ) -> Result<(), crate::cri::CriError> {
        log::info!(
            "pod=\"{pod_desc}\" container={name} id={id} stopping with grace period {grace_secs}s: {reason}"
        );
        match self.runtime.stop_container(&id.0, grace_secs) {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EnvVar;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn container_config_fields() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let c = Container {
            name: "app".into(),
            image: Some("busybox:local".into()),
            command: Some(vec!["sh".into(), "-c".into()]),
            args: Some(vec!["echo hi".into()]),
            working_dir: Some("/tmp".into()),
            env: Some(vec![EnvVar {
                name: "A".into(),
                value: Some("1".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let cfg = generate_container_config(&pod, &c, 4, "sha256:abc", Vec::new());
        assert_eq!(cfg.get_metadata().get_name(), "app");
        assert_eq!(cfg.get_metadata().get_attempt(), 4);
        assert_eq!(cfg.get_image().get_image(), "sha256:abc");
        assert_eq!(cfg.get_command(), ["sh", "-c"]);
        assert_eq!(cfg.get_args(), ["echo hi"]);
        assert_eq!(cfg.get_working_dir(), "/tmp");
        assert_eq!(cfg.get_envs()[0].get_key(), "A");
        assert_eq!(cfg.get_log_path(), "app/4.log");
        assert_eq!(
            cfg.get_labels()
                .get("io.kubernetes.container.name")
                .map(String::as_str),
            Some("app")
        );
        assert_eq!(
            cfg.get_annotations()
                .get("io.kubernetes.container.restartCount")
                .map(String::as_str),
            Some("4")
        );
    }
}
