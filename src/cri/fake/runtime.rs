//! The runtime half of [`FakeRuntime`]: sandbox and container lifecycles with
//! containerd's semantics and error messages (see the parent module docs).

use std::time::{Duration, Instant};

use super::{
    exit, labels_match, not_found, unknown, Call, Container, FakeRuntime, Sandbox, POD_UID_LABEL,
};
use crate::cri::api::{self, ContainerState, PodSandboxState};
use crate::cri::{CriError, RuntimeService};

impl RuntimeService for FakeRuntime {
    fn version(&self, _api_version: &str) -> Result<api::VersionResponse, CriError> {
        let st = self.begin("Version", || Call::Version)?;
        let mut v = api::VersionResponse::new();
        v.version = "0.1.0".to_string();
        v.runtime_name = "fake-runtime".to_string();
        v.runtime_version = "1.0.0".to_string();
        v.runtime_api_version = st.api_version.clone();
        Ok(v)
    }

    fn status(&self, _verbose: bool) -> Result<api::StatusResponse, CriError> {
        let st = self.begin("Status", || Call::Status)?;
        let mut status = api::RuntimeStatus::new();
        status.conditions = st.conditions.clone().into();
        let mut resp = api::StatusResponse::new();
        resp.set_status(status);
        Ok(resp)
    }

