//! Starting and stopping one container (upstream `startContainer` / `killContainer`): the CRI
//! container config (command, args, env, working dir, log path, labels, annotations), create,
//! start, the legacy log symlink, and stop with a grace period.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use protobuf::RepeatedField;

use crate::cri::api;
use crate::events::EventType;
use crate::types::{pod_key, ContainerId};
use crate::volume::PodVolumes;

use super::deferred::HookWork;
use super::images::{ImageReady, PullWork};
use super::labels::{new_container_annotations, new_container_labels, pod_name, pod_namespace};
use super::lifecycle;
use super::logs::{container_log_relative_path, create_legacy_symlink, legacy_symlink_path};
use super::sandbox::namespace_options;
use super::security;
use super::{RuntimeManager, StartFailure};

/// Where a container is started: its pod's sandbox, volumes and IP.
#[derive(Clone, Copy)]
pub struct StartTarget<'a> {
    /// The ready sandbox.
    pub sandbox_id: &'a str,
    /// The sandbox's config (log directory, namespaces).
    pub sandbox_config: &'a api::PodSandboxConfig,
    /// The pod's set-up volumes.
    pub volumes: &'a PodVolumes,
    /// The pod IP (HTTP hooks).
    pub pod_ip: Option<&'a str>,
    /// For an ephemeral container with `targetContainerName`: the target's container id,
    /// whose process namespace it joins.
    pub pid_target: Option<&'a str>,
}

/// Upper bound for a `postStart` hook (upstream waits without a bound; a hung hook must not
/// hold a waiter forever).
pub(super) const POST_START_TIMEOUT: Duration = Duration::from_secs(120);

/// What starting a container came to.
pub(super) enum Started {
    /// It runs; its postStart hook, if it has one, is still to run (on the waiters).
    Running(ContainerId, Option<HookWork>),
    /// Its image must be pulled first (on the waiters).
    Pull(Box<PullWork>),
}