    fn run_pod_sandbox(
        &self,
        config: &api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, CriError> {
        const M: &str = "RunPodSandbox";
        let meta = config.get_metadata();
        let mut st = self.begin(M, || Call::RunPodSandbox {
            name: meta.name.clone(),
            uid: meta.uid.clone(),
            handler: runtime_handler.to_string(),
        })?;
        if config.metadata.is_none() {
            return Err(unknown(M, "sandbox config must include metadata".into()));
        }
        let name = format!(
            "{}_{}_{}_{}",
            meta.name, meta.namespace, meta.uid, meta.attempt
        );
        if let Some(holder) = st.sandbox_names.get(&name) {
            return Err(unknown(
                M,
                format!(
                "failed to reserve sandbox name {name:?}: name {name:?} is reserved for {holder:?}"
            ),
            ));
        }
        let namespaces = config
            .get_linux()
            .get_security_context()
            .get_namespace_options();
        let ip = if namespaces.network == api::NamespaceMode::NODE {
            None
        } else {
            Some(st.alloc_ip().ok_or_else(|| {
                unknown(M, "failed to setup network for sandbox: no IP addresses available in the pod network".into())
            })?)
        };
        let id = st.new_id();
        let mut status = api::PodSandboxStatus::new();
        status.id = id.clone();
        status.set_metadata(meta.clone());
        status.state = PodSandboxState::SANDBOX_READY;
        status.created_at = st.now();
        let mut network = api::PodSandboxNetworkStatus::new();
        network.ip = ip.map(|ip| st.ip_string(ip)).unwrap_or_default();
        status.set_network(network);
        let mut ns = api::Namespace::new();
        ns.set_options(namespaces.clone());
        status.mut_linux().set_namespaces(ns);
        status.labels = config.labels.clone();
        status.annotations = config.annotations.clone();
        status.runtime_handler = runtime_handler.to_string();
        st.sandbox_names.insert(name.clone(), id.clone());
        let sandbox = Sandbox {
            status,
            name,
            ip,
            log_directory: config.log_directory.clone(),
        };
        if let Some(uid) = config.labels.get(POD_UID_LABEL) {
            st.by_pod
                .entry(uid.clone())
                .or_default()
                .sandboxes
                .insert(id.clone());
        }
        st.sandboxes.insert(id.clone(), sandbox);
        Ok(id)
    }

    fn stop_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<(), CriError> {
        let mut st = self.begin("StopPodSandbox", || {
            Call::StopPodSandbox(pod_sandbox_id.to_string())
        })?;
        if !st.sandboxes.contains_key(pod_sandbox_id) {
            return Err(not_found("StopPodSandbox", "sandbox", pod_sandbox_id));
        }
        st.stop_sandbox_containers(pod_sandbox_id);
        let ip = st.sandboxes.get_mut(pod_sandbox_id).and_then(|s| {
            s.status.state = PodSandboxState::SANDBOX_NOTREADY;
            s.status.mut_network().ip.clear();
            s.ip.take()
        });
        if let Some(ip) = ip {
            st.ips_in_use.remove(&ip);
        }
        Ok(())
    }

    fn remove_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<(), CriError> {
        let mut st = self.begin("RemovePodSandbox", || {
            Call::RemovePodSandbox(pod_sandbox_id.to_string())
        })?;
        let Some(sandbox) = st.sandboxes.get(pod_sandbox_id) else {
            return Ok(());
        };
        if sandbox.status.state == PodSandboxState::SANDBOX_READY {
            return Err(unknown(
                "RemovePodSandbox",
                format!("sandbox container {pod_sandbox_id:?} is not fully stopped"),
            ));
        }
        let st = &mut *st;
        let mut removed = Vec::new();
        st.containers.retain(|_, c| {
            let keep = c.sandbox_id != pod_sandbox_id;
            if !keep {
                st.container_names.remove(&c.name);
                st.stop_grace.remove(&c.status.id);
                removed.push((c.status.labels.clone(), c.status.id.clone()));
            }
            keep
        });
        for (labels, id) in removed {
            st.unindex(&labels, &id, false);
        }
        if let Some(sandbox) = st.sandboxes.remove(pod_sandbox_id) {
            st.sandbox_names.remove(&sandbox.name);
            st.unindex(&sandbox.status.labels, pod_sandbox_id, true);
            if let Some(ip) = sandbox.ip {
                st.ips_in_use.remove(&ip);
            }
        }
        Ok(())
    }

    fn pod_sandbox_status(
        &self,
        pod_sandbox_id: &str,
        verbose: bool,
    ) -> Result<api::PodSandboxStatusResponse, CriError> {
        let mut st = self.begin("PodSandboxStatus", || {
            Call::PodSandboxStatus(pod_sandbox_id.to_string())
        })?;
        let now = st.now();
        let sandbox = st
            .sandboxes
            .get(pod_sandbox_id)
            .ok_or_else(|| not_found("PodSandboxStatus", "sandbox", pod_sandbox_id))?;
        let mut resp = api::PodSandboxStatusResponse::new();
        resp.set_status(sandbox.status.clone());
        resp.timestamp = now;
        if verbose {
            let info = format!(
                "{{\"runtimeHandler\":{:?}}}",
                sandbox.status.runtime_handler
            );
            resp.info.insert("info".to_string(), info);
        }
        Ok(resp)
    }

    fn list_pod_sandbox(
        &self,
        filter: Option<&api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>, CriError> {
        let st = self.begin("ListPodSandbox", || Call::ListPodSandbox)?;
        let matches = |s: &api::PodSandboxStatus| {
            filter.is_none_or(|f| {
                (f.id.is_empty() || f.id == s.id)
                    && f.state.as_ref().is_none_or(|v| v.state == s.state)
                    && labels_match(&f.label_selector, &s.labels)
            })
        };
        let candidates: Vec<&super::Sandbox> =
            match st.pod_candidates(filter.map(|f| &f.label_selector)) {
                Some(index) => index
                    .sandboxes
                    .iter()
                    .filter_map(|id| st.sandboxes.get(id))
                    .collect(),
                None if filter.is_some_and(|f| f.label_selector.contains_key(POD_UID_LABEL)) => {
                    Vec::new()
                }
                None => st.sandboxes.values().collect(),
            };
        let items = candidates
            .into_iter()
            .map(|s| &s.status)
            .filter(|s| matches(s))
            .map(|s| {
                let mut p = api::PodSandbox::new();
                p.id = s.id.clone();
                p.metadata = s.metadata.clone();
                p.state = s.state;
                p.created_at = s.created_at;
                p.labels = s.labels.clone();
                p.annotations = s.annotations.clone();
                p.runtime_handler = s.runtime_handler.clone();
                p
            })
            .collect();
        Ok(items)
    }

    fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: &api::ContainerConfig,
        _sandbox_config: &api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        const M: &str = "CreateContainer";
        let meta = config.get_metadata();
        let mut st = self.begin(M, || Call::CreateContainer {
            sandbox: pod_sandbox_id.to_string(),
            name: meta.name.clone(),
        })?;
        if config.metadata.is_none() {
            return Err(unknown(M, "container config must include metadata".into()));
        }
        let sandbox = st
            .sandboxes
            .get(pod_sandbox_id)
            .ok_or_else(|| CriError::NotFound {
                method: M,
                message: format!("failed to find sandbox id {pod_sandbox_id:?}: not found"),
            })?;
        if sandbox.status.state != PodSandboxState::SANDBOX_READY {
            return Err(CriError::NotFound {
                method: M,
                message: format!("failed to get sandbox container task: no running task found: task {pod_sandbox_id} not found: not found"),
            });
        }
        let pod = sandbox.status.get_metadata();
        let name = format!(
            "{}_{}_{}_{}_{}",
            meta.name, pod.name, pod.namespace, pod.uid, meta.attempt
        );
        let log_path = if config.log_path.is_empty() {
            String::new()
        } else {
            format!(
                "{}/{}",
                sandbox.log_directory.trim_end_matches('/'),
                config.log_path
            )
        };
        let image_name = &config.get_image().image;
        let image = st
            .find_image(image_name)
            .cloned()
            .ok_or_else(|| CriError::NotFound {
                method: M,
                message: format!("failed to resolve image {image_name:?}: not found"),
            })?;
        if let Some(holder) = st.container_names.get(&name) {
            return Err(unknown(M, format!(
                "failed to reserve container name {name:?}: name {name:?} is reserved for {holder:?}"
            )));
        }
        let id = st.new_id();
        let mut status = api::ContainerStatus::new();
        status.id = id.clone();
        status.set_metadata(meta.clone());
        status.state = ContainerState::CONTAINER_CREATED;
        status.created_at = st.now();
        let mut spec = api::ImageSpec::new();
        spec.image = image
            .repo_tags
            .first()
            .cloned()
            .unwrap_or_else(|| image.id.clone());
        status.set_image(spec);
        status.image_ref = image
            .repo_digests
            .first()
            .cloned()
            .unwrap_or_else(|| image.id.clone());
        status.image_id = image.id;
        status.labels = config.labels.clone();
        status.annotations = config.annotations.clone();
        status.mounts = config.mounts.clone();
        status.log_path = log_path;
        st.container_names.insert(name.clone(), id.clone());
        let container = Container {
            status,
            sandbox_id: pod_sandbox_id.to_string(),
            name,
            image_spec: config.get_image().clone(),
            planned_exit: None,
        };
        if let Some(uid) = config.labels.get(POD_UID_LABEL) {
            st.by_pod
                .entry(uid.clone())
                .or_default()
                .containers
                .insert(id.clone());
        }
        st.containers.insert(id.clone(), container);
        Ok(id)
    }

    fn start_container(&self, container_id: &str) -> Result<(), CriError> {
        const M: &str = "StartContainer";
        let mut st = match self.begin(M, || Call::StartContainer(container_id.to_string())) {
            Ok(st) => st,
            // As containerd: a start that failed in the runtime leaves the container exited
            // (StartError, 128); one that never reached it (the connection) leaves it created.
            Err(e) => {
                let reached = !matches!(
                    e,
                    CriError::Unavailable { .. } | CriError::DeadlineExceeded { .. }
                );
                if reached {
                    let mut st = self.lock();
                    let now = st.now();
                    if let Some(c) = st.containers.get_mut(container_id) {
                        exit(&mut c.status, now, 128, "StartError");
                        c.status.message = e.to_string();
                    }
                }
                return Err(e);
            }
        };
        let now = st.now();
        let st = &mut *st;
        let c = st
            .containers
            .get_mut(container_id)
            .ok_or_else(|| not_found(M, "container", container_id))?;
        if c.status.state != ContainerState::CONTAINER_CREATED {
            return Err(unknown(M, format!(
                "failed to set starting state for container {container_id:?}: container is in {:?} state",
                c.status.state
            )));
        }
        let ready = st
            .sandboxes
            .get(&c.sandbox_id)
            .is_some_and(|s| s.status.state == PodSandboxState::SANDBOX_READY);
        if !ready {
            return Err(unknown(
                M,
                format!("sandbox container {:?} is not running", c.sandbox_id),
            ));
        }
        c.status.state = ContainerState::CONTAINER_RUNNING;
        c.status.started_at = now;
        st.plan_exit(container_id, now);
        Ok(())
    }

    fn stop_container(&self, container_id: &str, timeout_secs: i64) -> Result<(), CriError> {
        let mut st = self.begin("StopContainer", || {
            Call::StopContainer(container_id.to_string())
        })?;
        st.stop_grace.insert(container_id.to_string(), timeout_secs);
        let ignores_sigterm = st.ignores_sigterm(container_id);
        let running = |st: &super::State| {
            st.containers
                .get(container_id)
                .is_some_and(|c| c.status.state == ContainerState::CONTAINER_RUNNING)
        };
        if !st.containers.contains_key(container_id) {
            return Err(not_found("StopContainer", "container", container_id));
        }
        if ignores_sigterm && timeout_secs > 0 && running(&st) {
            // SIGTERM is ignored: the stop waits out the grace period (or a concurrent stop
            // with a shorter one, or an exit of the container's own), then SIGKILLs.
            let grace = Duration::from_secs(u64::try_from(timeout_secs).unwrap_or(0));
            let deadline = Instant::now() + grace.min(Duration::from_secs(3600));
            while running(&st) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                st = self
                    .exited
                    .wait_timeout(st, left.min(Duration::from_millis(100)))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
                st.run_planned_exits();
            }
        }
        let now = st.now();
        if let Some(c) = st.containers.get_mut(container_id) {
            if c.status.state == ContainerState::CONTAINER_RUNNING {
                // SIGTERM (143) within a grace period, SIGKILL (137) without one (or when
                // SIGTERM was ignored).
                let code = if timeout_secs > 0 && !ignores_sigterm {
                    143
                } else {
                    137
                };
                exit(&mut c.status, now, code, "Error");
                self.exited.notify_all();
            }
        }
        Ok(())
    }

    fn remove_container(&self, container_id: &str) -> Result<(), CriError> {
        let mut st = self.begin("RemoveContainer", || {
            Call::RemoveContainer(container_id.to_string())
        })?;
        if let Some(c) = st.containers.remove(container_id) {
            st.container_names.remove(&c.name);
            st.stop_grace.remove(container_id);
            st.unindex(&c.status.labels, container_id, false);
        }
        Ok(())
    }

    fn list_containers(
        &self,
        filter: Option<&api::ContainerFilter>,
    ) -> Result<Vec<api::Container>, CriError> {
        let st = self.begin("ListContainers", || Call::ListContainers)?;
        let matches = |c: &Container| {
            filter.is_none_or(|f| {
                (f.id.is_empty() || f.id == c.status.id)
                    && (f.pod_sandbox_id.is_empty() || f.pod_sandbox_id == c.sandbox_id)
                    && f.state.as_ref().is_none_or(|v| v.state == c.status.state)
                    && labels_match(&f.label_selector, &c.status.labels)
            })
        };
        let candidates: Vec<&Container> = match st.pod_candidates(filter.map(|f| &f.label_selector))
        {
            Some(index) => index
                .containers
                .iter()
                .filter_map(|id| st.containers.get(id))
                .collect(),
            None if filter.is_some_and(|f| f.label_selector.contains_key(POD_UID_LABEL)) => {
                Vec::new()
            }
            None => st.containers.values().collect(),
        };
        let items = candidates
            .into_iter()
            .filter(|c| matches(c))
            .map(|c| {
                let s = &c.status;
                let mut out = api::Container::new();
                out.id = s.id.clone();
                out.pod_sandbox_id = c.sandbox_id.clone();
                out.metadata = s.metadata.clone();
                out.set_image(c.image_spec.clone());
                out.image_ref = s.image_id.clone();
                out.image_id = s.image_id.clone();
                out.state = s.state;
                out.created_at = s.created_at;
                out.labels = s.labels.clone();
                out.annotations = s.annotations.clone();
                out
            })
            .collect();
        Ok(items)
    }