/// Builds the CRI config for `container` at `restart_count`.
pub fn generate_container_config(
    pod: &Pod,
    container: &Container,
    restart_count: u32,
    image_ref: &str,
    mounts: Vec<api::Mount>,
    env: &[(String, String)],
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

    let envs = env
        .iter()
        .map(|(k, v)| {
            let mut kv = api::KeyValue::new();
            kv.set_key(k.clone());
            kv.set_value(v.clone());
            kv
        })
        .collect();
    let (command, args) = super::env::expand_command_and_args(container, env);

    let mut config = api::ContainerConfig::new();
    config.set_metadata(meta);
    config.set_image(image);
    config.set_command(RepeatedField::from_vec(command));
    config.set_args(RepeatedField::from_vec(args));
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
    /// Creates and starts one container in a sandbox once its image is present (else the
    /// pull to wait for). Failures come back with the upstream waiting reason.
    pub(super) fn start_container(
        &self,
        pod: &Pod,
        container: &Container,
        target: &StartTarget<'_>,
        restart_count: u32,
    ) -> Result<Started, StartFailure> {
        let StartTarget {
            sandbox_id,
            sandbox_config,
            volumes,
            pod_ip,
            pid_target,
        } = *target;
        let (image_ref, image) = match self.ensure_image(pod, container, sandbox_config)? {
            ImageReady::Present(image_ref, image) => (image_ref, image),
            ImageReady::Pull(work) => return Ok(Started::Pull(work)),
        };
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
        let mut mounts = self
            .volumes
            .container_mounts(pod, container, volumes)
            .map_err(|e| StartFailure::new("CreateContainerConfigError", e.to_string()))?;
        if let Some(m) = self
            .termination_message_mount(pod, container, &mounts)
            .map_err(|e| StartFailure::new("CreateContainerConfigError", e))?
        {
            mounts.push(m);
        }
        let host_ips = self.settings.node.host_ips();
        let env_ctx = super::env::EnvContext {
            objects: self.volumes.objects(),
            host_ips: &host_ips,
            pod_ips: &pod_ip.map(str::to_string).into_iter().collect::<Vec<_>>(),
            node: self.volumes.node_resources(),
        };
        let (env, invalid) =
            super::env::make_environment(pod, container, &env_ctx).map_err(|e| {
                self.recorder
                    .pod_event(pod, EventType::Warning, "Failed", format!("Error: {e}"));
                StartFailure::new("CreateContainerConfigError", e.to_string())
            })?;
        if !invalid.is_empty() {
            self.recorder.pod_event(
                pod,
                EventType::Warning,
                "InvalidEnvironmentVariableNames",
                format!(
                    "Keys [{}] from the EnvFrom of container {} were skipped since they are considered invalid environment variable names.",
                    invalid.join(", "),
                    container.name
                ),
            );
        }
        // Plugin devices: their envs come before the container's own (which win), their
        // mounts before its volumes, as upstream orders them.
        let device_options = match &self.settings.devices {
            Some(devices) => devices.run_options(pod, container).map_err(|message| {
                self.recorder.pod_event(
                    pod,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {message}"),
                );
                StartFailure::new("CreateContainerConfigError", message)
            })?,
            None => crate::devicemanager::RunOptions::default(),
        };
        let env: Vec<(String, String)> = if device_options.envs.is_empty() {
            env
        } else {
            device_options.envs.iter().cloned().chain(env).collect()
        };
        let mut config =
            generate_container_config(pod, container, restart_count, &image_ref, mounts, &env);
        device_options.apply(&mut config);
        self.apply_security_and_resources(pod, container, &image_ref, image, &mut config)
            .map_err(|message| {
                self.recorder.pod_event(
                    pod,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {message}"),
                );
                StartFailure::new("CreateContainerConfigError", message)
            })?;
        // An ephemeral container aimed at another joins that container's process
        // namespace, unless the pod shares one (or the host's) already, as upstream.
        if let Some(target_id) = pid_target {
            let ns = config
                .mut_linux()
                .mut_security_context()
                .mut_namespace_options();
            if ns.get_pid() == api::NamespaceMode::CONTAINER {
                ns.set_pid(api::NamespaceMode::TARGET);
                ns.set_target_id(target_id.to_string());
            }
        }
        let id = self
            .runtime
            .create_container(sandbox_id, &config, sandbox_config)
            .map_err(|e| {
                let message = format!("Error: {e}");
                self.recorder
                    .pod_event(pod, EventType::Warning, "Failed", message);
                StartFailure::new("CreateContainerError", e.to_string())
            })?;
        if let Ok(mut paths) = self.log_paths.lock() {
            paths.insert(id.clone(), log_dir.join(config.get_log_path()));
        }
        self.recorder.pod_event(
            pod,
            EventType::Normal,
            "Created",
            format!("Created container {}", container.name),
        );
        let is_init = pod.spec.as_ref().is_some_and(|s| {
            s.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == container.name)
        });
        let container_type = if is_init {
            "init_container"
        } else {
            "container"
        };
        let metrics = crate::util::metrics::kubelet();
        metrics.started_containers.inc(&[container_type]);
        if let Err(e) = self.runtime.start_container(&id) {
            let code = match &e {
                crate::cri::CriError::Rpc { code, .. } => format!("{code:?}"),
                crate::cri::CriError::NotFound { .. } => "NotFound".into(),
                crate::cri::CriError::DeadlineExceeded { .. } => "DeadlineExceeded".into(),
                crate::cri::CriError::Unavailable { .. } => "Unavailable".into(),
                _ => "Unknown".into(),
            };
            metrics
                .started_containers_errors
                .inc(&[container_type, &code]);
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
        let has_post_start = container
            .lifecycle
            .as_ref()
            .is_some_and(|l| l.post_start.is_some());
        let hook = has_post_start.then(|| HookWork {
            container: container.name.clone(),
            id: ContainerId(id.clone()),
            pod_ip: pod_ip.map(str::to_string),
        });
        Ok(Started::Running(ContainerId(id), hook))
    }

    /// The container's security context and resources (after verifying `runAsNonRoot`
    /// against the image's user).
    fn apply_security_and_resources(
        &self,
        pod: &Pod,
        container: &Container,
        image_ref: &str,
        image: Option<Box<api::Image>>,
        config: &mut api::ContainerConfig,
    ) -> Result<(), String> {
        // The image's user, from the ImageStatus that found the image present, or asked now
        // (after a pull).
        let image = match image {
            Some(image) => Some(*image),
            None => {
                let mut spec = api::ImageSpec::new();
                spec.set_image(image_ref.to_string());
                self.images
                    .image_status(&spec, false)
                    .map_err(|e| format!("inspecting image {image_ref}: {e}"))?
            }
        };
        let (uid, user) = match &image {
            Some(img) if img.has_uid() => (Some(img.get_uid().get_value()), String::new()),
            Some(img) => (None, img.get_username().to_string()),
            None => (None, String::new()),
        };
        security::verify_run_as_non_root(pod, container, uid, &user)?;
        let namespaces = config
            .get_linux()
            .get_security_context()
            .get_namespace_options()
            .clone();
        let seccomp_root = self.settings.root_dir.join("seccomp");
        let mut sc = security::container_security_context(
            pod,
            container,
            security::SeccompSettings {
                root: &seccomp_root,
                runtime_default: self.settings.seccomp_default,
            },
        );
        sc.set_namespace_options(namespaces);
        let qos = crate::resources::qos_class(pod);
        let resources =
            security::container_resources(container, qos, self.settings.memory_capacity_bytes);
        let linux = config.mut_linux();
        linux.set_security_context(sc);
        linux.set_resources(resources);
        Ok(())
    }

    /// A fresh, world-writable file under `<pod dir>/containers/<name>/` mounted at the
    /// container's `terminationMessagePath` (default `/dev/termination-log`), as upstream; its
    /// content becomes `terminated.message`.
    fn termination_message_mount(
        &self,
        pod: &Pod,
        container: &Container,
        mounts: &[api::Mount],
    ) -> Result<Option<api::Mount>, String> {
        use std::os::unix::fs::PermissionsExt;
        let path = container
            .termination_message_path
            .as_deref()
            .unwrap_or("/dev/termination-log");
        if path.is_empty() || mounts.iter().any(|m| m.get_container_path() == path) {
            return Ok(None);
        }
        let dir = self
            .volumes
            .pod_dir(&crate::types::uid_of(pod))
            .join("containers")
            .join(&container.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut id = [0u8; 4];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| "no randomness for the termination message file name".to_string())?;
        let file = dir.join(id.iter().map(|b| format!("{b:02x}")).collect::<String>());
        std::fs::File::create(&file)
            .and_then(|_| std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)))
            .map_err(|e| format!("creating {}: {e}", file.display()))?;
        let mut m = api::Mount::new();
        m.set_container_path(path.to_string());
        m.set_host_path(file.to_string_lossy().into_owned());
        Ok(Some(m))
    }

    /// Stops one container, giving it `grace_secs` before the runtime kills it. With `hook`
    /// (the pod, the container's spec and the pod IP, for a running container) its `preStop`
    /// handler runs first, within the grace period; the stop gets what is left of it (at least
    /// 2 s, as upstream).
    pub(super) fn kill_container(
        &self,
        pod_desc: &str,
        id: &ContainerId,
        name: &str,
        grace_secs: i64,
        reason: &str,
        hook: Option<(&Pod, &Container, Option<&str>)>,
    ) -> Result<(), crate::cri::CriError> {
        // A grace period beyond any real wait is held to one: deadlines stay representable.
        let grace_secs = grace_secs.clamp(0, super::MAX_GRACE_PERIOD_SECS);
        let grace = Duration::from_secs(u64::try_from(grace_secs).unwrap_or(0));
        let mut remaining = grace_secs;
        if let Some((pod, spec, pod_ip)) = hook {
            if let Some(handler) = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
                let started = self.clock.now();
                log::info!("pod=\"{pod_desc}\" container={name} running preStop hook");
                if let Err(message) = lifecycle::run_handler(
                    self.runtime.as_ref(),
                    &id.0,
                    pod,
                    spec,
                    handler,
                    pod_ip,
                    grace,
                ) {
                    log::warn!("pod=\"{pod_desc}\" container={name} {message}");
                    self.recorder
                        .pod_event(pod, EventType::Warning, "FailedPreStopHook", message);
                }
                let spent = self.clock.now().saturating_duration_since(started);
                remaining =
                    grace_secs.saturating_sub(i64::try_from(spent.as_secs()).unwrap_or(i64::MAX));
            }
        }
        let stop_grace = remaining.max(super::MIN_GRACE_PERIOD_SECS);
        log::info!(
            "pod=\"{pod_desc}\" container={name} id={id} stopping with grace period {stop_grace}s: {reason}"
        );
        match self.runtime.stop_container(&id.0, stop_grace) {
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
        let env = vec![("A".to_string(), "1".to_string())];
        let cfg = generate_container_config(&pod, &c, 4, "sha256:abc", Vec::new(), &env);
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