    fn container_status(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<api::ContainerStatusResponse, CriError> {
        let st = self.begin("ContainerStatus", || {
            Call::ContainerStatus(container_id.to_string())
        })?;
        let c = st
            .containers
            .get(container_id)
            .ok_or_else(|| not_found("ContainerStatus", "container", container_id))?;
        let mut resp = api::ContainerStatusResponse::new();
        resp.set_status(c.status.clone());
        if verbose {
            let info = format!("{{\"sandboxID\":{:?}}}", c.sandbox_id);
            resp.info.insert("info".to_string(), info);
        }
        Ok(resp)
    }

    fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        _timeout: Duration,
    ) -> Result<api::ExecSyncResponse, CriError> {
        let st = self.begin("ExecSync", || Call::ExecSync {
            container: container_id.to_string(),
            cmd: cmd.to_vec(),
        })?;
        let c = st
            .containers
            .get(container_id)
            .ok_or_else(|| not_found("ExecSync", "container", container_id))?;
        if c.status.state != ContainerState::CONTAINER_RUNNING {
            return Err(unknown(
                "ExecSync",
                format!("container is in {:?} state", c.status.state),
            ));
        }
        Ok(st.exec_result.clone())
    }

    /// Plausible figures for running containers: 1% of a core since the start and a
    /// working set between 4 and 8 MiB fixed by the id, a 4 KiB writable layer.
    fn list_container_stats(
        &self,
        filter: Option<&api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>, CriError> {
        let st = self.begin("ListContainerStats", || Call::ListContainerStats)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let wrap = |v: u64| {
            let mut w = api::UInt64Value::new();
            w.value = v;
            w
        };
        let out = st
            .containers
            .values()
            .filter(|c| c.status.state == ContainerState::CONTAINER_RUNNING)
            .filter(|c| {
                filter.is_none_or(|f| {
                    (f.id.is_empty() || f.id == c.status.id)
                        && (f.pod_sandbox_id.is_empty() || f.pod_sandbox_id == c.sandbox_id)
                        && labels_match(&f.label_selector, &c.status.labels)
                })
            })
            .map(|c| {
                let mut attrs = api::ContainerAttributes::new();
                attrs.id = c.status.id.clone();
                attrs.metadata = c.status.metadata.clone();
                attrs.labels = c.status.labels.clone();
                attrs.annotations = c.status.annotations.clone();
                let running_ns = u64::try_from(now - c.status.started_at).unwrap_or(0);
                let mut cpu = api::CpuUsage::new();
                cpu.timestamp = now;
                cpu.usage_core_nano_seconds = Some(wrap(running_ns / 100)).into();
                cpu.usage_nano_cores = Some(wrap(10_000_000)).into();
                let hash = c
                    .status
                    .id
                    .bytes()
                    .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                let working_set = (4 << 20) + hash % (4 << 20);
                let mut memory = api::MemoryUsage::new();
                memory.timestamp = now;
                memory.working_set_bytes = Some(wrap(working_set)).into();
                memory.usage_bytes = Some(wrap(working_set + (1 << 20))).into();
                memory.rss_bytes = Some(wrap(working_set / 2)).into();
                let mut layer = api::FilesystemUsage::new();
                layer.timestamp = now;
                layer.used_bytes = Some(wrap(4096)).into();
                layer.inodes_used = Some(wrap(4)).into();
                let mut stats = api::ContainerStats::new();
                stats.attributes = Some(attrs).into();
                stats.cpu = Some(cpu).into();
                stats.memory = Some(memory).into();
                stats.writable_layer = Some(layer).into();
                stats
            })
            .collect();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{container_config, sandbox_config};
    use super::*;
    use crate::cri::RpcCode;

    const IMAGE: &str = "docker.io/library/busybox:local";

    /// A fake with the test image on the node and one ready sandbox.
    fn setup() -> (FakeRuntime, String, api::PodSandboxConfig) {
        let fake = FakeRuntime::new();
        fake.preload_image(IMAGE);
        let cfg = sandbox_config("web", "uid-1", 0);
        let sb = fake.run_pod_sandbox(&cfg, "runc").unwrap();
        (fake, sb, cfg)
    }

    fn state(fake: &FakeRuntime, id: &str) -> ContainerState {
        fake.container_status(id, false).unwrap().get_status().state
    }

    #[test]
    fn annotated_containers_exit_by_themselves_with_their_code() {
        let fake = FakeRuntime::new();
        fake.allow_any_image();
        fake.set_pod_network("10.244.7.0/24").unwrap();
        let mut cfg = sandbox_config("job", "uid-job", 0);
        cfg.annotations
            .insert(super::super::EXIT_AFTER_ANNOTATION.into(), "200ms".into());
        cfg.annotations
            .insert(super::super::EXIT_CODE_ANNOTATION.into(), "1".into());
        cfg.annotations.insert(
            format!("{}.side", super::super::EXIT_AFTER_ANNOTATION),
            "1h".into(),
        );
        let sb = fake.run_pod_sandbox(&cfg, "").unwrap();
        let ip = fake
            .pod_sandbox_status(&sb, false)
            .unwrap()
            .get_status()
            .get_network()
            .ip
            .clone();
        assert!(ip.starts_with("10.244.7."), "{ip}");
        let mut image = api::ImageSpec::new();
        image.image = "registry.example/any:1".into();
        crate::cri::ImageService::pull_image(&fake, &image, None, None).unwrap();
        let main = fake
            .create_container(
                &sb,
                &container_config("main", "registry.example/any:1"),
                &cfg,
            )
            .unwrap();
        let side = fake
            .create_container(
                &sb,
                &container_config("side", "registry.example/any:1"),
                &cfg,
            )
            .unwrap();
        fake.start_container(&main).unwrap();
        fake.start_container(&side).unwrap();
        assert_eq!(state(&fake, &main), ContainerState::CONTAINER_RUNNING);
        std::thread::sleep(Duration::from_millis(300));
        let status = fake.container_status(&main, false).unwrap();
        let s = status.get_status();
        assert_eq!(s.state, ContainerState::CONTAINER_EXITED);
        assert_eq!((s.exit_code, s.reason.as_str()), (1, "Error"));
        assert!(s.finished_at - s.started_at >= 200_000_000);
        assert_eq!(
            state(&fake, &side),
            ContainerState::CONTAINER_RUNNING,
            "own override"
        );
        assert!(fake.set_pod_network("10.0.0.0/31").is_err());
        assert!(fake.set_pod_network("nonsense").is_err());
    }

    #[test]
    fn container_lifecycle() {
        let (fake, sb, cfg) = setup();
        let id = fake
            .create_container(&sb, &container_config("app", IMAGE), &cfg)
            .unwrap();
        assert_eq!(state(&fake, &id), ContainerState::CONTAINER_CREATED);
        let status = fake.container_status(&id, true).unwrap();
        let s = status.get_status();
        assert_eq!(s.log_path, "/var/log/pods/default_web_uid-1/app/0.log");
        assert_eq!(s.get_image().image, IMAGE);
        assert!(s.image_id.starts_with("sha256:"));
        assert!(s.image_ref.contains("@sha256:"));
        assert_eq!(s.labels.get("io.kubernetes.container.name").unwrap(), "app");
        assert!(status.info.contains_key("info"));

        fake.start_container(&id).unwrap();
        assert_eq!(state(&fake, &id), ContainerState::CONTAINER_RUNNING);
        let err = fake.start_container(&id).unwrap_err();
        assert_eq!(err.code(), Some(RpcCode::Unknown));
        assert!(
            err.to_string()
                .contains("container is in CONTAINER_RUNNING state"),
            "{err}"
        );

        fake.stop_container(&id, 30).unwrap();
        let status = fake.container_status(&id, false).unwrap();
        assert_eq!(status.get_status().state, ContainerState::CONTAINER_EXITED);
        assert_eq!(status.get_status().exit_code, 143);
        assert_eq!(status.get_status().reason, "Error");
        assert_eq!(fake.stop_grace_period(&id), Some(30));
        fake.stop_container(&id, 0).unwrap(); // already stopped: fine
        assert_eq!(
            fake.container_status(&id, false)
                .unwrap()
                .get_status()
                .exit_code,
            143
        );

        fake.remove_container(&id).unwrap();
        fake.remove_container(&id).unwrap(); // idempotent
        assert!(fake
            .container_status(&id, false)
            .unwrap_err()
            .is_not_found());
        assert!(fake.start_container(&id).unwrap_err().is_not_found());
        assert!(fake.stop_container(&id, 0).unwrap_err().is_not_found());
    }

    #[test]
    fn stopping_a_created_container_leaves_it_created() {
        let (fake, sb, cfg) = setup();
        let id = fake
            .create_container(&sb, &container_config("app", IMAGE), &cfg)
            .unwrap();
        fake.stop_container(&id, 0).unwrap();
        assert_eq!(state(&fake, &id), ContainerState::CONTAINER_CREATED);
    }

    #[test]
    fn list_containers_mirrors_the_config() {
        let (fake, sb, cfg) = setup();
        let id = fake
            .create_container(&sb, &container_config("app", IMAGE), &cfg)
            .unwrap();
        let listed = fake.list_containers(None).unwrap();
        assert_eq!(listed.len(), 1);
        let c = &listed[0];
        assert_eq!(
            (c.id.as_str(), c.pod_sandbox_id.as_str()),
            (id.as_str(), sb.as_str())
        );
        assert_eq!(c.get_metadata().name, "app");
        assert_eq!(c.get_image().image, IMAGE);
        assert!(c.image_ref.starts_with("sha256:"));
        assert_eq!(c.image_ref, c.image_id);
    }

    #[test]
    fn sandbox_lifecycle() {
        let (fake, sb, cfg) = setup();
        let status = fake.pod_sandbox_status(&sb, false).unwrap();
        let s = status.get_status();
        assert_eq!(s.state, PodSandboxState::SANDBOX_READY);
        assert_eq!(s.get_metadata().name, "web");
        assert_eq!(s.runtime_handler, "runc");
        assert!(s.get_network().ip.starts_with("10.88."));
        assert!(status.timestamp >= s.created_at);

        let c1 = fake
            .create_container(&sb, &container_config("a", IMAGE), &cfg)
            .unwrap();
        let c2 = fake
            .create_container(&sb, &container_config("b", IMAGE), &cfg)
            .unwrap();
        fake.start_container(&c1).unwrap();

        let err = fake.remove_pod_sandbox(&sb).unwrap_err();
        assert!(err.to_string().contains("is not fully stopped"), "{err}");

        fake.stop_pod_sandbox(&sb).unwrap();
        fake.stop_pod_sandbox(&sb).unwrap(); // idempotent
        let s = fake.pod_sandbox_status(&sb, false).unwrap();
        assert_eq!(s.get_status().state, PodSandboxState::SANDBOX_NOTREADY);
        let c1s = fake.container_status(&c1, false).unwrap();
        assert_eq!(c1s.get_status().state, ContainerState::CONTAINER_EXITED);
        assert_eq!(c1s.get_status().exit_code, 137);
        assert_eq!(state(&fake, &c2), ContainerState::CONTAINER_CREATED);

        // No new containers in a stopped sandbox, and created ones cannot start.
        let err = fake
            .create_container(&sb, &container_config("c", IMAGE), &cfg)
            .unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        let err = fake.start_container(&c2).unwrap_err();
        assert!(err.to_string().contains("is not running"), "{err}");

        fake.remove_pod_sandbox(&sb).unwrap();
        assert!(fake.list_containers(None).unwrap().is_empty());
        assert!(fake
            .pod_sandbox_status(&sb, false)
            .unwrap_err()
            .is_not_found());
        fake.remove_pod_sandbox(&sb).unwrap(); // idempotent
        assert!(fake.stop_pod_sandbox(&sb).unwrap_err().is_not_found());
    }

    #[test]
    fn names_are_reserved_until_removal() {
        let (fake, sb, cfg) = setup();
        let err = fake.run_pod_sandbox(&cfg, "").unwrap_err();
        assert_eq!(err.code(), Some(RpcCode::Unknown));
        let text = err.to_string();
        assert!(
            text.contains("failed to reserve sandbox name \"web_default_uid-1_0\""),
            "{text}"
        );
        assert!(text.contains(&sb), "{text}");
        let next = fake
            .run_pod_sandbox(&sandbox_config("web", "uid-1", 1), "")
            .unwrap();

        let c = container_config("app", IMAGE);
        let id = fake.create_container(&next, &c, &cfg).unwrap();
        let err = fake.create_container(&next, &c, &cfg).unwrap_err();
        assert!(
            err.to_string()
                .contains("failed to reserve container name \"app_web_default_uid-1_0\""),
            "{err}"
        );
        fake.remove_container(&id).unwrap();
        fake.create_container(&next, &c, &cfg).unwrap();

        fake.stop_pod_sandbox(&sb).unwrap();
        fake.remove_pod_sandbox(&sb).unwrap();
        fake.run_pod_sandbox(&cfg, "").unwrap();
    }

    #[test]
    fn create_needs_metadata_sandbox_and_image() {
        let (fake, sb, cfg) = setup();
        let err = fake
            .run_pod_sandbox(&api::PodSandboxConfig::new(), "")
            .unwrap_err();
        assert!(err.to_string().contains("must include metadata"), "{err}");
        let err = fake
            .create_container("missing", &container_config("app", IMAGE), &cfg)
            .unwrap_err();
        assert!(err.is_not_found());
        let err = fake
            .create_container(&sb, &container_config("app", "nginx"), &cfg)
            .unwrap_err();
        assert!(err.is_not_found());
        assert!(
            err.to_string()
                .contains("failed to resolve image \"nginx\""),
            "{err}"
        );
        let err = fake
            .create_container(&sb, &api::ContainerConfig::new(), &cfg)
            .unwrap_err();
        assert!(err.to_string().contains("must include metadata"), "{err}");
    }

    #[test]
    fn host_network_sandbox_has_no_ip() {
        let fake = FakeRuntime::new();
        let mut cfg = sandbox_config("host", "u", 0);
        cfg.mut_linux()
            .mut_security_context()
            .mut_namespace_options()
            .network = api::NamespaceMode::NODE;
        let sb = fake.run_pod_sandbox(&cfg, "").unwrap();
        let status = fake.pod_sandbox_status(&sb, false).unwrap();
        assert_eq!(status.get_status().get_network().ip, "");
        let ns = status
            .get_status()
            .get_linux()
            .get_namespaces()
            .get_options();
        assert_eq!(ns.network, api::NamespaceMode::NODE);
    }

    #[test]
    fn sandbox_filters() {
        let fake = FakeRuntime::new();
        let a = fake
            .run_pod_sandbox(&sandbox_config("a", "ua", 0), "")
            .unwrap();
        let b = fake
            .run_pod_sandbox(&sandbox_config("b", "ub", 0), "")
            .unwrap();
        fake.stop_pod_sandbox(&b).unwrap();
        let ids = |f: &api::PodSandboxFilter| -> Vec<String> {
            fake.list_pod_sandbox(Some(f))
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect()
        };
        assert_eq!(fake.list_pod_sandbox(None).unwrap().len(), 2);
        assert_eq!(ids(&api::PodSandboxFilter::new()).len(), 2);

        let mut f = api::PodSandboxFilter::new();
        f.id = a.clone();
        assert_eq!(ids(&f), vec![a.clone()]);

        let mut f = api::PodSandboxFilter::new();
        f.mut_state().state = PodSandboxState::SANDBOX_READY;
        assert_eq!(ids(&f), vec![a.clone()]);
        f.mut_state().state = PodSandboxState::SANDBOX_NOTREADY;
        assert_eq!(ids(&f), vec![b.clone()]);

        let mut f = api::PodSandboxFilter::new();
        f.label_selector
            .insert("io.kubernetes.pod.uid".into(), "ub".into());
        assert_eq!(ids(&f), vec![b.clone()]);
        f.label_selector.insert("other".into(), "x".into());
        assert!(ids(&f).is_empty());

        let mut f = api::PodSandboxFilter::new();
        f.id = a.clone();
        f.mut_state().state = PodSandboxState::SANDBOX_NOTREADY;
        assert!(ids(&f).is_empty(), "fields are ANDed");
    }

    #[test]
    fn container_filters() {
        let (fake, sb1, cfg) = setup();
        let cfg2 = sandbox_config("other", "uid-2", 0);
        let sb2 = fake.run_pod_sandbox(&cfg2, "").unwrap();
        let c1 = fake
            .create_container(&sb1, &container_config("a", IMAGE), &cfg)
            .unwrap();
        let c2 = fake
            .create_container(&sb1, &container_config("b", IMAGE), &cfg)
            .unwrap();
        let mut cc3 = container_config("a", IMAGE);
        cc3.labels
            .insert("io.kubernetes.pod.uid".into(), "uid-2".into());
        let c3 = fake.create_container(&sb2, &cc3, &cfg2).unwrap();
        fake.start_container(&c2).unwrap();
        let ids = |f: &api::ContainerFilter| -> Vec<String> {
            let mut v: Vec<String> = fake
                .list_containers(Some(f))
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect();
            v.sort();
            v
        };
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        assert_eq!(ids(&api::ContainerFilter::new()).len(), 3);

        let mut f = api::ContainerFilter::new();
        f.pod_sandbox_id = sb1.clone();
        assert_eq!(ids(&f), sorted(vec![c1.clone(), c2.clone()]));

        let mut f = api::ContainerFilter::new();
        f.mut_state().state = ContainerState::CONTAINER_RUNNING;
        assert_eq!(ids(&f), vec![c2.clone()]);
        f.mut_state().state = ContainerState::CONTAINER_CREATED;
        assert_eq!(ids(&f), sorted(vec![c1.clone(), c3.clone()]));
        f.pod_sandbox_id = sb2.clone();
        assert_eq!(ids(&f), vec![c3.clone()]);

        let mut f = api::ContainerFilter::new();
        f.label_selector
            .insert("io.kubernetes.container.name".into(), "a".into());
        assert_eq!(ids(&f), sorted(vec![c1.clone(), c3.clone()]));

        let mut f = api::ContainerFilter::new();
        f.id = c3.clone();
        assert_eq!(ids(&f), vec![c3.clone()]);
        f.id = "unknown".into();
        assert!(ids(&f).is_empty());

        // Per-pod listings go through the pod index, which follows removals.
        let mut f = api::ContainerFilter::new();
        f.label_selector
            .insert("io.kubernetes.pod.uid".into(), "uid-2".into());
        assert_eq!(ids(&f), vec![c3.clone()]);
        f.label_selector
            .insert("io.kubernetes.container.name".into(), "b".into());
        assert!(ids(&f).is_empty());
        f.label_selector.remove("io.kubernetes.container.name");
        fake.remove_container(&c3).unwrap();
        assert!(ids(&f).is_empty());
        fake.stop_pod_sandbox(&sb1).unwrap();
        fake.remove_pod_sandbox(&sb1).unwrap();
        f.label_selector.insert(
            "io.kubernetes.pod.uid".into(),
            cfg.get_metadata().uid.clone(),
        );
        assert!(ids(&f).is_empty());
        let mut sf = api::PodSandboxFilter::new();
        sf.label_selector
            .insert("io.kubernetes.pod.uid".into(), "uid-2".into());
        assert_eq!(fake.list_pod_sandbox(Some(&sf)).unwrap().len(), 1);
    }

    #[test]
    fn exec_sync_needs_a_running_container() {
        let (fake, sb, cfg) = setup();
        let id = fake
            .create_container(&sb, &container_config("app", IMAGE), &cfg)
            .unwrap();
        let cmd = vec!["cat".to_string(), "/tmp/healthy".to_string()];
        let err = fake
            .exec_sync(&id, &cmd, Duration::from_secs(1))
            .unwrap_err();
        assert!(err.to_string().contains("CONTAINER_CREATED"), "{err}");
        fake.start_container(&id).unwrap();
        let ok = fake.exec_sync(&id, &cmd, Duration::from_secs(1)).unwrap();
        assert_eq!(ok.exit_code, 0);
        fake.set_exec_result(b"out", b"err", 1);
        let r = fake.exec_sync(&id, &cmd, Duration::from_secs(1)).unwrap();
        assert_eq!(
            (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
            (&b"out"[..], &b"err"[..], 1)
        );
        assert!(fake.calls().contains(&Call::ExecSync {
            container: id.clone(),
            cmd
        }));
        assert!(fake
            .exec_sync("nope", &[], Duration::ZERO)
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn sandbox_can_die_under_the_kubelet() {
        let (fake, sb, _) = setup();
        assert!(fake.set_sandbox_not_ready(&sb));
        assert!(!fake.set_sandbox_not_ready("nope"));
        let s = fake.pod_sandbox_status(&sb, false).unwrap();
        assert_eq!(s.get_status().state, PodSandboxState::SANDBOX_NOTREADY);
    }

    #[test]
    fn calls_are_typed() {
        let (fake, sb, cfg) = setup();
        let id = fake
            .create_container(&sb, &container_config("app", IMAGE), &cfg)
            .unwrap();
        fake.start_container(&id).unwrap();
        fake.stop_container(&id, 5).unwrap();
        fake.remove_container(&id).unwrap();
        fake.stop_pod_sandbox(&sb).unwrap();
        fake.remove_pod_sandbox(&sb).unwrap();
        assert_eq!(
            fake.calls(),
            vec![
                Call::RunPodSandbox {
                    name: "web".into(),
                    uid: "uid-1".into(),
                    handler: "runc".into(),
                },
                Call::CreateContainer {
                    sandbox: sb.clone(),
                    name: "app".into()
                },
                Call::StartContainer(id.clone()),
                Call::StopContainer(id.clone()),
                Call::RemoveContainer(id.clone()),
                Call::StopPodSandbox(sb.clone()),
                Call::RemovePodSandbox(sb.clone()),
            ]
        );
    }
}
